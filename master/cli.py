"""``flume``: the node commands of :mod:`node.cli` plus ``flume master``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flume_og.node import cli as node_cli
from flume_og.node.shutdown import StopSignals
from flume_og.zk.server import DEFAULT_HEAP_MB

log = logging.getLogger("flume")


def cmd_master(args) -> int:
    from flume_og.zk.acl import ROLES, AuthFileError, read_auth_file
    from flume_og.zk.client import TlsSettingsError

    from flume_og.node.http_server import TlsError

    from .server import Master, MasterConfigError, read_token
    data_dir = Path(args.data_dir) if args.data_dir else node_cli.default_data_dir() / "master"
    if not args.history_interval > 0:
        print("flume master: --history-interval must be positive", file=sys.stderr)
        return 2
    try:
        zk_auth = read_auth_file(args.zk_auth_file, need=ROLES) if args.zk_auth_file else None
        master = Master(data_dir, zk_hosts=args.zk, zk_port=args.zk_port, root=args.zk_root,
                        bind=args.bind, http_port=args.http_port,
                        token=read_token(args.token_file), zk_auth=zk_auth,
                        zk_insecure=args.zk_insecure, zk_bind=args.zk_bind,
                        zk_heap_mb=args.zk_heap_mb, advertise=args.advertise,
                        tls=_tls(args), insecure_http=args.insecure_http,
                        zk_tls=node_cli.zk_tls_settings(args), zk_server_tls=_zk_server_tls(args),
                        history_interval=args.history_interval,
                        **_http_options(args))
    except (MasterConfigError, AuthFileError, TlsError, TlsSettingsError) as exc:
        print(f"flume master: {exc}", file=sys.stderr)
        return 2
    # Handlers that only record (no exception thrown into whatever the main thread is
    # doing, no lock): a stop asked for while starting is honoured once started; while
    # serving, uvicorn's own handlers (which only set a flag) end the server and hand the
    # signal back here.
    signals = StopSignals("flume master")
    try:
        master.start()
        if not signals.requested:
            master.serve()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"flume master: cannot listen on {args.bind}:{args.http_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        # a signal right behind the one that stopped the server (a terminal's Ctrl-C and
        # a script's SIGTERM) must not interrupt the stop; a later one forces the exit
        signals.restore()
        signals = StopSignals("flume master", requested=True)
        master.stop()
        signals.restore()
    return 0


def build_parser():
    parser = node_cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    m = sub.add_parser("master", help="run a master (REST API, web console, ZooKeeper)",
                       description=(
                           "Run a master. Without --zk it starts and manages a local "
                           "ZooKeeper server under its data directory (port --zk-port). "
                           "Several masters on one ensemble all serve every request."))
    m.add_argument("--zk", metavar="CONNECT",
                   help="ZooKeeper ensemble host:port[,host:port...]; default: run one")
    m.add_argument("--zk-port", type=int, default=3181,
                   help="client port of the managed ZooKeeper (default 3181)")
    m.add_argument("--zk-root", default="/flume", help="root znode (default /flume)")
    m.add_argument("--zk-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address the managed ZooKeeper listens on (default 127.0.0.1)")
    m.add_argument("--advertise", metavar="HOST",
                   help="the name nodes on other hosts reach this host by, handed out with "
                   "the managed ZooKeeper's port (default: --zk-bind, or this host's name "
                   "when that is 0.0.0.0)")
    m.add_argument("--zk-heap-mb", type=int, default=DEFAULT_HEAP_MB, metavar="MIB",
                   help="Java heap of the managed ZooKeeper in MiB; its hard quota on the "
                   f"root follows: MIB*256 znodes, MIB/8 MiB of data (default "
                   f"{DEFAULT_HEAP_MB})")
    m.add_argument("--zk-auth-file", metavar="FILE",
                   default=os.environ.get("FLUME_ZK_AUTH_FILE"),
                   help="ZooKeeper credentials, lines master=USER:PASSWORD and "
                   "node=USER:PASSWORD, mode 0600 (default $FLUME_ZK_AUTH_FILE; the managed "
                   "ZooKeeper generates them in the data directory: zk-auth, zk-auth-node)")
    node_cli.add_zk_tls_options(m)
    m.add_argument("--zk-insecure", action="store_true",
                   help="use the --zk ensemble without credentials and ACLs (anyone "
                   "reaching ZooKeeper can then rewrite every spec)")
    m.add_argument("--data-dir", help="master data directory (default: the per-user data "
                   "directory + /master)")
    m.add_argument("--http-port", type=int, default=35871,
                   help="REST API and web console port (default 35871)")
    m.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other address "
                   "needs --token-file, and --tls-cert/--tls-key or --insecure-http)")
    m.add_argument("--token-file", help="file holding the access token required for writes")
    m.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate (then its intermediates) to serve the REST API "
                   "and console over HTTPS; needs --tls-key")
    m.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    m.add_argument("--tls-client-ca", metavar="FILE",
                   help="PEM CA bundle: every client (flumectl, browsers, nodes asking "
                   "where ZooKeeper is) must then present a certificate it signed")
    m.add_argument("--insecure-http", action="store_true",
                   help="serve plain HTTP on an address other hosts reach (default: "
                   "refused without --tls-cert; tokens would cross the network in clear)")
    _add_http_options(m)
    node_cli.add_config_file_option(m, "master")
    m.set_defaults(func=cmd_master)
    return parser


def _add_http_options(m) -> None:
    """The REST API's read token, allowed Host names and bounds (master/http_guard.py,
    node/http_server.py)."""
    from .http_guard import DEFAULT_MAX_BODY
    from flume_og.node.http_server import HttpLimits
    d = HttpLimits()
    m.add_argument("--read-token-file", metavar="FILE",
                   help="file holding a token required to read the API's listings (the "
                   "write token reads too); default: listings are open")
    m.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients use for this master, besides IP addresses, "
                   "localhost, the machine's host name and --bind (repeatable; '*' accepts "
                   "any name, e.g. behind a proxy that checks them)")
    m.add_argument("--history-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often the master samples every node's counters into its "
                        "history (1 hour of samples kept; default 5)")
    m.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help=f"largest request body (default {DEFAULT_MAX_BODY}); larger: 413")
    m.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                   help=f"open HTTP connections at most (default {d.max_connections}); "
                   f"more: the one waiting longest for a request head is closed, or "
                   f"503 if every one is being served")
    m.add_argument("--max-connections-per-peer", type=int,
                   default=d.max_connections_per_peer, metavar="N",
                   help=f"open HTTP connections from one address at most (default "
                   f"{d.max_connections_per_peer}); more: as --max-connections, among that "
                   f"address's connections")
    m.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   metavar="SECONDS", help=f"time a client has to send a request's line "
                   f"and headers (default {d.header_timeout:g}); later: the connection "
                   f"is closed")


def _tls(args):
    """The REST API's TLS context of --tls-cert/--tls-key/--tls-client-ca, or None."""
    from flume_og.node.http_server import tls_context
    from .server import MasterConfigError
    if not args.tls_cert and not args.tls_key:
        if args.tls_client_ca:
            raise MasterConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        raise MasterConfigError("--tls-cert and --tls-key go together")
    return tls_context(args.tls_cert, args.tls_key, args.tls_client_ca)


