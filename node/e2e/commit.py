"""Committing a collector's files (docs/e2e.md, collector steps 2-4): what
``collectorSink`` does at each roll and at start.

* :class:`Committer`: one transaction of the commit log records the completed files and
  their groups (claims checked and deleted, the groups' znodes and a file record
  created), then the hidden files are renamed and the record deleted; a refused
  transaction discards the files. At start it rolls recorded commits forward and deletes
  (or salvages) the hidden files of crashed runs.
* :class:`HiddenJournal`: the local list of hidden files a collector has open, so the
  hidden files of a crashed run are found at start.
* :func:`salvage`: make the hidden file of a crashed run final, cut after its last
  complete line (files without E2E groups whose events cannot be read again).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import zlib
from pathlib import Path

from ..checkpoint import Checkpoint, fsync_dir
from ..component import Metrics, NodeContext
from ..errors import SinkError
from ..object_store import (StorageError, StorageUnreachable, config_of, is_object_url,
                            split_url)
from .collector import CollectorState

log = logging.getLogger(__name__)


def file_url(f, path: str) -> str:
    """A dfs file's ``path`` as a URL (plain path for local files)."""
    if f.local:
        return path
    return f.fs.unstrip_protocol(path)


def _fs_of(url: str):
    from fsspec.core import url_to_fs
    return url_to_fs(url)


JOURNAL_COMPACT_BYTES = 1024 * 1024   # the journal is rewritten with only its live lines past this


def _apply(live: dict[str, str], line: str) -> None:
    mark, url = line[:1], line[1:]
    if mark in "+~!" and mark and url:
        live[url] = "!" if live.get(url) == "!" else mark
    elif mark == "-":
        live.pop(url, None)


