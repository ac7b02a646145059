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


LISTINGS = 5             # directory listings tried until two in a row agree


def rotated_files(directory: str, name: str) -> list[Rotated]:
    """Every rotated file of ``name`` in ``directory`` (compressed ones included), oldest
    first. An unreadable directory gives ``[]``.

    A listing made while a rotation renames files may show a file under both names or
    under none: the directory is listed until two listings in a row agree on names and
    inodes (at most ``LISTINGS`` times)."""
    names = _names(directory, name)
    for _ in range(LISTINGS - 1):
        again = _names(directory, name)
        if again == names:
            break
        names = again
    out = []
    for entry_name, path, _ in names:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if not stat_mod.S_ISREG(st.st_mode):
            continue
        suffix = entry_name[len(name):]
        out.append(Rotated(path, st.st_dev, st.st_ino, st.st_mtime_ns,
                           entry_name.lower().endswith(COMPRESSED), _rank(suffix)))
    return in_rotation_order(out)


def in_rotation_order(files: list[Rotated]) -> list[Rotated]:
    """``files`` oldest first: by rank when they share one naming scheme, else by
    modification time."""
    if len({r.rank[0] for r in files}) <= 1:
        return sorted(files, key=lambda r: (r.rank, r.mtime_ns))
    return sorted(files, key=lambda r: (r.mtime_ns, r.rank))


def _names(directory: str, name: str) -> list[tuple]:
    """``(name, path, inode)`` of the entries named like rotated files, sorted (the inode
    comes with the listing: no stat)."""
    try:
        with os.scandir(directory or ".") as it:
            return sorted((e.name, e.path, e.inode()) for e in it
                          if e.name != name and e.name.startswith(name)
                          and ROTATED_SUFFIX.fullmatch(e.name[len(name):]))
    except OSError:
        return []
