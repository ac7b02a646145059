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
  initBulk();
  initDrag();
}

// Dragging a node's chip onto another flow's card picks it (with any nodes already
// picked), sets that flow and shows the preview: the move still waits for "Confirm".
function initDrag() {
  el.list.addEventListener("dragstart", (ev) => {
    const c = ev.target.closest(".chip[data-node]");
    if (!c) return;
    ev.dataTransfer.setData("text/plain", c.dataset.node);
    ev.dataTransfer.effectAllowed = "move";
  });
  el.list.addEventListener("dragover", (ev) => {
    const card = ev.target.closest(".flow[data-flow]");
    if (!card) return;
    ev.preventDefault();
    for (const f of el.list.querySelectorAll(".flow.drop")) if (f !== card) f.classList.remove("drop");
    card.classList.add("drop");
  });
  el.list.addEventListener("dragleave", (ev) => {
    const card = ev.target.closest(".flow[data-flow]");
    if (card && !card.contains(ev.relatedTarget)) card.classList.remove("drop");
  });
  el.list.addEventListener("drop", (ev) => {
    const card = ev.target.closest(".flow[data-flow]");
    if (!card) return;
    ev.preventDefault();
    card.classList.remove("drop");
    const name = ev.dataTransfer.getData("text/plain");
    if (!name) return;
    picked.add(name);
    el.bulkFlow.value = card.dataset.flow;
    renderPick();
    preview();
    document.getElementById("bulk-form").scrollIntoView({ block: "start" });
  });
}

export function show() { render(); renderPick(); }

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
  renderPick();
}

// ------------------------------------------------------------------ moving many nodes
// Pick nodes (filter, multi-select), a flow, preview the chains the master will compute
// (POST /api/flows/{flow}/preview stores nothing), confirm: one multiconfig command (in
// the history) configures each picked node again with its spec and the new flow.

const picked = new Set();
let previewed = null; // "flow|names" the preview shown is for

function initBulk() {
  el.bulkFilter = document.getElementById("bulk-filter");
  el.bulkFlow = document.getElementById("bulk-flow");
  el.bulkList = document.getElementById("bulk-list");
  el.bulkCount = document.getElementById("bulk-count");
  el.bulkOut = document.getElementById("bulk-preview-out");
  el.bulkResult = document.getElementById("bulk-result");
  el.bulkSubmit = document.getElementById("bulk-submit");
  el.bulkFilter.addEventListener("input", renderPick);
  el.bulkFlow.addEventListener("input", stale);
  el.bulkList.addEventListener("change", (ev) => {
    const box = ev.target.closest("input[data-node]");
    if (!box) return;
    if (box.checked) picked.add(box.dataset.node); else picked.delete(box.dataset.node);
    stale();
    count();
  });
  document.getElementById("bulk-all").addEventListener("click", () => {
    for (const r of shown()) picked.add(r.name);
    stale(); renderPick();
  });
  document.getElementById("bulk-none").addEventListener("click", () => {
    picked.clear(); stale(); renderPick();
  });
  document.getElementById("bulk-preview").addEventListener("click", preview);
  document.getElementById("bulk-form").addEventListener("submit", (ev) => { ev.preventDefault(); confirmMove(); });
}

function configured() {
  const st = ctx.state.status;
  return st ? st.logical.filter((r) => r.config_version !== null) : [];
}

function shown() {
  const q = (el.bulkFilter.value || "").trim().toLowerCase();
  return configured().filter((r) => !q || [r.name, r.flow, r.host, r.state, r.physical]
    .some((v) => v && String(v).toLowerCase().includes(q)));
}

function count() {
  el.bulkCount.textContent = `${picked.size} selected`;
}

function stale() {
  previewed = null;
  el.bulkSubmit.disabled = true;
  el.bulkOut.innerHTML = "";
}

