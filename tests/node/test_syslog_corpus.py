"""The syslog corpus (tests/node/syslog_corpus): real messages parsed into the fields that
docs/syslog.md names; each one also goes through the syslog5424 format and back."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from flume_og.node.formats import OutputFormat
from flume_og.node.sources._syslog_parse import (MALFORMED, NOHEADER, OK, SyslogFramer,
                                                parse_message)

CORPUS = Path(__file__).parent / "syslog_corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
STATUS = {"ok": OK, "noheader": NOHEADER, "malformed": MALFORMED}
PEER = "192.0.2.200"
NOW = int(datetime.datetime(2026, 12, 3, 19, 0, 0).timestamp() * 1000)


def expected_ms(spec: str) -> int:
    if spec == "arrival":
        return NOW
    if spec.startswith("local "):
        return int(datetime.datetime.fromisoformat(spec[6:]).timestamp() * 1000)
    return int(datetime.datetime.fromisoformat(spec).timestamp() * 1000)


def test_every_corpus_file_has_an_expectation():
    assert sorted(p.name for p in CORPUS.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message(name):
    want = EXPECTED[name]
    ev, status = parse_message((CORPUS / name).read_bytes(), NOW, PEER)
    assert status == STATUS[want["status"]]
    assert ev.body == want["body"].encode()
    assert ev.host == (PEER if want["host"] == "PEER" else want["host"])
    assert ev.timestamp == expected_ms(want["time"])
    assert ev.attrs == {k: v.encode() for k, v in want["attrs"].items()}


@pytest.mark.parametrize("name", sorted(n for n, w in EXPECTED.items() if w["status"] == "ok"))
def test_corpus_message_survives_syslog5424(name):
    """What the sink writes parses back into the same event (the time to the millisecond,
    which is what an event keeps)."""
    ev, _ = parse_message((CORPUS / name).read_bytes(), NOW, PEER, 1)
    wire = OutputFormat.get("syslog5424", "octet").encode([ev])
    frames, _ = SyslogFramer(1 << 16).feed(wire)
    back, status = parse_message(frames[0], NOW, "elsewhere", 1)
    assert status == OK and len(frames) == 1
    # a message without a HOSTNAME was written with the sender's address as its host
    expected_attrs = dict(ev.attrs)
    expected_attrs.setdefault("syslog.hostname", ev.host.encode())
    assert (back.body, back.host, back.timestamp, back.priority, back.attrs) == \
        (ev.body, ev.host, ev.timestamp, ev.priority, expected_attrs)
