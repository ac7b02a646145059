"""``flumectl``: drive Flume masters from the command line, over their REST API.

Exit status: 0 success; 1 the command failed, or the master is unreachable or refused;
2 usage error or spec error (the spec is printed with a caret under each problem).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

from flume_og.master.command_table import COMMANDS, MasterCommand
from flume_og.node.http_server import TlsError, client_context, tls_problem

DEFAULT_MASTER = "http://127.0.0.1:35871"
POLL_SECONDS = 0.25
CELL = 70                     # widest table cell before it is shortened

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

class Failure(Exception):
    """Ends flumectl with a message and an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


# ---------------------------------------------------------------- the master

class Master:
    """A thin client of one master's REST API; errors become :class:`Failure`."""

    def __init__(self, url: str, token: str | None, timeout: float, tls=None):
        """``tls``: the client TLS context for an https URL (default: the system's
        CAs)."""
        self.url = url.rstrip("/")
        headers = {"User-Agent": "flumectl"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                 verify=tls if tls is not None else True)

    def request(self, method: str, path: str, raw: bool = False, **kw):
        """The answer's JSON (``raw``: its text); Failure with a sentence otherwise."""
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise Failure(f"the master at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            problem = tls_problem(exc, self.url)
            if problem is not None:
                raise Failure(problem) from None
            if isinstance(exc, httpx.RemoteProtocolError) and self.url.startswith("https:"):
                # TLS 1.3: a missing client certificate shows as a closed connection
                raise Failure(f"the master at {self.url} closed the connection without an "
                              f"answer: if it asks for client certificates "
                              f"(--tls-client-ca), give yours with --cert FILE --key FILE")
            raise Failure(f"cannot reach the master at {self.url}: "
                          f"{exc.__class__.__name__} {exc}".rstrip(": ")) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code < 400:
            return r.text if raw else body
        message = body.get("message") if isinstance(body, dict) else None
        message = message or r.text.strip()[:500] or r.reason_phrase
        if r.status_code == 401:
            what = "to read" if method == "GET" else "for writes"
            raise Failure(f"the master refused: it needs an access token {what} "
                          f"(--token-file FILE or FLUME_TOKEN)", EXIT_FAILED, body)
        if r.status_code == 400 and isinstance(body, dict) and "errors" in body:
            raise Failure(message, EXIT_USAGE, body)
        if r.status_code in (400, 422):
            raise Failure(message, EXIT_USAGE, body)
        if r.status_code == 503:
            raise Failure(f"the master cannot reach ZooKeeper: {message}", EXIT_FAILED, body)
        raise Failure(message, EXIT_FAILED, body)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def command(self, command: str, args: list[str]) -> dict:
        return self.request("POST", "/api/commands", json={"command": command,
                                                           "args": args})


# ---------------------------------------------------------------- output

def _cell(value, width: int | None = CELL) -> str:
    if value is None or value == "":
        return "-"
    text = str(value).replace("\n", " ")
    return text if width is None or len(text) <= width else text[:width - 3] + "..."


def table(headers: list[str], rows: list[list], width: int | None = CELL) -> str:
    """Aligned columns, each cell cut to ``width`` characters (None: whole); the last
    column is not padded."""
    cells = [[_cell(c, width) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers] + cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  "
                     + row[-1] if len(row) > 1 else row[0])
    return "\n".join(line.rstrip() for line in lines)


def _version(row: dict) -> str:
    """The configured version, starred while the node does not run it (yet)."""
    running, wanted = row.get("version"), row.get("config_version")
    if wanted is None:
        return "-" if running is None else str(running)
    return str(wanted) if running == wanted else f"{wanted}*"


def _progress(row: dict | None) -> str:
    if not row:
        return "unknown"
    running, wanted = row.get("version"), row.get("config_version")
    label = f"{row.get('state')}"
    if running is not None:
        label += f" version {running}"
    if wanted is not None and running != wanted:
        label += f" (configured: version {wanted})"
    if row.get("state") == "ERROR" and row.get("last_error"):
        label += f": {row['last_error']}"
    return label


def _backlog(counters: dict) -> str:
    """What waits on the node's disk to be sent or acknowledged: WAL and spool bytes, and
    the E2E groups not acknowledged yet ("-" when none)."""
    parts = []
    nbytes = sum(int(counters.get(k) or 0) for k in ("wal_bytes", "spool_bytes"))
    if nbytes:
        parts.append(_size(nbytes))
    if counters.get("acks_pending"):
        parts.append(f"{int(counters['acks_pending'])} acks")
    return ", ".join(parts) or "-"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def show_status(st: dict) -> str:
    rows = []
    for r in st.get("logical", []):
        c = r.get("counters") or {}
        error = r.get("last_error")
        if r.get("retry_at"):
            left = max(0, round(r["retry_at"] / 1000 - time.time()))
            error = f"{error or 'failed'} (opened again in {left} s, retry {r.get('retries')})"
        rows.append([r["name"], r.get("physical"), r.get("host"), r.get("state"),
                     _version(r), r.get("flow"),
                     c.get("events_in", r.get("events_in")), c.get("events_out"),
                     _backlog(c), error])
    out = table(["LOGICAL NODE", "PHYSICAL", "HOST", "STATE", "VERSION", "FLOW",
                 "EVENTS IN", "EVENTS OUT", "BACKLOG", "LAST ERROR"], rows)
    phys = [[p["name"], "yes" if p.get("alive") else "NO", p.get("host"),
             ", ".join(p.get("logical") or [])] for p in st.get("physical", [])]
    if phys:
        out += "\n\n" + table(["PHYSICAL NODE", "ALIVE", "HOST", "LOGICAL NODES"], phys)
    return out


MAIN_COUNTERS = ("events_in", "bytes_in", "events_out", "bytes_out", "errors")


def show_metrics(st: dict) -> str:
    """Every logical node's counters, as its physical node last reported them (``-`` when
    no node runs it); counters beyond the main five follow as ``name=value``."""
    rows = []
    for r in st.get("logical", []):
        counters = r.get("counters") or {}
        main = [counters.get(k, r.get(k)) for k in MAIN_COUNTERS]
        other = ", ".join(f"{k}={v}" for k, v in sorted(counters.items())
                          if k not in MAIN_COUNTERS)
        rows.append([r["name"], r.get("physical"), r.get("state"), *main, other])
    return table(["LOGICAL NODE", "PHYSICAL", "STATE", "EVENTS IN", "BYTES IN",
                  "EVENTS OUT", "BYTES OUT", "ERRORS", "OTHER COUNTERS"], rows)


def show_configs(configs: list[dict]) -> str:
    rows = []
    for c in configs:
        translated = "-"
        if c.get("tsource") is not None or c.get("tsink") is not None:
            translated = f"{c.get('tsource') or c['source']} | {c.get('tsink') or c['sink']}"
        rows.append([c["name"], c.get("flow"), c.get("version"), c.get("source"),
                     c.get("sink"), translated])
    return table(["NAME", "FLOW", "VERSION", "SOURCE", "SINK", "TRANSLATED"], rows,
                 width=None)


def show_mappings(mappings: dict) -> str:
    return table(["PHYSICAL NODE", "LOGICAL NODES"],
                 [[p, ", ".join(names)] for p, names in sorted(mappings.items())])


def show_flows(flows: dict) -> str:
    rows = [[f, ", ".join(i.get("collectors", [])), ", ".join(i.get("pool", [])),
             ", ".join(i.get("agents", [])), ", ".join(i.get("others", []))]
            for f, i in sorted(flows.items())]
    out = table(["FLOW", "COLLECTORS", "RUNNING", "AGENTS", "OTHERS"], rows)
    chains = [[f, agent, " ? ".join(chain) or "(no collector)"]
              for f, i in sorted(flows.items())
              for agent, chain in sorted((i.get("chains") or {}).items())]
    if chains:
        out += "\n\n" + table(["FLOW", "AGENT", "CHAIN (primary first)"], chains)
    return out


def show_commands(commands: list[dict]) -> str:
    rows = []
    for c in commands:
        when = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.localtime((c.get("submitted") or 0) / 1000))
        args = " ".join(json.dumps(a) if (not a or any(ch.isspace() for ch in a)) else a
                        for a in c.get("args", []))
        rows.append([c["id"], when, c.get("state"), f"{c.get('command')} {args}".strip(),
                     c.get("message")])
    return table(["ID", "SUBMITTED", "STATE", "COMMAND", "MESSAGE"], rows)


