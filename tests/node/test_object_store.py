"""Object stores as file sinks' targets (node/object_store.py) and the node's storage
settings (``flume node --storage-config``), against a real S3-protocol server process."""
from __future__ import annotations

import collections
import posixpath
import os
import subprocess
import sys

import pytest

from flume_og.node.errors import SinkError
from flume_og.node.object_store import (MultipartWriter, ObjectStore, StorageConfig,
                                        StorageError, StorageSettingsError, multipart_etag)
from flume_og.node.sinks.dfs import DfsSink
from tests.node.test_cli import ROOT

pytestmark = pytest.mark.timeout(90)


def settings_file(path, s3, bucket, **extra) -> str:
    o = dict(s3.options(), **extra)
    body = "".join(f'{k} = {v!r}\n'.replace("'", '"') if isinstance(v, str) else
                   f"{k} = {v}\n" for k, v in o.items())
    path.write_text(f'["s3://{bucket}"]\n{body}')
    return str(path)


# ---------------------------------------------------------------------- the store

def test_an_upload_is_invisible_until_completed_and_completing_is_idempotent(s3):
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    path = f"{bucket}/d/obj"
    w = MultipartWriter(st, path, st.create_upload(path))
    w.write(b"a" * (5 * 1024 * 1024 + 10))
    w.write(b"end\n")
    w._wait()
    assert len(w.parts) == 1 and st.objects() == {}      # a part is up, nothing visible
    w.close()
    assert len(w.parts) == 2 and st.objects() == {}
    assert [u.key for u in st.uploads("d/")] == ["d/obj"]
    etag = st.complete(path, w.upload_id, w.parts)
    assert etag == multipart_etag([e for _, e in w.parts])
    assert st.head(path) == (etag, w.size) and st.uploads() == []
    # done again after a crash between completing and forgetting the record: no error
    assert st.complete(path, w.upload_id, w.parts) == etag

    # an upload id the store no longer knows: done if the object is the one the parts
    # make, an error otherwise
    assert st.complete(path, "no-such-upload", w.parts) == etag
    with pytest.raises(StorageError):
        st.complete(path, "no-such-upload", w.parts[:1])
    assert st.head(path) == (etag, w.size)


def test_an_aborted_upload_leaves_nothing(s3):
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    w = MultipartWriter(st, f"{bucket}/x", st.create_upload(f"{bucket}/x"))
    w.write(b"data\n")
    w.close()
    w.store.abort(f"{bucket}/x", w.upload_id)
    assert st.uploads() == [] and st.objects() == {}
    st.abort(f"{bucket}/x", w.upload_id)                  # twice: no error


# ---------------------------------------------------------------------- bounds

@pytest.fixture
def broken():
    from tests.s3server import BrokenS3
    servers = []

    def make(mode, **kw):
        servers.append(BrokenS3(mode, **kw))
        return servers[-1]
    yield make
    for srv in servers:
        srv.stop()


@pytest.mark.parametrize("listing", ["uploads", "objects"])
def test_a_listing_that_never_moves_on_is_refused(broken, listing):
    """A truncated answer naming the same place to go on from, every time: refused on the
    second page, not asked for again and again."""
    srv = broken("same-page")
    st = ObjectStore("b", srv.options(max_attempts=1))
    with pytest.raises(StorageError, match="the same place to go on from"):
        getattr(st, listing)("k")
    assert srv.requests == 2


@pytest.mark.parametrize("listing", ["uploads", "objects"])
def test_a_listing_past_its_bound_is_refused(broken, listing):
    """A store answering new pages for ever: the listing stops at its bound."""
    srv = broken("endless", per_page=10)
    st = ObjectStore("b", srv.options(max_attempts=1))
    with pytest.raises(StorageError, match=f"more than 55 {listing}"):
        getattr(st, listing)("k", limit=55)
    assert srv.requests == 6


