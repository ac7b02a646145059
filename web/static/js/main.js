// The console's shell: tabs, the polling loop and the shared state the views render.
//
// Everything comes from the REST API. /api/status is polled every POLL_MS whatever the
// tab (the rates and sparklines need every reading); flows, mappings and commands only
// while their tab shows. A view re-renders only when the answer's text changed.

import { api, setupTokenDialog, askToken, token } from "./api.js";
import { Rates } from "./rates.js";
import { fillDatalist, setServerDate } from "./util.js";
import * as nodes from "./views/nodes.js";
import * as specs from "./views/specs.js";
import * as configure from "./views/configure.js";
import * as flows from "./views/flows.js";
import * as mappings from "./views/mappings.js";
import * as commands from "./views/commands.js";
import * as topology from "./views/topology.js";

const POLL_MS = 1500;

const views = { nodes, topology, specs, configure, flows, mappings, commands };

// what each tab needs polled besides the status
const EXTRA = { flows: ["flows"], topology: ["flows"], mappings: ["mappings"], commands: ["commands"], configure: [] };

export const state = {
  tab: "nodes",
  status: null, statusText: "", statusAt: 0,
  flows: null, flowsText: "",
  mappings: null, mappingsText: "",
  commands: null, commandsText: "",
  rates: new Rates(),
  rowsByName: new Map(),
};

// for tests and the render benchmark: when the node table first rendered with data
window.__flume = { firstRenderMs: null, renderMs: null, polls: 0 };

const notice = document.getElementById("notice");
let noticeTimer = null;

/** A message at the top of the page (errors stay until the next message). */
export function announce(text, ok = true) {
  notice.textContent = text;
  notice.className = "notice" + (ok ? "" : " bad");
  notice.hidden = !text;
  clearTimeout(noticeTimer);
  if (ok && text) noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
}

/** Switches to a tab (and the URL's hash), e.g. go("configure"). */
export function go(tab) {
  if (location.hash !== "#" + tab) location.hash = tab;
  else showTab(tab);
}

function showTab(tab) {
  if (!views[tab]) tab = "nodes";
  state.tab = tab;
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.tab === tab);
    a.setAttribute("aria-selected", a.dataset.tab === tab ? "true" : "false");
  }
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.dataset.tab !== tab;
  views[tab].show?.(state);
  refresh();
}

function setConn(text, ok) {
  const el = document.getElementById("conn");
  el.textContent = text;
  el.className = "conn " + (ok ? "ok" : "bad");
}

function updateDatalists() {
  const st = state.status;
  if (!st) return;
  const logical = st.logical.map((r) => r.name);
  const physical = st.physical.map((p) => p.name);
  fillDatalist("dl-nodes", [...new Set([...logical, ...physical])].sort());
  fillDatalist("dl-configured", st.logical.filter((r) => r.config_version !== null).map((r) => r.name));
  fillDatalist("dl-physical", physical);
  const flowNames = new Set(st.logical.map((r) => r.flow).filter(Boolean));
  if (state.flows) Object.keys(state.flows).forEach((f) => flowNames.add(f));
  fillDatalist("dl-flows", [...flowNames].sort());
}

let polling = false;
let again = false;

/** Polls now (coalesced: a poll asked for during one runs right after it). */
export async function refresh() {
  if (polling) { again = true; return; }
  polling = true;
  try {
    do {
      again = false;
      await pollOnce();
    } while (again);
  } finally {
    polling = false;
  }
}

async function pollOnce() {
  window.__flume.polls++;
  // the tab's own listings are asked for at the same time as the status
  const extras = (EXTRA[state.tab] || []).map((what) => [what, api[what]().catch((err) => ({ err }))]);
  try {
    const { data, text, date } = await api.status();
    setServerDate(date);
    state.rates.update(data.logical);
    const changed = text !== state.statusText;
    state.status = data;
    state.statusText = text;
    state.statusAt = Date.now();
    if (changed) {
      state.rowsByName = new Map(data.logical.map((r) => [r.name, r]));
      updateDatalists();
    }
    setConn(`${data.logical.length} logical, ${data.physical.filter((p) => p.alive).length} live physical`, true);
    for (const v of Object.values(views)) v.onStatus?.(state, changed);
  } catch (err) {
    setConn(err.status === 503 ? "ZooKeeper unavailable" : "master unreachable", false);
    return;
  }
  for (const [what, pending] of extras) {
    try {
      const { data, text, err } = await pending;
      if (err) throw err;
      if (text !== state[what + "Text"]) {
        state[what] = data;
        state[what + "Text"] = text;
        if (what === "flows") updateDatalists();
        views[state.tab].onData?.(state, what);
      }
    } catch (err) {
      announce(`cannot read ${what}: ${err.message}`, false);
    }
  }
}

function setupTokenButton() {
  const button = document.getElementById("token-button");
  const show = () => {
    button.classList.toggle("set", !!token.get());
    button.textContent = token.get() ? "Token ✓" : "Token";
  };
  button.addEventListener("click", async () => { await askToken("The access token this master asks for changes (if it has one)."); show(); });
  document.addEventListener("token-changed", show);
  show();
}

async function start() {
  setupTokenDialog();
  setupTokenButton();
  // the command names come from the master's one command table
  api.commandTable().then((table) => fillDatalist("dl-commands", table.map((c) => c.name)))
    .catch(() => {});
  // a click on a node anywhere (the topology) opens its detail on the Nodes tab
  const openNode = (name) => { nodes.select(name); go("nodes"); };
  const ctx = { state, refresh, announce, go, openNode };
  for (const v of Object.values(views)) v.init?.(ctx);
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  showTab(location.hash.slice(1) || "nodes");
  api.health().then(({ data }) => {
    if (data && data.master) document.title = `Flume master ${data.master}`;
  }).catch(() => {});
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
}

start();
