"""Network namespaces joined by one bridge: the hosts of a cluster on one machine.

:class:`Network` makes, under a name ``prefix`` (``flc`` by default):

* namespace ``<prefix>-net`` holding bridge ``br0`` with address ``<subnet>.1`` (the
  harness's own address: :meth:`Network.inside` it reaches every host);
* per host ``name``, namespace ``<prefix>-<name>`` with ``lo`` and ``eth0`` at
  ``<subnet>.<n>/24``, a veth whose other end (``p-<name>``) is a port of ``br0``.

Nothing is made or changed outside these namespaces (the veth ends are created in them
directly), and :meth:`Network.destroy` deletes them all; :func:`remove_stale` deletes
namespaces of ``prefix`` that a killed run left behind. Needs root and ``ip``
(iproute2).

Faults, all undone by :meth:`Network.heal`:

* :meth:`Network.link_down` takes a host's bridge port down: its packets go nowhere,
  silently, as when a cable or a switch port fails (its sockets see no error, only
  silence);
* :meth:`Network.cut` partitions two groups of hosts from each other only: each side
  gets a permanent neighbour entry with an unused MAC address for every address of the
  other side, so their frames reach no one, silently, while both keep every other link
  (the kernel here has no tc qdiscs or netfilter to do it otherwise).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def available(prefix: str = "flc") -> str | None:
    """None when namespaces can be made here (one is made and deleted to know), else
    why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip tool (Debian: apt-get install iproute2)"
    probe = f"{prefix}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        return f"cannot make a network namespace here: {r.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def remove_stale(prefix: str) -> list[str]:
    """Delete every namespace named ``<prefix>-...`` (left by a run that was killed)."""
    gone = [ns for ns in namespaces() if ns.startswith(prefix + "-")]
    for ns in gone:
        ip("netns", "del", ns, check=False)
    return gone


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(ns: str):
    """Run the block with the calling thread in namespace ``ns``: sockets made in it
    belong to ``ns`` (a namespace is per thread; other threads are not moved)."""
    own = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"
    back = os.open(own, os.O_RDONLY)
    try:
        _setns(os.path.join(NETNS_DIR, ns))
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the harness namespace")
    finally:
        os.close(back)


class Network:
    """A bridge and the hosts on it, in namespaces of ``prefix``."""

    def __init__(self, prefix: str = "flc", subnet: str = "10.213.0"):
        self.prefix, self.subnet = prefix, subnet
        self.hosts: dict[str, str] = {}        # name -> address
        self._cuts: list[tuple[list[str], list[str]]] = []
        self._down: set[str] = set()
        remove_stale(prefix)
        self.ns = f"{prefix}-net"
        ip("netns", "add", self.ns)
        self._in(self.ns, "link", "set", "lo", "up")
        self._in(self.ns, "link", "add", "br0", "type", "bridge")
        self._in(self.ns, "addr", "add", f"{subnet}.1/24", "dev", "br0")
        self._in(self.ns, "link", "set", "br0", "up")
        self.address = f"{subnet}.1"

    def _in(self, ns: str, *args: str, check: bool = True) -> str:
        return ip("-n", ns, *args, check=check)

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def add_host(self, name: str, n: int) -> str:
        """Namespace of host ``name`` at ``<subnet>.<n>``; its address."""
        assert 1 < n < 255 and name not in self.hosts
        ns, port, addr = self.netns(name), f"p-{name}", f"{self.subnet}.{n}"
        ip("netns", "add", ns)
        self._in(self.ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
        self._in(self.ns, "link", "set", port, "master", "br0")
        self._in(self.ns, "link", "set", port, "up")
        self._in(ns, "link", "set", "lo", "up")
        self._in(ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        self._in(ns, "link", "set", "eth0", "up")
        self.hosts[name] = addr
        self._wait_link(name)
        return addr

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run in ``host``'s namespace."""
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def inside(self, host: str | None = None):
        """:func:`inside` ``host``'s namespace (None: the bridge's, which reaches all)."""
        return inside(self.netns(host) if host else self.ns)

    # ------------------------------------------------------------ faults
    def link_down(self, host: str) -> None:
        self._in(self.ns, "link", "set", f"p-{host}", "down")
        self._down.add(host)

    def link_up(self, host: str) -> None:
        self._in(self.ns, "link", "set", f"p-{host}", "up")
        self._down.discard(host)
        self._wait_link(host)

    def _wait_link(self, host: str, timeout: float = 10.0) -> None:
        """Return once ``host``'s link carries frames: both veth ends operationally up
        and its bridge port forwarding. The kernel applies a carrier change in a deferred
        work item run at most once a second, and until then the device drops what it is
        given, so "set up" alone is not yet a working link."""
        deadline = time.monotonic() + timeout
        while True:
            port = json.loads(self._in(self.ns, "-j", "-d", "link", "show", f"p-{host}"))[0]
            eth = json.loads(self._in(self.netns(host), "-j", "link", "show", "eth0"))[0]
            state = port.get("linkinfo", {}).get("info_slave_data", {}).get("state")
            if port["operstate"] == eth["operstate"] == "UP" and state == "forwarding":
                return
            if time.monotonic() > deadline:
                raise NetnsError(f"link of {host} not up after {timeout} s: port "
                                 f"{port['operstate']}/{state}, eth0 {eth['operstate']}")
            time.sleep(0.02)        # polling the kernel's link state

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        """No packet between a host of ``side_a`` and one of ``side_b``, either way."""
        for here, there in ((side_a, side_b), (side_b, side_a)):
            for h in here:
                for t in there:
                    self._in(self.netns(h), "neigh", "replace", self.hosts[t], "lladdr",
                             "02:00:00:00:00:fe", "nud", "permanent", "dev", "eth0")
        self._cuts.append((list(side_a), list(side_b)))

    def heal(self) -> None:
        """Undo every cut and bring every port that was taken down up again."""
        for side_a, side_b in self._cuts:
            for here, there in ((side_a, side_b), (side_b, side_a)):
                for h in here:
                    for t in there:
                        self._in(self.netns(h), "neigh", "del", self.hosts[t], "dev",
                                 "eth0", check=False)
        self._cuts.clear()
        for host in list(self._down):
            self.link_up(host)

    def destroy(self) -> None:
        """Delete every namespace made (with them their veths and the bridge)."""
        for name in list(self.hosts):
            ip("netns", "del", self.netns(name), check=False)
        ip("netns", "del", self.ns, check=False)
        self.hosts.clear()