@pytest.mark.parametrize("listing", ["uploads", "objects"])
def test_a_listing_of_empty_pages_for_ever_is_refused(broken, listing):
    """A store answering truncated empty pages, each naming a new place to go on from:
    no entry ever counts toward the bound, so the pages themselves are bounded."""
    srv = broken("endless", per_page=0)
    st = ObjectStore("b", srv.options(max_attempts=1))
    with pytest.raises(StorageError, match="more than 55 pages"):
        getattr(st, listing)("k", limit=55)
    assert srv.requests == 55


def test_a_hung_store_costs_the_stated_timeouts_and_says_so(broken):
    """A store that accepts connections and never answers: one request waits at most
    max_attempts x read_timeout and raises StorageUnreachable (a store that answers
    with an error raises a plain StorageError)."""
    import time
    from flume_og.node.object_store import StorageUnreachable
    srv = broken("hang")
    st = ObjectStore("b", srv.options(read_timeout=0.5, connect_timeout=0.5, max_attempts=2))
    t0 = time.monotonic()
    with pytest.raises(StorageUnreachable, match="cannot list uploads"):
        st.uploads("k")
    assert time.monotonic() - t0 < 10
    assert srv.connections == 2


def test_read_refuses_an_object_larger_than_its_limit(s3):
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    st.client.put_object(Bucket=bucket, Key="big", Body=b"x" * 2000)
    assert st.read(f"{bucket}/big") == b"x" * 2000
    assert st.read(f"{bucket}/big", limit=2000) == b"x" * 2000
    with pytest.raises(StorageError, match="more than the 1999 a read takes"):
        st.read(f"{bucket}/big", limit=1999)


# ---------------------------------------------------------------------- settings

def test_settings_by_longest_url_prefix_and_secrets_never_shown(tmp_path):
    p = tmp_path / "storage.toml"
    p.write_text('["s3://logs"]\nendpoint_url = "http://a"\nkey = "K"\nsecret = "S"\n'
                 '["s3://logs/eu/"]\nendpoint_url = "http://eu"\n'
                 '["gs://arch"]\ntoken = "/etc/t.json"\n')
    cfg = StorageConfig.load(p)
    assert cfg.options_for("s3://logs/x/y")["endpoint_url"] == "http://a"
    assert cfg.options_for("s3://logs/eu/y")["endpoint_url"] == "http://eu"
    assert cfg.options_for("s3://logsother/y") == {}
    assert cfg.options_for("gs://arch/z") == {"token": "/etc/t.json"}
    # a scheme is case-insensitive: S3:// must not fall back to boto3's defaults
    assert cfg.options_for("S3://logs/eu/y")["endpoint_url"] == "http://eu"
    assert cfg.options_for("s3://LOGS/y") == {}          # bucket and key: as written
    shown = repr(cfg.describe())
    assert "'K'" not in shown and "'S'" not in shown and "***" in shown


