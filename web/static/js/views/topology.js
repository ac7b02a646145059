// Topology tab: one flow as a graph. Agents on the left, collectors on the right (nodes
// that are both, a further tier, in between); edges for each agent's collector chain
// from the master's translations (primary solid, failovers dashed, numbered in order)
// and, drawn thick, the collector the agent actually reached (the ``target`` its agent
// sink reports). Labels: events/s and bytes/s (the master's history, GET /api/history),
// backlog (WAL + spool bytes, acks pending) and failovers. Dead nodes (ERROR, LOST, or
// silent for STALE_MS) are red. A click on a node opens its detail on the Nodes tab.
// Beyond GROUP_AT agents in a flow, agents are grouped by host and collector reached.
//
// Below the graph: the flow end to end (GET /api/history/flow/{flow}): events/s in at the
// agents against events/s committed at the collectors, and the gap between them.

import { api } from "../api.js";
import { drawChart, fmtUnit } from "../chart.js";
import { esc, nowMs } from "../util.js";

export const GROUP_AT = 60;
const STALE_MS = 6000;          // nodes report every 2 s: three reports missed
const DEAD = new Set(["ERROR", "LOST", "DECOMMISSIONED"]);
const NODE_W = 210, NODE_H = 50, GAP = 12, COL_GAP = 230;

let ctx;
const el = {};
let latest = { nodes: {} };
let latestAt = 0;
let flowHist = null;
let flowHistAt = 0;

export function init(c) {
  ctx = c;
  el.select = document.getElementById("topo-flow");
  el.graph = document.getElementById("topo-graph");
  el.info = document.getElementById("topo-info");
  el.chart = document.getElementById("topo-e2e");
  el.select.addEventListener("change", () => { flowHistAt = 0; render(); loadFlow(); });
  el.graph.addEventListener("click", (ev) => {
    const g = ev.target.closest("[data-name]");
    if (g && g.dataset.name) ctx.openNode(g.dataset.name);
  });
}

export function show() { render(); }

export function onData(state, what) { if (what === "flows") render(); }

export function onStatus(state) {
  if (state.tab !== "topology") return;
  const now = Date.now();
  if (now - latestAt > 1000) {
    latestAt = now;
    // the master's rates come in their own time: the graph shows at once, then again
    api.historyLatest().then(({ data }) => { latest = data; render(); }).catch(() => {});
  }
  render();
  if (now - flowHistAt > 5000) loadFlow();
}

async function loadFlow() {
  const flow = el.select.value;
  if (!flow) return;
  flowHistAt = Date.now();
  try {
    flowHist = (await api.flowHistory(flow)).data;
    if (flowHist.flow !== el.select.value) return;
    drawChart(el.chart, {
      title: `${flow} end to end`, unit: "ev/s", t: flowHist.t, series: [
        { name: "in at agents", values: flowHist.in, color: "#2b6cb0" },
        { name: "committed at collectors", values: flowHist.committed, color: "#2f855a", dash: "5 3" },
        { name: "gap (in - committed)", values: flowHist.gap, color: "#c05621" },
      ],
    });
  } catch (err) {
    el.chart.textContent = `no history: ${err.message}`;
  }
}

function fillSelect(flows) {
  const names = Object.keys(flows).sort();
  const key = names.join("\u0000");
  if (el.select.dataset.key === key) return;
  const keep = el.select.value;
  el.select.dataset.key = key;
  el.select.innerHTML = names.map((f) => `<option value="${esc(f)}">${esc(f)}</option>`).join("");
  // the flow with the most agents first, unless one was chosen
  if (names.includes(keep)) el.select.value = keep;
  else if (names.length) {
    el.select.value = names.reduce((a, b) =>
      ((flows[b].agents || []).length > (flows[a].agents || []).length ? b : a));
  }
}

