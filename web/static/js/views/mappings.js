// Mappings tab: which logical nodes each physical node runs; map with the form, unmap
// with the × on a node.

import { api } from "../api.js";
import { esc, say } from "../util.js";

const UNMAPPED_SHOWN = 300;

let ctx;
const el = {};

export function init(c) {
  ctx = c;
  el.tbody = document.querySelector("#mappings-table tbody");
  el.unmapped = document.getElementById("unmapped");
  el.logical = document.getElementById("map-logical");
  el.physical = document.getElementById("map-physical");
  el.result = document.getElementById("map-result");
  el.submit = document.getElementById("map-submit");
  document.getElementById("map-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    map();
  });
  el.tbody.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-unmap]");
    if (b) unmap(b.dataset.physical, b.dataset.unmap);
  });
}

export function show() { render(); }

export function onData(state, what) {
  if (what === "mappings") render();
}

let statesKey = "";

export function onStatus(state, changed) {
  if (state.tab !== "mappings" || !changed) return;
  // counters change every few seconds; only states, placement and configs matter here
  const key = state.status.logical.map((r) => `${r.name}:${r.state}:${r.physical}:${r.config_version}`).join(",") +
    "|" + state.status.physical.map((p) => `${p.name}:${p.alive}`).join(",");
  if (key === statesKey) return;
  statesKey = key;
  render();
}

function render() {
  const m = ctx.state.mappings;
  const st = ctx.state.status;
  if (!m || !st) { el.tbody.innerHTML = `<tr class="empty"><td colspan="3">loading…</td></tr>`; return; }
  const alive = new Map(st.physical.map((p) => [p.name, p.alive]));
  const names = [...new Set([...Object.keys(m), ...alive.keys()])].sort();
  el.tbody.innerHTML = names.map((p) => {
    const nodes = m[p] || [];
    return `<tr data-physical="${esc(p)}"><td>${esc(p)}</td>` +
      `<td><span class="st ${alive.get(p) ? "ACTIVE" : "LOST"}">${alive.get(p) ? "alive" : "gone"}</span></td><td>` +
      (nodes.map((n) => `<span class="chip" data-logical="${esc(n)}">${esc(n)}` +
        `<button type="button" data-unmap="${esc(n)}" data-physical="${esc(p)}" title="unmap ${esc(n)} from ${esc(p)}" aria-label="unmap ${esc(n)} from ${esc(p)}">×</button></span>`).join("")
        || '<span class="muted">nothing mapped</span>') + `</td></tr>`;
  }).join("") || `<tr class="empty"><td colspan="3">no physical node</td></tr>`;
  const mapped = new Set(Object.values(m).flat());
  const loose = st.logical.filter((r) => r.config_version !== null && !mapped.has(r.name)).map((r) => r.name);
  el.unmapped.innerHTML = `<h2>Configured but not mapped <span class="muted">(${loose.length})</span></h2>` +
    (loose.length ? loose.slice(0, UNMAPPED_SHOWN).map((n) => `<span class="chip">${esc(n)}</span>`).join("") +
      (loose.length > UNMAPPED_SHOWN ? ` <span class="muted">and ${loose.length - UNMAPPED_SHOWN} more</span>` : "")
      : '<span class="muted">none</span>');
}

async function map() {
  const logical = el.logical.value.trim(), physical = el.physical.value.trim();
  if (!logical || !physical) { say(el.result, "a logical and a physical node are needed", false); return; }
  el.submit.disabled = true;
  try {
    const res = await api.map(physical, logical);
    say(el.result, res.command.message || "mapped");
    ctx.refresh();
  } catch (err) {
    say(el.result, err.message, false);
  } finally {
    el.submit.disabled = false;
  }
}

async function unmap(physical, logical) {
  try {
    const res = await api.unmap(physical, logical);
    say(el.result, res.command.message || `unmapped ${logical}`);
    ctx.refresh();
  } catch (err) {
    say(el.result, err.message, false);
  }
}
