"""Syslog message parsing (RFC 3164, RFC 5424, malformed) and TCP framing (LF, RFC 6587).

The body is the MSG part and the header fields are attributes (docs/syslog.md)."""
from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flume_og.node.event import Event, Priority
from flume_og.node.formats import OutputFormat
from flume_og.node.sources._syslog_parse import (MALFORMED, NOHEADER, OK, SyslogFramer,
                                                parse_message, parse_messages)

PEER = "192.0.2.77"


def local_ms(*args) -> int:
    return int(datetime.datetime(*args).timestamp() * 1000)


def utc_ms(*args) -> int:
    return int(datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp() * 1000)


NOW = local_ms(2024, 6, 15, 12, 0, 0)


def parse(raw: bytes, now: int = NOW):
    return parse_message(raw, now, PEER)


# ------------------------------------------------------------------ RFC 3164

def test_3164_rfc_example():
    raw = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"
    ev, status = parse(raw)
    assert status == OK
    assert ev.body == b"'su root' failed for lonvick on /dev/pts/8"
    assert ev.attrs == {"syslogfacility": b"4", "syslogseverity": b"2",
                        "syslog.hostname": b"mymachine", "syslog.appname": b"su"}
    assert ev.priority is Priority.FATAL
    assert ev.host == "mymachine"
    # October 11th is more than a day after June 15th: last year
    assert ev.timestamp == local_ms(2023, 10, 11, 22, 14, 15)


def test_3164_space_padded_day_and_this_year():
    raw = b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!"
    ev, status = parse(raw)
    assert status == OK
    assert ev.host == "10.0.0.99"
    assert ev.body == b"Use the BFG!"
    assert ev.attrs == {"syslogfacility": b"1", "syslogseverity": b"5",
                        "syslog.hostname": b"10.0.0.99"}
    assert ev.priority is Priority.INFO
    assert ev.timestamp == local_ms(2024, 2, 5, 17, 32, 18)


def test_3164_stamp_less_than_a_day_ahead_keeps_this_year():
    ev, _ = parse(b"<13>Jun 16 06:00:00 h m")
    assert ev.timestamp == local_ms(2024, 6, 16, 6, 0, 0)
    ev, _ = parse(b"<13>Jun 17 06:00:00 h m")          # over a day ahead: last year
    assert ev.timestamp == local_ms(2023, 6, 17, 6, 0, 0)


def test_3164_new_year_both_ways():
    just_after = local_ms(2025, 1, 1, 0, 5, 0)
    ev, _ = parse(b"<13>Dec 31 23:59:00 h m", just_after)
    assert ev.timestamp == local_ms(2024, 12, 31, 23, 59, 0)
    just_before = local_ms(2024, 12, 31, 23, 59, 0)
    ev, _ = parse(b"<13>Jan  1 00:00:05 h m", just_before)   # sender's clock a bit ahead
    assert ev.timestamp == local_ms(2025, 1, 1, 0, 0, 5)


def test_3164_impossible_date_uses_arrival_time():
    ev, status = parse(b"<13>Feb 30 10:00:00 host msg")
    assert status == OK
    assert ev.timestamp == NOW
    assert ev.host == "host"


def test_3164_tag_without_hostname_uses_peer():
    ev, status = parse(b"<13>Feb  5 17:32:18 su: message")
    assert status == OK
    assert ev.host == PEER and ev.body == b"message"
    assert "syslog.hostname" not in ev.attrs and ev.attrs["syslog.appname"] == b"su"
    ev, _ = parse(b"<13>Feb  5 17:32:18 sshd[123]: message")
    assert ev.host == PEER and ev.body == b"message"
    assert ev.attrs["syslog.appname"] == b"sshd" and ev.attrs["syslog.procid"] == b"123"


def test_3164_pri_without_header():
    raw = b"<11>something happened"
    ev, status = parse(raw)
    assert status == NOHEADER
    assert ev.body == b"something happened"
    assert ev.attrs == {"syslogfacility": b"1", "syslogseverity": b"3"}
    assert ev.priority is Priority.ERROR
    assert ev.host == PEER
    assert ev.timestamp == NOW


