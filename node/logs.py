"""The processes' log format: a sentence, then the details passed with ``extra=``.

``log.error("the WAL holds a corrupt record", extra={"segment": p, "offset": 4096})``
prints::

    2026-12-03 15:20:01,123 ERROR node.wal: the WAL holds a corrupt record segment=/d/seg-1 offset=4096

Every attribute of a record that a plain ``LogRecord`` does not have is such a detail,
printed as `` key=value`` after the message (before a traceback), in the order given.
A value that is empty or holds blanks, quotes, ``=`` or any character that is not
printable (controls, C1 controls, bidi overrides, line separators) is printed as a JSON
string with non-ASCII escaped, so a detail taken from input (a path, a host name) can
neither forge a log line nor reorder or blur what a terminal shows. A value whose
``str()`` fails is printed as ``<unprintable TYPE>``, not lost with its record. A value is cut to ``MAX_VALUE``
characters: a detail is context, not a payload.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_VALUE = 1000

# what every record has, whatever its call passed (3.12 adds taskName: computed, not listed)
STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_PLAIN = re.compile(r"[^\s\"=\\\x00-\x1f\x7f]+")


def details(record: logging.LogRecord) -> dict:
    """The ``extra=`` details of ``record``: its attributes that are not a LogRecord's own
    (and not private, like uvicorn's ``color_message`` is not)."""
    return {k: v for k, v in record.__dict__.items()
            if k not in STANDARD and not k.startswith("_") and k != "color_message"}


def _text(v) -> str:
    """``str(v)`` cut to MAX_VALUE, or a placeholder when ``str()`` fails."""
    try:
        return str(v)[:MAX_VALUE]
    except Exception:   # noqa: BLE001 - a detail must not take its record down
        return f"<unprintable {type(v).__name__}>"


def _value(v) -> str:
    if isinstance(v, (bool, int, float)) or v is None:
        return str(v)
    s = _text(v)
    if s.startswith("<unprintable "):
        return s
    return s if _PLAIN.fullmatch(s) and s.isprintable() else json.dumps(s)


class DetailsFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that appends the record's :func:`details` to the
    message as `` key=value`` pairs."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        extra = details(record)
        if not extra:
            return text
        return text + "".join(f" {k}={_value(v)}" for k, v in extra.items())


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")


def level_name(text: str) -> str:
    """``text`` as one of :data:`LEVELS` (any case; ``WARN`` is WARNING); ValueError
    naming the levels otherwise (``verbose`` must not silently mean INFO)."""
    name = text.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"unknown log level {text!r}: one of {', '.join(LEVELS)}")
    return name


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601 with ms), ``level``, ``logger``,
    ``message``, then the record's :func:`details` (values JSON can hold as they are,
    others as strings cut to ``MAX_VALUE``), and ``exception`` with the traceback. Non-ASCII
    is escaped, so no value can break the line or reorder a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.msecs)
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z",
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        for k, v in details(record).items():
            if k not in out:
                out[k] = v if isinstance(v, (bool, int, float)) or v is None else _text(v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True)


JsonFormatter.converter = time.gmtime


class RepeatFilter(logging.Filter):
    """Lets the first of identical WARNING+ records (and kazoo's records of any level:
    same logger, level and message)
    through, holds back the repeats for ``window`` seconds, and stamps the next one let
    through with ``repeated=N`` (how many were held back). Keeps kazoo's "Connection
    dropped" every second while ZooKeeper is away from filling the log. At most
    ``MAX_KEYS`` messages are tracked (then the table starts afresh)."""

    MAX_KEYS = 1000

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple, list] = {}     # key -> [first shown (monotonic), held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not record.name.startswith("kazoo"):
            return True     # kazoo's INFO "Connecting to ..." repeats every second too
        try:
            key = (record.name, record.levelno, record.getMessage())
        except Exception:     # noqa: BLE001 - the formatter reports a bad record
            return True
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                return False
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            held = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
        if held:
            record.repeated = held
        return True


def setup(level: str | int = "INFO", stream=None, fmt: str = "text") -> None:
    """Log at ``level`` (a name of :data:`LEVELS` or a number; ValueError for another
    name) to ``stream`` (default stderr) in ``fmt``: ``text`` (the format above) or
    ``json`` (:class:`JsonFormatter`). Like :func:`logging.basicConfig`, it does nothing
    when the root logger has handlers already (an embedding program's, pytest's)."""
    if isinstance(level, str):
        level = getattr(logging, level_name(level))
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else DetailsFormatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=level, handlers=[handler])
    for name in QUIET_LIBRARIES:
        # their DEBUG carries every request: headers (the access key id, signatures) and
        # bodies (the events uploaded) -- a node's debug log is not the place for those
        logging.getLogger(name).setLevel(max(level, logging.INFO))


# Libraries never logged below INFO, whatever the node's level.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3")
