"""Certificates for TLS tests, made with trustme: a CA, and node certificates it signs,
written as PEM files a node takes with --tls-cert/--tls-key/--tls-ca."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class NodeCert:
    """One node's files: its certificate chain, its key, and the CA bundle it trusts."""

    cert: Path
    key: Path
    ca: Path

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key),
                "--tls-ca", str(self.ca)]


class TestCA:
    """A CA writing its bundle and node certificates under ``folder``."""

    __test__ = False     # not a test class for pytest

    def __init__(self, folder: Path, name: str = "ca"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca = trustme.CA()
        self.bundle = self.folder / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.bundle))

    def node(self, name: str, *hosts: str) -> NodeCert:
        """A certificate for ``hosts`` (SAN DNS names and IP addresses; loopback names by
        default), valid for both serving and connecting."""
        leaf = self.ca.issue_cert(*(hosts or LOCAL_NAMES), common_name=name)
        cert = self.folder / f"{self.name}-{name}.crt"
        key = self.folder / f"{self.name}-{name}.key"
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        return NodeCert(cert, key, self.bundle)
