"""A real ZooKeeper server managed by this process (a master without ``--zk`` runs one).

It uses the jars of Debian's ``zookeeper`` package (``/usr/share/java``) or of a
``$ZOOKEEPER_HOME`` distribution, keeps its data under the given directory, waits until
the server answers ``ruok``, and stops it on ``stop()`` (and at interpreter exit).

It listens on ``host`` only (127.0.0.1 unless told otherwise), answers no four-letter word
but ``ruok`` (and ``srvr``, which ZooKeeper always answers: version, counts, no clients)
and runs no admin server (no HTTP port). With ``super_digest`` (a digest id,
``user:base64``) that identity is ZooKeeper's super user: it passes every ACL check, so the
master can always repair the ACLs of its own tree.
"""
from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CoordinationError

log = logging.getLogger(__name__)

DEBIAN_JARS = ["zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple", "netty-handler",
               "netty-common", "netty-transport", "netty-buffer", "netty-codec",
               "netty-resolver", "netty-transport-native-unix-common",
               "netty-transport-native-epoll", "metrics-core", "commons-cli", "snappy-java"]

INSTALL_HINT = ("install Java and ZooKeeper (Debian: apt-get install -y zookeeper "
                "default-jre-headless), set $ZOOKEEPER_HOME to a ZooKeeper distribution, "
                "or point the master at an ensemble with --zk host:port")


DEFAULT_HEAP_MB = 1024
# ZooKeeper's own default (0xfffff), set explicitly so that server and clients agree on it
JUTE_MAXBUFFER = 1024 * 1024 - 1
RESPONSE_CACHE = 16                          # answers cached, per kind (ZooKeeper: 400)
LARGE_REQUESTS_BYTES = 64 * 1024 * 1024      # (ZooKeeper: 100 MiB)
RESTART_DELAYS = (1.0, 60.0)    # first and longest wait before restarting a dead server
STABLE_SECONDS = 60.0           # up this long: the next crash waits the first delay again


class ZooKeeperUnavailable(CoordinationError):
    """No Java or no ZooKeeper jars, or the server did not come up."""


def classpath() -> str:
    """The class path of a ZooKeeper server, from $ZOOKEEPER_HOME or Debian's package."""
    home = os.environ.get("ZOOKEEPER_HOME")
    if home:
        jars = glob.glob(os.path.join(home, "lib", "*.jar")) + glob.glob(
            os.path.join(home, "*.jar"))
        if any("zookeeper" in os.path.basename(j) for j in jars):
            return os.pathsep.join(sorted(jars))
        raise ZooKeeperUnavailable(f"no ZooKeeper jars under ZOOKEEPER_HOME={home}; "
                                   + INSTALL_HINT)
    java_dir = Path("/usr/share/java")
    jars = [java_dir / f"{name}.jar" for name in DEBIAN_JARS]
    missing = [j.name for j in jars if not j.exists()]
    if "zookeeper.jar" in missing:
        raise ZooKeeperUnavailable("ZooKeeper is not installed; " + INSTALL_HINT)
    return os.pathsep.join(str(j) for j in jars if j.exists())


def _four_letters(host: str, port: int, word: bytes, timeout: float,
                  tls: bool = False) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            # a liveness probe of the server this process runs: its certificate is
            # checked by the clients, not here
            s = _PROBE_TLS.wrap_socket(raw) if tls else raw
            s.sendall(word)
            if not tls:
                s.shutdown(socket.SHUT_WR)
            return s.recv(64)
    except OSError:
        return b""


_PROBE_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE


def ruok(host: str, port: int, timeout: float = 1.0, tls: bool = False) -> bool:
    """True if a ZooKeeper server answers the ``ruok`` four-letter word (it does as soon
    as it listens, before its data is loaded); ``tls``: on its secureClientPort."""
    return _four_letters(host, port, b"ruok", timeout, tls) == b"imok"


def serving(host: str, port: int, timeout: float = 1.0, tls: bool = False) -> bool:
    """True if a ZooKeeper server serves requests: its data is loaded (``srvr`` answers
    "not currently serving requests" until then)."""
    return _four_letters(host, port, b"srvr", timeout, tls).startswith(b"Zookeeper version")