@pytest.mark.parametrize("text, words", [
    ('["s3://b"]\nendpoint = "x"\n', ["unknown key 'endpoint'", "endpoint_url"]),
    ('["s3://b"]\npart_size = 1024\n', ["part_size must be at least"]),
    ('["s3://b"]\npart_size = 6442450944\n', ["part_size must be at most"]),
    ('["s3://b"]\nregion = 3\n', ["region has the wrong kind"]),
    ('["s3://b"]\nread_timeout = 0\n', ["read_timeout must be above 0"]),
    ('["s3://b"]\nmax_attempts = true\n', ["max_attempts has the wrong kind"]),
    ('["s3://b"]\nconnect_timeout = "5"\n', ["connect_timeout has the wrong kind"]),
    ('bucket = "b"\n', ["must be a table named by a URL prefix"]),
    ('["s3://b"\n', ["not a TOML file"]),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path, text, words):
    p = tmp_path / "storage.toml"
    p.write_text(text)
    with pytest.raises(StorageSettingsError) as e:
        StorageConfig.load(p)
    assert str(p) in str(e.value)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("url, package", [("gs://bucket/x", "gcsfs"),
                                          ("abfs://container/x", "adlfs"),
                                          ("hdfs://namenode/x", "pyarrow")])
def test_a_missing_filesystem_says_what_to_install(url, package):
    sink = DfsSink(url + "/f")
    with pytest.raises(SinkError) as e:
        sink._url_to_fs(url)
    assert "need a package that is not installed" in str(e.value)
    assert f"pip install {package}" in str(e.value)


# ---------------------------------------------------------------------- the node

def flume(*args, data_dir, env=None):
    env = dict(os.environ if env is None else env, FLUME_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "flume_og.node.cli", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_node_writes_to_s3_with_its_storage_config(tmp_path, s3):
    """The spec names only the URL; endpoint and credentials come from the node's
    --storage-config (the process has no AWS variables), and through --config-file too."""
    bucket = s3.new_bucket()
    src = tmp_path / "in.log"
    lines = [b"line %05d" % i for i in range(3000)]
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))
    cfg = settings_file(tmp_path / "storage.toml", s3, bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"   # no instance role to look for (a second)
    spec = f't1: text("{src}") | collectorSink("s3://{bucket}/logs", "f-", 60000)'
    r = flume("node", "--one-shot", "-n", "t1", "-c", spec, "--storage-config", cfg,
              data_dir=tmp_path / "data", env=env)
    assert r.returncode == 0, r.stderr
    st = ObjectStore(bucket, s3.options())
    got = b"".join(st.read(f"{bucket}/{k}") for k in sorted(st.objects("logs/")))
    assert got.splitlines() == lines and st.uploads() == []
    # the same through the node's settings file
    node_toml = tmp_path / "node.toml"
    node_toml.write_text(f'storage-config = "{cfg}"\n')
    spec2 = spec.replace("/logs", "/logs2")
    r = flume("node", "--one-shot", "-n", "t2", "-c", spec2.replace("t1:", "t2:"),
              "--config-file", str(node_toml), data_dir=tmp_path / "data2", env=env)
    assert r.returncode == 0, r.stderr
    assert len(st.objects("logs2/")) == 1
    # without the settings the credentials are unknown: the node says it could not write
    r = flume("node", "--one-shot", "-n", "t3", "-c", spec.replace("t1:", "t3:"),
              data_dir=tmp_path / "data3", env=env)
    assert r.returncode == 1 and "s3://" in r.stderr


def test_node_refuses_bad_storage_settings_before_starting(tmp_path):
    bad = tmp_path / "storage.toml"
    bad.write_text('["s3://b"]\nsecrets = "x"\n')
    r = flume("node", "--one-shot", "-c", "a: null | null", "--storage-config", str(bad),
              data_dir=tmp_path / "data")
    assert r.returncode == 2
    assert str(bad) in r.stderr and "unknown key 'secrets'" in r.stderr
    # $FLUME_STORAGE_CONFIG names the file when the flag does not
    r = flume("node", "--one-shot", "-c", "a: null | null", data_dir=tmp_path / "data",
              env=dict(os.environ, FLUME_STORAGE_CONFIG=str(bad)))
    assert r.returncode == 2 and "unknown key 'secrets'" in r.stderr


def test_a_spec_with_credentials_in_its_url_is_refused(tmp_path):
    """Specs live in ZooKeeper and every master shows them: credentials written into a
    URL are refused when the spec is checked, pointing at --storage-config."""
    for spec in ('a: null | collectorSink("s3://AKIAX:s3cr3t@bucket/logs", "f-")',
                 'a: null | dfs("s3://user@bucket/f")'):
        r = flume("check", "-c", spec, data_dir=tmp_path / "data")
        assert r.returncode == 2, r.stdout
        assert "--storage-config" in r.stderr and "credentials" in r.stderr
    r = flume("check", "-c", 'a: null | collectorSink("s3://bucket/logs/%{host}@x", "f-")',
              data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr             # an @ after the bucket is a key's


def test_a_spec_with_an_escape_in_the_bucket_is_refused(tmp_path):
    """s3://%{host}/f made an S3 client per host value, kept by the node for good, and
    failed every batch (the base, s3://, names no bucket): refused when checked."""
    for spec in ('a: null | dfs("s3://%{host}/f")', 'a: null | dfs("s3://logs-%Y/f")',
                 'a: null | collectorSink("s3://b-%{host}/logs", "f-")'):
        r = flume("check", "-c", spec, data_dir=tmp_path / "data")
        assert r.returncode == 2, r.stdout
        assert "the bucket of an object-store URL must be written out" in r.stderr
    r = flume("check", "-c", 'a: null | dfs("s3://logs/%{host}/f")',
              data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr


def test_a_dfs_file_on_s3_finds_its_free_name_in_a_few_requests(s3, tmp_path):
    """A target written again at every roll has name.1 ... name.N behind it: the free
    name is found with about 2 log2(N) HEAD requests and no listing (a listing of every
    name.N is bounded in entries, so it would fail once N passes that bound), not one
    request per name tried (N requests per roll, growing with every roll)."""
    from flume_og.node import sinks as _  # noqa: F401  (registers the sinks)
    from flume_og.node.checkpoint import CheckpointStore
    from flume_og.node.component import NodeContext, NodeShared
    from flume_og.node.event import events_from_lines
    bucket = s3.new_bucket()
    storage = StorageConfig({f"s3://{bucket}": s3.options()})
    st = storage.store_for(f"s3://{bucket}/d/f")
    for name in ["d/f", "d/other"] + [f"d/f.{i}" for i in range(1, 31)]:
        st.client.put_object(Bucket=bucket, Key=name, Body=b"old\n")
    calls = collections.Counter()
    st.client.meta.events.register("before-call.s3.*",
                                   lambda model, **kw: calls.update([model.name]))
    sink = DfsSink(f"s3://{bucket}/d/f")
    sink.open(NodeContext("n", tmp_path, CheckpointStore(tmp_path / "cp.json"),
                          shared=NodeShared(storage=storage)))
    sink.append(events_from_lines([b"new"]))
    # the name, then 1 2 4 8 16 32 (free), then 24 28 30 31: eleven, at open
    assert calls["HeadObject"] == 11 and calls["ListObjectsV2"] == 0
    sink.close()
    assert st.read(f"{bucket}/d/f.31") == b"new\n"


def test_a_dfs_sink_to_s3_reserves_and_releases_only_its_keys(s3, tmp_path):
    """dfs to s3:// (no ZooKeeper): each file an upload to its final key, completed at
    close; a key that exists already is never overwritten (name.1); nothing stays
    reserved in the process after close."""
    from flume_og.node import sinks as _  # noqa: F401  (registers the sinks)
    from flume_og.node.checkpoint import CheckpointStore
    from flume_og.node.component import NodeContext, NodeShared
    from flume_og.node.event import events_from_lines
    from flume_og.node.sinks import dfs as dfs_mod
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    st.client.put_object(Bucket=bucket, Key="d/f", Body=b"already here\n")
    storage = StorageConfig({f"s3://{bucket}": s3.options()})
    before = set(dfs_mod._ACTIVE_HIDDEN)
    for _ in range(2):
        sink = DfsSink(f"s3://{bucket}/d/f")
        sink.open(NodeContext("n", tmp_path, CheckpointStore(tmp_path / "cp.json"),
                              shared=NodeShared(storage=storage)))
        sink.append(events_from_lines([b"one", b"two"]))
        assert set(dfs_mod._ACTIVE_HIDDEN) - before      # the key is reserved meanwhile
        sink.close()
    assert set(dfs_mod._ACTIVE_HIDDEN) == before
    objs = st.objects()
    assert sorted(objs) == ["d/f", "d/f.1", "d/f.2"] and st.uploads() == []
    assert st.read(f"{bucket}/d/f") == b"already here\n"
    assert st.read(f"{bucket}/d/f.1") == st.read(f"{bucket}/d/f.2") == b"one\ntwo\n"


def test_a_dfs_file_that_cannot_start_writing_aborts_its_upload(s3, tmp_path, monkeypatch):
    """The upload is made, then the format cannot start its writer: the upload is
    aborted (no upload left in progress), the key released, SinkError says why."""
    from flume_og.node import sinks as _  # noqa: F401  (registers the sinks)
    from flume_og.node.checkpoint import CheckpointStore
    from flume_og.node.component import NodeContext, NodeShared
    from flume_og.node.event import events_from_lines
    from flume_og.node.formats import OutputFormat
    from flume_og.node.sinks import dfs as dfs_mod
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    before = set(dfs_mod._ACTIVE_HIDDEN)
    sink = DfsSink(f"s3://{bucket}/d/f")
    sink.open(NodeContext("n", tmp_path, CheckpointStore(tmp_path / "cp.json"),
                          shared=NodeShared(storage=StorageConfig(
                              {f"s3://{bucket}": s3.options()}))))

    def broken(self, stream):
        raise ValueError("the writer cannot start")
    monkeypatch.setattr(OutputFormat, "open_writer", broken)
    with pytest.raises(SinkError, match="cannot start an upload to .*the writer cannot"):
        sink.append(events_from_lines([b"one"]))
    monkeypatch.undo()
    assert st.uploads() == [] and st.objects() == {}
    assert set(dfs_mod._ACTIVE_HIDDEN) == before
    assert sink.metrics["errors"] >= 1
    sink.close()


def test_a_part_that_failed_in_the_background_fails_the_close(s3, monkeypatch):
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    w = MultipartWriter(st, f"{bucket}/p", st.create_upload(f"{bucket}/p"))

    def refused(*a, **kw):
        raise StorageError("503 Slow Down")
    monkeypatch.setattr(st, "upload_part", refused)
    w.write(b"a" * (5 * 1024 * 1024 + 1))          # the first part goes to a thread
    with pytest.raises(StorageError, match="Slow Down"):
        w.close()
    w.abort()
    assert st.uploads() == [] and st.objects() == {}


def test_a_failed_part_fails_every_later_write_and_the_close(s3, monkeypatch):
    """A part that failed is gone from the upload: the writer must never go on as if the
    upload were whole (completing it would make an object without that part's bytes --
    events acknowledged but missing, a torn line where the part was)."""
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    w = MultipartWriter(st, f"{bucket}/q", st.create_upload(f"{bucket}/q"))
    part = 5 * 1024 * 1024
    original = st.upload_part

    def refused(*a, **kw):
        raise StorageError("500 InternalError")
    monkeypatch.setattr(st, "upload_part", refused)
    w.write(b"a" * (part + 1))                    # part 1 fails in its thread
    with pytest.raises(StorageError):
        w.write(b"b" * part)                      # this write learns of it
    monkeypatch.setattr(st, "upload_part", original)   # the store is back
    with pytest.raises(StorageError):
        w.write(b"c\n")
    with pytest.raises(StorageError):
        w.close()
    w.abort()
    assert st.uploads() == [] and st.objects() == {}


def test_a_failed_part_makes_the_dfs_file_torn_never_final(s3, tmp_path, monkeypatch):
    """dfs onto s3://: an append whose part upload failed is a SinkError (the caller
    resends), and the file it broke is never completed as if it were whole."""
    from flume_og.node import sinks as _  # noqa: F401  (registers the sinks)
    from flume_og.node.checkpoint import CheckpointStore
    from flume_og.node.component import NodeContext, NodeShared
    from flume_og.node.event import events_from_lines
    bucket = s3.new_bucket()
    st = ObjectStore(bucket, s3.options())
    storage = StorageConfig({f"s3://{bucket}": s3.options()})
    sink = DfsSink(f"s3://{bucket}/d/f")
    sink.open(NodeContext("n", tmp_path, CheckpointStore(tmp_path / "cp.json"),
                          shared=NodeShared(storage=storage)))
    line = b"x" * 1000
    original = ObjectStore.upload_part

    def refused(*a, **kw):
        raise StorageError("500 InternalError")
    monkeypatch.setattr(ObjectStore, "upload_part", refused)
    sink.append(events_from_lines([line] * 5300))    # > 5 MiB: part 1 fails in its thread
    with pytest.raises(SinkError):
        sink.append(events_from_lines([line] * 5300))
    monkeypatch.setattr(ObjectStore, "upload_part", original)
    with pytest.raises(SinkError):
        sink.close()
    assert st.objects() == {}


def test_a_missing_filesystem_fails_the_flow_when_it_opens(tmp_path):
    """A node without the package of its sink's URL says so when the flow is configured
    (the logical node's error), not only once events arrive and every batch fails."""
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys, builtins\n"
         "real = builtins.__import__\n"
         "def imp(name, *a, **kw):\n"
         "    if name.split('.')[0] in ('boto3', 'gcsfs'):\n"
         "        raise ImportError(f'No module named {name!r}')\n"
         "    return real(name, *a, **kw)\n"
         "builtins.__import__ = imp\n"
         "from flume_og.node import sinks\n"
         "from flume_og.node.sinks.dfs import DfsSink\n"
         "from flume_og.node.sinks.collector_sink import CollectorSink\n"
         "from flume_og.node.checkpoint import CheckpointStore\n"
         "from flume_og.node.component import NodeContext\n"
         "from flume_og.node.errors import SinkError\n"
         "from pathlib import Path\nd = Path(sys.argv[1])\n"
         "for sink in (DfsSink('s3://b/x/%Y/f'), CollectorSink('gs://b/x', 'p-')):\n"
         "    try:\n"
         "        sink.open(NodeContext('n', d, CheckpointStore(d / 'cp.json')))\n"
         "        print('opened')\n"
         "    except SinkError as e:\n"
         "        print(e)\n", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "pip install 'flume-og[s3]'" in lines[0], r.stdout
    assert "pip install gcsfs" in lines[1], r.stdout


def test_a_settings_file_with_secrets_that_others_can_read_is_warned_about(tmp_path, caplog):
    p = tmp_path / "storage.toml"
    p.write_text('["s3://logs"]\nkey = "K"\nsecret = "S3CR3T"\n')
    p.chmod(0o644)
    with caplog.at_level("WARNING", logger="flume_og.node.object_store"):
        StorageConfig.load(p)
    assert any("chmod 600" in r.getMessage() and "secret" in r.getMessage()
               for r in caplog.records), caplog.text
    assert "S3CR3T" not in caplog.text
    caplog.clear()
    p.chmod(0o600)
    with caplog.at_level("WARNING", logger="flume_og.node.object_store"):
        StorageConfig.load(p)
    assert not [r for r in caplog.records if "chmod" in r.getMessage()]


def test_free_name_costs_a_logarithm_of_the_rolls_and_is_always_free():
    from flume_og.node.sinks.dfs import free_name
    for n_taken in (0, 1, 2, 5, 100, 100_000):
        taken = {"d/f.gz"} | {f"d/f.{i}.gz" for i in range(1, n_taken + 1)} if n_taken else set()
        looks = []

        def is_taken(p, taken=taken, looks=looks):
            looks.append(p)
            return p in taken
        name = free_name(posixpath.join, "d", "f", ".gz", is_taken)
        assert name == ("d/f.gz" if not n_taken else f"d/f.{n_taken + 1}.gz")
        assert len(looks) <= 2 * max(1, n_taken).bit_length() + 2
    # holes (deleted files): a free name, never a taken one
    taken = {"d/f"} | {f"d/f.{i}" for i in range(1, 1000) if i % 7}
    name = free_name(posixpath.join, "d", "f", "", taken.__contains__)
    assert name not in taken and name.startswith("d/f.")
