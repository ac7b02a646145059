"""The rotated files of a followed file, in rotation order, and a file's identity by its
first bytes: what ``tail``, ``multitail`` and ``tailDir`` use to finish every rotated file
they had not read to its end.

A rotated file of ``name`` is a regular file of the same directory called ``name`` followed
by one of the usual suffixes: ``.1``, ``-3`` (an index: up to 4 digits, higher is older),
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
INDEX_DIGITS = 4         # a suffix of at most this many digits is an index, not a date
                         # (``202612``, ``261203``: dates by month, two-digit years)
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


NUMBERED = re.compile(r"([.-])(\d{1,%d})" % INDEX_DIGITS)   # ``.3``, ``-3``: moved by rotations
GAPS = 8                 # numbers in a row with nothing there: past the last numbered file
WALK = 4 * MAX_ROTATED + 1000   # numbers examined above the highest listed one, at most


def rotated_files(directory: str, name: str) -> list[Rotated]:
    """Every rotated file of ``name`` in ``directory`` (compressed ones included), oldest
    first. An unreadable directory gives ``[]``.

    A rotation renames numbered files while they are listed (a handler keeping 1,000
    numbered files renames every one of them at each rotation, from the highest number
    down), and a listing of a large directory is not atomic against renames. So the
    listing only says which names exist; the numbered names (``name.1``, ``name-2``, ...)
    are then examined in increasing order, one ``stat`` each: a file only moves up, and
    the walk up meets each file that had a number when it began at least once, whatever
    the rate of rotations (a file met twice keeps its first, lower, number: the order of
    those files holds). A file rotated from the live name during the walk may be met out
    of order, or not at all (``tail`` allows for it). Named by a date,
    a file does not move; each is examined once, and a name that holds another file by
    then is described by its listed inode. No retries, no pauses."""
    try:
        dir_dev = os.stat(directory or ".").st_dev
    except OSError:
        return []
    entries = _names(directory, name)
    out: list[Rotated] = []
    seen: set[int] = set()

    def add(entry_name: str, path: str, ino: int, st) -> None:
        if ino in seen or (st is not None and not stat_mod.S_ISREG(st.st_mode)):
            return
        seen.add(ino)
        dev, mtime = (st.st_dev, st.st_mtime_ns) if st is not None else (dir_dev, 0)
        out.append(Rotated(path, dev, ino, mtime, entry_name.lower().endswith(COMPRESSED),
                           _rank(entry_name[len(name):])))

    listed: dict[str, set[int]] = {}
    for entry_name, _, _ in entries:
        m = NUMBERED.fullmatch(entry_name, len(name))
        if m is not None:
            listed.setdefault(m.group(1), set()).add(int(m.group(2)))
    for sep, numbers in listed.items():
        # Walked from 1 and from each listed number not reached yet, each run up to GAPS
        # free numbers in a row: a lone ``name.99999`` costs a few looks, not 99,999.
        walked = 0
        for first in sorted(numbers | {1}):
            if first <= walked:
                continue
            gaps, j = 0, first
            while gaps < GAPS and j < first + WALK + len(numbers):
                entry_name = f"{name}{sep}{j}"
                path = os.path.join(directory, entry_name)
                st = _lstat(path)
                gaps = gaps + 1 if st is None else 0
                if st is not None:
                    add(entry_name, path, st.st_ino, st)
                j += 1
            walked = j - 1
    for entry_name, path, ino in entries:
        if ino in seen:
            continue
        st = _lstat(path)
        if st is not None and st.st_ino == ino:
            add(entry_name, path, ino, st)
        elif NUMBERED.fullmatch(entry_name, len(name)) is None:
            add(entry_name, path, ino, None)     # renamed or deleted since: by inode
    return in_rotation_order(out)


def _lstat(path: str):
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


def listed_inodes(directory: str, name: str) -> dict[int, str]:
    """``{inode: path}`` of the entries named like rotated files of ``name``: one listing,
    no ``stat`` (where a renamed file is now)."""
    return {ino: path for _, path, ino in _names(directory, name)}


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
