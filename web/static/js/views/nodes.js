// Nodes tab: every logical node (state, versions, live rates, sparkline, last error) and
// every physical node; a click on a row opens its details (specs, counters, components).
//
// A thousand rows are built as one string and set with one innerHTML (no per-row DOM
// calls); they are grid rows with content-visibility, so layout and paint only touch the
// rows on screen.

import { api } from "../api.js";
import { sparkline } from "../rates.js";
import { esc, fmtRate, fmtCount, ago, clock, debounce, nowMs } from "../util.js";
import { fill as fillConfigForm } from "./configure.js";
import { drawChart } from "../chart.js";

const STALE_MS = 10_000;
const RERENDER_MS = 5_000; // "last seen" ages move even when nothing else does
const STATE_ORDER = ["ACTIVE", "CONFIGURING", "HELLO", "IDLE", "CLOSING", "ERROR", "LOST",
  "UNMAPPED", "DECOMMISSIONED"];

let ctx;
let selected = null;
let lastRender = 0;
let detailKey = "";
let confirmUnconfig = false;
const el = {};

export function init(c) {
  ctx = c;
  el.rows = document.getElementById("logical-rows");
  el.ptbody = document.querySelector("#physical-table tbody");
  el.filter = document.getElementById("node-filter");
  el.summary = document.getElementById("summary");
  el.count = document.getElementById("logical-count");
  el.pcount = document.getElementById("physical-count");
  el.detail = document.getElementById("node-detail");
  el.filter.addEventListener("input", debounce(() => render(), 120));
  el.rows.addEventListener("click", (ev) => {
    const tr = ev.target.closest(".r[data-name]");
    if (!tr) return;
    selected = selected === tr.dataset.name ? null : tr.dataset.name;
    confirmUnconfig = false;
    render();
  });
  el.detail.addEventListener("click", onDetailClick);
}

export function show() {
  render();
}

/** Opens ``name``'s detail (from another tab: the topology). */
export function select(name) {
  selected = name;
  confirmUnconfig = false;
  historyAt = 0;
  render();
  requestAnimationFrame(() => el.detail.scrollIntoView({ block: "start" }));
}

// ------------------------------------------------------------------ history (the master's)
let historyAt = 0;
let historyFor = null;

async function loadHistory(name) {
  const box = document.getElementById("node-history");
  if (!name) { box.hidden = true; historyFor = null; return; }
  const now = Date.now();
  if (historyFor === name && now - historyAt < 4000) return;
  historyAt = now;
  historyFor = name;
  let h;
  try { h = (await api.history([name])).data; } catch (err) { return; }
  if (selected !== name) return;
  const n = h.nodes[name];
  box.hidden = false;
  box.dataset.node = name;
  if (!n) {
    document.getElementById("node-chart-events").innerHTML = `<p class="muted">no samples yet</p>`;
    return;
  }
  drawChart(document.getElementById("node-chart-events"), {
    title: `${name}: events`, unit: "ev/s", t: h.t, series: [
      { name: "in", values: n.events_in, color: "#2b6cb0" },
      { name: "out", values: n.events_out, color: "#2f855a", dash: "5 3" },
      { name: "errors", values: n.errors, color: "#c53030", dash: "2 2" },
    ],
  });
  drawChart(document.getElementById("node-chart-bytes"), {
    title: `${name}: bytes`, unit: "B/s", t: h.t, series: [
      { name: "in", values: n.bytes_in, color: "#2b6cb0" },
      { name: "out", values: n.bytes_out, color: "#2f855a", dash: "5 3" },
    ],
  });
  const errs = n.recent_errors || [];
  document.getElementById("node-errors").innerHTML = errs.length
    ? `<table class="grid errors"><thead><tr><th>time</th><th>component</th><th>state</th><th>message</th></tr></thead><tbody>` +
      errs.map((e) => `<tr><td>${clock(e.t)}</td><td><code>${esc(e.component || "–")}</code></td>` +
        `<td>${esc(e.state || "")}</td><td class="stale">${esc(e.message)}</td></tr>`).join("") + `</tbody></table>`
    : `<p class="muted">none recorded</p>`;
}

export function onStatus(state, changed) {
  if (state.tab !== "nodes") return;
  if (changed || Date.now() - lastRender > RERENDER_MS) render();
}

function matches(r, q) {
  if (!q) return true;
  return [r.name, r.physical, r.host, r.state, r.flow, r.last_error]
    .some((v) => v && String(v).toLowerCase().includes(q));
}

function versionCell(r) {
  const want = r.config_version, run = r.version;
  if (want === null || want === undefined) return run === null || run === undefined ? "–" : esc(run);
  if (run === want) return esc(want);
  return `<span title="configured version ${esc(want)}, running ${run === null || run === undefined ? "none" : esc(run)}">${esc(want)}*</span>`;
}