@pytest.mark.parametrize("sev,prio", [
    (0, Priority.FATAL), (1, Priority.FATAL), (2, Priority.FATAL), (3, Priority.ERROR),
    (4, Priority.WARN), (5, Priority.INFO), (6, Priority.INFO), (7, Priority.DEBUG)])
def test_severity_to_priority(sev, prio):
    ev, _ = parse(b"<%d>Oct 11 22:14:15 h m" % (8 * 16 + sev))
    assert ev.priority is prio
    assert ev.attrs["syslogseverity"] == str(sev).encode()
    assert ev.attrs["syslogfacility"] == b"16"


def test_pri_extremes():
    ev, status = parse(b"<0>Oct 11 22:14:15 h m")
    assert status == OK and ev.attrs == {"syslogfacility": b"0", "syslogseverity": b"0",
                                         "syslog.hostname": b"h"}
    ev, status = parse(b"<191>Oct 11 22:14:15 h m")
    assert status == OK and ev.attrs == {"syslogfacility": b"23", "syslogseverity": b"7",
                                         "syslog.hostname": b"h"}


@pytest.mark.parametrize("raw", [b"", b"hello world", b"<>x", b"<12", b"<192>x", b"<999>x",
                                 b"<1a>x", b"<-1>x", b" <13>x", b"<0013>x", b"<013>x"])
def test_malformed_is_emitted_raw(raw):
    ev, status = parse(raw)
    assert status == MALFORMED
    assert ev.body == raw
    assert ev.priority is Priority.INFO
    assert ev.attrs == {"syslog.malformed": b"no valid <PRI>"}
    assert ev.host == PEER
    assert ev.timestamp == NOW


def test_malformed_without_peer_uses_local_host():
    from flume_og.node.event import LOCAL_HOST
    ev, status = parse_message(b"junk", NOW)
    assert status == MALFORMED and ev.host == LOCAL_HOST


# ------------------------------------------------------------------ RFC 5424

def test_5424_rfc_example_1():
    raw = (b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
           b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8")
    ev, status = parse(raw)
    assert status == OK
    assert ev.body == b"'su root' failed for lonvick on /dev/pts/8"     # BOM dropped
    assert ev.host == "mymachine.example.com"
    assert ev.timestamp == utc_ms(2003, 10, 11, 22, 14, 15) + 3
    assert ev.priority is Priority.FATAL
    assert ev.attrs == {"syslogfacility": b"4", "syslogseverity": b"2",
                        "syslog.hostname": b"mymachine.example.com",
                        "syslog.appname": b"su", "syslog.msgid": b"ID47"}


def test_5424_offset_and_microseconds():
    raw = (b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
           b"%% It's time to make the do-nuts.")
    ev, status = parse(raw)
    assert status == OK
    assert ev.timestamp == utc_ms(2003, 8, 24, 12, 14, 15)
    assert ev.host == "192.0.2.1"
    assert ev.body == b"%% It's time to make the do-nuts."
    assert ev.priority is Priority.INFO
    assert ev.attrs == {"syslogfacility": b"20", "syslogseverity": b"5",
                        "syslog.hostname": b"192.0.2.1",
                        "syslog.appname": b"myproc", "syslog.procid": b"8710"}


def test_5424_structured_data():
    raw = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
           b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
           b'[examplePriority@32473 class="high"] An application event log entry')
    ev, status = parse(raw)
    assert status == OK
    assert ev.attrs["syslog.appname"] == b"evntslog"
    assert ev.attrs["syslog.msgid"] == b"ID47"
    assert ev.attrs["sd.exampleSDID@32473.iut"] == b"3"
    assert ev.attrs["sd.exampleSDID@32473.eventSource"] == b"Application"
    assert ev.attrs["sd.exampleSDID@32473.eventID"] == b"1011"
    assert ev.attrs["sd.examplePriority@32473.class"] == b"high"
    assert ev.body == b"An application event log entry"


