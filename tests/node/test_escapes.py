"""Escape expansion: every escape, time zones, the per-second cache, bucketing."""
from __future__ import annotations

import time

import pytest

from flume_og.node.builder import validate_parts
from flume_og.node.errors import SpecError
from flume_og.node.escapes import Escaper, expand, has_escapes
from flume_og.node.event import Event, Priority
from flume_og.node.spec import parse_sink, parse_source

# 2020-09-13 12:26:40.123 UTC, a Sunday, day 257 of the year
TS = 1_600_000_000_123


def ev(ts=TS, body=b"hello", host="web1", attrs=None, prio=Priority.WARN, nanos=42):
    return Event(body, ts, nanos, prio, host, attrs or {})


@pytest.fixture
def tz(monkeypatch):
    """Switch the process time zone for one test (POSIX TZ strings need no tzdata)."""
    def set_tz(value: str) -> None:
        monkeypatch.setenv("TZ", value)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


DATE_CASES_UTC = {
    "%a": "Sun", "%A": "Sunday", "%b": "Sep", "%B": "September",
    "%c": "Sun Sep 13 12:26:40 2020", "%d": "13", "%D": "09/13/20", "%H": "12",
    "%I": "12", "%j": "257", "%k": "12", "%l": "12", "%m": "09", "%M": "26", "%p": "PM",
    "%S": "40", "%y": "20", "%Y": "2020", "%z": "+0000",
}


@pytest.mark.parametrize("pattern,expected", sorted(DATE_CASES_UTC.items()))
def test_date_escapes_utc(pattern, expected):
    assert Escaper(pattern, utc=True).expand(ev()) == expected


def test_date_escapes_padding_and_morning():
    # 2021-01-02 03:04:05 UTC: single-digit fields show the padded/unpadded difference
    e = ev(ts=1_609_556_645_000)
    got = Escaper("%d|%H|%I|%k|%l|%p|%j|%m|%M|%S|%c", utc=True).expand(e)
    assert got == "02|03|03|3|3|AM|002|01|04|05|Sat Jan 2 03:04:05 2021"
    midnight = ev(ts=1_609_545_600_000)  # 2021-01-02 00:00:00 UTC
    assert Escaper("%I %l %p %k", utc=True).expand(midnight) == "12 12 AM 0"


def test_local_time_is_the_default(tz):
    tz("XST-05:30")  # UTC+05:30
    e = ev()
    assert Escaper("%H:%M %z").expand(e) == "17:56 +0530"
    assert Escaper("%H:%M %z", utc=True).expand(e) == "12:26 +0000"
    tz("YST+03")  # UTC-03:00
    assert Escaper("%Y-%m-%d %H %z").expand(e) == "2020-09-13 09 -0300"


def test_event_fields_and_attributes():
    e = ev(attrs={"rolltag": b"20200913-122640", "bad": b"a\xffb", "svc": b"nginx"})
    pattern = "%{host}|%{hostname}|%{nanos}|%{priority}|%{body}|%{rolltag}|%{bad}|%{svc}"
    assert Escaper(pattern).expand(e) == \
        "web1|web1|42|WARN|hello|20200913-122640|a\ufffdb|nginx"
    assert Escaper("x%{missing}y").expand(e) == "xy"
    assert Escaper("%{body}").expand(ev(body=b"\xff")) == "\ufffd"


def test_epoch_percent_and_unknown_escapes():
    e = ev()
    assert Escaper("%t").expand(e) == "1600000000123"
    assert Escaper("%s").expand(e) == "1600000000"
    assert Escaper("100%%").expand(e) == "100%"
    # unknown escapes, a lone %, an unclosed %{ stay literal
    assert Escaper("%q %Q %1 % %{ %-x end%").expand(e) == "%q %Q %1 % %{ %-x end%"
    assert Escaper("a-%{x.y-z}-b").expand(ev(attrs={"x.y-z": b"v"})) == "a-v-b"