# ---------------------------------------------------------------- waiting

def parse_timeout(text: str) -> float | None:
    """Seconds from ``500ms``, ``30s``, ``2m``, ``1h`` or a bare number of seconds; 0 means
    forever (None). (OG's waitForNodes* took milliseconds: ``3`` waited 3 ms, never what
    anyone meant.)"""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            value = float(t[:-2]) / 1000
        elif t.endswith("s"):
            value = float(t[:-1])
        elif t.endswith("m"):
            value = float(t[:-1]) * 60
        elif t.endswith("h"):
            value = float(t[:-1]) * 3600
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad timeout {text!r}: seconds, or 500ms, 30s, 2m, 1h") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a timeout cannot be negative")
    return None if value == 0 else value


def wait_for(master: Master, nodes: list[str], want: str, timeout: float | None,
             as_json: bool) -> int:
    """Poll the status until every node is in state ``want`` at its configured version."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown: dict[str, str] = {}
    rows: dict[str, dict] = {}
    unreachable = None
    while True:
        try:
            st = master.get("/api/status")
            unreachable = None
            rows = {r["name"]: r for r in st.get("logical", [])}
        except Failure as exc:  # a master restarting: keep trying until the deadline
            if unreachable is None and not as_json:
                print(f"flumectl: {exc} (still waiting)", file=sys.stderr)
            unreachable = str(exc)
        if unreachable is None:
            unknown = [n for n in nodes if n not in rows]
            if unknown:
                raise Failure(f"no logical node named {', '.join(unknown)} (known: "
                              f"{', '.join(sorted(rows)) or 'none'})")
        done = []
        for n in nodes:
            r = rows.get(n)
            ok = bool(r) and r.get("state") == want and (
                r.get("config_version") is None or r.get("version") == r.get("config_version"))
            done.append(ok)
            label = _progress(r)
            if shown.get(n) != label and not as_json:
                print(f"{n}: {label}", flush=True)
            shown[n] = label
        if all(done) and unreachable is None:
            if as_json:
                print(json.dumps({n: rows.get(n) for n in nodes}, indent=2))
            else:
                print(f"all {len(nodes)} node(s) {want}")
            return EXIT_OK
        if deadline is not None and time.monotonic() >= deadline:
            late = [n for n, ok in zip(nodes, done) if not ok]
            what = ", ".join(f"{n} is {shown.get(n)}" for n in late) or unreachable
            raise Failure(f"timed out after {timeout:g} s waiting for {want}: {what}")
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------- the parser

def cli_aliases(command: MasterCommand) -> list[str]:
    """The table's aliases, and ``unmap-all`` and ``unmapall`` for ``unmapAll``."""
    out = list(command.aliases)
    if command.name != command.name.lower():
        kebab = "".join(f"-{c.lower()}" if c.isupper() else c for c in command.name)
        out += [kebab, command.name.lower()]
    return out


