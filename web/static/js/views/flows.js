// Flows tab: the logical nodes of each flow (collectors, agents with the collector chain
// the masters gave each, others), and assigning a node to a flow — which is configuring
// it again with the same spec and the flow argument.

import { api } from "../api.js";
import { esc, say } from "../util.js";

let ctx;
const el = {};

export function init(c) {
  ctx = c;
  el.list = document.getElementById("flows-list");
  el.node = document.getElementById("assign-node");
  el.flow = document.getElementById("assign-flow");
  el.result = document.getElementById("assign-result");
  el.submit = document.getElementById("assign-submit");
  document.getElementById("assign-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    assign();
  });
}

export function show() { render(); }

export function onData(state, what) {
  if (what === "flows") render();
}

let statesKey = "";

export function onStatus(state, changed) {
  if (state.tab !== "flows" || !changed) return;
  // counters change every few seconds; only states, placement and configs matter here
  const key = state.status.logical.map((r) => `${r.name}:${r.state}:${r.physical}:${r.config_version}`).join(",") +
    "|" + state.status.physical.map((p) => `${p.name}:${p.alive}`).join(",");
  if (key === statesKey) return;
  statesKey = key;
  render();
}

function chip(name, cls = "") {
  const r = ctx.state.rowsByName.get(name);
  const title = r ? `${r.state}${r.physical ? " on " + r.physical : ""}` : "";
  return `<span class="chip ${cls}" title="${esc(title)}">${esc(name)}` +
    (r ? ` <span class="st ${esc(r.state)}" style="min-width:0">${esc(r.state)}</span>` : "") + `</span>`;
}

function render() {
  const flows = ctx.state.flows;
  if (!flows) { el.list.innerHTML = `<p class="muted">loading…</p>`; return; }
  const names = Object.keys(flows).sort();
  if (!names.length) { el.list.innerHTML = `<p class="muted">no flow yet: configure a logical node</p>`; return; }
  el.list.innerHTML = `<div class="flows">` + names.map((f) => {
    const info = flows[f];
    const pool = new Set(info.pool || []);
    const chains = info.chains || {};
    const agents = (info.agents || []).map((a) => {
      const chain = chains[a] || [];
      return `<div class="agent" data-agent="${esc(a)}">${chip(a)} <span class="chain">` +
        `<span class="arrow">→</span> ${chain.length ? chain.map(esc).join(' <span class="arrow">?</span> ')
          : '<span class="muted">no collector running</span>'}</span></div>`;
    }).join("");
    const total = new Set([...(info.agents || []), ...(info.collectors || []), ...(info.others || [])]).size;
    return `<div class="card flow" data-flow="${esc(f)}"><h3>${esc(f)} <span class="muted">(${total} node${total === 1 ? "" : "s"})</span></h3><dl>` +
      `<dt>collectors</dt><dd>${(info.collectors || []).map((c) => chip(c, pool.has(c) ? "running" : "")).join("") || '<span class="muted">none</span>'}</dd>` +
      `<dt>agents and their chains</dt><dd>${agents || '<span class="muted">none</span>'}</dd>` +
      `<dt>others</dt><dd>${(info.others || []).map((o) => chip(o)).join("") || '<span class="muted">none</span>'}</dd>` +
      `</dl></div>`;
  }).join("") + `</div>`;
}

async function assign() {
  const name = el.node.value.trim(), flow = el.flow.value.trim();
  if (!name || !flow) { say(el.result, "a node and a flow are needed", false); return; }
  el.submit.disabled = true;
  try {
    const cfg = await api.config(name); // the spec as it stands: only the flow changes
    const res = await api.putConfig(name, { source: cfg.source, sink: cfg.sink, flow });
    say(el.result, res.command.message || `${name} is in ${flow}`);
    ctx.refresh();
  } catch (err) {
    say(el.result, err.status === 404 ? `${name} has no configuration: configure it first` : err.message, false);
  } finally {
    el.submit.disabled = false;
  }
}
