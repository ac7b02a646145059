"""``flume``: run a node, check a spec, list components, dump a source.

Exit status: 0 success, 1 a flow failed, 2 usage or spec error.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import socket
import sys
import time
from pathlib import Path

from flume_og.zk.errors import CoordinationError

from . import config_file, logs, tls
from .tls import CLIENT_CERT_POLICIES, PLAINTEXT, Transport
from .errors import FlumeError, SpecError
from .component import NodeShared
from .logical_node import LogicalNode, State
from .shutdown import StopSignals
from .components import all_components
from .builder import validate_parts
from .spec import Definition, format_spec, parse, parse_source

log = logging.getLogger("flume")

DEFAULT_HTTP_PORT = 35862

EPILOG = """examples:
  flume node --one-shot -n web1 -c 'web1: text("/var/log/syslog") | console'
  flume node --one-shot -c @flows.flume
  flume check -c 'a: tail("/var/log/app.log") | { batch(100) => gzip => text("/srv/out") }'
  flume dump 'asciisynth(5)'
  flume components --kind decorator
"""


def default_data_dir() -> Path:
    """Where a node keeps offsets and logs unless told otherwise: $FLUME_DATA_DIR, else the
    per-user data directory (never /tmp)."""
    env = os.environ.get("FLUME_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_data_dir("flume", appauthor=False))


def read_spec_arg(value: str) -> str:
    """``-c`` takes the spec itself or ``@file``."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read spec file {path}: {exc.strerror}") from None
    return value


class UsageError(FlumeError):
    pass


def load_checked_spec(text: str):
    """Parse and validate a whole spec; raises SpecError (every problem listed)."""
    spec = parse(text)
    errors = []
    for d in spec.definitions:
        try:
            validate_parts(d.source, d.sink, text)
        except SpecError as exc:
            errors.extend(getattr(exc, "errors", [exc]))
    if errors:
        from .errors import SpecErrors
        raise SpecErrors(errors)
    names = [d.name for d in spec.definitions]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        d = next(d for d in spec.definitions if d.name in dup)
        raise SpecError(f"logical node '{d.name}' is defined twice", *d.pos, text)
    return spec


# ---------------------------------------------------------------- commands

def cmd_check(args) -> int:
    text = read_spec_arg(args.config)
    spec = load_checked_spec(text)
    sys.stdout.write(format_spec(spec))
    return 0


def cmd_components(args) -> int:
    if args.markdown:
        from .reference import markdown
        sys.stdout.write(markdown())
        return 0
    kinds = [args.kind] if args.kind else ["source", "sink", "decorator"]
    for kind in kinds:
        infos = all_components(kind)
        print(f"{kind}s ({len(infos)}):")
        for info in infos:
            alias = f"  (also: {', '.join(info.aliases)})" if info.aliases else ""
            print(f"  {info.usage()}{alias}")
            summary = info.summary()
            if summary:
                print(f"      {summary}")
        print()
    return 0


def run_one_shot(definitions: list[Definition], data_dir: Path | None, physical: str,
                 allow_exec: bool, http_port: int | None = None,
                 http_bind: str = "127.0.0.1", http_tls=None,
                 http_insecure: bool = False, transport: Transport = PLAINTEXT,
                 storage=None) -> int:
    """Run the flows until every source is exhausted or a signal asks to stop; with
    ``http_port``, serve the status page meanwhile. ``storage``: the object stores'
    settings (node.object_store.StorageConfig)."""
    nodes = []
    server = None
    if http_port is not None:
        server = _one_shot_status_server(nodes, physical, http_port, http_bind, http_tls,
                                         http_insecure)
    signals = StopSignals()
    try:
        for d in definitions:
            if signals.requested:
                break
            node = LogicalNode(d.name, data_dir, physical_name=physical, allow_exec=allow_exec,
                               transport=transport, shared=NodeShared(storage=storage))
            node.configure(d.source, d.sink)
            nodes.append(node)
        while not signals.wait(0.1):
            if all(n.state in (State.IDLE, State.ERROR) for n in nodes):
                break
        if signals.requested:
            log.info("stopping on signal %s", signals.signal_name)
        for n in nodes:
            n.stop()
    finally:
        for n in nodes:
            n.stop()
        signals.restore()
        if server is not None:
            server.stop()
    failed = [n for n in nodes if n.state is State.ERROR]
    for n in failed:
        print(f"flume: logical node {n.name} failed: {n.last_error}", file=sys.stderr)
    return 1 if failed else 0


