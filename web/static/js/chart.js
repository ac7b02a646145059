// Line charts in plain SVG: time axis, value axis with units, a legend, and the values
// under the pointer (a vertical rule and a box listing every series at that sample).

import { esc } from "./util.js";

const NS = "http://www.w3.org/2000/svg";

/** "1.2k", "350", "0.5" with a unit: fmtUnit(1536, "B/s") -> "1.5 KiB/s". */
export function fmtUnit(v, unit = "") {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const bytes = unit.startsWith("B");
  const k = bytes ? 1024 : 1000;
  const names = bytes ? ["", "Ki", "Mi", "Gi", "Ti"] : ["", "k", "M", "G", "T"];
  let x = Math.abs(v), i = 0;
  while (x >= k && i < names.length - 1) { x /= k; i++; }
  const s = x === 0 ? "0" : x < 10 ? x.toFixed(x < 1 && i === 0 ? 2 : 1).replace(/\.0+$/, "") : Math.round(x).toString();
  return (v < 0 ? "-" : "") + s + (names[i] || unit ? " " : "") + names[i] + unit;
}

/** The top of a value axis of 4 steps: 4 x a round step (1, 2, 2.5 or 5 x 10^k). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const step = v / 4;
  const p = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= step) return 4 * m * p;
  return 40 * p;
}

function hhmm(ms) {
  const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}`;
}

function hhmmss(ms) {
  const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/**
 * Draws a chart into ``el`` (replacing what it held).
 * opts: {t: [epoch ms], series: [{name, values, color, dash}], unit: "ev/s", title,
 *        width, height, min (y lower bound; default 0 unless a value is negative)}
 */
export function drawChart(el, opts) {
  const W = opts.width || Math.max(280, Math.min(el.clientWidth || 640, 900));
  const H = opts.height || 180;
  const L = 62, R = 10, T = 10, B = 24;
  const t = opts.t || [];
  const series = opts.series || [];
  const unit = opts.unit || "";
  let max = 0, min = 0;
  for (const s of series) for (const v of s.values) if (v !== null && Number.isFinite(v)) {
    if (v > max) max = v;
    if (v < min) min = v;
  }
  max = niceMax(max);
  if (min < 0) min = -niceMax(-min);
  const t0 = t.length ? t[0] : Date.now() - 60000, t1 = t.length > 1 ? t[t.length - 1] : t0 + 60000;
  const x = (ms) => L + ((ms - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - min) / (max - min)) * (H - T - B);
  let svg = `<svg class="chart" xmlns="${NS}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img"` +
    ` aria-label="${esc(opts.title || "chart")}">`;
  // value axis: 4 ticks with units
  for (let i = 0; i <= 4; i++) {
    const v = min + ((max - min) * i) / 4;
    const yy = y(v).toFixed(1);
    svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
      `<text class="tick y" x="${L - 5}" y="${yy}" dy="0.32em" text-anchor="end">${esc(fmtUnit(v, unit))}</text>`;
  }
  // time axis: up to 6 ticks
  const span = t1 - t0;
  const steps = [10e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3];
  const step = steps.find((s) => span / s <= 6) || 3600e3;
  for (let ms = Math.ceil(t0 / step) * step; ms <= t1; ms += step) {
    const xx = x(ms).toFixed(1);
    svg += `<line class="grid" x1="${xx}" x2="${xx}" y1="${T}" y2="${H - B}"/>` +
      `<text class="tick x" x="${xx}" y="${H - B + 15}" text-anchor="middle">${step < 60e3 ? hhmmss(ms) : hhmm(ms)}</text>`;
  }
  svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${y(Math.max(min, 0)).toFixed(1)}" y2="${y(Math.max(min, 0)).toFixed(1)}"/>` +
    `<line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>`;
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v) || t[i] === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    svg += `<path class="line" data-series="${esc(s.name)}" d="${d}" stroke="${s.color}"` +
      `${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`;
  }
  svg += `<line class="hover-rule" x1="0" x2="0" y1="${T}" y2="${H - B}" visibility="hidden"/>` +
    `<rect class="hover-area" x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="transparent"/></svg>`;
  const legend = `<div class="legend">` + series.map((s) =>
    `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("") +
    `<span class="muted">${esc(unit)}</span></div>`;
  el.innerHTML = (opts.title ? `<div class="chart-title">${esc(opts.title)}</div>` : "") + legend +
    `<div class="chart-box">${svg}<div class="tip" hidden></div></div>`;
  if (!t.length) {
    el.querySelector(".chart-box").insertAdjacentHTML("beforeend", `<div class="empty muted">no samples yet</div>`);
    return;
  }
  const area = el.querySelector(".hover-area"), rule = el.querySelector(".hover-rule"),
    tip = el.querySelector(".tip"), box = el.querySelector(".chart-box"), root = el.querySelector("svg");
  const show = (ev) => {
    const r = root.getBoundingClientRect();
    const px = ((ev.clientX - r.left) / r.width) * W;
    const ms = t0 + ((px - L) / (W - L - R)) * (t1 - t0);
    let i = 0, best = Infinity;
    t.forEach((tt, j) => { const d = Math.abs(tt - ms); if (d < best) { best = d; i = j; } });
    const xx = x(t[i]);
    rule.setAttribute("x1", xx); rule.setAttribute("x2", xx); rule.setAttribute("visibility", "visible");
    tip.hidden = false;
    tip.innerHTML = `<b>${hhmmss(t[i])}</b>` + series.map((s) =>
      `<div><i style="background:${s.color}"></i>${esc(s.name)} <b>${esc(fmtUnit(s.values[i], unit))}</b></div>`).join("");
    const left = (xx / W) * r.width;
    tip.style.left = `${Math.min(left + 12, r.width - 170)}px`;
    tip.dataset.index = String(i);
  };
  area.addEventListener("mousemove", (ev) => { el._hoverX = ev.clientX; show(ev); });
  area.addEventListener("mouseleave", () => {
    el._hoverX = null;
    tip.hidden = true;
    rule.setAttribute("visibility", "hidden");
  });
  // redrawn under a pointer that has not moved: the values stay shown
  if (el._hoverX !== null && el._hoverX !== undefined) show({ clientX: el._hoverX });
  box.dataset.points = String(t.length);
}