def test_5424_sd_with_escapes_and_no_message():
    raw = (b'<13>1 2024-01-02T03:04:05Z h app 1 m [x@1 a="q\\"]uote" b="br]ack\\]et" '
           b'c="back\\\\slash" d="kept\\n" e=""]')
    ev, status = parse(raw)
    assert status == OK
    assert ev.attrs["syslog.procid"] == b"1"
    assert ev.attrs["sd.x@1.a"] == b'q"]uote'
    assert ev.attrs["sd.x@1.b"] == b"br]ack]et"
    assert ev.attrs["sd.x@1.c"] == b"back\\slash"
    assert ev.attrs["sd.x@1.d"] == b"kept\\n"         # not an escape: both characters kept
    assert ev.attrs["sd.x@1.e"] == b""
    assert ev.body == b""


def test_5424_all_nil():
    ev, status = parse(b"<14>1 - - - - - -")
    assert status == OK
    assert ev.host == PEER
    assert ev.timestamp == NOW
    assert ev.attrs == {"syslogfacility": b"1", "syslogseverity": b"6"}


def test_5424_unparseable_timestamp_uses_arrival_time():
    ev, status = parse(b"<14>1 yesterday host app - - - hi")
    assert status == OK
    assert ev.timestamp == NOW and ev.host == "host"


@pytest.mark.parametrize("raw", [
    b"<14>1 2003-10-11T22:14:15Z host",                       # fields missing
    b"<14>1 2003-10-11T22:14:15Z host app proc msgid",        # no SD
    b'<14>1 2003-10-11T22:14:15Z host app proc msgid [x a="b" unterminated',
    b"<14>1 2003-10-11T22:14:15Z host app proc msgid {not sd} msg",
    b'<14>1 2003-10-11T22:14:15Z host app proc msgid [x a="b"]glued',
    b"<14>1 2003-10-11T22:14:15Z  app proc msgid - msg",     # empty field
    b'<14>1 2003-10-11T22:14:15Z host app proc msgid [x a=b] msg',    # unquoted value
    b'<14>1 2003-10-11T22:14:15Z host app proc msgid [x a="b"c="d"] msg',
    b'<14>1 2003-10-11T22:14:15Z host app proc msgid [ a="b"] msg',   # no SD-ID
])
def test_5424_broken_header_is_malformed_but_keeps_pri(raw):
    ev, status = parse(raw)
    assert status == MALFORMED
    assert ev.body == raw
    assert ev.priority is Priority.INFO   # severity 6
    assert set(ev.attrs) == {"syslogfacility", "syslogseverity", "syslog.malformed"}
    assert ev.attrs["syslogfacility"] == b"1" and ev.attrs["syslogseverity"] == b"6"
    assert ev.host == PEER


def test_parse_messages_counts_and_nanos():
    raws = [b"<13>Feb  5 17:32:18 h a", b"junk", b"<13>no header", b"<14>1 - - - - - -"]
    events, bad, nohdr = parse_messages(raws, [PEER] * 4, NOW)
    assert [e.body for e in events] == [b"a", b"junk", b"no header", b""]
    assert (bad, nohdr) == (1, 1)
    nanos = [e.nanos for e in events]
    assert nanos == sorted(set(nanos))


# ------------------------------------------------------------------ TCP framing

def octet(msg: bytes) -> bytes:
    return b"%d " % len(msg) + msg


def split_frames(data: bytes, max_frame: int = 1 << 20):
    """(frames, rest kept for the next read, truncations) of one feed of a fresh framer."""
    f = SyslogFramer(max_frame)
    frames, cuts = f.feed(data)
    return frames, f.buf, cuts


def test_split_lf_frames_with_crlf_and_rest():
    frames, rest, cuts = split_frames(b"<13>a\n<13>b\r\n\n<13>c")
    assert frames == [b"<13>a", b"<13>b"]
    assert rest == b"<13>c"
    assert cuts == 0


