// Calls to the gate's own API from the portal: the signed-in session lives in localStorage
// (access and refresh token), an expired access token is refreshed once and the call retried,
// and every refusal becomes an Error carrying the gate's `detail`.

const KEY = "idoctor.portal.session";

export function session() {
  try { return JSON.parse(localStorage.getItem(KEY)) || null; } catch { return null; }
}

export function keep(tokens) {
  localStorage.setItem(KEY, JSON.stringify({ access: tokens.access_token, refresh: tokens.refresh_token }));
}

export function forget() {
  localStorage.removeItem(KEY);
}

/** An answer the gate refused: `status` and its `detail`. */
export class Refused extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function detailOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return text;
  } catch {
    return text || resp.statusText;
  }
}

async function refresh() {
  const s = session();
  if (!s || !s.refresh) return false;
  const resp = await fetch("/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: s.refresh }),
  });
  if (!resp.ok) return false;
  keep(await resp.json());
  return true;
}

/**
 * Calls `path` with `method` and an optional JSON `body`; resolves to the parsed JSON (or the
 * text for non-JSON answers), rejects with `Refused`.
 */
export async function call(path, { method = "GET", body, raw = false, retried = false } = {}) {
  const headers = {};
  const s = session();
  if (s && s.access) headers.authorization = `Bearer ${s.access}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && s && !retried && !path.startsWith("/auth/")) {
    if (await refresh()) return call(path, { method, body, raw, retried: true });
    forget();
    location.hash = "#/login";
  }
  if (!resp.ok) throw new Refused(resp.status, await detailOf(resp));
  if (raw) return resp.text();
  const type = resp.headers.get("content-type") || "";
  if (resp.status === 204) return null;
  return type.includes("json") ? resp.json() : resp.text();
}