def _zk_server_tls(args):
    """With ``--zk-tls-*`` and no ``--zk``: the managed ZooKeeper serves TLS only, with
    the REST API's certificate and key."""
    from flume_og.zk.server import ServerTls
    from .server import MasterConfigError
    if args.zk or not (args.zk_tls_ca or args.zk_tls_cert):
        return None
    if not (args.tls_cert and args.tls_key):
        raise MasterConfigError("the managed ZooKeeper serves TLS with the master's "
                                "certificate: give --tls-cert FILE --tls-key FILE too")
    return ServerTls(args.tls_cert, args.tls_key)


def _http_options(args) -> dict:
    from flume_og.node.http_server import HttpLimits
    from .server import MasterConfigError, read_token
    if (args.max_body < 1 or args.max_connections < 1
            or args.max_connections_per_peer < 1 or args.header_timeout <= 0):
        raise MasterConfigError("--max-body, --max-connections, --max-connections-per-peer "
                                "and --header-timeout must be positive")
    return {"read_token": read_token(args.read_token_file),
            "allowed_hosts": tuple(args.allowed_host), "max_body": args.max_body,
            "limits": HttpLimits(max_connections=args.max_connections,
                                 max_connections_per_peer=args.max_connections_per_peer,
                                 header_timeout=args.header_timeout)}


def main(argv: list[str] | None = None) -> int:
    return node_cli.main(argv, parser=build_parser())


if __name__ == "__main__":
    sys.exit(main())
