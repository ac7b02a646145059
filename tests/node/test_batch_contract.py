"""Every registered decorator and sink treats a fast Batch as the list of its events.

A new component is covered the day it is registered: it must have a case below (a spec
that runs it over a batch, and what to compare) or a reason in ``NOT_RUN``. Each case runs
the component twice on the same events -- once given a fast Batch (node.event.Batch in
columns, what tail and the RPC source give), once the equivalent list of events -- and
compares what reaches the sink behind it, both as events and as the codec's bytes (which
read a fast batch's columns): a component that reads columns it should not, or changes
events a later columns reader does not see, gives different output.
"""
from __future__ import annotations

import re

import pytest

from flume_og.node import codec
from flume_og.node.builder import build_sink
from flume_og.node.event import Event, Priority, columns, set_attr
from flume_og.node.formats import FORMATS, OutputFormat
from flume_og.node.registry import registered
from flume_og.node.sinks import collect
from flume_og.node.spec import parse_sink

TS = 1_600_000_000_123
ATTRS = {"tailSrcFile": b"/var/log/app.log", "k": b"v1"}


def as_list(n=40):
    return [Event(b"line %04d word%d" % (i, i % 3), TS + i * 7, 5_000 + i, Priority.WARN,
                  "web1", dict(ATTRS)) for i in range(n)]


def as_batch(n=40):
    b = codec.decode_events(codec.encode_events(as_list(n)))
    assert columns(b) is b
    return b


# What each decorator runs as ("%s" is where the inner sink goes). Decorators whose
# output depends on chance are given parameters that make it certain.
DECORATORS = {
    "balance": 'balance("roundRobin") [ %s, %s ]',
    "batch": "batch(7, 0) => unbatch => %s",
    "collector": "collector(60000) { %s }",
    "delay": "delay(0) => %s",
    "digest": 'digest("md5", "d") => %s',
    "exDate": 'regex("line (\\\\d+)", 1, "num") => exDate("num", "yyyy") => %s',
    "flakeyAppend": "flakeyAppend(0.0) => %s",
    "format": 'format("%%{host}|%%{priority}|%%{nanos}|%%t|%%{tailSrcFile}|%%{body}") => %s',
    "gunzip": "gzip => gunzip => %s",
    "gzip": "gzip => gunzip => %s",
    "insistentAppend": "insistentAppend => %s",
    "insistentOpen": "insistentOpen => %s",
    "intervalDroppyAppend": "intervalDroppyAppend(1000) => %s",
    "intervalFlakeyAppend": "intervalFlakeyAppend(1000) => %s",
    "intervalSampler": "intervalSampler(3) => %s",
    "lazyOpen": "lazyOpen => %s",
    "mask": 'mask("k") => %s',
    "probSampler": "probSampler(1.0) => %s",
    "regex": 'regex("word(\\\\d)", 1, "w") => %s',
    "regexAll": 'regexAll("line (\\\\d+) word(\\\\d)", "a", "b") => %s',
    "reservoirSampler": "reservoirSampler(1000) => %s",
    "roll": "roll(60000) { %s }",
    "select": 'select("k") => %s',
    "split": 'split(" ", 1, "s") => %s',
    "stubbornAppend": "stubbornAppend => %s",
    "unbatch": "batch(5, 0) => unbatch => %s",
    "value": 'value("k", "%%{tailSrcFile}-%%{host}", true) => value("z", "1") => %s',
}

NOT_RUN = {
    "ackedWriteAhead": "an E2E agent's log: covered by the E2E tests (tests/node/test_e2e.py)",
    "choke": "needs a choke configured on the physical node; passes batches on as given",
    "diskFailover": "sends what it is given or what it spooled (codec bytes, tested in "
                    "test_batch_columns); its replay runs on its own thread",
}

# The tag a roll stamps depends on the clock and a counter: compared as a placeholder.
TAGGED = ("rolltag",)


def normal(events):
    out = []
    for e in events:
        attrs = {k: (b"<tag>" if k in TAGGED else v) for k, v in e.attrs.items()}
        out.append((e.body, e.timestamp, e.nanos, e.priority, e.host, attrs))
    return out


def run(spec: str, batch, make_ctx, monkeypatch, name: str):
    """Append ``batch`` to ``spec`` and give what reached its collect sinks: the events,
    and the events decoded from the codec's bytes of each appended batch (the codec reads
    a fast batch's columns)."""
    seen_bytes = []
    real = collect.CollectSink.append

    def recording(self, events):
        seen_bytes.append(codec.encode_events(events))   # before anything reads events
        real(self, events)

    monkeypatch.setattr(collect.CollectSink, "append", recording)
    collect.reset(name)
    sink = build_sink(parse_sink(spec))
    sink.open(make_ctx(name))
    try:
        sink.append(batch)
    finally:
        sink.close()
    decoded = [e for data in seen_bytes for e in codec.decode_events(data)]
    return normal(collect.collected(name)), normal(decoded)


def test_every_registered_decorator_has_a_case_or_a_reason():
    names = set(registered("decorator"))
    missing = names - set(DECORATORS) - set(NOT_RUN)
    assert not missing, f"add a case for {sorted(missing)} to DECORATORS (or a reason)"