def test_properties():
    assert not Escaper("/plain/path").has_escapes
    assert not Escaper("100%% %q").has_escapes
    assert Escaper("100%% %q").expand(ev()) == "100% %q"
    assert Escaper("%{host}").has_escapes and not Escaper("%{host}").uses_time
    for p in ("%Y", "%t", "%s", "a/%H/%{host}"):
        assert Escaper(p).has_escapes and Escaper(p).uses_time, p
    assert has_escapes("%{x}") and not has_escapes("x")


def test_events_of_other_seconds_are_not_confused_by_the_cache():
    esc = Escaper("/logs/%Y-%m-%d/%H%M%S/%{host}", utc=True)
    for i in range(6000):  # more seconds than the cache holds, so it is cleared too
        ts = TS + i * 1000
        tm = time.gmtime(ts // 1000)
        assert esc.expand(ev(ts=ts, host=f"h{i % 3}")) == \
            time.strftime("/logs/%Y-%m-%d/%H%M%S/", tm) + f"h{i % 3}"
    only_dates = Escaper("%Y%m%d-%H%M%S", utc=True)
    assert [only_dates.expand(ev(ts=TS + k * 1000)) for k in (0, 1, 0, 3600)] == \
        ["20200913-122640", "20200913-122641", "20200913-122640", "20200913-132640"]


def test_same_second_different_ms_for_t():
    esc = Escaper("%Y-%t")
    assert esc.expand(ev(ts=TS)) != esc.expand(ev(ts=TS + 1))


def test_group_buckets_by_event_hour():
    esc = Escaper("%Y%m%d/%H/%{host}", utc=True)
    evs = [ev(ts=TS), ev(ts=TS + 3_600_000), ev(ts=TS + 1), ev(ts=TS, host="web2")]
    groups = esc.group(evs)
    assert list(groups) == ["20200913/12/web1", "20200913/13/web1", "20200913/12/web2"]
    assert groups["20200913/12/web1"] == [evs[0], evs[2]]
    assert esc.group([]) == {}
    plain = Escaper("/x/y")
    assert plain.group(evs) == {"/x/y": evs}


def test_expand_function():
    assert expand("%{host}-%Y", ev(), utc=True) == "web1-2020"
    assert expand("%{host}-%Y", ev(host="b"), utc=True) == "b-2020"


def test_expanding_many_events_is_fast():
    evs = [Event(b"x" * 100, TS + i, i, Priority.INFO, "h", {}) for i in range(200_000)]
    esc = Escaper("/logs/%Y-%m-%d/%H00/%{host}-data")
    t0 = time.perf_counter()
    groups = esc.group(evs)
    elapsed = time.perf_counter() - t0
    assert sum(len(v) for v in groups.values()) == len(evs)
    # about 0.07 s on a laptop; the bound only catches a per-event date format
    assert elapsed < 2.0, elapsed


@pytest.mark.parametrize("spec, escape", [
    ('text("/o/%Y.txt")', "%Y"),
    ('text("/o/%{host}.log", raw)', "%{host}"),
    ('text("/o/100%%.txt")', "%%"),
])
def test_a_path_taken_as_written_refuses_escapes_it_would_not_expand(spec, escape):
    with pytest.raises(SpecError) as err:
        validate_parts(None, parse_sink(spec))
    assert escape in str(err.value) and "time buckets" in str(err.value)


@pytest.mark.parametrize("spec, escape", [
    ('tail("/var/log/%d")', "%d"),
    ('multitail("/a", "/b/%t")', "%t"),
    ('tailDir("/var/%{host}/")', "%{host}"),
    ('spoolDir("/in/%Y")', "%Y"),
    ('text("/in/%s")', "%s"),
])
def test_source_paths_refuse_escapes(spec, escape):
    with pytest.raises(SpecError) as err:
        validate_parts(parse_source(spec), None)
    assert escape in str(err.value) and "taken as written" in str(err.value)


def test_an_unknown_percent_sequence_stays_part_of_a_literal_path(tmp_path):
    validate_parts(None, parse_sink(f'text("{tmp_path}/100%Q.txt")'))
    validate_parts(parse_source('tail("/var/log/50%-full")'), None)
