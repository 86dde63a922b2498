// The portal: one page whose views (after `#/`) call the gate's own API. Every element is made
// with `h` (text is never parsed as HTML), every refusal shows the gate's `detail`.

import { call, keep, forget, session } from "./api.js";
import { t, lang, setLang, translate } from "./i18n.js";
import { barChart, lastDays } from "./chart.js";

const main = document.getElementById("main");
let me = null;

function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "t") e.dataset.t = v;
    else if (k === "style") e.style.cssText = v; // through the CSSOM: the page's CSP forbids style attributes
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}

const label = (key, input) => h("label", {}, h("span", { t: key }), input);
const input = (name, type = "text", extra = {}) => h("input", { name, id: name, type, ...extra });
// The API's times are UTC without a zone (as the original API wrote them): read them as UTC.
const utc = (iso) => new Date(/(Z|[+-]\d\d:\d\d)$/.test(iso) ? iso : `${iso}Z`);
const when = (iso) => (iso ? utc(iso).toLocaleString(lang() === "en" ? "en-GB" : "zh-CN") : "-");
const day = (iso) => (iso ? utc(iso).toLocaleDateString(lang() === "en" ? "en-GB" : "zh-CN") : "-");

let toastTimer;
function toast(message, ok = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = ok ? "ok" : "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

/** Runs `fn` with `button` disabled; a refusal is shown, not thrown. */
async function busy(button, fn) {
  if (button) button.disabled = true;
  try { await fn(); } catch (e) { toast(e.message); } finally { if (button) button.disabled = false; }
}

function form(id, fields, submitKey, onSubmit) {
  const submit = h("button", { type: "submit", t: submitKey });
  const f = h("form", { class: "stack", id }, ...fields, submit);
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, () => onSubmit(Object.fromEntries(new FormData(f)), f));
  });
  return f;
}

// --- signed out ---------------------------------------------------------------------------

async function signIn(who, password) {
  keep(await call("/auth/login", { method: "POST", body: { username_or_email: who, password } }));
  me = null;
  location.hash = "#/overview";
}

function login(root) {
  root.append(h("h1", { t: "login.title" }), h("div", { class: "card" },
    form("login-form", [
      label("login.who", input("username_or_email", "text", { autocomplete: "username", required: true })),
      label("login.password", input("password", "password", { autocomplete: "current-password", required: true })),
    ], "login.go", (v) => signIn(v.username_or_email, v.password)),
    h("p", {}, h("a", { href: "#/signup", t: "login.signup" }), " · ", h("a", { href: "#/forgot", t: "login.forgot" }))));
}

function signup(root) {
  const email = input("email", "email", { autocomplete: "email", required: true });
  const send = h("button", { type: "button", class: "secondary", t: "signup.send", onclick: () => busy(send, async () => {
    await call("/auth/send-verification-code", { method: "POST", body: { email: email.value } });
    toast(t("signup.sent"), true);
  }) });
  root.append(h("h1", { t: "signup.title" }), h("div", { class: "card" },
    form("signup-form", [
      label("signup.email", email), send,
      label("signup.username", input("username", "text", { autocomplete: "username", required: true, minlength: 3, maxlength: 50 })),
      label("signup.password", input("password", "password", { autocomplete: "new-password", required: true, minlength: 8, maxlength: 100 })),
      label("signup.code", input("verification_code", "text", { inputmode: "numeric", maxlength: 6 })),
    ], "signup.go", async (v) => {
      const body = { email: v.email, username: v.username, password: v.password };
      if (v.verification_code) body.verification_code = v.verification_code;
      await call("/auth/register", { method: "POST", body });
      await signIn(v.username, v.password);
    }),
    h("p", {}, h("a", { href: "#/login", t: "signup.back" }))));
}

function forgot(root) {
  const reset = form("reset-form", [
    label("forgot.code", input("code", "text", { inputmode: "numeric", required: true, maxlength: 6 })),
    label("forgot.new", input("new_password", "password", { autocomplete: "new-password", required: true, minlength: 8, maxlength: 100 })),
  ], "forgot.go", async (v) => {
    await call("/auth/reset-password", { method: "POST", body: { email: ask.email.value, code: v.code, new_password: v.new_password } });
    toast(t("forgot.done"), true);
    location.hash = "#/login";
  });
  reset.hidden = true;
  const ask = form("forgot-form", [label("forgot.email", input("email", "email", { required: true }))], "forgot.send", async (v) => {
    await call("/auth/forgot-password", { method: "POST", body: { email: v.email } });
    toast(t("forgot.sent"), true);
    reset.hidden = false;
  });
  root.append(h("h1", { t: "forgot.title" }), h("div", { class: "card" }, ask, h("hr"), reset));
}