def test_split_octet_counted_frames_keep_newlines_inside():
    m1, m2 = b"<34>1 - - - - - - line one\nline two", b"<13>x"
    frames, rest, _ = split_frames(octet(m1) + octet(m2))
    assert frames == [m1, m2]
    assert rest == b""


def test_split_mixed_and_partial_octet_frames():
    m = b"<34>1 - h a - - - hello"
    data = octet(m) + b"<13>lf framed\n" + octet(m)
    f = SyslogFramer(1 << 20)
    assert f.feed(data[:-3]) == ([m, b"<13>lf framed"], 0)
    assert f.buf == octet(m)[:-3]
    assert f.feed(data[-3:]) == ([m], 0) and f.buf == b""


def test_octet_frame_drops_a_counted_line_end():
    """rsyslog's RSYSLOG_SyslogProtocol23Format counts its LF into the frame: it is framing
    (before, it stayed at the end of the body)."""
    m = b"<13>1 - h a - - - hello"
    frames, rest, _ = split_frames(octet(m + b"\n") + octet(m + b"\r\n") + octet(m + b"\n\n"))
    assert frames == [m, m, m + b"\n"] and rest == b""


def test_split_waits_for_a_length_still_arriving():
    frames, rest, _ = split_frames(b"12")
    assert frames == [] and rest == b"12"


def test_oversize_lf_frame_is_truncated_and_its_rest_discarded():
    f = SyslogFramer(100)
    head = b"<13>" + b"x" * 96
    # the long frame arrives in pieces; the framer never holds more than one piece past it
    assert f.feed(head + b"y" * 50) == ([head], 1)
    assert f.buf == b""
    for _ in range(100):
        assert f.feed(b"z" * 1000) == ([], 0) and f.buf == b""
    assert f.feed(b"zz\n<13>next\n") == ([b"<13>next"], 0)
    # a complete line one byte over: truncated too; exactly at the bound (with CR): kept
    assert f.feed(head + b"!\n" + head + b"\r\n") == ([head, head], 1)


def test_oversize_octet_frame_keeps_its_head_and_skips_the_rest():
    f = SyslogFramer(100)
    big = b"<13>" + b"o" * 996
    data = octet(big) + octet(b"<13>after")
    frames, cuts = f.feed(data[:50])
    assert (frames, cuts) == ([], 0)          # waiting for the head it keeps
    frames, cuts = f.feed(data[50:300])
    assert (frames, cuts) == ([big[:100]], 1)
    assert f.skip == len(octet(big)) - 300 and f.buf == b""
    assert f.feed(data[300:]) == ([b"<13>after"], 0)
    assert f.finish() == b""


def test_finish_drops_the_rest_of_a_truncated_frame():
    f = SyslogFramer(10)
    assert f.feed(b"<13>0123456789abc") == ([b"<13>012345"], 1)
    assert f.finish() == b""
    g = SyslogFramer(10)
    assert g.feed(b"<13>abc\r") == ([], 0)
    assert g.finish() == b"<13>abc"


def test_split_bogus_octet_count_falls_back_to_lf():
    frames, rest, _ = split_frames(b"99999999999 not a length\n")
    assert frames == [b"99999999999 not a length"] and rest == b""


# ------------------------------------------------------------------ properties

_printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                     max_size=20).filter(lambda s: s != "-")
_sd_name = st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                 blacklist_characters='= ]".'), min_size=1, max_size=12)


_heads = st.sampled_from([b"", b"<13>", b"<165>1 ", b"<13>Oct 11 22:14:15 ", b"<13>1 - h a p m [",
                          b'<13>1 - h a p m [x a="', b"<189>52: *Mar  1 00:03:27.455",
                          b"<13>2026-12-03T18:18:47+00:00 "])


@settings(max_examples=300, deadline=None)
@given(st.tuples(_heads, st.binary(max_size=200)).map(b"".join))
def test_any_bytes_give_an_event_and_malformed_ones_stay_raw(raw):
    ev, status = parse(raw)
    assert status in (OK, NOHEADER, MALFORMED)
    assert len(ev.body) <= len(raw)
    if status == MALFORMED:
        assert ev.body == raw and ev.attrs["syslog.malformed"]
    else:
        assert "syslog.malformed" not in ev.attrs