function renderPick() {
  if (!el.bulkList) return;
  const rows = shown();
  const MAX = 500;
  el.bulkList.innerHTML = rows.slice(0, MAX).map((r) =>
    `<label class="pick" data-node="${esc(r.name)}"><input type="checkbox" data-node="${esc(r.name)}"` +
    `${picked.has(r.name) ? " checked" : ""}> <b>${esc(r.name)}</b> <span class="muted">${esc(r.flow)}` +
    `${r.host ? " · " + esc(r.host) : ""}</span></label>`).join("") +
    (rows.length > MAX ? `<p class="muted">${rows.length - MAX} more: narrow the filter</p>` : "") +
    (rows.length ? "" : `<p class="muted">no configured node matches</p>`);
  count();
}

async function preview() {
  const flow = el.bulkFlow.value.trim();
  const names = [...picked].sort();
  if (!flow || !names.length) { say(el.bulkResult, "pick nodes and a flow first", false); return; }
  try {
    const p = await api.preview(flow, names);
    const chains = p.chains || {};
    const changed = p.changed || {};
    const rows = Object.keys(chains).sort().map((a) =>
      `<tr data-agent="${esc(a)}"${changed[a] ? ' class="changed"' : ""}><td>${esc(a)}</td>` +
      `<td class="chain">${chains[a].length ? chains[a].map(esc).join(" › ") : '<span class="muted">no collector running</span>'}</td>` +
      `<td class="muted">${!changed[a] ? "same" : changed[a].before === null ? "not an agent of a flow yet"
        : "was " + (changed[a].before.map(esc).join(" › ") || "no collector")}</td></tr>`).join("");
    const elsewhere = Object.keys(changed).filter((a) => !(a in chains)).sort();
    el.bulkOut.innerHTML = `<h3>Chains in ${esc(flow)} after the move <span class="muted">(${p.pool.length} collector${p.pool.length === 1 ? "" : "s"} running)</span></h3>` +
      (rows ? `<table class="grid preview"><thead><tr><th>agent</th><th>collectors, primary first</th><th>now</th></tr></thead><tbody>${rows}</tbody></table>`
        : `<p class="muted">no auto-chain agent in ${esc(flow)}</p>`) +
      (elsewhere.length ? `<p>also changes: ${elsewhere.map((a) => `<b>${esc(a)}</b> → ${(changed[a].after || []).map(esc).join(" › ") || "no collector"}`).join("; ")}</p>` : "") +
      (p.unknown.length ? `<p class="bad">not configured: ${p.unknown.map(esc).join(", ")}</p>` : "");
    previewed = `${flow}|${names.join(",")}`;
    el.bulkSubmit.disabled = false;
    say(el.bulkResult, "");
  } catch (err) {
    say(el.bulkResult, err.message, false);
  }
}

function specLine(r) {
  return `${r.name} : ${r.source} | ${r.sink} ;`;
}

async function confirmMove() {
  const flow = el.bulkFlow.value.trim();
  const names = [...picked].sort();
  if (previewed !== `${flow}|${names.join(",")}`) { say(el.bulkResult, "preview the chains first", false); return; }
  const rows = names.map((n) => ctx.state.rowsByName.get(n)).filter((r) => r && r.source !== null);
  const spec = `// flow: ${flow}\n` + rows.map(specLine).join("\n") + "\n";
  el.bulkSubmit.disabled = true;
  try {
    const res = await api.command("multiconfig", [spec]);
    say(el.bulkResult, `${res.state}: moved ${rows.length} node${rows.length === 1 ? "" : "s"} to ${flow} (command ${res.id})`, res.state === "SUCCEEDED");
    picked.clear();
    stale();
    ctx.refresh();
  } catch (err) {
    say(el.bulkResult, err.message, false);
    el.bulkSubmit.disabled = false;
  }
}

function chip(name, cls = "") {
  const r = ctx.state.rowsByName.get(name);
  const title = r ? `${r.state}${r.physical ? " on " + r.physical : ""}; drag onto another flow to move it` : "";
  return `<span class="chip ${cls}" draggable="true" data-node="${esc(name)}" title="${esc(title)}">${esc(name)}` +
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
        `<span class="arrow">→</span> ${chain.length ? chain.map(esc).join(' <span class="arrow">&rsaquo;</span> ')
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
