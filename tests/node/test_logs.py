"""The log format: the details passed with ``extra=`` are printed after the sentence."""
from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import pytest
from pathlib import Path

from flume_og.node.decorators.disk_failover import Spool
from flume_og.node.logs import DetailsFormatter, TEXT_FORMAT, setup

ROOT = Path(__file__).resolve().parents[2]


def formatted(msg: str, *args, **kw) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(DetailsFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error(msg, *args, **kw)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_extra_details_follow_the_message_as_pairs_in_their_order():
    out = formatted("cut %d bytes", 7, extra={"segment": "/d/seg-1.dfo", "offset": 4096,
                                               "bytes_cut": 7, "lost": None})
    assert out == "ERROR cut 7 bytes segment=/d/seg-1.dfo offset=4096 bytes_cut=7 lost=None\n"


def test_a_detail_from_input_cannot_forge_a_line_or_a_pair():
    out = formatted("cannot read a tailed file",
                    extra={"path": "/x\nERROR forged", "error": "a=b", "empty": ""})
    assert out.count("\n") == 1
    assert out.endswith(' path="/x\\nERROR forged" error="a=b" empty=""\n')


def test_a_detail_cannot_reorder_or_hide_what_a_terminal_shows():
    out = formatted("x", extra={"csi": "a\x9b31mb", "bidi": "abc\u202edef", "nel": "a\x85b",
                                "fine": "/srv/out"})
    assert out == ('ERROR x csi="a\\u009b31mb" bidi="abc\\u202edef" nel="a\\u0085b" '
                   'fine=/srv/out\n')


def test_a_detail_whose_str_fails_does_not_lose_its_record():
    class Broken:
        def __str__(self):
            raise RuntimeError("no")
    assert formatted("kept", extra={"thing": Broken()}) == "ERROR kept thing=<unprintable Broken>\n"


def test_details_come_before_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        out = formatted("failed", exc_info=True, extra={"node": "n1"})
    first, rest = out.split("\n", 1)
    assert first == "ERROR failed node=n1"
    assert rest.startswith("Traceback") and "ValueError: boom" in rest


def test_a_record_without_details_is_unchanged():
    assert formatted("plain %s", "sentence") == "ERROR plain sentence\n"


def test_setup_uses_the_format_and_the_level():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    stream = io.StringIO()
    try:
        setup("warning", stream)
        logging.getLogger("x").info("not shown", extra={"k": 1})
        logging.getLogger("x").warning("shown", extra={"k": 1})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert re.fullmatch(r"\S+ \S+ WARNING x: shown k=1\n", stream.getvalue())
    assert TEXT_FORMAT.startswith("%(asctime)s")


def test_a_node_process_logs_where_its_state_was_corrupt(tmp_path):
    """A non-UTF-8 checkpoint and a spool segment torn in its last record: the node's log
    says which file, how many bytes and (spool) from which offset, as pairs."""
    data = tmp_path / "data"
    spool = Spool(data / "k" / "dfo" / "spool")
    spool._load()
    for i in range(3):
        spool.write(b"x" * 100, 10)
    spool.close()
    [seg] = (data / "k" / "dfo" / "spool").glob("*.dfo")
    size = seg.stat().st_size
    seg.write_bytes(seg.read_bytes()[:-5])              # the last record torn
    junk = b"\xff\xfe not utf-8"
    (data / "k" / "checkpoint.json").write_bytes(junk)
    src = tmp_path / "in.log"
    src.write_bytes(b"a\nb\n")
    out = tmp_path / "out.log"
    r = subprocess.run([sys.executable, "-m", "flume_og.node.cli", "node", "--one-shot",
                        "-n", "k", "--data-dir", str(data), "-c",
                        f'k: text("{src}") | diskFailover(200, 50) text("{out}")'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [cp] = [ln for ln in r.stderr.splitlines() if "checkpoint file" in ln]
    assert f"file={data / 'k' / 'checkpoint.json'} bytes={len(junk)} " in cp, cp
    [torn] = [ln for ln in r.stderr.splitlines() if "torn record" in ln]
    last = 2 * size // 3            # three equal records: the third starts there
    assert f" segment={seg} offset={last} bytes_cut={size - 5 - last} " in torn, torn


def test_json_format_one_object_per_line_with_details_and_traceback():
    import io
    import json as _json
    from flume_og.node.logs import JsonFormatter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logs.json")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("cut %s", "off", extra={"segment": "/d/seg\n1", "offset": 4096,
                                            "physical": "web1", "bad": object()})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (_json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "test.logs.json"
    assert first["message"] == "cut off" and first["segment"] == "/d/seg\n1"
    assert first["offset"] == 4096 and first["physical"] == "web1"
    assert first["bad"].startswith("<object object")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "ValueError: boom" in second["exception"]


@pytest.mark.parametrize("given, level", [("debug", "DEBUG"), ("Warn", "WARNING"),
                                          ("ERROR", "ERROR")])
def test_level_names(given, level):
    from flume_og.node.logs import level_name
    assert level_name(given) == level


def test_an_unknown_level_is_refused_not_info():
    from flume_og.node.logs import level_name
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        level_name("verbose")


def test_identical_warnings_are_held_back_and_counted():
    from flume_og.node.logs import RepeatFilter
    f = RepeatFilter(window=60.0)

    def rec(msg, level=logging.WARNING, name="kazoo.client"):
        return logging.LogRecord(name, level, "x.py", 1, msg, (), None)

    assert f.filter(rec("Connection dropped: refused"))
    assert not any(f.filter(rec("Connection dropped: refused")) for _ in range(50))
    assert f.filter(rec("another warning"))                   # another message passes
    assert f.filter(rec("Connection dropped: refused", name="other"))   # another logger
    assert all(f.filter(rec("info line", logging.INFO, name="other"))      # below WARNING
               for _ in range(3))
    f.window = 0.0                                             # the window is over
    later = rec("Connection dropped: refused")
    assert f.filter(later) and later.repeated == 50


def test_kazoo_info_lines_are_held_back_too():
    from flume_og.node.logs import RepeatFilter
    f = RepeatFilter(window=60.0)
    rec = lambda: logging.LogRecord("kazoo.client", logging.INFO, "x.py", 1,  # noqa: E731
                                    "Connecting to 127.0.0.1(127.0.0.1):3181", (), None)
    assert f.filter(rec())
    assert not any(f.filter(rec()) for _ in range(30))


def test_debug_level_keeps_the_s3_client_quiet():
    """At --log-level debug the node's own records show, not boto3's: its DEBUG records
    carry request headers (the access key id) and bodies (the events uploaded)."""
    import io
    from flume_og.node.logs import QUIET_LIBRARIES
    try:
        setup("DEBUG", stream=io.StringIO())
        assert logging.getLogger("botocore").level == logging.INFO
        assert logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG) is False
    finally:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)
