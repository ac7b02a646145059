"""Object stores without an atomic rename (S3 and its compatibles), as the file sinks use
them, and the node's storage settings (``flume node --storage-config FILE``).

Writing a file to an object store: a *multipart upload* to the file's final key. Parts are
uploaded while the file is written (``part_size``, 8 MiB by default; S3 takes at least
5 MiB for every part but the last); nothing is visible under the key until the upload is
*completed*, and completion makes the whole object visible at once. So the upload is the
object store's hidden file, and completing it is the rename: ``collectorSink`` records the
upload id and the parts' ETags in its ZooKeeper commit before completing
(``node/e2e/commit.py``, docs/e2e.md). Completing is idempotent here: an upload already
completed (no such upload any more) whose key holds the object the recorded parts make (the
multipart ETag: MD5 of the parts' MD5s, ``-N``) is done.

Settings never travel in a spec: they come from the node's storage settings, a TOML file
of tables named by URL prefix (the longest prefix that matches a URL wins)::

    ["s3://logs"]                       # the bucket logs
    endpoint_url = "https://minio.internal:9000"
    region = "us-east-1"
    key = "AKIA..."                     # or leave out: boto3's own chain (environment
    secret = "..."                      # AWS_ACCESS_KEY_ID..., ~/.aws, instance role)

    ["s3://logs/eu/"]                   # a longer prefix: its own settings
    endpoint_url = "https://eu.example"

    ["gs://archive"]                    # other fsspec filesystems: storage_options as is
    token = "/etc/flume/gcs.json"

For ``s3://`` the keys are ``endpoint_url``, ``key``, ``secret``, ``token``, ``region``,
``verify`` (true, false or a CA bundle), ``addressing_style`` (``path``, ``virtual``,
``auto``), ``part_size`` (bytes, 5 MiB to 5 GiB), ``connect_timeout`` and ``read_timeout``
(seconds, 10 and 60 by default) and ``max_attempts`` (tries of one request, 6 by default);
anything else is refused with the file and the key.

Bounds: a request that gets no answer costs at most ``max_attempts`` x (``connect_timeout``
+ ``read_timeout``) and raises :class:`StorageUnreachable`; a listing stops with
StorageError past ``MAX_LISTED`` entries or when a truncated answer gives no new place to
go on from (a server that would keep it listing forever); :meth:`ObjectStore.read` refuses
an object larger than its ``limit``. (botocore reads each answer's body whole before
parsing it: the XML answers themselves are bounded only by the endpoint the settings name.)

Without a file, or for a URL no table names, boto3's environment applies
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``...).
``$FLUME_STORAGE_CONFIG`` names the file when the flag does not.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_file import read_toml

log = logging.getLogger(__name__)

OBJECT_SCHEMES = ("s3", "s3a")
MIN_PART = 5 * 1024 * 1024           # S3: every part but the last at least this
DEFAULT_PART = 8 * 1024 * 1024
MAX_PART = 5 * 1024 ** 3             # S3: no part larger (and each is held in memory)
MAX_PARTS = 10_000                   # S3's bound on the parts of one upload
MAX_LISTED = 100_000                 # entries one listing may gather
MAX_READ = 64 * 1024 * 1024          # bytes ObjectStore.read returns at most by default
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 60   # seconds
MAX_ATTEMPTS = 6                     # tries of one request (botocore's 5 retries and the first)
# settings that are credentials (s3's and other fsspec filesystems' storage_options)
SECRET_KEYS = {"key", "secret", "token", "password", "account_key", "sas_token",
               "client_secret", "credentials"}
S3_KEYS = {"endpoint_url": str, "key": str, "secret": str, "token": str, "region": str,
           "verify": (bool, str), "addressing_style": str, "part_size": int,
           "connect_timeout": (int, float), "read_timeout": (int, float),
           "max_attempts": int}

# What to install for a URL scheme fsspec knows but whose package is missing.
INSTALL_HINTS = {
    "s3": "pip install 'flume-og[s3]' (boto3)",
    "s3a": "pip install 'flume-og[s3]' (boto3)",
    "gs": "pip install gcsfs", "gcs": "pip install gcsfs",
    "abfs": "pip install adlfs", "abfss": "pip install adlfs", "az": "pip install adlfs",
    "hdfs": "pip install pyarrow (and a Hadoop client: libhdfs, $HADOOP_HOME, $CLASSPATH)",
    "webhdfs": "pip install fsspec[http] requests", "http": "pip install aiohttp",
    "https": "pip install aiohttp", "sftp": "pip install paramiko",
    "oss": "pip install ossfs", "gdrive": "pip install gdrivefs",
}


class StorageError(Exception):
    """An object store or the storage settings failed; the message says which and why."""


class StorageSettingsError(StorageError):
    """The storage settings file cannot be used; the message names the file and the key."""


class StorageUnreachable(StorageError):
    """The store gave no answer (no connection, or none within the timeouts, after every
    attempt): other requests to it now would most likely wait as long."""


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_object_url(url: str) -> bool:
    """True for URLs written through :class:`ObjectStore` (``s3://``)."""
    return scheme_of(url) in OBJECT_SCHEMES


def missing_backend_message(url: str, exc: BaseException) -> str:
    """The error for a URL whose filesystem cannot be used: what to install when a package
    is missing."""
    scheme = scheme_of(url)
    hint = INSTALL_HINTS.get(scheme)
    text = str(exc)
    if hint and (isinstance(exc, ImportError) or "install" in text.lower()
                 or "Protocol not known" in text):
        return f"{scheme}:// URLs need a package that is not installed: {hint} ({text})"
    return text


# Modules a filesystem class fsspec loads needs only when it is instantiated.
_LATE_IMPORTS = {"hdfs": "pyarrow", "arrow_hdfs": "pyarrow"}


def check_backend(url: str) -> None:
    """StorageError saying what to install when the filesystem of ``url`` cannot be loaded
    (a package missing, an unknown scheme). Connects to nothing, so a sink checks it when
    it opens, before any event reaches it."""
    import importlib
    scheme = scheme_of(url)
    if scheme in ("", "file", "local"):
        return
    try:
        if scheme in OBJECT_SCHEMES:
            importlib.import_module("boto3")
            return
        import fsspec
        fsspec.get_filesystem_class(scheme)
        if scheme in _LATE_IMPORTS:
            importlib.import_module(_LATE_IMPORTS[scheme])
    except (ImportError, ValueError) as exc:
        raise StorageError(missing_backend_message(url, exc)) from exc


def _lower_scheme(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep else url


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{url!r} names no bucket")
    return bucket, key


def multipart_etag(etags: list[str]) -> str:
    """The ETag S3 gives the object a completed multipart upload makes (its parts' ETags,
    MD5 hex digests, in order)."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags))
    return f'"{digest.hexdigest()}-{len(etags)}"'


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: Any = None


class ObjectStore:
    """One bucket of an S3-protocol store (boto3 client; thread-safe). Paths given to and
    returned by the methods are keys inside the bucket; ``unstrip_protocol`` makes URLs."""

    def __init__(self, bucket: str, options: dict | None = None, scheme: str = "s3"):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise StorageError(missing_backend_message(f"{scheme}://{bucket}", exc)) from exc
        opts = dict(options or {})
        self.bucket = bucket
        self.scheme = scheme
        self.part_size = max(MIN_PART, int(opts.pop("part_size", DEFAULT_PART)))
        style = opts.pop("addressing_style", None)
        cfg = Config(s3={"addressing_style": style} if style else {},
                     retries={"total_max_attempts": int(opts.pop("max_attempts",
                                                                 MAX_ATTEMPTS)),
                              "mode": "standard"},
                     connect_timeout=opts.pop("connect_timeout", CONNECT_TIMEOUT),
                     read_timeout=opts.pop("read_timeout", READ_TIMEOUT))
        kwargs: dict[str, Any] = {"config": cfg}
        if opts.get("endpoint_url"):
            kwargs["endpoint_url"] = opts["endpoint_url"]
        if opts.get("region"):
            kwargs["region_name"] = opts["region"]
        if "verify" in opts:
            kwargs["verify"] = opts["verify"]
        if opts.get("key"):
            kwargs["aws_access_key_id"] = opts["key"]
            kwargs["aws_secret_access_key"] = opts.get("secret")
            if opts.get("token"):
                kwargs["aws_session_token"] = opts["token"]
        self.client = boto3.session.Session().client("s3", **kwargs)
        self._pool = None
        self._pool_lock = threading.Lock()
        from botocore.exceptions import (BotoCoreError, ClientError, HTTPClientError)
        from botocore.exceptions import ConnectionError as NoConnection
        self._errors = (BotoCoreError, ClientError)
        self._no_answer = (NoConnection, HTTPClientError)

    # -- helpers

    UPLOAD_THREADS = 4

    def pool(self):
        """The threads that upload parts (made at first use)."""
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self._pool = ThreadPoolExecutor(self.UPLOAD_THREADS,
                                                thread_name_prefix=f"s3-{self.bucket}")
            return self._pool

    def unstrip_protocol(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def _key(self, path: str) -> str:
        bucket, key = split_url(path)
        if bucket != self.bucket:
            raise StorageError(f"{path!r} is not in bucket {self.bucket!r}")
        return key

    def _call(self, what: str, fn, **kw):
        try:
            return fn(Bucket=self.bucket, **kw)
        except self._errors as exc:
            kind = StorageUnreachable if isinstance(exc, self._no_answer) else StorageError
            raise kind(f"{self.scheme}://{self.bucket}: cannot {what}: {exc}") from exc

    @staticmethod
    def _code(exc: BaseException) -> str:
        cause = exc.__cause__
        resp = getattr(cause, "response", None) or {}
        return str(resp.get("Error", {}).get("Code", ""))

    # -- objects

    def head(self, path: str) -> tuple[str, int] | None:
        """(ETag, size) of the object at ``path``, None if there is none."""
        try:
            r = self._call(f"read {path}", self.client.head_object, Key=self._key(path))
        except StorageError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return r["ETag"], r["ContentLength"]

    def exists(self, path: str) -> bool:
        return self.head(path) is not None

    def objects(self, prefix: str = "", limit: int = MAX_LISTED) -> dict[str, tuple[str, int]]:
        """key -> (ETag, size) of every visible object whose key starts with ``prefix``;
        StorageError past ``limit`` entries (see :meth:`_pages`)."""
        out = {}
        for r in self._pages("list objects", self.client.list_objects_v2, {"Prefix": prefix},
                             ("NextContinuationToken",), ("ContinuationToken",), limit):
            for o in r.get("Contents", []):
                out[o["Key"]] = (o["ETag"], o["Size"])
            self._check_listed(len(out), limit, "objects", prefix)
        return out

    def read(self, path: str, limit: int = MAX_READ) -> bytes:
        """The object at ``path``; StorageError if it holds more than ``limit`` bytes
        (nothing beyond ``limit`` + 1 bytes is read)."""
        r = self._call(f"read {path}", self.client.get_object, Key=self._key(path))
        body = r["Body"]
        try:
            if r.get("ContentLength", 0) > limit:
                raise StorageError(f"{self.unstrip_protocol(path)}: {r['ContentLength']} "
                                   f"bytes, more than the {limit} a read takes")
            data = body.read(limit + 1)
        except self._errors as exc:
            raise StorageError(f"{self.unstrip_protocol(path)}: cannot read: {exc}") from exc
        finally:
            body.close()
        if len(data) > limit:
            raise StorageError(f"{self.unstrip_protocol(path)}: more than the {limit} bytes "
                               f"a read takes")
        return data

    def _pages(self, what: str, fn, kw: dict, next_keys: tuple, marker_keys: tuple,
               limit: int):
        """The answers of a listing, page after page. A truncated answer must name where
        the next page starts (``next_keys``, sent back as ``marker_keys``), and a place
        not given before: StorageError otherwise, rather than asking for the same page
        for ever (a broken or hostile server). At most ``limit`` pages (every page holds
        an entry, but a server answering empty pages with new places would otherwise
        never let the listing reach its bound on entries)."""
        seen: set[tuple] = set()
        while True:
            if len(seen) >= limit:
                raise StorageError(f"{self.scheme}://{self.bucket}: cannot {what}: more "
                                   f"than {limit} pages: refused (a listing gathers at "
                                   f"most {limit} entries)")
            r = self._call(what, fn, **kw)
            yield r
            if not r.get("IsTruncated"):
                return
            place = tuple(r.get(k) for k in next_keys)
            if not any(place) or place in seen:
                which = "the same" if any(place) else "no"
                raise StorageError(f"{self.scheme}://{self.bucket}: cannot {what}: a "
                                   f"truncated answer gives {which} place to go on from "
                                   f"({', '.join(next_keys)})")
            seen.add(place)
            kw.update({m: v for m, v in zip(marker_keys, place) if v})

    def _check_listed(self, n: int, limit: int, what: str, prefix: str) -> None:
        if n > limit:
            raise StorageError(f"{self.scheme}://{self.bucket}: more than {limit} {what} "
                               f"under {prefix!r}: refused (a listing gathers at most "
                               f"{limit})")

    # -- multipart uploads

    def create_upload(self, path: str) -> str:
        r = self._call(f"start an upload to {path}", self.client.create_multipart_upload,
                       Key=self._key(path))
        return r["UploadId"]

    def upload_part(self, path: str, upload_id: str, number: int, data: bytes) -> str:
        r = self._call(f"upload part {number} of {path}", self.client.upload_part,
                       Key=self._key(path), UploadId=upload_id, PartNumber=number, Body=data)
        return r["ETag"]

    def complete(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        """Make the upload visible as one object. Idempotent: an upload completed already
        whose object is the one ``parts`` make counts as done; StorageError otherwise."""
        want = multipart_etag([e for _, e in parts])
        got = self.head(path)
        if got is not None and got[0] == want:
            return want              # completed before (a crash after completing)
        try:
            r = self._call(f"complete the upload of {path}",
                           self.client.complete_multipart_upload, Key=self._key(path),
                           UploadId=upload_id,
                           MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                                      for n, e in parts]})
            return r.get("ETag", want)
        except StorageError as exc:
            if self._code(exc) != "NoSuchUpload":
                raise
            got = self.head(path)
            if got is not None and got[0] == want:
                return want          # completed before (a crash after completing)
            raise StorageError(f"{self.unstrip_protocol(path)}: the upload {upload_id} is "
                               f"gone and the object is not the one it made "
                               f"(found {got}, want ETag {want})") from exc

    def abort(self, path: str, upload_id: str) -> None:
        """Abort an upload (its parts are deleted; nothing ever became visible)."""
        try:
            self._call(f"abort the upload to {path}", self.client.abort_multipart_upload,
                       Key=self._key(path), UploadId=upload_id)
        except StorageError as exc:
            if self._code(exc) not in ("NoSuchUpload", "404"):
                raise

    def uploads(self, prefix: str = "", limit: int = MAX_LISTED) -> list[Upload]:
        """The uploads in progress whose key starts with ``prefix`` (a key inside the
        bucket); StorageError past ``limit`` entries (see :meth:`_pages`)."""
        out: list[Upload] = []
        for r in self._pages("list uploads", self.client.list_multipart_uploads,
                             {"Prefix": prefix}, ("NextKeyMarker", "NextUploadIdMarker"),
                             ("KeyMarker", "UploadIdMarker"), limit):
            for u in r.get("Uploads", []):
                out.append(Upload(u["Key"], u["UploadId"], u.get("Initiated")))
            self._check_listed(len(out), limit, "uploads", prefix)
        return out


class MultipartWriter(io.RawIOBase):
    """A write-only stream into a new multipart upload to ``path`` (``bucket/key``): parts
    of ``store.part_size`` bytes are uploaded as the buffer fills -- one at a time in the
    store's upload threads, so the writer fills the next part meanwhile (at most two parts
    of memory per writer); ``close`` waits for it and uploads the rest as the last part,
    but does NOT complete the upload: nothing is visible until
    :meth:`ObjectStore.complete` with :attr:`parts`. A part that failed fails the next
    ``write`` or ``close``, and every one after it: the upload lacks that part, so it must
    never be completed (the caller aborts it)."""

    def __init__(self, store: ObjectStore, path: str, upload_id: str):
        super().__init__()
        self.store = store
        self.path = path
        self.upload_id = upload_id
        self.parts: list[tuple[int, str]] = []
        self.size = 0
        self._buf = bytearray()
        self._number = 0
        self._pending = None          # the part being uploaded (a Future)
        self._failed: BaseException | None = None   # a part that failed: the upload is broken

    def writable(self) -> bool:
        return True

    def _check(self) -> None:
        if self._failed is not None:
            raise StorageError(f"{self.path}: a part of this upload failed earlier; it "
                               f"cannot be completed: {self._failed}") from self._failed

    def write(self, b) -> int:
        if self.closed:
            raise ValueError("write to a closed upload")
        self._check()
        self._buf += b
        n = len(b)
        self.size += n
        while len(self._buf) >= self.store.part_size:
            chunk = bytes(self._buf[:self.store.part_size])
            del self._buf[:self.store.part_size]
            self._send(chunk)
        return n

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                self.parts.append(pending.result())
            except BaseException as exc:
                self._failed = exc
                raise

    def _send(self, data: bytes, last: bool = False) -> None:
        self._wait()
        self._number += 1
        number = self._number
        if number > MAX_PARTS:
            raise StorageError(f"{self.path}: more than {MAX_PARTS} parts (raise part_size)")
        if last:
            try:
                etag = self.store.upload_part(self.path, self.upload_id, number, data)
            except BaseException as exc:
                self._failed = exc
                raise
            self.parts.append((number, etag))
            return

        def upload():
            return number, self.store.upload_part(self.path, self.upload_id, number, data)
        self._pending = self.store.pool().submit(upload)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._check()
            if self._buf or not self._number:     # an upload needs one part, maybe empty
                data, self._buf = bytes(self._buf), bytearray()
                self._send(data, last=True)
            else:
                self._wait()
        finally:
            super().close()

    def abort(self) -> None:
        self._buf = bytearray()
        super().close()
        try:
            self._wait()
        except Exception:
            pass                      # aborted anyway
        self.store.abort(self.path, self.upload_id)


# ---------------------------------------------------------------------- settings

class StorageConfig:
    """The node's storage settings: options by URL prefix (module docstring). Builds and
    caches one :class:`ObjectStore` per bucket and options. ``describe()`` shows them
    without secrets."""

    def __init__(self, sections: dict[str, dict] | None = None, source: str = ""):
        self.sections = {k: dict(v) for k, v in (sections or {}).items()}
        self.source = source
        self._stores: dict[tuple, ObjectStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike | None = None,
             environ: dict | None = None) -> "StorageConfig":
        """The settings of ``path``, else of ``$FLUME_STORAGE_CONFIG``, else none (boto3's
        environment only). StorageSettingsError naming the file and the key."""
        env = os.environ if environ is None else environ
        path = path or env.get("FLUME_STORAGE_CONFIG") or None
        if not path:
            return cls()
        p = Path(path)
        data = read_toml(p, StorageSettingsError)
        for prefix, table in data.items():
            if not isinstance(table, dict) or "://" not in prefix:
                raise StorageSettingsError(
                    f"{p}: {prefix!r} must be a table named by a URL prefix, such as "
                    f"[\"s3://bucket\"]")
            if is_object_url(prefix):
                for k, v in table.items():
                    kind = S3_KEYS.get(k)
                    if kind is None:
                        raise StorageSettingsError(
                            f"{p}: [{prefix!r}] unknown key {k!r} (keys: "
                            f"{', '.join(sorted(S3_KEYS))})")
                    if not isinstance(v, kind) or (isinstance(v, bool) and kind != (bool, str)):
                        raise StorageSettingsError(f"{p}: [{prefix!r}] {k} has the wrong "
                                                   f"kind of value: {type(v).__name__}")
                for k in ("connect_timeout", "read_timeout", "max_attempts"):
                    if k in table and not table[k] > 0:
                        raise StorageSettingsError(f"{p}: [{prefix!r}] {k} must be above 0")
                if table.get("part_size", MIN_PART) < MIN_PART:
                    raise StorageSettingsError(f"{p}: [{prefix!r}] part_size must be at "
                                               f"least {MIN_PART} bytes")
                if table.get("part_size", MIN_PART) > MAX_PART:
                    # S3 refuses larger parts, and two parts per open file are in memory
                    raise StorageSettingsError(f"{p}: [{prefix!r}] part_size must be at "
                                               f"most {MAX_PART} bytes")
        secrets = sorted({k for t in data.values() for k in t if k in SECRET_KEYS})
        try:
            mode = p.stat().st_mode
        except OSError:
            mode = 0
        if secrets and mode & 0o077:
            log.warning("%s holds %s but other users may read it (mode %o): chmod 600 it",
                        p, ", ".join(secrets), mode & 0o777)
        return cls(data, str(p))

    def options_for(self, url: str) -> dict:
        """The options of the longest prefix naming ``url`` ({} if none does). Schemes
        compare without case (``S3://`` is ``s3://``), the rest as written."""
        url = _lower_scheme(url)
        best = None
        for prefix in self.sections:
            p = _lower_scheme(prefix).rstrip("/")
            if url == p or url.startswith(p + "/") or (prefix.endswith("/")
                                                        and url.startswith(p + "/")):
                if best is None or len(prefix) > len(best):
                    best = prefix
        return dict(self.sections[best]) if best is not None else {}

    def store_for(self, url: str) -> ObjectStore:
        bucket, _ = split_url(url)
        opts = self.options_for(url)
        ident = (scheme_of(url), bucket, tuple(sorted((k, str(v)) for k, v in opts.items())))
        with self._lock:
            st = self._stores.get(ident)
            if st is None:
                st = self._stores[ident] = ObjectStore(bucket, opts, scheme_of(url))
            return st

    def describe(self) -> dict:
        """The settings without secrets (for status pages and logs)."""
        return {prefix: {k: ("***" if k in SECRET_KEYS else v) for k, v in t.items()}
                for prefix, t in self.sections.items()}


_DEFAULT: StorageConfig | None = None


def config_of(shared) -> StorageConfig:
    """The storage settings of a physical node (``NodeShared.storage``), else the
    environment's."""
    return getattr(shared, "storage", None) or default_config()


def default_config() -> StorageConfig:
    """The settings a component uses when its node was given none: the environment's."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = StorageConfig.load()
    return _DEFAULT
