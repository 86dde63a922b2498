// A bar chart of daily usage as inline SVG: no library, no network.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * `days` is [{ day: "2026-12-01", value: 3 }, ...] oldest first; returns an <svg> with one bar
 * per day, the largest value on the axis, and the first and last dates under it.
 */
export function barChart(days, label) {
  const w = 600, h = 160, pad = 24;
  const max = Math.max(1, ...days.map((d) => d.value));
  const svg = el("svg", { viewBox: `0 0 ${w} ${h + pad}`, class: "chart", role: "img", "aria-label": label });
  const step = (w - pad) / Math.max(1, days.length);
  days.forEach((d, i) => {
    const bh = Math.round((d.value / max) * (h - 10));
    const bar = el("rect", { x: pad + i * step + 1, y: h - bh, width: Math.max(1, step - 2), height: bh });
    const tip = el("title", {});
    tip.textContent = `${d.day}: ${d.value}`;
    bar.appendChild(tip);
    svg.appendChild(bar);
  });
  const axis = el("text", { x: 0, y: 12 });
  axis.textContent = String(max);
  svg.appendChild(axis);
  if (days.length) {
    const first = el("text", { x: pad, y: h + 16 });
    first.textContent = days[0].day;
    const last = el("text", { x: w - 60, y: h + 16 });
    last.textContent = days[days.length - 1].day;
    svg.append(first, last);
  }
  return svg;
}

/** The last `n` UTC days as "YYYY-MM-DD", oldest first. */
export function lastDays(n, now = new Date()) {
  const out = [];
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - i));
    out.push(d.toISOString().slice(0, 10));
  }
  return out;
}