@dataclass(frozen=True)
class ServerTls:
    """PEM files for a ZooKeeper that serves TLS only: ``cert`` (and its chain) and
    ``key`` (PKCS#8, ``BEGIN PRIVATE KEY``: the only form ZooKeeper 3.8 reads). It asks
    clients for no certificate: who may do what is decided by the ACLs' credentials."""
    cert: str
    key: str

    def keystore(self, path: Path) -> Path:
        """Write ZooKeeper's PEM key store (the certificate chain, then the key; mode
        0600) to ``path``; ZooKeeperUnavailable with a sentence if the files cannot be
        used."""
        try:
            cert = Path(self.cert).read_bytes()
            key = Path(self.key).read_bytes()
        except OSError as exc:
            raise ZooKeeperUnavailable(f"cannot read {exc.filename}: {exc.strerror}") from None
        if b"-----BEGIN PRIVATE KEY-----" not in key:
            raise ZooKeeperUnavailable(
                f"the key {self.key} is not in PKCS#8 form, the only one ZooKeeper reads: "
                f"convert it with openssl pkcs8 -topk8 -nocrypt -in {self.key} -out "
                f"KEY.pk8 and use that")
        if b"-----BEGIN CERTIFICATE-----" not in cert:
            raise ZooKeeperUnavailable(f"{self.cert} holds no PEM certificate")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.rstrip(b"\n") + b"\n" + key)
        return path


