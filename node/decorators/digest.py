"""``digest("MD5|SHA-1|SHA-256", "attr", base64=false)``: a hash of the body in an attribute."""
from __future__ import annotations

import base64 as b64
import binascii
import hashlib
from typing import Annotated

from ..component import Decorator, Sink
from ..event import Event
from ..registry import decorator


_KNOWN = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


def _algorithm(name: str) -> str:
    """Java algorithm names (``SHA-256``) to hashlib names (``sha256``)."""
    norm = name.lower().replace("-", "").replace("_", "")
    if norm not in _KNOWN:
        raise ValueError(f"unknown digest algorithm {name!r}; known: "
                         "MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512")
    return norm


@decorator("digest")
class DigestDecorator(Decorator):
    """Sets ``attr`` to the hash of the body: lowercase hex, or base64 with
    ``base64=true``."""

    def __init__(self, inner: Sink, algorithm: Annotated[str, _algorithm], attr: str,
                 base64: bool = False):
        super().__init__(inner)
        self.algorithm = _algorithm(algorithm)
        self.attr = attr
        self.base64 = base64

    def append(self, events: list[Event]) -> None:
        new = getattr(hashlib, self.algorithm)
        encode = b64.b64encode if self.base64 else binascii.hexlify
        attr = self.attr
        out = [Event(e.body, e.timestamp, e.nanos, e.priority, e.host,
                     {**e.attrs, attr: encode(new(e.body).digest())}) for e in events]
        self.metrics.add("events_in", len(events))
        self.inner.append(out)