/** The address ("host:port") each collector listens on, from its translated source. */
function addresses(rows) {
  const out = new Map();
  for (const r of rows) {
    const m = /^\s*\w+\(\s*(\d+)/.exec(r.tsource || "");
    if (m && r.host) out.set(`${r.host}:${m[1]}`, r.name);
  }
  return out;
}

function targetOf(rep) {
  if (!rep || typeof rep !== "object") return null;
  if (typeof rep.target === "string") return rep.target;
  for (const c of rep.children || []) {
    const t = targetOf(c);
    if (t) return t;
  }
  return null;
}

/** The collectors ("host:port") an agent's sink finds down (its last attempt failed). */
function downOf(rep, out = []) {
  if (!rep || typeof rep !== "object") return out;
  if (Array.isArray(rep.down)) out.push(...rep.down.filter((d) => typeof d === "string"));
  for (const c of rep.children || []) downOf(c, out);
  return out;
}

export function isDead(r, now = nowMs()) {
  if (!r) return true;
  if (DEAD.has(r.state)) return true;
  return r.state !== "UNMAPPED" && r.last_seen && now - r.last_seen > STALE_MS;
}

function metricsOf(name) {
  const h = latest.nodes[name] || {};
  const r = ctx.state.rowsByName.get(name) || {};
  const live = ctx.state.rates.get(name);
  const c = r.counters || {};
  return {
    ein: h.events_in ?? (live ? live.rin : null),
    eout: h.events_out ?? (live ? live.rout : null),
    bin: h.bytes_in, bout: h.bytes_out,
    backlog: (c.wal_bytes || 0) + (c.spool_bytes || 0),
    acks: c.acks_pending || 0,
    oldest: c.oldest_unacked_seconds || 0,
    failovers: c.failovers || 0,
  };
}

function nodeBox(n, x, y) {
  const dead = n.dead;
  const lines = n.lines.map((l, i) =>
    `<text x="${x + 8}" y="${y + 30 + i * 13}" class="nl">${esc(l)}</text>`).join("");
  return `<g class="tnode ${n.kind}${dead ? " dead" : ""}" data-name="${esc(n.name || "")}" ` +
    `data-group="${esc(n.group || "")}" data-state="${esc(n.state || "")}" tabindex="0">` +
    `<title>${esc(n.title || n.name)}</title>` +
    `<rect x="${x}" y="${y}" width="${NODE_W}" height="${NODE_H}" rx="6"/>` +
    `<text x="${x + 8}" y="${y + 16}" class="nn">${esc(n.label)}</text>` +
    `<text x="${x + NODE_W - 8}" y="${y + 16}" class="ns" text-anchor="end">${esc(n.state || "")}</text>` +
    lines + `</g>`;
}

function edge(e, a, b) {
  const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
  const mx = (x1 + x2) / 2;
  const d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 2},${y2}`;
  // near the source, where the curve still runs level: labels of one target do not pile up
  const label = e.label ? `<text class="el" x="${x1 + 6}" y="${y1 - 4}">${esc(e.label)}</text>` : "";
  return `<g class="tedge ${e.kind}" data-from="${esc(e.from)}" data-to="${esc(e.to)}" data-rank="${e.rank ?? ""}">` +
    `<title>${esc(e.title || "")}</title><path d="${d}"/>${label}</g>`;
}

function rateLine(m) {
  return `${fmtUnit(m.ein, "ev/s")} in · ${fmtUnit(m.eout, "ev/s")} out`;
}

/** The graph of one flow: {nodes: [...], edges: [...]} before layout. */
export function buildGraph(flow, info, rows, now = nowMs()) {
  const byName = new Map(rows.map((r) => [r.name, r]));
  const addr = addresses(rows);
  const agents = info.agents || [], collectors = info.collectors || [];
  const both = new Set(agents.filter((a) => collectors.includes(a)));
  const chains = info.chains || {};
  const node = (name, kind) => {
    const r = byName.get(name) || {};
    const m = metricsOf(name);
    const lines = [rateLine(m)];
    const extra = [];
    if (m.bin !== null && m.bin !== undefined) extra.push(fmtUnit(m.bin, "B/s"));
    if (m.backlog) extra.push(`backlog ${fmtUnit(m.backlog, "B")}`);
    if (m.acks) extra.push(`${m.acks} acks pending${m.oldest >= 1 ? `, oldest ${Math.round(m.oldest)} s` : ""}`);
    if (m.failovers) extra.push(`${m.failovers} failovers`);
    const errs = (latest.nodes[name] || {}).error_count;
    if (errs) extra.push(`${errs} recent error${errs === 1 ? "" : "s"}`);
    if (extra.length) lines.push(extra.join(" · "));
    const dead = isDead(byName.get(name), now);
    const silent = r.last_seen && now - r.last_seen > STALE_MS && r.state !== "LOST";
    // a silent node's last counters are not its rates now
    if (silent) lines.splice(0, lines.length, `no report for ${Math.round((now - r.last_seen) / 1000)} s`);
    return { name, kind, label: name, state: silent ? `${r.state}?` : r.state, dead, lines,
      title: `${name}: ${r.state || "?"}${r.physical ? " on " + r.physical : ""}${r.last_error ? "\n" + r.last_error : ""}` };
  };
  const reached = (a) => {
    const r = byName.get(a);
    const t = r && r.components ? targetOf(r.components.sink) : null;
    return t ? (addr.get(t) || t) : null;
  };
  // a collector that the agents trying it find down, and that none of them reaches, is
  // shown dead at once (its own silence takes STALE_MS to show)
  const downBy = new Map(), reachedBy = new Set();
  for (const a of agents) {
    const r = byName.get(a);
    const sink = r && r.components ? r.components.sink : null;
    if (!sink || isDead(r, now)) continue;
    const to = reached(a);
    if (to) reachedBy.add(to);
    for (const d of downOf(sink)) {
      const c = addr.get(d) || d;
      downBy.set(c, (downBy.get(c) || 0) + 1);
    }
  }
  const unreachable = (c) => downBy.has(c) && !reachedBy.has(c);
  const cols = [[], [], []];
  const edges = [];
  for (const c of collectors) {
    const n = node(c, "collector");
    if (unreachable(c) && !DEAD.has(n.state)) {
      n.dead = true;
      n.state = "unreachable";
      const k = downBy.get(c);
      n.lines = [`down for ${k} agent${k === 1 ? "" : "s"}, reached by none`, n.lines[0]];
    }
    cols[both.has(c) ? 1 : 2].push(n);
  }
  const plain = agents.filter((a) => !both.has(a));
  for (const a of both) {
    const n = node(a, "collector agent");
    cols[1].push(n);
  }
  if (plain.length > GROUP_AT) {
    // grouped: by host and the collector reached
    const groups = new Map();
    for (const a of plain) {
      const r = byName.get(a) || {};
      const to = reached(a) || (chains[a] || [])[0] || "none";
      const key = `${r.host || "no host"} → ${to}`;
      let g = groups.get(key);
      if (!g) groups.set(key, g = { key, host: r.host || "no host (not running)", to, members: [], dead: 0, ein: 0, eout: 0, bin: 0, backlog: 0 });
      g.members.push(a);
      if (isDead(r, now)) g.dead++;
      const m = metricsOf(a);
      g.ein += m.ein || 0; g.eout += m.eout || 0; g.bin += m.bin || 0; g.backlog += m.backlog;
    }
    for (const g of [...groups.values()].sort((p, q) => p.key.localeCompare(q.key))) {
      cols[0].push({ name: "", group: g.key, kind: "agent group", label: `${g.members.length} agents on ${g.host}`,
        state: g.dead ? `${g.dead} dead` : "", dead: g.dead > 0,
        lines: [`${fmtUnit(g.ein, "ev/s")} in · ${fmtUnit(g.eout, "ev/s")} out`,
          `${fmtUnit(g.bin, "B/s")}${g.backlog ? ` · backlog ${fmtUnit(g.backlog, "B")}` : ""}`],
        title: g.members.slice(0, 50).join(", ") + (g.members.length > 50 ? "…" : "") });
      edges.push({ from: g.key, to: g.to, kind: "reached", label: fmtUnit(g.eout, "ev/s"),
        title: `${g.members.length} agents → ${g.to}` });
    }
  } else {
    for (const a of plain) cols[0].push(node(a, "agent"));
  }
  const agentNames = plain.length > GROUP_AT ? [...both] : [...plain, ...both];
  for (const a of agentNames) {
    const chain = chains[a] || [];
    const to = reached(a);
    chain.forEach((c, i) => edges.push({ from: a, to: c, kind: i === 0 ? "chain primary" : "chain failover",
      rank: i + 1, title: `${a}: chain #${i + 1} → ${c}` }));
    if (to) {
      const m = metricsOf(a);
      edges.push({ from: a, to, kind: "reached", label: `${fmtUnit(m.eout, "ev/s")}, ${fmtUnit(m.bout, "B/s")}`,
        title: `${a} sends to ${to}` });
    }
  }
  return { cols, edges };
}