class ManagedZooKeeper:
    """One standalone ZooKeeper server process under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int = 3181, host: str = "127.0.0.1",
                 tick_ms: int = 500, super_digest: str | None = None,
                 heap_mb: int = DEFAULT_HEAP_MB, tls: ServerTls | None = None):
        """``tls``: serve TLS only, on ``port`` (its secureClientPort; no plaintext
        port)."""
        self.data_dir = Path(data_dir)
        self.tls = tls
        self.port = port
        self.host = host
        self.tick_ms = tick_ms
        self.super_digest = super_digest
        self.heap_mb = heap_mb
        self.proc: subprocess.Popen | None = None
        self.restarts = 0               # by the supervisor, since this object was made
        self.last_exit: int | None = None
        self.out_of_memory = 0          # exits of which the log says OutOfMemoryError
        self._log_offset = 0
        self._lock = threading.Lock()   # one start or stop at a time
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        atexit.register(self.stop)

    @property
    def _wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::", "")

    @property
    def connect_string(self) -> str:
        """Where clients connect: the bound address, or this host's name when the server
        listens on every address."""
        return f"{socket.getfqdn() if self._wildcard else self.host}:{self.port}"

    @property
    def _probe_host(self) -> str:
        return "127.0.0.1" if self._wildcard else self.host

    def start(self, timeout: float = 30.0) -> "ManagedZooKeeper":
        """Start the server and wait until it answers; ZooKeeperUnavailable otherwise."""
        with self._lock:
            self._stopping.clear()
            try:
                return self._start(timeout)
            except ZooKeeperUnavailable:
                self._ran_out_of_memory()   # says so, with the way out
                raise

    def _start(self, timeout: float) -> "ManagedZooKeeper":
        java = shutil.which("java")
        if java is None:
            raise ZooKeeperUnavailable("Java is not installed; " + INSTALL_HINT)
        cp = classpath()
        tls = self.tls is not None
        if ruok(self._probe_host, self.port, 0.3) or (
                tls and ruok(self._probe_host, self.port, 0.3, tls=True)):
            raise ZooKeeperUnavailable(
                f"port {self.port} already has a ZooKeeper server; use --zk "
                f"{self.host}:{self.port} to use it, or --zk-port for another port")
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "zoo.cfg"
        if tls:
            keystore = self.tls.keystore(self.data_dir / "keystore.pem")
            listen = (f"secureClientPort={self.port}\n"
                      f"secureClientPortAddress={self.host}\n"
                      "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
                      f"ssl.keyStore.location={keystore}\n"
                      "ssl.keyStore.type=PEM\n"
                      "ssl.clientAuth=none\n")
        else:
            listen = f"clientPort={self.port}\nclientPortAddress={self.host}\n"
        cfg.write_text(
            f"tickTime={self.tick_ms}\n"
            f"dataDir={self.data_dir / 'data'}\n"
            + listen +
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok\n"   # stat, cons, dump list clients
            "maxClientCnxns=0\n"
            "minSessionTimeout=1000\n"
            "maxSessionTimeout=60000\n"
            "autopurge.purgeInterval=1\n")
        logf = open(self.data_dir / "zookeeper.log", "ab")
        self._log_offset = logf.tell()
        props = ["-Dzookeeper.admin.enableServer=false",
                 "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                 f"-Djute.maxbuffer={JUTE_MAXBUFFER}",
                 "-Dzookeeper.enforceQuota=true",
                 # serialized answers kept for reuse: 400 of up to 1 MiB each by default
                 f"-Dzookeeper.maxResponseCacheSize={RESPONSE_CACHE}",
                 f"-Dzookeeper.maxGetChildrenResponseCacheSize={RESPONSE_CACHE}",
                 # requests of 64 kB or more held at once, all connections together:
                 # past it ZooKeeper closes the connection that sent one more
                 "-Dzookeeper.largeRequestThreshold=65536",
                 f"-Dzookeeper.largeRequestMaxBytes={LARGE_REQUESTS_BYTES}"]
        if self.super_digest:
            props.append("-Dzookeeper.DigestAuthenticationProvider.superDigest="
                         + self.super_digest)
        self.proc = subprocess.Popen(
            [java, f"-Xmx{self.heap_mb}m", "-XX:+ExitOnOutOfMemoryError", *props,
             "-cp", cp, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if self.proc.poll() is not None:
                raise ZooKeeperUnavailable(
                    f"ZooKeeper exited with status {self.proc.returncode}; see "
                    f"{self.data_dir / 'zookeeper.log'}")
            if serving(self._probe_host, self.port, 0.5, tls):
                log.info("managed ZooKeeper is up", extra={"connect": self.connect_string})
                return self
            time.sleep(0.05)
        self._terminate()
        raise ZooKeeperUnavailable(f"ZooKeeper did not answer within {timeout:.0f} s; see "
                                   f"{self.data_dir / 'zookeeper.log'}")

    @property
    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is None

    def state(self) -> dict:
        """What the status shows: alive, restarts so far, the last exit status, the heap."""
        return {"alive": self.alive, "restarts": self.restarts,
                "last_exit": self.last_exit, "out_of_memory": self.out_of_memory,
                "heap_mb": self.heap_mb}

    def _ran_out_of_memory(self) -> bool:
        """The log of the last run says the JVM ran out of memory (its last 64 kB read)."""
        try:
            with open(self.data_dir / "zookeeper.log", "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self._log_offset, size - 65536))
                oom = b"OutOfMemoryError" in f.read()
        except OSError:
            return False
        if oom:
            self.out_of_memory += 1
            log.warning("the managed ZooKeeper ran out of memory (heap %d MiB): its data "
                        "may no longer fit; if it keeps dying, start the master with a "
                        "larger --zk-heap-mb", self.heap_mb)
        return oom

    def supervise(self) -> None:
        """Watch the server from a daemon thread and start it again whenever it exits
        without :meth:`stop` (out of memory, killed): after RESTART_DELAYS[0] seconds, the
        delay doubling on every failed or short-lived run up to RESTART_DELAYS[1]. Each
        exit is logged as a WARNING and counted in ``restarts``."""
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                name="zookeeper-supervisor")
            self._supervisor.start()

    def _supervise(self) -> None:
        delay = RESTART_DELAYS[0]
        while not self._stopping.is_set():
            proc, started = self.proc, time.monotonic()
            if proc is not None:
                status = proc.wait()
                if self._stopping.is_set():
                    return
                self.last_exit = status
                self._ran_out_of_memory()
                if time.monotonic() - started > STABLE_SECONDS:
                    delay = RESTART_DELAYS[0]
                log.warning("the managed ZooKeeper exited with status %s (see %s); starting "
                            "it again in %.0f s", status, self.data_dir / "zookeeper.log",
                            delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_DELAYS[1])
            self.restarts += 1
            try:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._start(30.0)
                log.warning("the managed ZooKeeper is running again (restart %d)",
                            self.restarts)
            except (ZooKeeperUnavailable, OSError) as exc:
                self.proc = None
                log.warning("the managed ZooKeeper did not start again: %s", exc)
                self._ran_out_of_memory()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and its supervisor: a stopped server stays stopped)."""
        self._stopping.set()
        with self._lock:
            self._terminate(timeout)

    def _terminate(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, for tests of a ZooKeeper crash (a supervisor starts it again)."""
        proc = self.proc
        if proc is not None:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "ManagedZooKeeper":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
