"""The rotated files of a followed file, in rotation order, and a file's identity by its
first bytes: what ``tail``, ``multitail`` and ``tailDir`` use to finish every rotated file
they had not read to its end.

A rotated file of ``name`` is a regular file of the same directory called ``name`` followed
by one of the usual suffixes: ``.1``, ``-3`` (an index: up to 6 digits, higher is older),
``-20261203``, ``.2026-12-03``, ``-20261203-14``, ``-1764720000`` (a date or a timestamp:
higher is newer), optionally compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ...).
Compressed files are listed but never read. Files of one naming scheme are ordered by their
names (what logrotate guarantees, whatever the timestamps' granularity); when index and
date names are mixed in one directory, by modification time, then name.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat as stat_mod
from dataclasses import dataclass

HEAD_LEN = 256           # bytes of a file's start that identify it (with device and inode)
MAX_ROTATED = 100        # rotated files considered per followed name: the newest ones
INDEX_DIGITS = 6         # a suffix of at most this many digits is an index, not a date
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".z", ".zip")
ROTATED_SUFFIX = re.compile(
    r"[.-](?:\d+|\d{4}-?\d{2}-?\d{2}(?:[-_T.:]?\d+)*)(?:\.(?:gz|bz2|xz|zst|lz4|lzma|Z|zip))?")
_DIGITS = re.compile(r"\d+")


def head_of(fd: int, length: int = HEAD_LEN) -> tuple[int, str]:
    """``(n, digest)`` of the file's first ``n <= length`` bytes (fewer if it is shorter)."""
    data = os.pread(fd, length, 0)
    return len(data), hashlib.blake2b(data, digest_size=16).hexdigest()


def head_matches(fd: int, head_len: int, head: str) -> bool:
    """True if the file's first ``head_len`` bytes have the digest ``head``. A fingerprint
    of 0 bytes (a file saved while empty, or a position saved before fingerprints
    existed) matches any file: device and inode alone decide then."""
    if head_len <= 0 or not head:
        return True
    n, digest = head_of(fd, head_len)
    return n == head_len and digest == head


@dataclass(frozen=True)
class Rotated:
    """A rotated file as listed: ``rank`` orders files of one naming scheme."""
    path: str
    dev: int
    ino: int
    mtime_ns: int
    compressed: bool
    rank: tuple[int, int]


def _rank(suffix: str) -> tuple[int, int]:
    """``(scheme, value)``: scheme 0 (an index, older when higher: value is -index) or 1
    (a date or timestamp, newer when higher)."""
    low = suffix.lower()
    for ext in COMPRESSED:
        if low.endswith(ext):
            suffix = suffix[:-len(ext)]
            break
    groups = _DIGITS.findall(suffix)
    if len(groups) == 1 and len(groups[0]) <= INDEX_DIGITS:
        return 0, -int(groups[0])
    return 1, int("".join(groups))


def rotated_files(directory: str, name: str) -> list[Rotated]:
    """Every rotated file of ``name`` in ``directory`` (compressed ones included), oldest
    first. An unreadable directory gives ``[]``."""
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return []
    out = []
    for e in entries:
        if e.name == name or not e.name.startswith(name):
            continue
        suffix = e.name[len(name):]
        if not ROTATED_SUFFIX.fullmatch(suffix):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat_mod.S_ISREG(st.st_mode):
            continue
        out.append(Rotated(e.path, st.st_dev, st.st_ino, st.st_mtime_ns,
                           e.name.lower().endswith(COMPRESSED), _rank(suffix)))
    if len({r.rank[0] for r in out}) <= 1:
        out.sort(key=lambda r: (r.rank, r.mtime_ns))
    else:
        out.sort(key=lambda r: (r.mtime_ns, r.rank))
    return out