// --- signed in ----------------------------------------------------------------------------

function quotaCard(q) {
  const unlimited = q.limit < 0;
  const pct = unlimited ? 0 : Math.min(100, q.limit ? (100 * q.used) / q.limit : 100);
  return h("div", { class: "card quota", id: `quota-${q.type_key}`, "data-used": q.used, "data-limit": q.limit },
    h("h2", {}, q.name),
    h("div", { class: `bar${pct >= 100 ? " full" : ""}`, role: "progressbar", "aria-valuemin": 0, "aria-valuemax": unlimited ? 0 : q.limit, "aria-valuenow": q.used, "aria-label": q.name },
      h("span", { style: `width:${pct}%` })),
    h("p", { class: "figures" }, `${q.used} / ${unlimited ? t("overview.unlimited") : q.limit} ${q.unit || ""}`),
    h("p", { class: "muted" }, h("span", { t: "overview.resets" }), " ", day(q.period_end)));
}

async function overview(root) {
  const [sub, quota] = await Promise.all([call("/subscriptions/current").catch(() => null), call("/subscriptions/quota")]);
  const plan = h("div", { class: "card", id: "plan" },
    h("h2", { t: "overview.plan" }),
    h("p", { class: "price", id: "plan-name" }, sub?.plan_name ?? "-"),
    sub?.current_period_end ? h("p", { class: "muted" }, h("span", { t: "overview.until" }), " ", day(sub.current_period_end)) : null,
    sub?.scheduled_plan_name ? h("p", { class: "muted" }, h("span", { t: "overview.next" }), " ", sub.scheduled_plan_name, " (", day(sub.scheduled_change_at), ")") : null,
    h("a", { href: "#/plans", t: "overview.upgrade" }));
  root.append(h("h1", { t: "overview.title" }), h("div", { class: "grid" }, plan, ...quota.quotas.map(quotaCard)));
}

async function usage(root) {
  const days = lastDays(30);
  const quota = await call("/subscriptions/quota");
  // One's own rows (a superuser would otherwise get everyone's), a page of 1000 at a time.
  const logs = [];
  for (let offset = 0; offset < 20000; offset += 1000) {
    const page = await call(`/admin/quotas/usage-logs?user_id=${me.id}&start_date=${days[0]}&limit=1000&offset=${offset}`);
    logs.push(...page);
    if (page.length < 1000) break;
  }
  root.append(h("h1", { t: "usage.title" }));
  for (const q of quota.quotas) {
    const per = new Map(days.map((d) => [d, 0]));
    for (const l of logs) {
      const d = l.created_at.slice(0, 10);
      if (l.quota_type === q.type_key && l.state !== "refunded" && per.has(d)) per.set(d, per.get(d) + l.amount);
    }
    const total = [...per.values()].reduce((a, b) => a + b, 0);
    root.append(h("div", { class: "card", id: `chart-${q.type_key}`, "data-total": total },
      h("h2", {}, `${q.name}: ${total}`), barChart([...per].map(([d, value]) => ({ day: d, value })), q.name)));
  }
  const rows = logs.map((l) => h("tr", { class: `log ${l.state}` },
    h("td", {}, when(l.created_at)), h("td", {}, l.quota_type), h("td", {}, l.amount),
    h("td", { t: l.state === "refunded" ? "usage.refunded" : "usage.committed" }),
    h("td", {}, l.endpoint), h("td", {}, l.refund_reason ?? "")));
  root.append(h("div", { class: "card" }, h("h2", { t: "usage.charges" }),
    rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "usage-logs" },
      h("thead", {}, h("tr", {}, ...["usage.when", "usage.type", "usage.amount", "usage.state", "usage.endpoint", "usage.reason"].map((k) => h("th", { t: k })))),
      h("tbody", {}, rows))) : h("p", { class: "muted", t: "usage.none" })));
}

