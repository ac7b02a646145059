"""The dfs family: ``dfs``, ``formatDfs``, ``escapedFormatDfs``, ``escapedCustomDfs``,
``customdfs`` -- ``("path"[, "file"[, format]], compression="none", utc=false,
maxOpen=256)``.

Files on any filesystem URL fsspec knows (plain paths and ``file://`` here; ``hdfs://``,
``s3://``... when their fsspec backend is installed).

* **Target.** With ``file``, ``path`` is a directory and ``file`` the file name in it;
  without, ``path`` is the whole file path. Escapes (``node.escapes``) are expanded in both
  -- in every member of the family: OG left ``formatDfs``/``customdfs`` paths unescaped,
  which only matters for a literal ``%`` (write ``%%``). Events are bucketed by their
  expanded target, each bucket written to its own file, so events of different hours go to
  different ``%H`` files by their *own* timestamps. Inside ``roll``, use ``%{rolltag}`` in
  the file name for one file per roll: ``escapedCustomDfs("/logs/%Y%m%d", "web-%{rolltag}")``.
* **Second argument.** A function value (``formatDfs("/x/f", json)``) is the format. For
  ``formatDfs`` and ``customdfs``, whose second argument was the format in OG, a string
  naming a known format (``"json"``) is the format too; everywhere else a string is a file.
* **Hidden until complete.** Each file is written as ``.<final name>.tmp`` in its final
  directory (created if missing) and renamed to its final name when the sink closes. Local
  renames go through the checkpoint store together with the checkpoints received through
  ``when_durable``: one journaled commit, rolled forward after a crash, so a file becomes
  visible exactly when the source positions that produced it are recorded. For non-local
  filesystems the commit is made first and the files are moved after it (``fs.mv``): a
  crash between the two leaves complete hidden files behind -- roll-forward is local only.
  On ``s3://`` (no rename there: a copy and a delete) a file is a multipart upload to its
  final key (``node.object_store``), invisible until it is completed at close, before the
  positions are committed; endpoints and credentials come from the node's
  ``--storage-config``, never from the spec.
* **Names.** ``compression`` (``none``, ``gzip``, ``zstd``) compresses the whole file and
  appends ``.gz``/``.zst`` to its name. A final name that already exists is never
  overwritten: ``name.1``, ``name.2``... (before the compression extension) is used instead.
* **Paths from events.** Values of the event in the path are percent-encoded
  (``node.escapes``: never ``/``, ``..``, NUL, a leading ``.``). The *base* is the
  directory of the text before the first escape (``/srv/base/`` for
  ``/srv/base/%{host}/f``); every file the sink opens is checked before it is opened:
  below the base, no segment may be empty, ``.`` or ``..`` (an empty value: ``%{host}``
  of an event without host), no name longer than 255 bytes (the file name 242, room for
  ``.name.N.tmp``), the whole path at most 4096 bytes, and the directory, resolved
  (``os.path.realpath`` locally, ``posixpath.normpath`` on other filesystems), must lie
  inside the resolved base. An event whose path fails goes to the **error bucket**
  ``<base>_rejected/rejected-<yyyyMMdd-HHmmssSSS>`` (one file per sink instance, so one
  per roll, written, hidden and committed like any other file: nothing is lost), counted
  in ``refused`` and ``refused_path`` and logged (rate-limited). Symbolic links someone
  plants inside the base are followed by the check but not guarded against
  (time-of-check to time-of-use): the base belongs to the collector's user. A pattern
  whose own text has an empty, ``.`` or ``..`` segment after its first escape, or a
  control character, is refused when the spec is checked, as is an escape in the bucket
  of an ``s3://`` URL.
* **Open files.** At most ``maxOpen`` files (one per distinct expansion) are open at
  once: opening one more first completes the least recently written (flushed, fsynced,
  still hidden; it becomes final with the others at close, and a later event for it starts
  ``name.1``). So a sender inventing a new ``%{host}`` per event costs file descriptors and
  compressor memory for ``maxOpen`` files, not one per value.
* **Failures** (permission, disk full, a path under a regular file) raise SinkError. A
  batch that fails is cut off every file it was written to (truncated to the size before
  it), so a resend neither duplicates its first events nor leaves a torn line; a file
  left with no event is deleted at close. Compressed and container files cannot be cut
  (the encoder took the batch in): such a file is never made final. If a
  file cannot be completed at close, nothing is committed or renamed: the hidden files stay
  for inspection and the checkpoints are dropped, so after a restart the source resends.
  Hidden files of a crashed run are overwritten when the same name is written again.
"""
from __future__ import annotations

