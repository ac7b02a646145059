"""Certificates for tests of the control plane's TLS (REST API, ZooKeeper): a CA made by
``trustme`` and PEM files signed by it, written under a test's directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization


@dataclass
class Pem:
    """PEM files of one party: ``cert`` (certificate and chain), ``key``, and ``ca`` (the
    CA that signed it, which the other party trusts)."""
    cert: Path
    key: Path
    ca: Path


def issue(directory: Path, *names: str, ca: trustme.CA | None = None,
          prefix: str = "server") -> tuple[Pem, trustme.CA]:
    """A certificate for ``names`` (default ``localhost`` and ``127.0.0.1``) from ``ca``
    (a new one if None), written to ``directory``: (files, ca)."""
    ca = ca or trustme.CA()
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    files = Pem(directory / f"{prefix}.pem", directory / f"{prefix}.key",
                directory / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert), append=True)
    # PKCS#8 (BEGIN PRIVATE KEY), as openssl writes keys: the only form ZooKeeper reads
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    ca.cert_pem.write_to_path(str(files.ca))
    return files, ca