async function keys(root) {
  const list = await call("/api-keys/");
  const shown = h("div", { id: "new-key" });
  const create = form("key-form", [label("keys.name", input("name", "text", { required: true, maxlength: 100 }))], "keys.create", async (v, f) => {
    const made = await call("/api-keys/", { method: "POST", body: { name: v.name } });
    f.reset();
    const secret = h("p", { class: "secret", id: "key-secret" }, made.key);
    const copy = h("button", { type: "button", class: "secondary", t: "keys.copy", onclick: async () => {
      try { await navigator.clipboard.writeText(made.key); } catch { getSelection().selectAllChildren(secret); document.execCommand("copy"); }
      toast(t("keys.copied"), true);
    } });
    await render();
    shown.replaceChildren(h("div", { class: "card" }, h("p", { t: "keys.once" }), secret, copy));
    translate(shown);
  });
  const table = h("div", { id: "keys" });
  async function render(fresh) {
    const items = fresh ?? (await call("/api-keys/"));
    table.replaceChildren(items.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["keys.name", "keys.prefix", "keys.created", "keys.used", "", ""].map((k) => h("th", k ? { t: k } : {})))),
      h("tbody", {}, items.map((k) => h("tr", { "data-key": k.id, "data-name": k.name, "data-active": String(k.is_active) },
        h("td", {}, k.name), h("td", {}, h("code", {}, k.key_prefix)), h("td", {}, day(k.created_at)), h("td", {}, when(k.last_used_at)),
        h("td", { t: k.is_active ? "keys.active" : "keys.inactive" }),
        h("td", { class: "row" },
          k.is_active ? h("button", { type: "button", class: "secondary", t: "keys.deactivate", onclick: (ev) => busy(ev.target, async () => {
            await call(`/api-keys/${k.id}/deactivate`, { method: "PATCH" }); await render();
          }) }) : null,
          h("button", { type: "button", class: "danger", t: "keys.delete", onclick: (ev) => busy(ev.target, async () => {
            if (!confirm(t("keys.confirm"))) return;
            await call(`/api-keys/${k.id}`, { method: "DELETE" }); await render();
          }) }))))))) : h("p", { class: "muted", t: "keys.none" }));
    translate(table);
  }
  await render(list);
  root.append(h("h1", { t: "keys.title" }), h("div", { class: "card" }, create), shown, h("div", { class: "card" }, table));
}

let following = 0;

/** Shows `order`'s QR code and link, then follows it until paid (only the latest order). */
async function follow(order, panel) {
  const mine = ++following;
  panel.replaceChildren(h("p", {}, h("span", { t: "plans.quote" }), ` ${order.amount} ${order.currency}`,
    order.credit && order.credit !== "0.00" ? ` (${t("plans.credit")} ${order.credit})` : ""));
  if (order.qr_code) {
    const svg = await call(`/payments/${order.payment_id}/qr`, { raw: true });
    const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    panel.append(h("p", { t: "plans.scan" }), h("div", { class: "qr", id: "qr" }, document.importNode(doc.documentElement, true)));
  }
  if (order.payment_url) panel.append(h("p", {}, h("a", { href: order.payment_url, target: "_blank", rel: "noopener", id: "pay-link", t: "plans.open" })));
  const status = h("p", { id: "pay-status", t: "plans.waiting" });
  panel.append(status);
  translate(panel);
  for (let i = 0; i < 450; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    if (!panel.isConnected || mine !== following) return;
    const p = await call(`/payments/${order.payment_id}?poll=true`).catch(() => null);
    if (p && p.status === "completed") {
      status.dataset.t = "plans.paid";
      const quota = await call("/subscriptions/quota").catch(() => null);
      if (quota) panel.append(h("div", { class: "grid", id: "new-quota" }, quota.quotas.map(quotaCard)));
      status.dataset.paid = "yes";
      translate(panel);
      toast(t("plans.paid"), true);
      return;
    }
    if (p && (p.status === "closed" || p.status === "failed")) { status.textContent = p.status; return; }
  }
}

async function plans(root) {
  const [list, sub, quota] = await Promise.all([call("/plans/"), call("/subscriptions/current").catch(() => null), call("/subscriptions/quota")]);
  const names = Object.fromEntries(quota.quotas.map((q) => [q.type_key, `${q.name}${q.unit ? ` (${q.unit})` : ""}`]));
  const panel = h("div", { class: "card", id: "pay-panel", hidden: true });
  const method = h("select", { name: "payment_method", id: "payment_method" },
    h("option", { value: "alipay" }, "支付宝 Alipay"), h("option", { value: "wechat" }, "微信支付 WeChat Pay"), h("option", { value: "sandbox" }, "Sandbox"));
  const cards = list.filter((p) => p.is_active).map((p) => {
    const current = sub && sub.plan_id === p.id;
    return h("div", { class: `card plan${current ? " current" : ""}`, "data-plan": p.name },
      h("h2", {}, p.name), h("p", { class: "price" }, `¥${p.price} `, h("span", { class: "muted" }, t("plans.per")[p.billing_cycle] ?? "")),
      h("p", { class: "muted" }, p.description),
      h("ul", {}, Object.entries(p.quotas).map(([k, v]) => h("li", {}, `${names[k] ?? k}: ${v < 0 ? t("overview.unlimited") : v}`))),
      current ? h("p", { class: "badge", t: "plans.current" }) : null,
      p.price !== "0.00" ? h("button", { type: "button", class: "choose", t: "plans.choose", onclick: (ev) => busy(ev.target, async () => {
        const order = await call("/subscriptions/subscribe", { method: "POST", body: { plan_id: p.id, payment_method: method.value } });
        panel.hidden = false;
        follow(order, panel).catch((e) => toast(e.message));
      }) }) : null);
  });
  root.append(h("h1", { t: "plans.title" }), h("div", { class: "card row" }, h("label", {}, h("span", { t: "plans.method" }), method)),
    h("div", { class: "grid" }, cards), panel);
}