function rowHtml(r, now) {
  const rate = ctx.state.rates.get(r.name);
  const seen = r.last_seen;
  const stale = seen && now - seen > STALE_MS && r.state !== "UNMAPPED";
  const name = esc(r.name);
  return `<div class="r${r.name === selected ? " sel" : ""}" role="row" data-name="${name}">` +
    `<span role="cell" title="${name}">${name}</span><span role="cell">${esc(r.physical) || "–"}</span>` +
    `<span role="cell">${esc(r.host) || "–"}</span>` +
    `<span role="cell"><span class="st ${esc(r.state)}">${esc(r.state)}</span></span>` +
    `<span role="cell">${versionCell(r)}</span><span role="cell">${esc(r.flow) || "–"}</span>` +
    `<span role="cell" class="n">${fmtRate(rate && rate.rin)}</span>` +
    `<span role="cell" class="n">${fmtRate(rate && rate.rout)}</span>` +
    `<span role="cell">${rate ? sparkline(rate.samples, rate.t) : ""}</span>` +
    `<span role="cell"${stale ? ' class="stale"' : ""}>${seen ? ago(seen, now) : "–"}</span>` +
    `<span role="cell" class="err" title="${esc(r.last_error)}">${esc(r.last_error)}</span></div>`;
}

function render() {
  const st = ctx.state.status;
  if (!st) return;
  const t0 = performance.now();
  const now = nowMs();     // the master's clock: the nodes' report times are near it
  const q = el.filter.value.trim().toLowerCase();
  const rows = st.logical;
  const parts = [];
  let shown = 0;
  const counts = {};
  let totalIn = 0, totalOut = 0;
  for (const r of rows) {
    counts[r.state] = (counts[r.state] || 0) + 1;
    const rate = ctx.state.rates.get(r.name);
    if (rate) { totalIn += rate.rin || 0; totalOut += rate.rout || 0; }
    if (!matches(r, q)) continue;
    parts.push(rowHtml(r, now));
    shown++;
  }
  el.rows.innerHTML = shown ? parts.join("")
    : `<div class="empty">${rows.length ? "no node matches the filter" : "no logical node yet"}</div>`;
  el.count.textContent = q ? `(${shown} of ${rows.length})` : `(${rows.length})`;
  el.summary.innerHTML = STATE_ORDER.filter((s) => counts[s])
    .map((s) => `<span class="st ${s}">${counts[s]} ${s}</span>`).join("") +
    `<span class="total">in ${fmtRate(totalIn)} ev/s · out ${fmtRate(totalOut)} ev/s</span>`;
  renderPhysical(st, now);
  renderDetail();
  lastRender = Date.now();
  if (rows.length && window.__flume.firstRenderMs === null) {
    void el.rows.offsetHeight; // force the layout, so the figure includes it
    window.__flume.firstRenderMs = performance.now();
    window.__flume.renderMs = performance.now() - t0;
    window.__flume.firstRenderRows = shown;
  }
}

function renderPhysical(st, now) {
  const rates = ctx.state.rates;
  el.pcount.textContent = `(${st.physical.length})`;
  el.ptbody.innerHTML = st.physical.map((p) => {
    let rin = 0, rout = 0, known = false;
    for (const name of p.logical) {
      const r = rates.get(name);
      if (r && r.rin !== null) { rin += r.rin; known = true; }
      if (r && r.rout !== null) { rout += r.rout; known = true; }
    }
    const page = p.alive && p.http_port
      ? `<a href="${p.http_scheme === "https" ? "https" : "http"}://${esc(p.host || "127.0.0.1")}:${esc(p.http_port)}/" target="_blank" rel="noopener">:${esc(p.http_port)}</a>` : "–";
    const stale = p.alive && p.last_seen && now - p.last_seen > STALE_MS;
    return `<tr><td>${esc(p.name)}</td>` +
      `<td><span class="st ${p.alive ? "ACTIVE" : "LOST"}">${p.alive ? "alive" : "gone"}</span></td>` +
      `<td>${esc(p.host) || "–"}</td><td>${esc(p.pid) || "–"}</td><td>${page}</td>` +
      `<td class="n">${known ? fmtRate(rin) : "–"}</td><td class="n">${known ? fmtRate(rout) : "–"}</td>` +
      `<td${stale ? ' class="stale"' : ""}>${ago(p.last_seen, now)}</td>` +
      `<td>${p.logical.map((n) => `<span class="chip">${esc(n)}</span>`).join("") || "–"}</td></tr>`;
  }).join("") || `<tr class="empty"><td colspan="9">no physical node has registered</td></tr>`;
}

// ------------------------------------------------------------------ details