class HiddenJournal:
    """A local list of the hidden files a collector has open, so the hidden files of a
    crashed run are found at start. Append-only lines: ``+path`` (opened), ``~path``
    (opened, salvageable), ``!path`` (holds E2E groups: never salvage), ``-path`` (done).
    Each line is written before the data it describes. Bounded: once the file passes
    ``JOURNAL_COMPACT_BYTES`` it is rewritten with the files still open only (a collector
    that runs for weeks writes two lines per file it makes; read whole at the next start
    they were gigabytes)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._live: dict[str, str] | None = None   # what the file says, once read
        self._compacted = 0       # bytes of the journal as last rewritten

    def add(self, url: str, mark: str = "+") -> None:
        self._write(f"{mark}{url}\n")

    def mark(self, urls, mark: str) -> None:
        self._write("".join(f"{mark}{u}\n" for u in urls))

    def remove(self, urls) -> None:
        self._write("".join(f"-{u}\n" for u in urls))

    def _write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._live is None:
                self._live = self._read()
            for line in text.split("\n"):   # as _read splits: on \n only (a path may
                _apply(self._live, line)      # hold U+2028 or U+0085, which splitlines cuts)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                size = f.tell()
            # past twice what the last rewrite left too: with many files open at once (their
            # lines alone past the bound) it is not rewritten at every line
            if size > max(JOURNAL_COMPACT_BYTES, 2 * self._compacted):
                self._rewrite("".join(f"{m}{u}\n" for u, m in self._live.items()))

    def _read(self) -> dict[str, str]:
        live: dict[str, str] = {}
        try:
            with open(self.path, encoding="utf-8", newline="\n") as f:
                for line in f:            # a line at a time: memory is the live files
                    _apply(live, line.rstrip("\n"))
        except FileNotFoundError:
            pass
        return live

    def _rewrite(self, text: str) -> None:
        # written whole and synced before it replaces the journal, and the replacement
        # synced: a crash of the machine leaves the old journal or the new, never an
        # empty or partial one (which would forget hidden files of the run)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            self._compacted = f.tell()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def entries(self) -> dict[str, str]:
        """Hidden files not done: path -> mark (``+``, ``~`` or ``!``; ``!`` sticks)."""
        with self._lock:
            return self._read()

    def reset(self, keep=()) -> None:
        """The journal holds ``keep`` only: a mapping path -> mark keeps each mark (a
        salvageable ``~`` file stays salvageable), other iterables are marked ``!``."""
        marks = dict(keep) if isinstance(keep, dict) else {u: "!" for u in keep}
        with self._lock:
            self._live = marks
            self._rewrite("".join(f"{m}{u}\n" for u, m in marks.items()))


def _exists(url: str) -> bool:
    if "://" not in url:
        return os.path.exists(url)
    fs, p = _fs_of(url)
    return fs.exists(p)


def _rename(src: str, dst: str) -> None:
    if "://" not in src:
        os.replace(src, dst)
        return
    fs, s = _fs_of(src)
    _, d = _fs_of(dst)
    fs.mv(s, d)


def _remove(url: str) -> None:
    try:
        if "://" not in url:
            os.unlink(url)
        else:
            fs, p = _fs_of(url)
            fs.rm(p)
    except FileNotFoundError:
        pass


def _final_of(hidden: str) -> tuple[str, str, str]:
    """(directory, base name, compression extension) of the final file a dfs hidden file
    ``dir/.NAME[.N].tmp`` was to become."""
    sep = "/" if "://" in hidden else os.sep
    d, _, name = hidden.rpartition(sep)
    name = name[1:-len(".tmp")] if name.startswith(".") and name.endswith(".tmp") else name
    for ext in (".gz", ".zst"):
        stem, e, n = name.rpartition(ext + ".")
        if e and n.isdigit():        # NAME.gz.1 -> the reserved hidden variant
            name = stem + ext
    ext = ".gz" if name.endswith(".gz") else ".zst" if name.endswith(".zst") else ""
    base = name[:len(name) - len(ext)] if ext else name
    return d, base, ext


SALVAGE_CHUNK = 1024 * 1024     # bytes read, decoded or written at a time by salvage


def _open(url: str, mode: str):
    if "://" not in url:
        return open(url, mode)
    fs, p = _fs_of(url)
    return fs.open(p, mode)


def _decoded(f, ext: str):
    """The bytes the hidden file ``f`` holds, decoded (gzip, zstd: as far as the stream
    goes), ``SALVAGE_CHUNK`` at most at a time whatever the compression ratio."""
    if ext == ".zst":
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=SALVAGE_CHUNK)
        while chunk := reader.read(SALVAGE_CHUNK):
            yield chunk
        return
    if ext != ".gz":
        while chunk := f.read(SALVAGE_CHUNK):
            yield chunk
        return
    d = zlib.decompressobj(31)
    while not d.eof and (raw := f.read(SALVAGE_CHUNK)):
        while raw and not d.eof:
            out = d.decompress(raw, SALVAGE_CHUNK)
            raw = d.unconsumed_tail
            if out:
                yield out


def _complete_lines(chunks):
    """The bytes of ``chunks`` up to the last complete line, in pieces (a partial line
    at the end is left out)."""
    tail = bytearray()
    for chunk in chunks:
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            tail += chunk
            continue
        yield bytes(tail) + chunk[:cut]
        tail = bytearray(chunk[cut:])


def _last_line_end(path: str) -> tuple[int, int]:
    """(size, offset after the last newline) of a local plain file, read backwards a
    chunk at a time."""
    with open(path, "rb") as f:
        size = end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - SALVAGE_CHUNK)
            f.seek(start)
            at = f.read(end - start).rfind(b"\n")
            if at >= 0:
                return size, start + at + 1
            end = start
    return size, 0


def salvage(hidden: str) -> str:
    """Make the hidden file of a crashed run final, cut after its last complete line
    (line formats; gzip and zstd streams are decoded as far as they go and written
    again). Returns the final path. Memory stays within a few ``SALVAGE_CHUNK`` whatever
    the file's size (and a line's length: a partial line at the end is read through)."""
    d, base, ext = _final_of(hidden)
    sep = "/" if "://" in hidden else os.sep
    final, n = f"{d}{sep}{base}{ext}", 0
    while _exists(final):
        n += 1
        final = f"{d}{sep}{base}.{n}{ext}"
    # Each step leaves the hidden file with the same events, so a crash here and a second
    # salvage at the next start give the same final file.
    if ext or "://" in hidden:
        tmp = hidden + ".salvage"
        with _open(hidden, "rb") as src, _open(tmp, "wb") as out:
            if ext == ".gz":
                c = zlib.compressobj(6, zlib.DEFLATED, 31)
                for piece in _complete_lines(_decoded(src, ext)):
                    out.write(c.compress(piece))
                out.write(c.flush())
            elif ext == ".zst":
                import zstandard
                with zstandard.ZstdCompressor(level=3).stream_writer(out,
                                                                     closefd=False) as z:
                    for piece in _complete_lines(_decoded(src, ext)):
                        z.write(piece)
            else:
                for piece in _complete_lines(_decoded(src, ext)):
                    out.write(piece)
            if "://" not in hidden:
                out.flush()
                os.fsync(out.fileno())
        _rename(tmp, hidden)
    else:
        size, cut = _last_line_end(hidden)
        if cut < size:
            with open(hidden, "r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
    _rename(hidden, final)
    if "://" not in hidden:
        fsync_dir(Path(d or "."))
    return final


def record_parts(rec) -> tuple[list[tuple[str, str]], dict]:
    """(pairs, uploads) of a file record read from ZooKeeper: ``files``, a list of
    [hidden, final] URL pairs, and ``uploads``, hidden URL -> {"id": upload id, "parts":
    [[number, ETag]...]}. ValueError for anything else (an unreadable record, one of
    another version, or a hand-made one): the caller must neither act on it nor delete it."""
    if not isinstance(rec, dict) or not isinstance(rec.get("files"), list):
        raise ValueError("no list of files")
    pairs = []
    for p in rec["files"]:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(u, str) and u
                                                            for u in p)):
            raise ValueError(f"a file entry is not a [hidden, final] pair: {str(p)[:200]}")
        pairs.append((p[0], p[1]))
    uploads = rec.get("uploads", {})
    if not isinstance(uploads, dict):
        raise ValueError("uploads is not a table")
    for hidden, up in uploads.items():
        if not (isinstance(up, dict) and isinstance(up.get("id"), str)
                and isinstance(up.get("parts"), list)
                and all(isinstance(q, list) and len(q) == 2 and isinstance(q[0], int)
                        and isinstance(q[1], str) for q in up["parts"])):
            raise ValueError(f"the upload of {hidden[:200]!r} is not an id and parts")
    return pairs, uploads


class Committer:
    """A collectorSink's commit protocol (docs/e2e.md, collector steps 2-4). With
    ``state`` None (no ZooKeeper) only the hidden-file journal is kept."""

    def __init__(self, ctx: NodeContext, state: CollectorState | None, metrics: Metrics):
        self.ctx = ctx
        self.storage = config_of(ctx.shared)
        self.state = state
        self.metrics = metrics
        self.journal = HiddenJournal(ctx.component_dir("collector") / "hidden-files")
        self.unresolved: dict[str, tuple] = {}   # file id -> (pairs, groups, checkpoints)
        # applied, record not deleted: file id -> (pairs, uploads) while renames or
        # completions are still to do (a store that failed them: tried again at each
        # roll), None once only the record's deletion is left
        self.records_left: dict[str, tuple | None] = {}
        # object stores that gave no answer in this pass (recover, or one roll's resolve
        # and commit): not asked again until the next pass, so a hung store costs one
        # request's timeouts per pass instead of one per file
        self._no_answer: set = set()

    def _on_store(self, url: str, what: str, fn):
        """``fn(store)`` for the object store of ``url``; StorageUnreachable without
        asking when that store gave no answer earlier in this pass (logged once, counted
        in ``store_unreachable``)."""
        store = self.storage.store_for(url)
        if store in self._no_answer:
            raise StorageUnreachable(f"{url}: not tried to {what}: "
                                     f"{store.unstrip_protocol(store.bucket)} gave no "
                                     f"answer earlier; tried again at the next roll or start")
        try:
            return fn(store)
        except StorageUnreachable as exc:
            self._no_answer.add(store)
            self.metrics.add("store_unreachable")
            log.error("collectorSink: the object store gives no answer; its other files "
                      "wait for the next roll or start: %s", exc)
            raise

    # -------------------------------------------------------------- start

    def recover(self) -> None:
        """Roll forward this collector's recorded commits, then delete the hidden files of
        crashed runs that no record names. Shown in the node's status while it lasts (a
        slow store or disk: the node stays CONFIGURING, saying why); an object store that
        gives no answer is asked once, its files wait for the next roll or start."""
        report = self.ctx.conditions.reporter("collectorSink recovery")
        report("collectorSink: finishing the files of a crashed run before opening")
        try:
            self._recover()
        finally:
            report(None)

    def _recover(self) -> None:
        protected: set[str] = set()
        kept_uploads: set[str] = set()
        unreadable = 0
        self._no_answer = set()
        if self.state is not None:
            st = self.state
            try:
                records = st.commits.file_records(st.collector_id)
            except Exception as exc:
                raise SinkError(f"collectorSink: cannot read the commit records of "
                                f"{st.collector_id} from ZooKeeper: {exc}") from exc
            for fid, rec in records.items():
                try:
                    pairs, uploads = record_parts(rec)
                except ValueError as exc:
                    # it may name any hidden file of the journal: none is deleted
                    unreadable += 1
                    self.metrics.add("errors")
                    log.error("collectorSink: commit record %s of %s cannot be read (%s): "
                              "left in ZooKeeper at %s, and no hidden file of a crashed run "
                              "is deleted while it is there (check the files it names, "
                              "then delete it and restart the node)", fid, st.collector_id,
                              exc, st.commits.path("files", st.collector_id, fid))
                    continue
                if self._finish_renames(pairs, fid, recovering=True, uploads=uploads):
                    try:
                        st.commits.delete_file_record(st.collector_id, fid)
                    except Exception as exc:
                        self.records_left[fid] = None
                        log.warning("collector %s: cannot delete commit record %s yet: %s",
                                    st.collector_id, fid, exc)
                else:
                    # its groups are acknowledged: tried again at every roll (a store or
                    # disk that failed now), not only at the next start
                    self.records_left[fid] = (pairs, uploads)
                    protected.update(h for h, _ in pairs)
                    kept_uploads.update(u["id"] for u in uploads.values())
        named = set(protected)          # hidden files of recorded commits: never salvaged
        marks = self.journal.entries()
        if unreadable:
            protected.update(marks)
            self.metrics.add("records_unreadable", unreadable)
        orphans = {u: m for u, m in marks.items() if u not in protected}
        removed = salvaged = 0
        for u, mark in orphans.items():
            try:
                if is_object_url(u):
                    removed += self._abort_orphans(u, kept_uploads)
                    continue
                if not _exists(u):
                    continue
                if mark == "~":
                    final = salvage(u)
                    salvaged += 1
                    log.info("collectorSink salvaged the events of a crashed run (no E2E "
                             "group among them)", extra={"file": final})
                else:
                    _remove(u)
                    removed += 1
            except Exception as exc:
                protected.add(u)
                log.warning("collectorSink: cannot clean up the hidden file %s of a crashed "
                            "run: %s", u, exc)
        if removed:
            self.metrics.add("orphans_removed", removed)
            log.info("collectorSink removed %d incomplete hidden files of a crashed run",
                     removed)
        if salvaged:
            self.metrics.add("files_salvaged", salvaged)
        # a file kept only because it could not be cleaned up now (an unreadable record,
        # a store that gave no answer, a failed salvage) keeps its mark: a '~' file is
        # salvaged at a later start, not deleted as one holding E2E groups
        self.journal.reset(keep={u: "!" if u in named else marks.get(u, "!")
                                 for u in protected})

    def _abort_orphans(self, url: str, keep: set[str]) -> int:
        """Abort the uploads in progress to the object ``url`` (a key a crashed run of this
        collector was writing, from the journal) that no recorded commit names: nothing of
        them was ever visible. The number aborted."""
        _, key = split_url(url)

        def abort(store) -> int:
            n = 0
            for up in store.uploads(key):
                if up.key == key and up.upload_id not in keep:
                    store.abort(f"{store.bucket}/{key}", up.upload_id)
                    n += 1
                    log.info("collectorSink aborted the upload of a crashed run",
                             extra={"key": url, "upload": up.upload_id})
            return n
        return self._on_store(url, "abort its uploads", abort)

    def _complete_upload(self, final: str, up: dict) -> None:
        """Complete a recorded upload; idempotent (an upload completed before, whose
        object is the one its parts make, is done); StorageError otherwise."""
        bucket, key = split_url(final)
        self._on_store(final, "complete its upload", lambda store: store.complete(
            f"{bucket}/{key}", up["id"], [tuple(p) for p in up["parts"]]))

    def _finish_renames(self, pairs: list[tuple[str, str]], fid: str,
                        recovering: bool = False, uploads: dict | None = None) -> bool:
        """Rename every recorded hidden file still there (complete every recorded upload);
        True once all are final."""
        ok = True
        for hidden, final in pairs:
            up = (uploads or {}).get(hidden)
            if up is not None:
                try:
                    self._complete_upload(final, up)
                    if recovering:
                        self.metrics.add("rolled_forward")
                        log.info("collectorSink rolled a recorded commit forward",
                                 extra={"final": final})
                except (StorageError, KeyError, ValueError) as exc:
                    ok = False
                    self.metrics.add("errors")
                    log.error("collectorSink: cannot complete the recorded upload %s (%s): "
                              "%s", final, fid, exc)
                continue
            try:
                if _exists(final):
                    continue
                if _exists(hidden):
                    _rename(hidden, final)
                    if recovering:
                        self.metrics.add("rolled_forward")
                        log.info("collectorSink rolled a recorded commit forward",
                                 extra={"final": final})
                    if "://" not in final:
                        fsync_dir(Path(os.path.dirname(final) or "."))
                else:
                    self.metrics.add("errors")
                    log.error("collectorSink: a committed file is missing (neither %s nor "
                              "%s exists); its events are lost", hidden, final)
            except Exception as exc:
                ok = False
                self.metrics.add("errors")
                log.error("collectorSink: cannot finish recorded commit %s (%s -> %s): %s",
                          fid, hidden, final, exc)
        return ok

    # -------------------------------------------------------------- each roll

    def commit(self, files: list, finals: list[str], pending: list[Checkpoint],
               groups: list[tuple[str, int]]) -> bool:
        """Make ``files`` (completed, fsynced hidden files) final under ``finals`` with
        their ``groups`` committed, then commit ``pending`` (positions only now) locally.
        False when the commit was refused and the files discarded. Never raises for a
        refused or undecided commit (the agents resend what is not acknowledged)."""
        self.resolve()
        st = self.state
        pairs = [(file_url(f, f.hidden), file_url(f, fin)) for f, fin in zip(files, finals)]
        fid = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        record = {"files": pairs, "groups": len(groups), "events": sum(f.events for f in files)}
        uploads = {file_url(f, f.hidden): {"id": f.upload.upload_id,
                                           "parts": [list(p) for p in f.upload.parts]}
                   for f in files if getattr(f, "upload", None) is not None}
        if uploads:
            # recorded before any upload is completed: the roll-forward's instructions
            record["uploads"] = uploads
        try:
            applied, why = st.commits.commit_groups(st.collector_id, fid, record, groups,
                                                  f"{st.collector_id}/{fid}".encode())
        except Exception as exc:
            self.metrics.add("commits_undecided")
            self.unresolved[fid] = (pairs, groups, pending, uploads)
            log.error("collector %s: the outcome of a commit is unknown (ZooKeeper: %s); "
                      "its files stay hidden until it is known", st.collector_id, exc)
            return False
        if not applied:
            self._discard(pairs, groups, why, uploads)
            return False
        self._after_applied(fid, pairs, groups, pending, uploads)
        return True

    def _after_applied(self, fid: str, pairs, groups, pending, uploads=None) -> None:
        st = self.state
        if self._finish_renames(pairs, fid, uploads=uploads):
            try:
                st.commits.delete_file_record(st.collector_id, fid)
            except Exception:
                self.records_left[fid] = None
        else:
            self.records_left[fid] = (pairs, uploads)
        st.forget(groups)
        self.journal.remove([h for h, _ in pairs])
        self.metrics.add("files_committed", len(pairs))
        self.metrics.add("groups_committed", len(groups))
        self.ctx.store.commit(pending)

    def _discard(self, pairs, groups, why: str, uploads=None) -> None:
        st = self.state
        left = set()          # not deleted (aborted) now: left in the journal for the next start
        for hidden, _ in pairs:
            try:
                up = (uploads or {}).get(hidden)
                if up is not None:
                    bucket, key = split_url(hidden)
                    self._on_store(hidden, "abort its upload", lambda store: store.abort(
                        f"{bucket}/{key}", up["id"]))
                else:
                    _remove(hidden)
            except Exception as exc:
                left.add(hidden)
                log.warning("collectorSink: cannot delete discarded file %s (the next start "
                            "tries again): %s", hidden, exc)
        self.journal.remove([h for h, _ in pairs if h not in left])
        st.forget(groups)
        try:
            st.commits.release_claims(groups)
        except Exception:
            pass
        self.metrics.add("files_discarded", len(pairs))
        self.metrics.add("groups_rejected", len(groups))
        log.warning("collector %s discarded a file instead of committing it (%s); the "
                    "agents send its %d groups again", st.collector_id, why, len(groups))

    def resolve(self) -> None:
        """Decide commits whose outcome was unknown, finish leftover record deletions."""
        st = self.state
        if st is None:
            return
        self._no_answer = set()
        for fid in list(self.unresolved):
            pairs, groups, pending, uploads = self.unresolved[fid]
            try:
                applied = st.commits.file_recorded(st.collector_id, fid)
            except Exception:
                return        # still no ZooKeeper
            del self.unresolved[fid]
            if applied:
                self._after_applied(fid, pairs, groups, pending, uploads)
            else:
                self._discard(pairs, groups, "the commit did not happen", uploads)
        for fid, todo in list(self.records_left.items()):
            if todo is not None:
                if not self._finish_renames(todo[0], fid, uploads=todo[1]):
                    continue          # the record stays: the next roll or start tries again
                self.records_left[fid] = None
            try:
                st.commits.delete_file_record(st.collector_id, fid)
                del self.records_left[fid]
            except Exception:
                return

    def commit_late(self, groups: list[tuple[str, int]]) -> None:
        """Record groups whose events went to a file already made final without them (their
        checkpoint came after the roll): not atomic with the file, so a crash right here
        could duplicate them. Logged; counted in ``late_commits``."""
        st = self.state
        self.metrics.add("late_commits", len(groups))
        log.warning("collector %s: %d groups reached a file before their checkpoint; "
                    "committing them after the file", st.collector_id, len(groups))
        try:
            applied, why = st.commits.commit_groups(st.collector_id, None, None, groups,
                                                  f"{st.collector_id}/late".encode())
        except Exception as exc:
            applied, why = False, str(exc)
        st.forget(groups)
        if not applied:
            self.metrics.add("errors")
            log.error("collector %s: late groups could not be committed (%s); they may "
                      "be written twice", st.collector_id, why)