async function payments(root) {
  const list = await call("/payments/");
  root.append(h("h1", { t: "payments.title" }), h("div", { class: "card" }, list.length ? h("div", { class: "table-wrap" }, h("table", { id: "payments" },
    h("thead", {}, h("tr", {}, ...["payments.when", "payments.order", "payments.amount", "payments.method", "payments.status"].map((k) => h("th", { t: k })))),
    h("tbody", {}, list.map((p) => h("tr", {}, h("td", {}, when(p.created_at)), h("td", {}, h("code", {}, p.order_id)),
      h("td", {}, `${p.amount} ${p.currency}`), h("td", {}, p.payment_method), h("td", {}, p.status))))))
    : h("p", { class: "muted", t: "payments.none" })));
}

function account(root) {
  root.append(h("h1", { t: "account.title" }), h("div", { class: "card" }, h("p", {}, `${me.username} · ${me.email}`),
    form("password-form", [
      label("account.current", input("current_password", "password", { autocomplete: "current-password", required: true })),
      label("account.new", input("password", "password", { autocomplete: "new-password", required: true, minlength: 8, maxlength: 100 })),
    ], "account.change", async (v) => {
      await call("/users/me", { method: "PUT", body: { password: v.password, current_password: v.current_password } });
      forget();
      me = null;
      toast(t("account.changed"), true);
      location.hash = "#/login";
    })));
}