def _one_shot_status_server(nodes: list[LogicalNode], physical: str, port: int, bind: str,
                            tls=None, insecure: bool = False):
    from .metrics import summarize
    from .status_server import StatusServer
    started = int(time.time() * 1000)

    def status() -> dict:
        logical = {}
        for n in list(nodes):
            st = n.status()
            st["counters"] = summarize(st)
            logical[n.name] = st
        return {"physical": physical, "host": socket.gethostname(), "pid": os.getpid(),
                "started": started, "logical": logical, "updated": int(time.time() * 1000)}
    try:
        return StatusServer(status, bind, port, tls=tls, insecure=insecure).start()
    except OSError as exc:
        log.warning("no status page: cannot listen on %s:%s: %s", bind, port,
                    exc.strerror or exc)
        return None


def node_transport(args) -> Transport:
    """The node's event transport (node/tls.py) from its flags; UsageError with the
    sentence of what is wrong."""
    try:
        transport = tls.from_args(args)
    except tls.TlsError as exc:
        raise UsageError(str(exc)) from None
    log.info("%s", tls.describe(transport))
    if transport.plaintext and not transport.tls:
        log.warning("--plaintext-events: event sources listen beyond loopback without TLS; "
                    "anyone reaching their ports can send events (trusted networks only)")
    return transport


def cmd_node(args) -> int:
    from .http_server import TlsError, tls_context
    from .status_server import UnsafeBindError, check_bind
    if bool(args.http_tls_cert) != bool(args.http_tls_key):
        raise UsageError("--http-tls-cert and --http-tls-key go together")
    try:
        args.http_tls = (tls_context(args.http_tls_cert, args.http_tls_key)
                         if args.http_tls_cert else None)
        check_bind(args.http_bind, args.http_tls is not None, args.http_insecure)
    except (UnsafeBindError, TlsError) as exc:
        raise UsageError(str(exc)) from None
    transport = node_transport(args)
    args.storage = storage_settings(args)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    physical = args.name or socket.gethostname()
    if not args.one_shot:
        return run_managed(args, data_dir, physical, transport)
    if not args.config:
        raise UsageError("--one-shot needs -c SPEC (or -c @file.flume)")
    text = read_spec_arg(args.config)
    spec = load_checked_spec(text)
    if not spec.definitions:
        raise UsageError("the spec defines no logical node")
    return run_one_shot(list(spec.definitions), data_dir, physical, args.allow_exec,
                        http_port=args.http_port, http_bind=args.http_bind,
                        http_tls=args.http_tls, http_insecure=args.http_insecure,
                        transport=transport, storage=args.storage)


def storage_settings(args):
    """The node's storage settings (``--storage-config``); UsageError naming the file
    and the key."""
    from .object_store import StorageConfig, StorageSettingsError
    try:
        return StorageConfig.load(args.storage_config, environ={})
    except StorageSettingsError as exc:
        raise UsageError(f"--storage-config: {exc}") from None


