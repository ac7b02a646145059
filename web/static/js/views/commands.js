// Commands tab: the history (newest first) with states and messages, and a form to run
// any command.

import { api } from "../api.js";
import { esc, clock, say } from "../util.js";

let ctx;
const el = {};

export function init(c) {
  ctx = c;
  el.tbody = document.querySelector("#commands-table tbody");
  el.name = document.getElementById("cmd-name");
  el.args = document.getElementById("cmd-args");
  el.result = document.getElementById("cmd-result");
  el.submit = document.getElementById("cmd-submit");
  document.getElementById("cmd-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
}

export function show() { render(); }

export function onData(state, what) {
  if (what === "commands") render();
}

function quote(a) {
  return a === "" || /[\s"]/.test(a) ? JSON.stringify(a) : a;
}

function render() {
  const cmds = ctx.state.commands;
  if (!cmds) { el.tbody.innerHTML = `<tr class="empty"><td colspan="6">loading…</td></tr>`; return; }
  el.tbody.innerHTML = cmds.map((c) => {
    const took = c.finished && c.submitted ? ` title="took ${c.finished - c.submitted} ms"` : "";
    const args = (c.args || []).map(quote).join(" ");
    return `<tr data-id="${esc(c.id)}"><td class="n">${esc(c.id)}</td><td${took}>${clock(c.submitted)}</td>` +
      `<td><span class="st ${esc(c.state)}">${esc(c.state)}</span></td>` +
      `<td class="spec">${esc(c.command)} ${esc(args)}</td>` +
      `<td class="msg${c.state === "FAILED" ? " stale" : ""}${(c.message || "").includes("\n") ? " mono" : ""}">${esc(c.message)}</td>` +
      `<td class="muted by" title="${esc(c.by)}">${esc(c.by)}</td></tr>`;
  }).join("") || `<tr class="empty"><td colspan="6">no command yet</td></tr>`;
}

async function run() {
  const name = el.name.value.trim();
  if (!name) return;
  const args = el.args.value.split("\n").map((a) => a.trim()).filter((a) => a !== "");
  el.submit.disabled = true;
  try {
    const res = await api.command(name, args);
    say(el.result, `${res.state}: ${res.message}`, res.state === "SUCCEEDED");
    ctx.refresh();
  } catch (err) {
    say(el.result, err.message, false);
  } finally {
    el.submit.disabled = false;
  }
}
