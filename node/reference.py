"""The reference pages generated from the code (``docs/reference.md``), so they cannot
drift: every source, sink and decorator with its usage and summary (what ``flume
components`` prints), every output format with an example line, every escape. ``flume
components --markdown`` prints it; a test checks the committed file equals it."""
from __future__ import annotations

import time

from .components import all_components
from .escapes import _DATE_FIELDS
from .event import Event, Priority
from .formats import FORMATS, OutputFormat

# one event written by every format in the examples (a fixed time: the page is stable)
SAMPLE = Event(b"GET /index.html 200", 1_700_000_000_123, 42, Priority.INFO, "web1",
               {"service": b"shop"})

FIELD_ESCAPES = (
    ("%{host}", "the event's host (also `%{hostname}`)"),
    ("%{nanos}", "the event's nanosecond counter"),
    ("%{priority}", "the priority's name (`INFO`)"),
    ("%{body}", "the body (UTF-8, invalid bytes replaced)"),
    ("%{NAME}", "the attribute NAME (empty when missing); `%{rolltag}` is the roll's tag"),
    ("%t", "the event's time in epoch milliseconds"),
    ("%s", "the event's time in epoch seconds"),
    ("%%", "a literal `%`"),
)


def _example(name: str) -> str:
    fmt = OutputFormat.get(name)
    if fmt.container:
        return "(a binary container: no line)"
    return fmt.encode([SAMPLE]).decode("utf-8", "replace").rstrip("\n")


def markdown() -> str:
    out = ["# Reference (generated)\n",
           "Generated from the code by `TZ=UTC flume components --markdown > docs/reference.md`;",
           "a test fails when it differs. The spec language is described in",
           "[`spec-language.md`](spec-language.md).\n"]
    for kind in ("source", "sink", "decorator"):
        infos = all_components(kind)
        out.append(f"## {kind.capitalize()}s ({len(infos)})\n")
        for info in infos:
            alias = f" (also: {', '.join(f'`{a}`' for a in info.aliases)})" \
                if info.aliases else ""
            out.append(f"- `{info.usage()}`{alias}: {info.summary().replace('``', '`')}")
        out.append("")
    out.append("## Output formats\n")
    out.append("Each with the line it writes for one event (host `web1`, time "
               "1700000000123, body `GET /index.html 200`, attribute `service=shop`):\n")
    for name in sorted(FORMATS):
        out.append(f"- `{name}`: `{_example(name)}`")
    out.append("\n## Escapes in file names\n")
    out.append("Expanded by the sinks that write time buckets (`collectorSink`, the `dfs` "
               "family); dates come from the event's own time.\n")
    for esc, what in FIELD_ESCAPES:
        out.append(f"- `{esc}`: {what}")
    tm = time.gmtime(SAMPLE.timestamp // 1000)
    for letter, fn in _DATE_FIELDS.items():
        out.append(f"- `%{letter}`: `{fn(tm)}` (for {time.strftime('%Y-%m-%d %H:%M:%S', tm)} "
                   f"UTC)")
    return "\n".join(out) + "\n"
