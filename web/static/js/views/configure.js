// Configure tab: the form for one logical node (node, flow, source, sink) and a spec file
// for many. Specs are validated as you type (debounced POST /api/validate, which
// stores nothing); an error shows the spec with its position marked.

import { api } from "../api.js";
import { esc, debounce, say } from "../util.js";

const VALIDATE_MS = 250;
const CONTEXT_LINES = 3;

let ctx;
const el = {};
let seq = 0;          // answers of older validations are ignored
let multiSeq = 0;
let watching = null;  // the node configured last: its state is shown under the form

export function init(c) {
  ctx = c;
  for (const id of ["cfg-node", "cfg-flow", "cfg-source", "cfg-sink", "cfg-submit", "cfg-result",
    "cfg-source-check", "cfg-sink-check", "cfg-watch", "cfg-load", "multi-spec", "multi-check",
    "multi-submit", "multi-result"]) {
    el[id] = document.getElementById(id);
  }
  const check = debounce(validate, VALIDATE_MS);
  el["cfg-source"].addEventListener("input", check);
  el["cfg-sink"].addEventListener("input", check);
  document.getElementById("config-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit();
  });
  el["cfg-load"].addEventListener("click", loadCurrent);
  el["multi-spec"].addEventListener("input", debounce(validateMulti, VALIDATE_MS));
  document.getElementById("multi-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitMulti();
  });
}

export function onStatus(state) {
  if (state.tab === "configure") renderWatch();
}

/** Fills the form (from the node details' "Edit config"). */
export function fill(name, flow, source, sink) {
  el["cfg-node"].value = name || "";
  el["cfg-flow"].value = flow || "";
  el["cfg-source"].value = source || "";
  el["cfg-sink"].value = sink || "";
  say(el["cfg-result"], "");
  validate();
}

function loadCurrent() {
  const name = el["cfg-node"].value.trim();
  const r = ctx.state.rowsByName.get(name);
  if (!r || r.config_version === null) {
    say(el["cfg-result"], name ? `${name} has no configuration yet` : "type a node name first", false);
    return;
  }
  fill(r.name, r.flow, r.source, r.sink);
}

// ------------------------------------------------------------------ validation

/** The spec ``text`` with each error's line highlighted, its character marked and a
 * caret under it; a few lines of context around each. */
export function renderSpecErrors(text, errors) {
  const lines = text.split("\n");
  const out = [];
  for (const e of errors) {
    const where = e.line ? `line ${e.line}, column ${e.column}: ` : "";
    let block = `<div class="spec-error" data-line="${esc(e.line)}" data-column="${esc(e.column)}">` +
      `<div class="msg">${esc(where)}${esc(e.message)}</div>`;
    if (e.line && e.line >= 1 && e.line <= lines.length) {
      const first = Math.max(1, e.line - CONTEXT_LINES), last = Math.min(lines.length, e.line + CONTEXT_LINES);
      const width = String(last).length;
      const rows = [];
      for (let n = first; n <= last; n++) {
        const num = `<span class="ln">${String(n).padStart(width)} │ </span>`;
        const src = lines[n - 1];
        if (n !== e.line) {
          rows.push(num + esc(src));
          continue;
        }
        const col = Math.max(1, e.column || 1) - 1;
        const at = src.slice(col, col + 1);
        rows.push(`<span class="err-line">${num}${esc(src.slice(0, col))}` +
          `<mark>${at ? esc(at) : " "}</mark>${esc(src.slice(col + 1))}</span>`);
        rows.push(`<span class="ln">${" ".repeat(width)} │ </span>` +
          `<span class="caret">${" ".repeat(col)}^</span>`);
      }
      block += `<pre>${rows.join("\n")}</pre>`;
    }
    out.push(block + "</div>");
  }
  return out.join("");
}

function showCheck(part, text, errors, canonical) {
  const box = el[`cfg-${part}-check`];
  const area = el[`cfg-${part}`];
  const mine = errors.filter((e) => e.part === part);
  area.classList.toggle("invalid", mine.length > 0);
  area.classList.toggle("valid", !mine.length && !!text.trim() && canonical !== undefined);
  if (mine.length) box.innerHTML = renderSpecErrors(text, mine);
  else if (text.trim() && canonical !== undefined) {
    box.innerHTML = `<span class="ok">✓ valid</span>` +
      (canonical !== text.trim() ? ` <span class="canon">canonical: <code>${esc(canonical)}</code></span>` : "");
  } else box.innerHTML = "";
}

