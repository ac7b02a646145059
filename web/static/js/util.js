// Small helpers shared by the views: escaping, number and time formats, debouncing.

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text made safe for innerHTML (and attribute values). */
export function esc(value) {
  if (value === null || value === undefined) return "";
  return String(value).replace(/[&<>"']/g, (c) => ESC[c]);
}

export const $ = (sel, root = document) => root.querySelector(sel);

// The master's clock less the browser's, when they differ by more than the Date header's
// one-second resolution can tell: nodes stamp their reports with their own clocks, kept
// near the master's; an operator's laptop may be off by many seconds, and would then
// see live nodes as silent (or dead ones as live).
let clockOffset = 0;

/** Takes the Date header of a master's answer. */
export function setServerDate(header, at = Date.now()) {
  const server = Date.parse(header || "");
  if (!Number.isFinite(server)) return;
  const off = server - at;           // the header is cut to the second: off is in (-1 s, 0]
  clockOffset = Math.abs(off) > 2000 ? off : 0;
}

/** Now on the master's clock (epoch ms), to compare with the nodes' report times. */
export function nowMs() { return Date.now() + clockOffset; }

/** A rate such as 1234.5 -> "1.23k"; null -> "–". */
export function fmtRate(r) {
  if (r === null || r === undefined || !Number.isFinite(r)) return "–";
  if (r === 0) return "0";
  if (r < 10) return r.toFixed(1);
  if (r < 1000) return Math.round(r).toString();
  if (r < 1e6) return (r / 1e3).toFixed(r < 1e4 ? 2 : 1) + "k";
  return (r / 1e6).toFixed(2) + "M";
}

/** A count with thousands separators; bytes_* counters get units. */
export function fmtCount(key, v) {
  if (typeof v !== "number") return esc(v);
  if (/bytes/.test(key) && v >= 1024) {
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let x = v / 1024, i = 0;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return `${x.toFixed(1)} ${units[i]}`;
  }
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(2);
}

/** "4 s ago", "3 min ago"... from a ms timestamp. */
export function ago(ms, now = Date.now()) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

/** "2026-01-31 13:04:05" in local time. */
export function clock(ms) {
  if (!ms) return "–";
  const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Writes a message into a result span (class ok / bad). */
export function say(el, text, ok = true) {
  el.textContent = text || "";
  el.className = "result " + (text ? (ok ? "ok" : "bad") : "");
}

/** Replace the options of a <datalist> (only when they changed). */
export function fillDatalist(id, values) {
  const dl = document.getElementById(id);
  const key = values.join("\u0000");
  if (dl.dataset.key === key) return;
  dl.dataset.key = key;
  dl.innerHTML = values.map((v) => `<option value="${esc(v)}">`).join("");
}
