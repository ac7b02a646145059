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
import time
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


LISTINGS = 8             # directory listings tried until two in a row agree
SETTLE_SECONDS = 0.002   # first pause between listings that disagree (doubling, 16 ms at most)


def rotated_files(directory: str, name: str) -> list[Rotated]:
    """Every rotated file of ``name`` in ``directory`` (compressed ones included), oldest
    first. An unreadable directory gives ``[]``.

    A rotation renames files while they are listed (a handler keeping 1,000 numbered
    files renames all of them at each rotation): a listing may show a file under both
    names or under none, and a name may hold another file by the time it is examined. So
    a file's identity is the inode the listing gave, checked against what its name holds
    when examined; and the directory is listed until a listing where every name still
    held its file gives the same files in the same order as the one before it (names may
    differ: a shift keeps the order), pausing a little longer each time so that a burst
    of renames ends. After ``LISTINGS`` listings, the last one is returned as it is."""
    before = None
    pause = SETTLE_SECONDS
    for attempt in range(LISTINGS):
        files, exact = _listing(directory, name)
        order = [(r.dev, r.ino) for r in files]
        if exact and order == before:
            break
        if before is not None and attempt < LISTINGS - 1:
            time.sleep(pause)          # a rename burst in progress: let it end
            pause = min(pause * 2, 8 * SETTLE_SECONDS)
        before = order
    return files


def _listing(directory: str, name: str) -> tuple[list[Rotated], bool]:
    """The rotated files one listing shows, oldest first, and True if every name still
    held the file listed under it when examined. A file renamed in between keeps its
    listed inode and name (the tail sources find it again by inode), the directory's
    device and a modification time of 0."""
    try:
        dir_dev = os.stat(directory or ".").st_dev
    except OSError:
        return [], True
    exact = True
    seen: set[int] = set()
    out = []
    for entry_name, path, ino in _names(directory, name):
        if ino in seen:
            exact = False              # listed under two names: moved while listed
            continue
        seen.add(ino)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            st = None
        if st is None or st.st_ino != ino:
            exact = False              # renamed since listed: the name holds another file
            dev, mtime = dir_dev, 0
        elif not stat_mod.S_ISREG(st.st_mode):
            continue
        else:
            dev, mtime = st.st_dev, st.st_mtime_ns
        suffix = entry_name[len(name):]
        out.append(Rotated(path, dev, ino, mtime, entry_name.lower().endswith(COMPRESSED),
                           _rank(suffix)))
    return in_rotation_order(out), exact


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
