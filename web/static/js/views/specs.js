// Specs tab: every logical node's spec as entered and as translated by the masters
// (auto chains, logical sinks and sources), with its flow and version.

import { esc, debounce } from "../util.js";
import { fill as fillConfigForm } from "./configure.js";

let ctx;
let shownKey = "";
const el = {};

export function init(c) {
  ctx = c;
  el.rows = document.getElementById("specs-rows");
  el.filter = document.getElementById("specs-filter");
  el.count = document.getElementById("specs-count");
  el.filter.addEventListener("input", debounce(() => render(true), 120));
  el.rows.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-edit]");
    const r = b && ctx.state.rowsByName.get(b.dataset.edit);
    if (!r) return;
    fillConfigForm(r.name, r.flow, r.source, r.sink);
    ctx.go("configure");
  });
}

export function show() { render(true); }

export function onStatus(state, changed) {
  if (state.tab === "specs" && changed) render(false);
}

function render(force) {
  const st = ctx.state.status;
  if (!st) return;
  const q = el.filter.value.trim().toLowerCase();
  const rows = st.logical.filter((r) => r.config_version !== null);
  // the status changes with every counter; the specs far less often
  const key = JSON.stringify(rows.map((r) => [r.name, r.flow, r.config_version, r.physical,
    r.source, r.sink, r.tsource, r.tsink]));
  if (!force && key === shownKey) return;
  shownKey = key;
  const parts = [];
  for (const r of rows) {
    const entered = `${r.source} | ${r.sink}`;
    const hasT = r.tsource !== null || r.tsink !== null;
    const translated = hasT ? `${r.tsource ?? r.source} | ${r.tsink ?? r.sink}` : "";
    if (q && ![r.name, r.flow, entered, translated, r.physical].some((v) => v && v.toLowerCase().includes(q))) continue;
    parts.push(`<div class="r" role="row" data-name="${esc(r.name)}"><span role="cell">${esc(r.name)} ` +
      `<button type="button" class="ghost small" data-edit="${esc(r.name)}" title="edit in the form">edit</button></span>` +
      `<span role="cell">${esc(r.flow)}</span><span role="cell" class="n">${esc(r.config_version)}</span>` +
      `<span role="cell">${esc(r.physical) || "–"}</span><span role="cell" class="spec">${esc(entered)}</span>` +
      (hasT ? `<span role="cell" class="spec">${esc(translated)}</span>` : `<span role="cell" class="same">same as entered</span>`) +
      `</div>`);
  }
  el.rows.innerHTML = parts.join("") ||
    `<div class="empty">${rows.length ? "no spec matches the filter" : "no logical node is configured"}</div>`;
  el.count.textContent = q ? `(${parts.length} of ${rows.length})` : `(${rows.length})`;
}