async function validate() {
  const source = el["cfg-source"].value, sink = el["cfg-sink"].value;
  const body = {};
  if (source.trim()) body.source = source;
  if (sink.trim()) body.sink = sink;
  const mine = ++seq;
  if (!body.source && !body.sink) {
    showCheck("source", source, [], undefined);
    showCheck("sink", sink, [], undefined);
    return;
  }
  let res;
  try {
    res = await api.validate(body);
  } catch (err) {
    if (mine !== seq) return;
    // a 422 (too long, ...) names the field in its message
    const part = /sink/.test(err.message) ? "sink" : "source";
    const e = [{ message: err.message, line: null, column: null, part }];
    showCheck(part, part === "sink" ? sink : source, e, undefined);
    return;
  }
  if (mine !== seq) return; // the text changed meanwhile
  showCheck("source", source, res.errors, res.canonical.source);
  showCheck("sink", sink, res.errors, res.canonical.sink);
}

// ------------------------------------------------------------------ submit

async function submit() {
  const name = el["cfg-node"].value.trim();
  const flow = el["cfg-flow"].value.trim();
  const source = el["cfg-source"].value, sink = el["cfg-sink"].value;
  if (!name) { say(el["cfg-result"], "a node name is needed", false); el["cfg-node"].focus(); return; }
  if (!source.trim() || !sink.trim()) { say(el["cfg-result"], "a source and a sink are needed", false); return; }
  el["cfg-submit"].disabled = true;
  say(el["cfg-result"], "configuring…");
  try {
    const body = { source, sink };
    if (flow) body.flow = flow;
    const res = await api.putConfig(name, body);
    say(el["cfg-result"], res.command.message || "configured");
    watching = name;
    renderWatch();
    ctx.refresh();
  } catch (err) {
    if (err.errors.length) {
      showCheck("source", source, err.errors, undefined);
      showCheck("sink", sink, err.errors, undefined);
      say(el["cfg-result"], "the spec has errors (marked above)", false);
    } else {
      say(el["cfg-result"], err.message, false);
    }
  } finally {
    el["cfg-submit"].disabled = false;
  }
}

function renderWatch() {
  if (!watching) return;
  const r = ctx.state.rowsByName.get(watching);
  if (!r) { el["cfg-watch"].innerHTML = ""; return; }
  const at = r.version === r.config_version
    ? `running version ${esc(r.version)}`
    : `configured version ${esc(r.config_version)}, running ${esc(r.version ?? "none")}`;
  el["cfg-watch"].innerHTML = `<b>${esc(r.name)}</b> is <span class="st ${esc(r.state)}">${esc(r.state)}</span> ` +
    `${at}${r.physical ? ` on ${esc(r.physical)}` : " (not mapped to a physical node)"}` +
    (r.last_error ? `<div class="stale">${esc(r.last_error)}</div>` : "");
}

// ------------------------------------------------------------------ many nodes

async function validateMulti() {
  const spec = el["multi-spec"].value;
  const box = el["multi-check"];
  const mine = ++multiSeq;
  if (!spec.trim()) { box.innerHTML = ""; el["multi-spec"].classList.remove("invalid", "valid"); return; }
  let res;
  try {
    res = await api.validate({ spec });
  } catch (err) {
    if (mine === multiSeq) box.innerHTML = renderSpecErrors(spec, [{ message: err.message }]);
    return;
  }
  if (mine !== multiSeq) return;
  el["multi-spec"].classList.toggle("invalid", !res.ok);
  el["multi-spec"].classList.toggle("valid", res.ok);
  if (res.ok) {
    const n = (res.canonical.spec || "").split("\n").filter((l) => l.trim()).length;
    box.innerHTML = `<span class="ok">✓ valid: ${n} node${n === 1 ? "" : "s"}</span>`;
  } else {
    box.innerHTML = renderSpecErrors(spec, res.errors);
  }
}

async function submitMulti() {
  const spec = el["multi-spec"].value;
  if (!spec.trim()) return;
  el["multi-submit"].disabled = true;
  say(el["multi-result"], "configuring…");
  try {
    const res = await api.command("multiconfig", [spec]);
    say(el["multi-result"], res.message, res.state === "SUCCEEDED");
    ctx.refresh();
  } catch (err) {
    if (err.errors.length) el["multi-check"].innerHTML = renderSpecErrors(spec, err.errors);
    say(el["multi-result"], err.errors.length ? "the spec has errors (marked above)" : err.message, false);
  } finally {
    el["multi-submit"].disabled = false;
  }
}