import logging
import os
import posixpath
import threading
import time
from typing import NamedTuple

from ..checkpoint import Checkpoint
from ..component import NodeContext, Sink
from ..errors import SinkError
from ..escapes import Escaper
from ..formats import FORMATS, Compression, OutputFormat, open_compressed
from ..limits import Refusals
from ..object_store import (MultipartWriter, ObjectStore, StorageError, check_backend,
                            config_of, is_object_url, missing_backend_message)
from ..registry import AtLeast1, sink
from ..spec import Func, Lit

log = logging.getLogger(__name__)

NAME_MAX = 255             # bytes in one path segment (Linux, most filesystems)
PATH_MAX = 4096            # bytes in a whole path
_NAME_ROOM = 13            # ".", ".N" and ".tmp" the hidden and the free names may add
REJECTED_DIR = "_rejected"
MAX_OPEN = 256             # open files per sink instance (maxOpen)

# In-process reservations: two open sinks (a roll's old and new instance, two logical nodes)
# must not share a hidden file, nor pick the same free final name at the same time.
_NAMES_LOCK = threading.Lock()
_ACTIVE_HIDDEN: set[str] = set()
_FINAL_LOCK = threading.Lock()


class FileOrFormat:
    """The second argument: a file name (string) or an output format (function)."""

    spec_type_name = "string | format"

    @classmethod
    def from_spec(cls, value):
        if isinstance(value, Lit):
            if value.kind != "string":
                raise ValueError(f"must be a file name or an output format, got "
                                 f"{value.kind} {value.value!r}")
            return value.value
        if isinstance(value, Func):
            return OutputFormat.from_spec(value)
        raise ValueError(f"must be a file name or an output format, got {value!r}")


class DfsTarget(NamedTuple):
    file: str | None              # the file name, when given apart from the path
    format: OutputFormat | None
    target: str                   # the path of the files, with escapes
    escaper: Escaper
    base: str                     # the directory before the first escape ("" for none)


def dfs_target(path: str, file: str | OutputFormat | None, format: OutputFormat | None,
               utc: bool, format_second: bool = False) -> DfsTarget:
    """What a dfs sink's path arguments name (``format_second``: a string second argument
    naming a format is the format); ValueError unless they name files below a fixed
    directory."""
    if isinstance(file, str) and format is None and format_second and file in FORMATS:
        file = OutputFormat.get(file)
    if isinstance(file, OutputFormat):
        if format is not None:
            raise ValueError("the format is given twice")
        file, format = None, file
    if not path:
        raise ValueError("the path is empty")
    if is_object_url(path) and "@" in path.split("://", 1)[1].split("/", 1)[0]:
        # an object store's keys belong in the node's storage settings, never in a spec
        # (stored in ZooKeeper, shown by every master; other URLs' passwords are hidden in
        # listings, but an S3 key has a settings file made for it)
        raise ValueError("the URL carries credentials (key:secret@): give them to the "
                         "node in its --storage-config file instead")
    if is_object_url(path) and "%" in path.split("://", 1)[1].split("/", 1)[0]:
        # the bucket comes from the settings of a fixed URL prefix; one made from events
        # would make a client per value (kept by the node) and never be below the base
        raise ValueError("the bucket of an object-store URL must be written out: escapes "
                         "may come only after it (s3://bucket/%{host}/...)")
    if file is not None and ("/" in file or not file):
        raise ValueError(f"the file name {file!r} must be a plain name; put directories "
                         f"in the path")
    target = path.rstrip("/") + "/" + file if file is not None else path
    if target.endswith("/"):
        raise ValueError(f"{path!r} names a directory: give a file name")
    if any(ch < " " or ch == "\x7f" for ch in target):
        raise ValueError(f"the path {target!r} has a control character")
    escaper = Escaper(target, utc=utc, path=True)
    fixed = escaper.fixed_prefix
    base = fixed[:fixed.rfind("/") + 1]   # "" when the path starts with an escape
    shape = "".join([p.value if p.kind == "lit" else "x" for p in escaper.parts])
    if any(seg in ("", ".", "..") for seg in shape[len(base):].split("/")):
        raise ValueError(f"the path {target!r} has an empty, '.' or '..' segment after "
                         f"its first escape")
    return DfsTarget(file, format, target, escaper, base)