function componentRows(rep, depth, out) {
  if (!rep || typeof rep !== "object") return;
  const m = rep.metrics || {};
  const cells = Object.keys(m).sort().map((k) =>
    `<span class="counter">${esc(k)} <b>${fmtCount(k, m[k])}</b></span>`).join(" ");
  out.push(`<tr><td style="padding-left:${depth * 16}px"><code>${esc(rep.name)}</code></td>` +
    `<td class="muted">${esc(rep.kind)}</td><td>${cells || '<span class="muted">–</span>'}</td></tr>`);
  for (const c of rep.children || []) componentRows(c, depth + 1, out);
}

function renderDetail() {
  const r = selected && ctx.state.rowsByName.get(selected);
  loadHistory(r ? r.name : null);
  if (!r) {
    el.detail.hidden = true;
    detailKey = "";
    return;
  }
  const rate = ctx.state.rates.get(r.name);
  const key = JSON.stringify(r) + (rate ? rate.t : "") + confirmUnconfig;
  if (key === detailKey) return; // unchanged: keep any text the user is selecting
  detailKey = key;
  const entered = r.source !== null ? `${r.source} | ${r.sink}` : null;
  const translated = r.tsource !== null || r.tsink !== null
    ? `${r.tsource ?? r.source} | ${r.tsink ?? r.sink}` : null;
  const counters = r.counters || {};
  const comps = [];
  if (r.components) {
    componentRows(r.components.source, 0, comps);
    componentRows(r.components.sink, 0, comps);
  }
  el.detail.hidden = false;
  el.detail.innerHTML =
    `<h3>${esc(r.name)} <span class="st ${esc(r.state)}">${esc(r.state)}</span>` +
    `<button type="button" class="ghost small close" data-act="close">close</button></h3>` +
    `<dl><dt>physical</dt><dd>${esc(r.physical) || "not mapped"}${r.host ? ` on ${esc(r.host)}` : ""}</dd>` +
    `<dt>flow</dt><dd>${esc(r.flow) || "–"}</dd>` +
    `<dt>version</dt><dd>configured ${esc(r.config_version ?? "–")}, running ${esc(r.version ?? "–")}</dd>` +
    `<dt>entered spec</dt><dd><code>${esc(entered) || "–"}</code></dd>` +
    `<dt>translated</dt><dd><code>${esc(translated) || "(same as entered)"}</code></dd>` +
    `<dt>last seen</dt><dd>${clock(r.last_seen)}</dd>` +
    (r.last_error ? `<dt>last error</dt><dd class="stale">${esc(r.last_error)}</dd>` : "") +
    `<dt>rates</dt><dd>in ${fmtRate(rate && rate.rin)} ev/s, out ${fmtRate(rate && rate.rout)} ev/s ` +
    `<span class="legend">(<span class="in">—</span> in, <span class="out">- -</span> out, up to the last 5 minutes)</span>` +
    `${rate ? sparkline(rate.samples, rate.t, 480, 64) : ""}</dd>` +
    `<dt>counters</dt><dd class="counters">${Object.keys(counters).map((k) =>
      `<span class="counter">${esc(k.replace(/_/g, " "))} <b>${fmtCount(k, counters[k])}</b></span>`).join("") || "–"}</dd>` +
    `</dl>` +
    (comps.length ? `<table class="comp-tree"><tbody>${comps.join("")}</tbody></table>` : "") +
    `<div class="actions">` +
    `<button type="button" data-act="edit">Edit config</button>` +
    (r.config_version !== null ? `<button type="button" class="ghost" data-act="refresh">Restart flow</button>` : "") +
    (r.physical ? `<button type="button" class="ghost" data-act="unmap">Unmap from ${esc(r.physical)}</button>` : "") +
    (r.config_version !== null ? `<button type="button" class="${confirmUnconfig ? "danger" : "ghost"}" data-act="unconfig">${confirmUnconfig ? "Click again to remove the config" : "Remove config"}</button>` : "") +
    `</div>`;
}

async function onDetailClick(ev) {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  const r = ctx.state.rowsByName.get(selected);
  if (!r) return;
  const act = b.dataset.act;
  if (act === "close") { selected = null; render(); return; }
  if (act === "edit") {
    fillConfigForm(r.name, r.flow, r.source || "", r.sink || "");
    ctx.go("configure");
    return;
  }
  if (act === "unconfig" && !confirmUnconfig) { confirmUnconfig = true; renderDetail(); return; }
  try {
    let res;
    if (act === "refresh") res = await api.command("refresh", [r.name]);
    else if (act === "unmap") res = (await api.unmap(r.physical, r.name)).command;
    else if (act === "unconfig") res = (await api.deleteConfig(r.name)).command;
    ctx.announce(res ? `${res.state}: ${res.message}` : "done", !res || res.state === "SUCCEEDED");
  } catch (err) {
    ctx.announce(err.message, false);
  }
  confirmUnconfig = false;
  ctx.refresh();
}