def add_command_parser(sub, command: MasterCommand) -> None:
    """A subcommand for one of the master's commands: one positional argument each, or,
    for a command with optional arguments, all of them in ``args`` (their number checked
    in :func:`command_args`)."""
    text = command.help
    fewest, most = command.arity
    p = sub.add_parser(command.name, aliases=cli_aliases(command), help=text,
                       usage=(f"flumectl {command.name} [-h] {' '.join(command.args)}"
                              if fewest < most else None),
                       description=text[0].upper() + text[1:] + ".")
    p.set_defaults(command=command.name, subparser=p, master_command=command)
    if fewest < most:
        shape = " ".join(a if fewest else a.strip("[]") for a in command.args)
        p.add_argument("args", nargs="+" if fewest else "*", metavar=shape,
                       help=command.args_help)
    else:
        for a in command.args:
            p.add_argument(a.lower(), metavar=a, help=command.args_help)


def add_global_options(p: argparse.ArgumentParser, anywhere: bool = False) -> None:
    """The options every command takes. ``anywhere``: for a command's own parser, so
    that ``flumectl status --json`` works as ``flumectl --json status`` does (defaults
    suppressed there: the main parser's stand)."""
    def add(*names, **kw):
        if anywhere:
            kw["default"] = argparse.SUPPRESS
        p.add_argument(*names, **kw)

    add("--master", metavar="URL", default=os.environ.get("FLUME_MASTER") or DEFAULT_MASTER,
        help=f"the master's URL (default: $FLUME_MASTER, else {DEFAULT_MASTER})")
    add("--token-file", metavar="FILE",
        help="file holding the master's access token (default: the token in "
             "$FLUME_TOKEN); needed for writes when the master has one, and for reads "
             "when it has a read token (either token reads)")
    add("--ca", metavar="FILE", default=os.environ.get("FLUME_CA"),
        help="PEM CA bundle to check an https master's certificate against (default: "
             "$FLUME_CA, else the system's CAs)")
    add("--cert", metavar="FILE", default=os.environ.get("FLUME_CERT"),
        help="PEM client certificate for a master started with --tls-client-ca "
             "(default: $FLUME_CERT)")
    add("--key", metavar="FILE", default=os.environ.get("FLUME_KEY"),
        help="PEM private key of --cert (default: $FLUME_KEY, else in --cert)")
    add("--json", action="store_true",
        help="print the master's JSON answers instead of tables")
    add("--timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long to wait for each answer (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flumectl",
        description="Drive Flume masters: configure logical nodes, map them to physical "
                    "nodes, watch their status. Every command goes to one master's REST "
                    "API; any master of the ensemble will do.",
        epilog="examples:\n"
               "  flumectl config node1 'tail(\"/var/log/app.log\")' "
               "'agentE2ESink(\"collector1\")'\n"
               "  flumectl multiconfig @cluster.flume\n"
               "  flumectl map host1 node1\n"
               "  flumectl wait-active 30s node1\n"
               "  flumectl status\n\n"
               "exit status: 0 success, 1 command failed or master unreachable, "
               "2 usage or spec error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(parser)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    for command in COMMANDS:
        add_command_parser(sub, command)

    p = sub.add_parser("status", help="every logical node's state, version and last "
                                      "error, and every physical node",
                       description="Every logical node: its physical node, host, state "
                                   "(LOST when its physical node is gone, UNMAPPED when "
                                   "no physical node runs it), configured version "
                                   "(starred while the node does not run it yet), flow "
                                   "and last error; then every physical node.")
    p.add_argument("--metrics", action="store_true",
                   help="print every logical node's counters (events and bytes in and "
                        "out, errors, and whatever its components count) instead")
    p.add_argument("names", nargs="*", metavar="NODE",
                   help="only these logical or physical nodes (default: all)")
    p.set_defaults(command="status")
    p = sub.add_parser("configs", help="every configuration, entered and translated",
                       description="Every configuration: the spec as entered and as the "
                                   "masters translated it, whole (no column is cut).")
    p.add_argument("names", nargs="*", metavar="NODE",
                   help="only these logical nodes (default: all)")
    p.set_defaults(command="configs")
    p = sub.add_parser("export", help="every configuration as one spec file (config as "
                                      "code: apply takes it back)",
                       description="Every logical node's configuration as one spec file, "
                                   "flows as '// flow:' lines, passwords hidden as in "
                                   "every listing (put back from the stored configs when "
                                   "applied). 'flumectl apply -f' of it changes nothing.")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (default: stdout)")
    p.set_defaults(command="export")
    p = sub.add_parser("apply", help="configure the logical nodes of a local spec file, "
                                     "showing what changes",
                       description="Show what the spec file changes (+ added, ~ changed, "
                                   "with the old and new spec; unchanged ones counted), "
                                   "then configure them in one multiconfig. Logical nodes "
                                   "not in the file are left as they are.")
    p.add_argument("-f", "--file", required=True, metavar="FILE",
                   help="the spec file ('-': standard input)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would change and change nothing")
    p.set_defaults(command="apply")
    p = sub.add_parser("mappings", help="which logical nodes each physical node runs")
    p.set_defaults(command="mappings")
    p = sub.add_parser("flows", help="flows: collectors, agents and their chains")
    p.set_defaults(command="flows")
    p = sub.add_parser("commands", help="the command history, newest first")
    p.add_argument("--limit", type=int, default=20, help="how many (default %(default)s)")
    p.set_defaults(command="commands")
    for name, alias, want in (("wait-active", "waitForNodesActive", "ACTIVE"),
                              ("wait-done", "waitForNodesDone", "IDLE")):
        what = ("ACTIVE (running their flow)" if want == "ACTIVE" else
                "done (IDLE: their source is exhausted and everything was written)")
        p = sub.add_parser(name, aliases=[alias],
                           help=f"wait until nodes are {what.split(' (')[0]}",
                           description=f"Wait until every NODE is {what} at its "
                                       f"configured version, printing each change. Exit "
                                       f"1 on timeout.")
        p.add_argument("wait_timeout", metavar="TIMEOUT", type=parse_timeout,
                       help="seconds, or 500ms, 30s, 2m, 1h; 0 waits forever")
        p.add_argument("nodes", nargs="+", metavar="NODE")
        p.set_defaults(command=name, want=want)
    for command_parser in {id(c): c for c in sub.choices.values()}.values():
        add_global_options(command_parser, anywhere=True)
    return parser


def only(body, command: str, names: set[str]):
    """``body`` of ``status`` or ``configs`` with only the rows of ``names`` (logical
    nodes, or for ``status`` physical nodes too); Failure when a name matches nothing."""
    if command == "configs":
        rows = [c for c in body if c["name"] in names]
        seen = {c["name"] for c in rows}
    else:
        phys = [p for p in body.get("physical", []) if p["name"] in names]
        keep = names | {n for p in phys for n in (p.get("logical") or [])}
        logical = [r for r in body.get("logical", []) if r["name"] in keep]
        seen = {r["name"] for r in logical} | {p["name"] for p in phys}
        rows = {**body, "logical": logical,
                "physical": [p for p in body.get("physical", [])
                             if p["name"] in names
                             or p["name"] in {r.get("physical") for r in logical}]}
    missing = sorted(names - seen)
    if missing:
        raise Failure(f"no node named {', '.join(missing)}")
    return rows


MAX_SPEC_FILE = 4 * 1024 * 1024   # what `apply` sends: the master's default body bound


def export(master: Master, output: str | None) -> int:
    text = master.request("GET", "/api/export", raw=True)
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(output)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Failure(f"cannot write {output}: {exc.strerror}", EXIT_FAILED) from None
    count = sum(1 for line in text.splitlines() if line and not line.startswith("//"))
    print(f"exported {count} configuration(s) to {output}")
    return EXIT_OK


def _spec_line(name: str, spec: dict) -> str:
    return f"{name} : {spec['source']} | {spec['sink']} ;  (flow {spec['flow']})"


def apply(master: Master, file: str, dry_run: bool, as_json: bool) -> int:
    """Show the plan of ``file``, then (unless ``dry_run`` or nothing changes) run one
    ``multiconfig`` of it."""
    try:
        if file == "-":
            text = sys.stdin.read(MAX_SPEC_FILE + 1)
        else:
            with open(file, encoding="utf-8") as f:
                text = f.read(MAX_SPEC_FILE + 1)
    except (OSError, UnicodeError) as exc:
        raise Failure(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}",
                      EXIT_USAGE) from None
    if len(text) > MAX_SPEC_FILE:
        raise Failure(f"{file} is larger than {MAX_SPEC_FILE} bytes", EXIT_USAGE)
    plan = master.request("POST", "/api/plan", json={"spec": text})
    changes = [p for p in plan if p["action"] != "same"]
    if as_json:
        print(json.dumps(plan, indent=2))
    else:
        for p in changes:
            if p["action"] == "add":
                print(f"+ {_spec_line(p['name'], p['new'])}")
            else:
                print(f"~ {p['name']}\n    - {_spec_line(p['name'], p['old'])}\n"
                      f"    + {_spec_line(p['name'], p['new'])}")
        same = len(plan) - len(changes)
        print(f"{len(changes)} to change, {same} unchanged"
              + (" (dry run: nothing changed)" if dry_run and changes else ""))
    if dry_run or not changes:
        return EXIT_OK
    cmd = master.command("multiconfig", [text])
    if cmd.get("state") != "SUCCEEDED":
        raise Failure(f"multiconfig failed: {cmd.get('message')}", EXIT_FAILED)
    if not as_json:
        print(cmd.get("message") or "done")
    return EXIT_OK