@settings(max_examples=150, deadline=None)
@given(pri=st.integers(0, 191), ms=st.integers(0, 4_102_444_800_000),
       host=_printable, app=st.none() | _printable, procid=st.none() | _printable,
       msgid=st.none() | _printable.map(lambda s: s[:32]),
       sd=st.dictionaries(_sd_name, st.dictionaries(_sd_name, st.binary(max_size=20), min_size=1,
                                                  max_size=3), max_size=3),
       body=st.binary(max_size=100).filter(
           lambda b: not b.startswith(b"\xef\xbb\xbf") and not b.endswith(b"\n")))
def test_syslog5424_and_the_parser_are_inverses(pri, ms, host, app, procid, msgid, sd, body):
    """A leading BOM is dropped on purpose, and so is a final LF in an octet-counted frame
    (rsyslog's RSYSLOG_SyslogProtocol23Format counts its line end into the frame)."""
    attrs = {"syslogfacility": str(pri >> 3).encode(), "syslogseverity": str(pri & 7).encode(),
             "syslog.hostname": host.encode()}
    for k, v in (("syslog.appname", app), ("syslog.procid", procid), ("syslog.msgid", msgid)):
        if v is not None:
            attrs[k] = v[:48].encode()
    for sd_id, params in sd.items():
        for name, value in params.items():
            attrs[f"sd.{sd_id}.{name}"] = value
    ev = Event(body, ms, 5, Priority.INFO, host, attrs)
    frames, _ = SyslogFramer(1 << 16).feed(
        OutputFormat.get("syslog5424", "octet").encode([ev]))
    back, status = parse_message(frames[0], NOW, PEER, 5)
    assert status == OK
    assert (back.body, back.timestamp, back.host, back.attrs) == (body, ms, host, attrs)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=60), st.booleans()), max_size=12),
       st.lists(st.integers(1, 40), max_size=20))
def test_framer_mixes_octet_and_lf_frames_whatever_the_reads(msgs, cuts):
    # an LF frame cannot hold a LF, nor begin with a digit (it would be read as a count),
    # and an octet-counted message's own final LF is framing (dropped)
    msgs = [(m.rstrip(b"\r\n") or b"x", octet or m[:1].isdigit() or b"\n" in m.rstrip(b"\r\n"))
            for m, octet in msgs]
    msgs = [(m, o) for m, o in msgs if o or (b"\n" not in m and not m.endswith(b"\r"))]
    stream = b"".join(b"%d %s" % (len(m), m) if o else m + b"\n" for m, o in msgs)
    f = SyslogFramer(1 << 16)
    got, i = [], 0
    for c in cuts + [len(stream)]:
        frames, truncated = f.feed(stream[i:i + c])
        assert truncated == 0
        got += frames
        i += c
    assert got == [m for m, _ in msgs] and not f.pending


def test_structured_data_past_its_bound_is_counted_not_kept():
    """3,000 tiny parameters cost ~100 bytes of objects each: at most MAX_SD_PARAMS are
    kept as attributes, the number dropped is said, the message is never dropped."""
    from flume_og.node.sources._batchqueue import batch_bytes
    from flume_og.node.sources._syslog_parse import MAX_SD_PARAMS, SD_DROPPED, parse_message
    params = " ".join(f'p{i}="{i}"' for i in range(3000))
    raw = f"<13>1 2026-12-03T07:28:28Z vm app - - [x@1 {params}] hello".encode()
    ev, status = parse_message(raw, 0)
    sd = [k for k in ev.attrs if k.startswith("sd.")]
    assert len(sd) == MAX_SD_PARAMS and ev.attrs[SD_DROPPED] == b"2872"
    assert ev.body == b"hello"
    assert batch_bytes([ev]) >= 100 * len(ev.attrs)