async function admin(root) {
  const [users, audit, quota, plans] = await Promise.all([
    call("/admin/users?limit=100"), call("/admin/audit-log?limit=50"), call("/subscriptions/quota"), call("/plans/"),
  ]);
  const types = quota.quotas.map((q) => q.type_key);
  const rows = users.map((u) => {
    const type = h("select", { "aria-label": t("usage.type") }, types.map((k) => h("option", { value: k }, k)));
    const amount = h("input", { type: "number", min: 0, value: 10, "aria-label": t("admin.amount"), style: "width:6rem" });
    const act = (path, method = "POST") => (ev) => busy(ev.target, async () => { await call(path(), { method }); toast(t("admin.done"), true); route(); });
    return h("tr", { "data-user": u.username, "data-active": String(u.is_active) },
      h("td", {}, u.username, u.is_superuser ? h("span", { class: "badge", t: "admin.superuser" }) : null), h("td", {}, u.email),
      h("td", {}, h("button", { type: "button", class: u.is_active ? "danger" : "secondary", t: u.is_active ? "admin.disable" : "admin.enable",
        onclick: act(() => `/admin/users/${u.id}/${u.is_active ? "disable" : "enable"}`) })),
      h("td", { class: "row" }, type, amount,
        h("button", { type: "button", class: "secondary", t: "admin.grant", onclick: act(() => `/admin/users/${u.id}/grant?quota_type=${type.value}&amount=${amount.value}`) }),
        h("button", { type: "button", class: "secondary", t: "admin.adjust", onclick: act(() => `/admin/quotas/users/${u.id}/adjust?quota_type=${type.value}&new_limit=${amount.value}`, "PUT") }),
        h("button", { type: "button", class: "secondary", t: "admin.reset", onclick: act(() => `/admin/quotas/users/${u.id}/reset?quota_type=${type.value}`) })));
  });
  const planRows = plans.map((pl) => {
    const price = h("input", { type: "text", value: pl.price, "aria-label": `${pl.name} ${t("admin.price")}`, style: "width:7rem" });
    return h("tr", { "data-plan": pl.name }, h("td", {}, pl.name), h("td", {}, price, " ", pl.billing_cycle),
      h("td", { class: "row" },
        h("button", { type: "button", class: "secondary", t: "admin.save", onclick: (ev) => busy(ev.target, async () => {
          await call(`/plans/${pl.id}`, { method: "PUT", body: { price: price.value } }); toast(t("admin.done"), true); route();
        }) }),
        pl.is_default ? null : h("button", { type: "button", class: "danger", t: "admin.retire", onclick: (ev) => busy(ev.target, async () => {
          await call(`/plans/${pl.id}`, { method: "DELETE" }); toast(t("admin.done"), true); route();
        }) })));
  });
  const newPlan = form("plan-form", [
    label("admin.name", input("name", "text", { required: true, maxlength: 100 })),
    label("admin.price", input("price", "text", { required: true, inputmode: "decimal", placeholder: "99.00" })),
    label("admin.cycle", h("select", { name: "billing_cycle", id: "billing_cycle" }, ["monthly", "yearly"].map((c) => h("option", { value: c }, c)))),
    ...quota.quotas.map((q) => label(q.type_key, input(`quota.${q.type_key}`, "number", { min: -1, value: q.limit }))),
  ], "admin.create", async (v) => {
    const quotas = {};
    for (const [k, val] of Object.entries(v)) if (k.startsWith("quota.")) quotas[k.slice(6)] = Number(val);
    await call("/plans/", { method: "POST", body: { name: v.name, price: v.price, billing_cycle: v.billing_cycle, quotas } });
    toast(t("admin.done"), true);
    route();
  });
  root.append(h("h1", { t: "admin.title" }),
    h("div", { class: "card" }, h("h2", { t: "admin.users" }), h("div", { class: "table-wrap" }, h("table", { id: "admin-users" }, h("tbody", {}, rows)))),
    h("div", { class: "card" }, h("h2", { t: "admin.plans" }), h("div", { class: "table-wrap" }, h("table", { id: "admin-plans" }, h("tbody", {}, planRows))),
      h("h2", { t: "admin.newplan" }), newPlan),
    h("div", { class: "card" }, h("h2", { t: "admin.audit" }), h("div", { class: "table-wrap" }, h("table", { id: "audit" },
      h("thead", {}, h("tr", {}, ...["usage.when", "admin.action", "admin.target"].map((k) => h("th", { t: k })))),
      h("tbody", {}, audit.map((a) => h("tr", {}, h("td", {}, when(a.created_at)), h("td", {}, a.action), h("td", {}, a.target))))))));
}

// --- the frame ----------------------------------------------------------------------------

const OPEN = { login, signup, forgot };
const SIGNED_IN = { overview, usage, keys, plans, payments, account, admin };

let rendering = 0;

async function route() {
  const turn = ++rendering;
  main.dataset.ready = "";
  const name = location.hash.replace(/^#\/?/, "") || (session() ? "overview" : "login");
  if (!session() && !OPEN[name]) { location.hash = "#/login"; return; }
  if (session() && !me) {
    try {
      me = await call("/users/me");
    } catch (e) {
      // A 401 has already signed out (api.js); anything else (the gate busy) is shown, and the
      // session kept.
      if (e.status !== 401) toast(e.message);
      return;
    }
  }
  if (turn !== rendering) return;
  const signedIn = Boolean(session() && me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
  document.getElementById("nav-admin").hidden = !(me && me.is_superuser);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  // A view is drawn off the page and put in place only if no later render has started.
  const drawn = document.createElement("div");
  const page = main;
  try {
    await (OPEN[name] ?? SIGNED_IN[name] ?? overview)(drawn);
  } catch (e) {
    drawn.append(h("p", { class: "card", role: "alert" }, e.message));
  }
  if (turn !== rendering) return;
  page.replaceChildren(...drawn.childNodes);
  page.dataset.view = name;
  translate();
  document.getElementById("lang").textContent = t("other");
  main.dataset.ready = name;
}

document.getElementById("logout").addEventListener("click", async () => {
  const s = session();
  try { await call("/auth/logout", { method: "POST", body: { refresh_token: s?.refresh } }); } catch { /* signed out anyway */ }
  forget();
  me = null;
  location.hash = "#/login";
});
document.getElementById("lang").addEventListener("click", () => { setLang(lang() === "en" ? "zh" : "en"); route(); });
// Only `#/view` hashes are views: `#main` (the skip link) just moves the focus.
window.addEventListener("hashchange", () => {
  if (location.hash === "" || location.hash.startsWith("#/")) route();
  else main.focus();
});
setLang(lang());
route();