def read_token(path: str | None) -> str | None:
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise Failure(f"cannot read token file {path}: {exc.strerror}",
                          EXIT_USAGE) from None
    return os.environ.get("FLUME_TOKEN", "").strip() or None


def command_args(ns) -> list[str]:
    command: MasterCommand = ns.master_command
    fewest, most = command.arity
    if fewest < most:
        if not fewest <= len(ns.args) <= most:
            ns.subparser.error(f"{command.name} takes {' '.join(command.args)} ({fewest} or "
                               f"{most} arguments, {len(ns.args)} given); quote each "
                               f"argument that holds spaces")
        return list(ns.args)
    args = [getattr(ns, a.lower()) for a in command.args]
    if command.name == "multiconfig" and args[0].startswith("@"):
        source = args[0][1:]
        try:
            args[0] = sys.stdin.read() if source == "-" else Path(source).read_text()
        except (OSError, UnicodeError) as exc:
            raise Failure(f"cannot read {source}: "
                          f"{getattr(exc, 'strerror', None) or exc}", EXIT_USAGE) from None
    return args


def run(ns, parser) -> int:
    try:
        tls = (client_context(ns.ca, ns.cert, ns.key)
               if ns.ca or ns.cert else None)
    except TlsError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    master = Master(ns.master, read_token(ns.token_file), ns.timeout, tls)
    name = ns.command
    if getattr(ns, "master_command", None) is not None:
        cmd = master.command(name, command_args(ns))
        if ns.json:
            print(json.dumps(cmd, indent=2))
        if cmd.get("state") != "SUCCEEDED":
            raise Failure(f"{cmd.get('command')} failed: {cmd.get('message')}",
                          EXIT_FAILED, {} if ns.json else None)
        if not ns.json:
            print(cmd.get("message") or "done")
        return EXIT_OK
    if name in ("wait-active", "wait-done"):
        return wait_for(master, ns.nodes, ns.want, ns.wait_timeout, ns.json)
    if name == "export":
        return export(master, ns.output)
    if name == "apply":
        return apply(master, ns.file, ns.dry_run, ns.json)
    path, show = {"status": ("/api/status", show_status),
                  "configs": ("/api/configs", show_configs),
                  "mappings": ("/api/mappings", show_mappings),
                  "flows": ("/api/flows", show_flows),
                  "commands": ("/api/commands", show_commands)}[name]
    params = {"limit": max(1, min(ns.limit, 1000))} if name == "commands" else None
    body = master.get(path, params=params)
    names = getattr(ns, "names", None)
    if names:
        body = only(body, name, set(names))
    if name == "status" and ns.metrics:
        show = show_metrics
    print(json.dumps(body, indent=2) if ns.json else show(body))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return run(ns, parser)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Failure as exc:
        if ns.json and exc.body:
            print(json.dumps(exc.body, indent=2))
        print(f"flumectl: {exc}" if exc.status != EXIT_USAGE or not exc.body
              or "errors" not in exc.body else str(exc), file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