def zk_from_master(url: str, ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> tuple[str, str, bool, str | None, bool]:
    """Ask a master where the configuration lives: (ZooKeeper ensemble, root, whether the
    tree is protected by ACLs, the node credential ``user:password`` if it hands it out,
    whether ZooKeeper serves TLS only). ``ca``: the CA of an https master's
    certificate (default: the system's); ``cert``/``key``: this node's client certificate
    for a master that asks for one (--tls-client-ca)."""
    import httpx
    from .http_server import TlsError, client_context, tls_problem
    try:
        verify = client_context(ca, cert, key) if (ca or cert) else True
        r = httpx.get(url.rstrip("/") + "/api/cluster", timeout=10, verify=verify)
        r.raise_for_status()
        info = r.json()
    except TlsError as exc:
        raise UsageError(str(exc)) from None
    except (httpx.HTTPError, ValueError) as exc:
        problem = tls_problem(exc, url)
        if problem is not None:
            raise UsageError(problem.replace("--ca FILE (or $FLUME_CA)",
                                             "--master-ca FILE (or $FLUME_CA)")) from None
        if isinstance(exc, httpx.RemoteProtocolError) and url.startswith("https:"):
            # TLS 1.3: a refused client certificate shows as a closed connection
            raise UsageError(f"the master at {url} closed the connection without an "
                             f"answer: if it asks for client certificates "
                             f"(--tls-client-ca), give this node's with --master-cert FILE "
                             f"--master-key FILE") from None
        raise UsageError(f"cannot reach the master at {url}: {exc}; give --zk instead or "
                         f"start the master first") from None
    check_reachable_zk(url, info["zk"])
    return (info["zk"], info.get("root", "/flume"), bool(info.get("acl")),
            info.get("zk_auth"), bool(info.get("zk_tls")))


def _own_addresses(host: str) -> bool | None:
    """True if every address ``host`` resolves to is loopback or one of this machine's
    (it can be bound here); None if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
        except OSError:
            return False
    return True


def check_reachable_zk(master_url: str, zk: str) -> None:
    """UsageError when a master on another host hands out a ZooKeeper address that
    means this host (a managed ZooKeeper listening on 127.0.0.1, or a host name that
    resolves to a loopback address here): the node would talk to its own host."""
    from urllib.parse import urlsplit
    master_host = urlsplit(master_url).hostname or "127.0.0.1"
    if _own_addresses(master_host) is not False:
        return          # the master runs here: its loopback is ours
    for server in zk.split(","):
        host = server.rsplit(":", 1)[0].strip("[]")
        try:
            loopback = all(ipaddress.ip_address(info[4][0]).is_loopback for info in
                           socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
        except (OSError, ValueError):
            return      # unknown here: connecting will say what is wrong
        if not loopback:
            return
    raise UsageError(
        f"the master at {master_url} says ZooKeeper is at {zk}, which is this host's own "
        f"loopback here: start that master with --zk-bind ADDRESS (an address this host "
        f"reaches) or on an ensemble (--zk), or give this node --zk HOST:PORT")


def node_credential(args):
    """The node credential of ``--zk-auth-file`` (its ``node=`` line), or None."""
    if not args.zk_auth_file:
        return None
    from flume_og.zk.acl import AuthFileError, read_auth_file
    try:
        return read_auth_file(args.zk_auth_file, need=("node",))["node"]
    except AuthFileError as exc:
        raise UsageError(str(exc)) from None


def local_only(transport: Transport) -> str | None:
    """What a node advertises by default: 127.0.0.1 when its event sources listen there
    only (no TLS, no --plaintext-events), so that agents on this host reach its
    collectors even where the host name resolves to another address; else None (the
    host name)."""
    return None if transport.tls or transport.plaintext else "127.0.0.1"


def add_zk_tls_options(command: argparse.ArgumentParser) -> None:
    """``--zk-tls-ca``, ``--zk-tls-cert``, ``--zk-tls-key``: ZooKeeper over TLS."""
    command.add_argument("--zk-tls-ca", metavar="FILE",
                         help="reach ZooKeeper over TLS (its secureClientPort), checking "
                         "its certificate against this PEM CA bundle; the certificate must "
                         "name the host in the connect string")
    command.add_argument("--zk-tls-cert", metavar="FILE",
                         help="PEM client certificate for an ensemble that asks for one "
                         "(ssl.clientAuth=need); needs --zk-tls-key, implies TLS")
    command.add_argument("--zk-tls-key", metavar="FILE",
                         help="PEM private key of --zk-tls-cert")


def zk_tls_settings(args):
    """The :class:`zk.client.TlsSettings` of the ``--zk-tls-*`` flags, or None (plain)."""
    if not (args.zk_tls_ca or args.zk_tls_cert or args.zk_tls_key):
        return None
    from flume_og.zk.client import TlsSettings
    return TlsSettings(args.zk_tls_ca, args.zk_tls_cert, args.zk_tls_key)


def run_managed(args, data_dir: Path, physical: str, transport: Transport) -> int:
    """Run a physical node managed by the masters until SIGTERM / Ctrl-C."""
    from .physical_node import PhysicalNode
    auth = node_credential(args)
    zk_tls = zk_tls_settings(args)
    if args.zk:
        hosts, root = args.zk, args.zk_root
    else:
        hosts, root, protected, served, served_tls = zk_from_master(
            args.master, args.master_ca, args.master_cert, args.master_key)
        if served_tls and zk_tls is None:
            from flume_og.zk.client import TlsSettings
            zk_tls = TlsSettings()   # the system's CAs; --zk-tls-ca for a private CA
        if auth is None and served:
            from flume_og.zk.acl import Credential
            auth = Credential.parse(served, f"the node credential from {args.master}")
        if protected and auth is None:
            raise UsageError(
                f"the master at {args.master} protects ZooKeeper with ACLs and hands the "
                f"node credential only to local nodes of a master without a token: pass "
                f"--zk-auth-file FILE (a master managing ZooKeeper writes it to "
                f"zk-auth-node in its data directory)")
    signals = StopSignals()
    node = PhysicalNode(physical, hosts, root, data_dir=data_dir / "node" / physical,
                        allow_exec=args.allow_exec, zk_auth=auth,
                        http_port=DEFAULT_HTTP_PORT if args.http_port is None
                        else args.http_port, http_bind=args.http_bind,
                        advertise=args.advertise or local_only(transport), zk_tls=zk_tls,
                        http_tls=args.http_tls, http_insecure=args.http_insecure,
                        transport=transport, storage=args.storage)
    node.start()
    try:
        while not signals.wait(0.5):
            pass
        log.info("stopping on signal %s", signals.signal_name)
    finally:
        node.stop()
    return 0


def cmd_dump(args) -> int:
    text = args.source
    source = parse_source(text)
    from .spec import Call, Lit
    sink = Call("console", (Lit(args.format, "string"),))
    validate_parts(source, sink, text)
    d = Definition("dump", source, sink)
    return run_one_shot([d], None, socket.gethostname(), args.allow_exec)


# ---------------------------------------------------------------- entry point

def version() -> str:
    """The installed package's version ("unknown" when run from a tree not installed)."""
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("flume-og")
    except PackageNotFoundError:
        return "unknown"


def log_level(text: str) -> str:
    """argparse type of --log-level: a level name, or an error that lists them."""
    try:
        return logs.level_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flume", description="Flume: reliable, master-managed log collection.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"flume {version()}")
    p.add_argument("--log-level", type=log_level,
                   default=os.environ.get("FLUME_LOG_LEVEL", "INFO"),
                   help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO, or "
                        "$FLUME_LOG_LEVEL)")
    p.add_argument("--log-format", choices=logs.FORMATS,
                   default=os.environ.get("FLUME_LOG_FORMAT", "text"),
                   help="text (a sentence, then key=value details) or json (one object "
                        "per line, for log shippers); default text, or $FLUME_LOG_FORMAT")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    n = sub.add_parser("node", help="run a node", description=(
        "Run a physical node. Managed (the default), it registers in ZooKeeper and runs "
        "the logical nodes the masters map to it, reconfiguring the moment a spec changes. "
        "With --one-shot it runs the flows given by -c without a master and exits once "
        "every source is exhausted (or on SIGTERM / Ctrl-C, after writing what is "
        "buffered and closing files)."))
    n.add_argument("-n", "--name", help="physical node name (default: the host name)")
    n.add_argument("-c", "--config", metavar="SPEC",
                   help="dataflow spec 'name: source | sink;', or @file.flume")
    n.add_argument("-1", "--one-shot", action="store_true",
                   help="run the spec given by -c without a master")
    n.add_argument("--data-dir", help="where offsets and write-ahead logs live "
                   "(default: $FLUME_DATA_DIR or the per-user data directory)")
    n.add_argument("--storage-config", metavar="FILE",
                   default=os.environ.get("FLUME_STORAGE_CONFIG"),
                   help="TOML file of object-store settings by URL prefix (endpoint_url, "
                   "key, secret, region, ...; node/object_store.py): credentials stay on "
                   "the node, never in a spec (default: $FLUME_STORAGE_CONFIG; without it, "
                   "boto3's environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)")
    n.add_argument("--allow-exec", action="store_true",
                   help="allow exec sources to run programs (off by default: a master's "
                   "REST API must not be a remote shell)")
    n.add_argument("--master", default=os.environ.get("FLUME_MASTER",
                                                      "http://127.0.0.1:35871"),
                   help="a master's URL, asked where ZooKeeper is (default "
                   "$FLUME_MASTER or http://127.0.0.1:35871)")
    n.add_argument("--master-ca", metavar="FILE", default=os.environ.get("FLUME_CA"),
                   help="PEM CA bundle of an https master's certificate (default $FLUME_CA, "
                   "else the system's CAs)")
    n.add_argument("--master-cert", metavar="FILE", default=os.environ.get("FLUME_CERT"),
                   help="PEM client certificate for a master started with --tls-client-ca "
                   "(default $FLUME_CERT)")
    n.add_argument("--master-key", metavar="FILE", default=os.environ.get("FLUME_KEY"),
                   help="PEM private key of --master-cert (default $FLUME_KEY, else in "
                   "--master-cert)")
    n.add_argument("--zk", metavar="CONNECT", help="ZooKeeper ensemble host:port,... "
                   "(instead of asking a master)")
    n.add_argument("--zk-root", default="/flume", help="root znode (default /flume)")
    n.add_argument("--zk-auth-file", metavar="FILE",
                   default=os.environ.get("FLUME_ZK_AUTH_FILE"),
                   help="file holding the node's ZooKeeper credential, a line "
                   "node=USER:PASSWORD, mode 0600 (default $FLUME_ZK_AUTH_FILE; without it "
                   "a node asks a local master without a token for it)")
    add_zk_tls_options(n)
    n.add_argument("--http-port", type=int, default=None,
                   help=f"status page port (default {DEFAULT_HTTP_PORT}, or the next free "
                   f"one; 0 picks any free port); a one-shot node serves a status page "
                   f"only when given this option")
    n.add_argument("--http-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address the status page listens on (default 127.0.0.1); "
                   "beyond loopback only with --http-tls-cert/--http-tls-key or "
                   "--http-insecure: the page shows every spec and counter")
    n.add_argument("--http-tls-cert", metavar="FILE",
                   help="PEM certificate to serve the status page over HTTPS")
    n.add_argument("--http-tls-key", metavar="FILE", help="PEM private key of --http-tls-cert")
    n.add_argument("--http-insecure", action="store_true",
                   help="serve the status page in plain HTTP beyond loopback (default: "
                   "refused)")
    n.add_argument("--advertise", metavar="HOST",
                   help="address or name other hosts reach this node at: agents of other "
                   "hosts send to this node's collectors there (default: the host name, or "
                   "127.0.0.1 for a node without TLS or --plaintext-events, whose event "
                   "sources listen on loopback only)")
    n.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate (chain) this node serves its event sources with "
                   "and presents to collectors; with it every event link is TLS only")
    n.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    n.add_argument("--tls-ca", metavar="FILE",
                   help="PEM CA bundle: receivers' certificates are checked against it, and "
                   "senders must present a certificate it signed (see --tls-client-cert)")
    n.add_argument("--tls-client-cert", choices=CLIENT_CERT_POLICIES,
                   help="whether event sources ask senders for a certificate: require "
                   "(the default with --tls-ca: mutual TLS), optional, none")
    n.add_argument("--plaintext-events", action="store_true",
                   help="without TLS, let event sources listen beyond loopback (default "
                   "0.0.0.0 instead of 127.0.0.1): only on a network you trust")
    add_config_file_option(n, "node")
    n.set_defaults(func=cmd_node)

    c = sub.add_parser("check", help="validate a spec and print its canonical form",
                       description="Validate a spec; print its canonical form. Exit status 2 "
                       "with the position of every problem when it is wrong.")
    c.add_argument("-c", "--config", required=True, metavar="SPEC",
                   help="the spec text, or @file.flume")
    c.set_defaults(func=cmd_check)

    k = sub.add_parser("components", help="list every source, sink and decorator")
    k.add_argument("--kind", choices=["source", "sink", "decorator"])
    k.add_argument("--markdown", action="store_true",
                   help="print the whole reference page (docs/reference.md) instead")
    k.set_defaults(func=cmd_components)

    d = sub.add_parser("dump", help="print a source's events to the console",
                       description="Run SOURCE and print its events, e.g. "
                       "flume dump 'text(\"/var/log/syslog\")'.")
    d.add_argument("source", help="a source spec such as 'tail(\"/var/log/app.log\")'")
    d.add_argument("--format", default="debug", help="output format (default debug)")
    d.add_argument("--allow-exec", action="store_true")
    d.set_defaults(func=cmd_dump)
    return p


def add_config_file_option(command: argparse.ArgumentParser, name: str) -> None:
    command.add_argument("--config-file", metavar="FILE",
                         help=f"TOML file of settings: the long flags without dashes, e.g. "
                         f"/etc/flume/{name}.toml (flags given here override it)")


def parse_command_line(parser: argparse.ArgumentParser,
                       argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the defaults a ``--config-file`` gives (node/config_file.py);
    exit status 2 with the file and key when the file cannot be used."""
    args = parser.parse_args(argv)
    if getattr(args, "config_file", None):
        commands = next(a for a in parser._actions if a.dest == "command").choices
        try:
            config_file.load(Path(args.config_file), commands[args.command], parser)
        except config_file.SettingsError as exc:
            parser.exit(2, f"flume {args.command}: {exc}\n")
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parse_command_line(parser, argv)
    # Events are acyclic and short-lived; the default collector thresholds make the cyclic
    # GC run every few hundred allocations, which costs a third of a line source's time.
    gc.set_threshold(100_000, 50, 100)
    logs.setup(args.log_level, fmt=args.log_format)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"flume: {exc}", file=sys.stderr)
        return 2
    except (FlumeError, CoordinationError) as exc:
        print(f"flume: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