class _File:
    """One open bucket: hidden file, its streams, and where it goes on close."""

    __slots__ = ("fs", "local", "dir", "final_name", "hidden", "raw", "stream", "writer",
                 "events", "completed", "torn", "final")

    def __init__(self, fs, local: bool, d: str, final_name: str, hidden: str):
        self.fs, self.local, self.dir = fs, local, d
        self.final_name, self.hidden = final_name, hidden
        self.raw = self.stream = self.writer = None
        self.events = 0
        self.completed = False
        self.torn = False          # holds part of a failed batch that could not be cut off
        self.final: str | None = None   # object stores: the key, fixed when the upload starts

    @property
    def upload(self) -> MultipartWriter | None:
        """The multipart upload an object-store file is written to (None for files)."""
        return self.raw if isinstance(self.raw, MultipartWriter) else None


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    return isinstance(fs, LocalFileSystem)



def free_name(join, d: str, base: str, ext: str, taken) -> str:
    """A path in ``d`` that ``taken(path)`` says is free: ``base + ext`` itself, else
    ``base.N + ext``. A target written again at every roll has ``base.1 .. base.N`` behind
    it, so N is found by doubling and then halving: about 2 log2(N) looks (34 at 100,000
    rolls), not N. With holes in the numbers it may not be the lowest free one; it is
    always one ``taken`` said was free."""
    first = join(d, base + ext)
    if not taken(first):
        return first

    def numbered(n: int) -> str:
        return join(d, f"{base}.{n}{ext}")
    low, high = 0, 1                    # low: 0 or taken; high: the next to look at
    while taken(numbered(high)):
        low, high = high, high * 2
    while high - low > 1:               # high is free: narrow to the first free after low
        mid = (low + high) // 2
        if taken(numbered(mid)):
            low = mid
        else:
            high = mid
    return numbered(high)

