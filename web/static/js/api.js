// The master's REST API. When a request answers 401 (a write, or a read on a master with a
// read token) the console asks for the access token (a dialog), keeps it in sessionStorage
// and sends it as a Bearer token with every request.

const TOKEN_KEY = "flume.token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.errors = (body && body.errors) || [];
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY)),
};

let asking = null; // one dialog for concurrent requests

/** Shows the token dialog; resolves to the token entered, or null if cancelled. */
export function askToken(why) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-why").textContent = why ||
    "This master needs an access token for changes.";
  input.value = token.get() || "";
  asking = new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener("close", onClose);
      asking = null;
      resolve(value);
    };
    const onClose = () => {
      const t = dialog.returnValue === "ok" ? input.value.trim() : null;
      if (dialog.returnValue === "clear") token.set(null);
      if (t) token.set(t);
      document.dispatchEvent(new CustomEvent("token-changed"));
      done(t);
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export function setupTokenDialog() {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-cancel").addEventListener("click", () => dialog.close("cancel"));
  document.getElementById("token-clear").addEventListener("click", () => dialog.close("clear"));
}

async function send(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  const r = await fetch(path, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text.slice(0, 500) }; }
  return { r, data, text };
}

/** ``send``, asking for the token (and retrying with it) while the answer is 401. */
async function sendAuthorized(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const answer = await send(method, path, body);
    if (answer.r.status !== 401 || attempt >= 3) return answer;
    const why = attempt > 0 || token.get()
      ? "The master refused this token. Enter the right one."
      : method === "GET" ? "This master needs an access token to show its nodes."
        : "This master needs an access token for changes.";
    if (!(await askToken(why))) return answer;
  }
}

/** A JSON request; throws ApiError for 4xx/5xx. A 401 asks for the token and retries. */
export async function request(method, path, body) {
  const { r, data } = await sendAuthorized(method, path, body);
  if (r.ok) return data;
  throw new ApiError(r.status, data);
}

/** A GET answering ``{data, text}``: the raw text lets callers skip unchanged data. */
export async function getRaw(path) {
  const { r, data, text } = await sendAuthorized("GET", path);
  if (!r.ok) throw new ApiError(r.status, data);
  return { data, text, date: r.headers.get("Date") };
}

export const api = {
  status: () => getRaw("/api/status"),
  flows: () => getRaw("/api/flows"),
  mappings: () => getRaw("/api/mappings"),
  commands: (limit = 100) => getRaw(`/api/commands?limit=${limit}`),
  health: () => getRaw("/api/health"),
  commandTable: () => request("GET", "/api/command-table"),
  config: (name) => request("GET", `/api/configs/${encodeURIComponent(name)}`),
  putConfig: (name, body) => request("PUT", `/api/configs/${encodeURIComponent(name)}`, body),
  deleteConfig: (name) => request("DELETE", `/api/configs/${encodeURIComponent(name)}`),
  map: (physical, logical) => request("POST", "/api/mappings", { physical, logical }),
  unmap: (physical, logical) => request("DELETE",
    `/api/mappings/${encodeURIComponent(physical)}/${encodeURIComponent(logical)}`),
  command: (command, args = []) => request("POST", "/api/commands", { command, args }),
  validate: (body) => request("POST", "/api/validate", body),
  historyLatest: () => getRaw("/api/history"),
  history: (names) => getRaw("/api/history?" + names.map((n) => "node=" + encodeURIComponent(n)).join("&")),
  flowHistory: (flow) => getRaw(`/api/history/flow/${encodeURIComponent(flow)}`),
  preview: (flow, nodes) => request("POST", `/api/flows/${encodeURIComponent(flow)}/preview`, { nodes }),
};