function render() {
  const flows = ctx.state.flows, st = ctx.state.status;
  if (!flows || !st) { el.graph.innerHTML = `<p class="muted">loading…</p>`; return; }
  fillSelect(flows);
  const flow = el.select.value;
  const info = flows[flow];
  if (!info) { el.graph.innerHTML = `<p class="muted">no flow yet: configure a logical node</p>`; return; }
  const t0 = performance.now();
  const { cols, edges } = buildGraph(flow, info, st.logical);
  const pos = new Map();
  const used = cols.filter((c) => c.length);
  if (!used.length) {
    el.graph.innerHTML = `<p class="muted">no agent nor collector in ${esc(flow)}: its ` +
      `${(info.others || []).length} node(s) neither use an auto chain nor run a collector source</p>`;
    el.info.textContent = "";
    window.__flume.topologyMs = performance.now() - t0;
    window.__flume.topologyBoxes = 0;
    return;
  }
  const rowsMax = Math.max(1, ...cols.map((c) => c.length));
  const H = rowsMax * (NODE_H + GAP) + 20;
  const W = (used.length - 1) * (NODE_W + COL_GAP) + NODE_W + 20;
  let parts = "";
  used.forEach((col, ci) => {
    const x = 10 + ci * (NODE_W + COL_GAP);
    const off = ((rowsMax - col.length) * (NODE_H + GAP)) / 2;
    col.forEach((n, i) => {
      const y = 10 + off + i * (NODE_H + GAP);
      pos.set(n.name || n.group, { x, y });
      parts += nodeBox(n, x, y);
    });
  });
  let edgeSvg = "";
  // drawn under the nodes: chains first, the edges reached on top
  const order = (e) => (e.kind === "reached" ? 1 : 0);
  for (const e of edges.sort((a, b) => order(a) - order(b))) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (a && b) edgeSvg += edge(e, a, b);
  }
  el.graph.innerHTML = `<svg class="topo" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">` +
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto">` +
    `<path d="M0,0 L10,5 L0,10 z"/></marker></defs>${edgeSvg}${parts}</svg>`;
  const total = cols.reduce((s, c) => s + c.length, 0);
  const dead = cols.flat().filter((n) => n.dead).length;
  el.info.textContent = `${(info.agents || []).length} agents, ${(info.collectors || []).length} collectors ` +
    `(${(info.pool || []).length} running)` + (dead ? `, ${dead} dead` : "") +
    ((info.agents || []).length > GROUP_AT ? ` — agents grouped by host and collector reached (${total} boxes)` : "");
  window.__flume.topologyMs = performance.now() - t0;
  window.__flume.topologyBoxes = total;
}