@sink("dfs", aliases=("escapedFormatDfs", "escapedCustomDfs"))
class DfsSink(Sink):
    """Writes events to files on any filesystem URL, bucketed by escapes, each file hidden
    until the sink closes (see the module docstring)."""

    format_second = False  # formatDfs/customdfs: a string naming a format is the format
    flush_appends = False  # hand every batch to the OS before append returns

    def __init__(self, path: str, file: FileOrFormat | None = None,
                 format: OutputFormat | None = None, *,
                 compression: Compression = Compression("none"), utc: bool = False,
                 maxOpen: AtLeast1 = MAX_OPEN):
        super().__init__()
        t = dfs_target(path, file, format, utc, self.format_second)
        self.path = path
        self.file = t.file
        self.format = OutputFormat.of(t.format, "raw")
        self.compression = Compression.of(compression)
        self.utc = utc
        self.target = t.target
        self.escaper = t.escaper
        self.base = t.base
        self.refusals = Refusals(self.metrics, log, f"{self.spec_name}({self.target!r})")
        self.max_open = maxOpen
        self.files: dict[str, _File] = {}      # open, least recently written first
        self.done: list[_File] = []            # completed early (maxOpen), not yet final
        self.pending: list[Checkpoint] = []
        self.lock = threading.Lock()
        self.opened = False
        self._fs_cache: dict[str, tuple] = {}
        self._root: tuple | None = None        # (fs, resolved base directory)
        self._rejected: str | None = None      # this instance's error bucket

    # -- lifecycle

    @classmethod
    def check_args(cls, args) -> None:
        dfs_target(args["path"], args["file"], args["format"], args["utc"], cls.format_second)

    def open(self, ctx: NodeContext) -> None:
        try:
            # a missing filesystem package fails the flow when configured, not at the
            # first event (where every batch would fail and be resent)
            check_backend(self.base)
        except StorageError as exc:
            raise SinkError(f"dfs: cannot use {self.base!r}: {exc}") from exc
        self.ctx = ctx
        self.opened = True

    def append(self, events) -> None:
        with self.lock:
            groups = self.escaper.group(events)
            marks: dict[int, tuple[_File, int | None, int]] = {}  # id -> (file, end, events)
            f = None
            try:
                for target, evs in groups.items():
                    key, f = target, self.files.pop(target, None)
                    if f is None:
                        key, f = self._open_checked(target, len(evs))
                    self.files[key] = f               # now the most recently written
                    if id(f) not in marks:
                        marks[id(f)] = (f, self._end(f), f.events)
                    n = f.writer.write(evs)
                    f.events += len(evs)
                    self.metrics.add("bytes_out", n)
                if self.flush_appends:
                    for g, _, _ in marks.values():
                        self._flush(g)
            except (OSError, ValueError, SinkError, StorageError) as exc:
                # StorageError: an object store's part upload failed (the file is torn)
                self.metrics.add("errors")
                self._cut_back(list(marks.values()))
                if isinstance(exc, SinkError):
                    raise
                raise SinkError(f"dfs: cannot write {f.hidden}: {exc}") from exc
            self.metrics.add("events_in", len(events))

    @staticmethod
    def _flush(f: _File) -> None:
        f.writer.flush()
        if f.stream is not f.raw:
            f.raw.flush()

    def _end(self, f: _File) -> int | None:
        """Where ``f``'s bytes end before a batch (all handed to the OS), or None when a
        batch cannot be cut off it (compressed, container format, not local: the
        encoder's state has taken the batch in)."""
        if not f.local or f.stream is not f.raw or self.format.container:
            return None
        self._flush(f)
        return f.raw.tell()

    def _cut_back(self, marks) -> None:
        """Cut each file back to its end before the failed batch (``_end``), so a batch
        written in part (disk full) leaves no bytes behind: the sender's resend does not
        duplicate them and no torn line remains. A file that cannot be cut is ``torn``:
        it is never made final (see :meth:`_complete`). Counted in ``batches_cut``."""
        if marks:
            self.metrics.add("batches_cut")
        for f, end, events in marks:
            f.events = events
            if end is None:
                f.torn = True
                continue
            try:
                fd = os.dup(f.raw.fileno())
            except (OSError, ValueError):
                f.torn = True
                continue
            try:
                # The buffered file may still hold bytes the disk refused: closing it
                # tries them once more, then the cut removes whatever reached the file.
                try:
                    f.raw.close()
                except OSError:
                    pass
                os.ftruncate(fd, end)
                os.lseek(fd, end, os.SEEK_SET)
                f.raw = f.stream = open(fd, "wb")
                fd = None
                f.writer = self.format.open_writer(f.stream)
            except OSError as exc:
                f.torn = True
                log.error("dfs sink cannot cut a failed batch off its file: the file is "
                          "never made final", extra={"hidden": f.hidden, "error": str(exc)})
            finally:
                if fd is not None:
                    os.close(fd)

    def when_durable(self, cp: Checkpoint) -> None:
        # Durable means renamed: kept until close commits it with the renames.
        with self.lock:
            self.pending.append(cp)

    def close(self) -> None:
        with self.lock:
            if not self.opened:
                return
            self.opened = False
            files, self.files = self.done + list(self.files.values()), {}
            self.done = []
            pending, self.pending = self.pending, []
            self._rejected = None
            try:
                self._finish(files, pending)
            finally:
                with _NAMES_LOCK:
                    for f in files:
                        _ACTIVE_HIDDEN.discard(f.hidden)

    # -- files

    def _resolve(self, target: str) -> tuple:
        """(fs, directory, file name, inside the base?) of an expanded target."""
        d, name = target.rsplit("/", 1) if "/" in target else ("", target)
        hit = self._fs_cache.get(d)
        if hit is None:
            fs, fsdir = self._url_to_fs(d or ".")
            if len(self._fs_cache) > 1024:
                self._fs_cache.clear()
            hit = self._fs_cache[d] = (fs, fsdir, self._inside(fs, fsdir))
        return hit[0], hit[1], name, hit[2]

    def _url_to_fs(self, url: str) -> tuple:
        """(filesystem, path): an :class:`ObjectStore` and ``bucket/key`` for ``s3://``
        (written as multipart uploads), else fsspec's, with the node's storage options
        for the URL (never from the spec)."""
        storage = config_of(getattr(getattr(self, "ctx", None), "shared", None))
        if is_object_url(url):
            try:
                return storage.store_for(url), url.split("://", 1)[1]
            except StorageError as exc:
                raise SinkError(f"dfs: cannot use {url!r}: {exc}") from exc
        from fsspec.core import url_to_fs
        try:
            return url_to_fs(url, **(storage.options_for(url) if "://" in url else {}))
        except (ValueError, ImportError, OSError) as exc:
            raise SinkError(f"dfs: cannot use {url!r}: "
                            f"{missing_backend_message(url, exc)}") from exc

    def _inside(self, fs, fsdir: str) -> bool:
        """True if the directory ``fsdir`` of ``fs``, resolved, is the base or below it."""
        if self._root is None:
            root_fs, root = self._url_to_fs(self.base or ".")
            local = _is_local(root_fs)
            root = os.path.realpath(root) if local else posixpath.normpath(root)
            self._root = (root_fs, root)
        root_fs, root = self._root
        if type(fs) is not type(root_fs):
            return False
        if _is_local(fs):
            real, sep = os.path.realpath(fsdir), os.sep
        else:
            real, sep = posixpath.normpath(fsdir), "/"
        return real == root or real.startswith(root.rstrip(sep) + sep)

    def _refusal(self, target: str) -> str | None:
        """Why ``target`` (an expansion) may not be opened, or None (module docstring)."""
        if len(target.encode("utf-8", "surrogatepass")) > PATH_MAX:
            return f"the path is longer than {PATH_MAX} bytes"
        segs = target[len(self.base):].split("/")
        for seg in segs:
            if seg in ("", ".", ".."):
                return "a value expanded to an empty path segment"
            if len(seg.encode("utf-8", "surrogatepass")) > NAME_MAX:
                return f"a path segment is longer than {NAME_MAX} bytes"
        name = segs[-1] + self.compression.extension
        if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX - _NAME_ROOM:
            return f"the file name is longer than {NAME_MAX - _NAME_ROOM} bytes"
        return None

    def _open_checked(self, target: str, n: int) -> tuple[str, _File]:
        """(key, file) for the ``n`` events expanding to ``target``: its own file if the
        target passes the checks, else this instance's error bucket (counted, logged)."""
        why = self._refusal(target)
        if why is None:
            if self._resolve(target)[3]:
                return target, self._open_file(target)
            why = f"the resolved directory is outside of {self.base or '.'!r}"
        self.refusals.refuse("path", f"{n} events for {target[:300]!r} went to the error "
                                     f"bucket: {why}", n)
        if self._rejected is None:
            now = self.ctx.clock.now_ms()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now // 1000))
            self._rejected = f"{self.base}{REJECTED_DIR}/rejected-{stamp}{now % 1000:03d}"
        f = self.files.pop(self._rejected, None)
        if f is None:
            if not self._resolve(self._rejected)[3]:
                self.metrics.add("errors")
                raise SinkError(f"dfs: the error bucket {self._rejected!r} resolves outside "
                                f"of {self.base or '.'!r}")
            f = self._open_file(self._rejected)
        return self._rejected, f

    def _open_file(self, target: str) -> _File:
        if len(self.files) >= self.max_open:
            self._complete_early()
        fs, d, name, _ = self._resolve(target)
        local = _is_local(fs)
        final_name = name + self.compression.extension
        if isinstance(fs, ObjectStore):
            return self._open_object(fs, target, d, final_name)
        join = os.path.join if local else posixpath.join
        with _NAMES_LOCK:
            hidden, n = join(d, f".{final_name}.tmp"), 0
            while hidden in _ACTIVE_HIDDEN:
                n += 1
                hidden = join(d, f".{final_name}.{n}.tmp")
            _ACTIVE_HIDDEN.add(hidden)
        f = _File(fs, local, d, final_name, hidden)

        def create():
            if local:
                os.makedirs(d, exist_ok=True)
                return open(hidden, "wb")
            fs.makedirs(d, exist_ok=True)
            return fs.open(hidden, "wb")
        return self._start(f, target, create, f"cannot create {hidden}")

    def _start(self, f: _File, target: str, create, failure: str) -> _File:
        """Make ``f`` (its hidden name, or its key on an object store, reserved) the open
        file of ``target``: ``create()`` gives its raw stream, wrapped in the compression and
        the format. On any failure the name is released, what was made is closed (an
        upload aborted: nothing of it was visible) and SinkError says ``failure``."""
        self._will_create(f)
        try:
            f.raw = create()
            f.stream = open_compressed(f.raw, self.compression)
            f.writer = self.format.open_writer(f.stream)
        except Exception as exc:  # fsspec backends and boto3 raise their own types
            with _NAMES_LOCK:
                _ACTIVE_HIDDEN.discard(f.hidden)
            try:
                if f.upload is not None:
                    f.upload.abort()
                elif f.raw is not None:
                    f.raw.close()
            except Exception:
                pass
            self.metrics.add("errors")
            raise SinkError(f"dfs: {failure}: {exc}") from exc
        self.files[target] = f
        self.metrics.add("files_opened")
        log.debug("dfs sink opened a file", extra={"hidden": f.hidden})
        return f

    def _will_create(self, f: _File) -> None:
        """Called before ``f`` is created (collectorSink journals it)."""

    def _open_object(self, store: ObjectStore, target: str, d: str, final_name: str) -> _File:
        """A file on an object store: a multipart upload to its final key, chosen now (a
        free name, as :meth:`_free_name`) and reserved while the upload is in progress;
        nothing is visible under it before the upload is completed at commit."""
        ext = self.compression.extension
        base = final_name[:len(final_name) - len(ext)] if ext else final_name
        try:
            with _FINAL_LOCK:     # uploads of this process complete under it too

                def taken(k: str) -> bool:
                    with _NAMES_LOCK:
                        if k in _ACTIVE_HIDDEN:
                            return True
                    return store.exists(k)
                key = free_name(posixpath.join, d, base, ext, taken)
                with _NAMES_LOCK:
                    _ACTIVE_HIDDEN.add(key)
        except StorageError as exc:
            self.metrics.add("errors")
            raise SinkError(f"dfs: cannot open {target}: {exc}") from exc
        f = _File(store, False, d, posixpath.basename(key), key)
        f.final = key
        return self._start(f, target,
                           lambda: MultipartWriter(store, key, store.create_upload(key)),
                           f"cannot start an upload to {target}")

    def _complete_early(self) -> None:
        """Complete the least recently written open file (``maxOpen`` reached): it stays
        hidden and becomes final with the others at close."""
        target = next(iter(self.files))
        f = self.files.pop(target)
        self.done.append(f)
        self._complete([f])
        self.metrics.add("files_completed_early")

    def _finish(self, files: list[_File], pending: list[Checkpoint]) -> None:
        self._complete(files)
        empty = [f for f in files if f.events == 0]
        if empty:     # opened for a batch that failed and was cut off: nothing to show
            self._discard(empty)
            files = [f for f in files if f.events]
        self._publish(files, pending)

    def _discard(self, files: list[_File]) -> None:
        """Delete the hidden ``files`` (completed, holding no event)."""
        for f in files:
            try:
                if f.local:
                    os.unlink(f.hidden)
                elif f.upload is not None:
                    f.upload.abort()
                else:
                    f.fs.rm(f.hidden)
            except Exception as exc:  # fsspec backends raise their own types
                log.warning("dfs sink cannot delete an empty hidden file",
                            extra={"hidden": f.hidden, "error": str(exc)})

    def _complete(self, files: list[_File]) -> None:
        """End, flush and fsync every file; SinkError (nothing committed) if one fails."""
        errors = []
        for f in files:
            if f.completed:
                continue
            f.completed = True
            try:
                f.writer.close()
                if f.stream is not f.raw:
                    f.stream.close()
                f.raw.flush()
                if f.local:
                    os.fsync(f.raw.fileno())
                f.raw.close()
            except Exception as exc:
                errors.append((f, exc))
                try:
                    f.raw.close()
                except Exception:
                    pass
        if errors:
            self.metrics.add("errors", len(errors))
            f, exc = errors[0]
            raise SinkError(f"dfs: cannot complete {len(errors)} file(s), first "
                            f"{f.hidden}: {exc}; nothing was committed") from exc
        torn = [f for f in files if f.torn]
        if torn:
            raise SinkError(f"dfs: {len(torn)} file(s) hold part of a batch that failed, "
                            f"first {torn[0].hidden}; nothing was committed")

    def _publish(self, files: list[_File], pending: list[Checkpoint]) -> None:
        """Commit ``pending`` and rename the completed ``files`` to their final names
        (subclasses with another commit protocol override this: ``collectorSink``)."""
        with _FINAL_LOCK:
            renames, remote = [], []
            taken: set[str] = set()
            for f in files:
                final = self._free_name(f, taken)
                taken.add(final)
                if f.upload is not None:
                    # no journaled roll-forward for these without ZooKeeper: completed
                    # before the positions are committed (a crash between: read again)
                    self._complete_upload(f)
                    continue
                (renames if f.local else remote).append((f, final))
            try:
                self.ctx.store.commit(pending, renames=[(f.hidden, fin) for f, fin in renames])
            except OSError as exc:
                self.metrics.add("errors")
                raise SinkError(f"dfs: cannot commit the completed files: {exc}") from exc
            for f, final in remote:
                try:
                    f.fs.mv(f.hidden, final)
                except Exception as exc:
                    self.metrics.add("errors")
                    raise SinkError(f"dfs: cannot rename {f.hidden} to {final}: {exc}") \
                        from exc
        self.metrics.add("files_closed", len(files))
        for f, final in renames + remote:
            log.info("dfs sink completed a file",
                     extra={"file": final, "events": f.events})

    def _complete_upload(self, f: _File) -> None:
        try:
            f.fs.complete(f.final, f.upload.upload_id, f.upload.parts)
        except StorageError as exc:
            self.metrics.add("errors")
            raise SinkError(f"dfs: cannot complete {f.final}: {exc}") from exc
        finally:
            with _NAMES_LOCK:
                _ACTIVE_HIDDEN.discard(f.final)

    def _free_name(self, f: _File, taken: set[str]) -> str:
        """The final path for ``f``: its name, or ``name.N`` (before the compression
        extension) when that exists already. An object-store file's key was chosen when
        its upload started."""
        if f.final is not None:
            return f.final
        exists = os.path.exists if f.local else f.fs.exists
        ext = self.compression.extension
        base = f.final_name[:len(f.final_name) - len(ext)] if ext else f.final_name
        return free_name(os.path.join if f.local else posixpath.join, f.dir, base, ext,
                         lambda p: p in taken or exists(p))


@sink("formatDfs", aliases=("customdfs",))
class FormatDfsSink(DfsSink):
    """``formatDfs("path"[, format])``: like ``dfs``; a second string argument naming a
    known format is the format (OG's argument order)."""

    format_second = True