@pytest.mark.parametrize("name", sorted(DECORATORS))
def test_a_decorator_treats_a_fast_batch_as_its_events(name, make_ctx, monkeypatch):
    spec = DECORATORS[name]
    inner = 'collect("contract-%s")' % name
    spec = spec % ((inner,) * spec.count("%s"))
    if "=>" in spec:
        spec = "{ %s }" % spec
    want = run(spec, as_list(), make_ctx, monkeypatch, f"contract-{name}")
    got = run(spec, as_batch(), make_ctx, monkeypatch, f"contract-{name}")
    assert want[0], "the case passed nothing on: it tests nothing"
    assert got[0] == want[0]
    assert got[1] == want[1] == want[0]


# ------------------------------------------------------------------ formats and sinks

@pytest.mark.parametrize("name", sorted(n for n, f in FORMATS.items() if not f.container))
@pytest.mark.parametrize("stamped", [False, True], ids=["plain", "roll tag set as columns"])
def test_a_format_writes_a_fast_batch_as_its_events(name, stamped):
    fmt = OutputFormat.get(name)
    events, batch = as_list(), as_batch()
    if stamped:
        set_attr(events, "rolltag", b"20200913-122640123+0000.1")
        set_attr(batch, "rolltag", b"20200913-122640123+0000.1")
        assert batch.fast
    assert fmt.encode(batch) == fmt.encode(events)


# Sinks that write files, with patterns whose buckets depend on per-event fields and on
# each event's second (the "spanning seconds" runs put the batch across a second).
def file_sinks(out):
    yield "text raw", f'text("{out}/t.txt")'
    yield "text json", f'text("{out}/t.txt", json)'
    yield "text debug", f'text("{out}/t.txt", debug)'
    yield "collectorSink", f'collectorSink("file://{out}/c/", "data-", 60000)'
    yield "collectorSink %{host}", f'collectorSink("file://{out}/c/%{{host}}/", "d-", 60000)'
    yield "dfs", f'dfs("file://{out}/d/%{{host}}-%S.txt")'
    yield "formatDfs json", f'formatDfs("file://{out}/d/%{{k}}.txt", json)'
    yield "collectorSink json", f'collectorSink("file://{out}/c/", "data-", 60000, json)'
    for pattern in ["%{host}-%Y%m%d-%H%M%S", "%{nanos}", "%t", "%{priority}", "%{body}",
                    "%{tailSrcFile}-%s", "%{missing}x%{k}"]:
        yield (f"escapedCustomDfs {pattern}",
               f'escapedCustomDfs("file://{out}/e/", "{pattern}", utc=true)')
        yield (f"roll escapedCustomDfs {pattern}",
               f'roll(60000) {{ escapedCustomDfs("file://{out}/r/", "{pattern}-%{{rolltag}}",'
               f' utc=true) }}')


def tree(root):
    """The files under ``root`` with their bytes, roll tags (time, counter) and hidden
    work files aside."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            name = re.sub(r"\d{8}-\d{9}[+-]\d{4}\.\d+", "<tag>", str(p.relative_to(root)))
            out[name] = re.sub(rb"\d{8}-\d{9}[+-]\d{4}\.\d+", b"<tag>", p.read_bytes())
    return out


SINK_CASES = [name for name, _ in file_sinks("x")]


@pytest.mark.parametrize("case", SINK_CASES)
@pytest.mark.parametrize("shift", [0, 950], ids=["one second", "spanning seconds"])
def test_a_file_sink_writes_a_fast_batch_as_its_events(case, shift, make_ctx, tmp_path):
    outs = []
    for kind, make in (("list", as_list), ("batch", as_batch)):
        root = tmp_path / kind
        spec = dict(file_sinks(root))[case]
        events = make()
        if shift:       # the same events, their timestamps across a second boundary
            events = codec.decode_events(codec.encode_events(
                [Event(e.body, TS - TS % 1000 + shift + i * 7, e.nanos, e.priority, e.host,
                       dict(e.attrs)) for i, e in enumerate(as_list())]))
            if kind == "list":
                events = list(events)
        assert (columns(events) is not None) == (kind == "batch")
        sink = build_sink(parse_sink(spec))
        sink.open(make_ctx(f"s-{kind}"))
        try:
            sink.append(events)
        finally:
            sink.close()
        outs.append(tree(root))
    assert outs[0], "nothing written"
    assert outs[1] == outs[0]


# Sinks without a file case: what they give is not files, or is the codec's bytes (compared
# byte for byte with the events' own in test_batch_columns and test_batch_paths).
SINKS_NOT_RUN = {
    "agentBEChain", "agentBESink", "agentDFOChain", "agentDFOSink", "agentE2EChain",
    "agentE2ESink", "agentSink", "autoBEChain", "autoDFOChain", "autoE2EChain",
    "rpcSink", "thriftSink", "logicalSink",     # codec bytes (or a struct per event)
    "syslogTcp", "console",                     # a line per event, read as events
    "collect", "counter", "null", "fail",       # keep, count, drop or refuse
}
SINK_NAMES_RUN = {"text", "collectorSink", "escapedCustomDfs", "dfs", "formatDfs"}


def test_every_registered_sink_has_a_case_or_a_reason():
    names = set(registered("sink"))
    aliases = {"customdfs", "escapedFormatDfs"}          # the same classes as dfs/formatDfs
    missing = names - SINKS_NOT_RUN - SINK_NAMES_RUN - aliases
    assert not missing, f"add a file case for {sorted(missing)} (or a reason)"
