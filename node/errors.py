"""The one exception tree of the project.

Lower-level errors are translated at the boundary (``raise SinkError(...) from exc``), so
callers catch ``FlumeError`` subclasses, never ``OSError`` from deep inside a component.
"""
from __future__ import annotations


class FlumeError(Exception):
    """Base of every error this project raises on purpose."""


MAX_SHOWN = 20             # problems shown of one spec (SpecErrors.shown)
QUOTE_CHARS = 120          # characters of a spec line quoted under an error's message
MAX_MESSAGE_CHARS = 500    # characters of one problem's message


class SpecError(FlumeError):
    """A dataflow spec is wrong. Carries the position and can render the spec with a caret.

    ``line`` and ``column`` are 1-based; ``column`` counts characters.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 text: str | None = None):
        # messages quote names and values from the spec: bounded, as the quoted line is
        message = _window(message, 0, MAX_MESSAGE_CHARS)[0]
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.text = text

    def with_text(self, text: str) -> "SpecError":
        """Attach the spec text (for the caret rendering) if none is attached yet."""
        if self.text is None:
            self.text = text
        return self

    def to_dict(self) -> dict:
        return {"message": self.message, "line": self.line, "column": self.column}

    def render(self) -> str:
        """The message, then the offending spec line with a caret under the column; a line
        longer than ``QUOTE_CHARS`` is cut to that many characters around the column (``…``
        where cut), so that what is shown grows with the number of errors, never with the
        length of the spec."""
        if self.line is None:
            return f"spec error: {self.message}"
        head = f"spec error at line {self.line}, column {self.column}: {self.message}"
        if not self.text:
            return head
        # lines are counted on "\n" only, as the parser counts them (not splitlines(),
        # which also breaks on \f, \x1c.., \u2028, ...)
        lines = self.text.split("\n", self.line)
        if not 1 <= self.line <= len(lines):
            return head
        src, at = _window(lines[self.line - 1].rstrip("\r"), max(self.column or 1, 1) - 1,
                          QUOTE_CHARS)
        # one column per character: control characters (tabs, \r...) shown as spaces
        src = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in src)
        return f"{head}\n  {src}\n  {' ' * at}^"

    def __str__(self) -> str:
        return self.render()


class SpecErrors(SpecError):
    """Several spec problems found in one validation pass (every problem is reported)."""

    def __init__(self, errors: list[SpecError]):
        first = errors[0]
        super().__init__(first.message, first.line, first.column, first.text)
        self.errors = errors

    def shown(self) -> tuple[list[SpecError], int]:
        """The problems to show (the first ``MAX_SHOWN``) and how many more there are:
        what is shown of a spec is bounded, however many problems it has."""
        return self.errors[:MAX_SHOWN], max(len(self.errors) - MAX_SHOWN, 0)

    def render(self) -> str:
        shown, more = self.shown()
        return "\n".join([e.render() for e in shown] + ([more_problems(more)] if more else []))


def more_problems(n: int) -> str:
    """The line standing for ``n`` problems not shown."""
    return f"... and {n} more problem{'s' if n != 1 else ''} (the first {MAX_SHOWN} are shown)"


def _window(s: str, at: int, width: int) -> tuple[str, int]:
    """At most ``width`` characters of ``s`` around index ``at`` (which may be ``len(s)``),
    with ``…`` where it was cut, and the index of ``at`` in the result."""
    if len(s) <= width:
        return s, at
    start = min(max(at - width // 2, 0), len(s) - width)
    end = start + width
    return (("…" if start else "") + s[start:end] + ("…" if end < len(s) else ""),
            at - start + (1 if start else 0))


class RestoreError(FlumeError):
    """A password hidden by a listing (``user:***@``) cannot be put back safely."""


class ComponentError(FlumeError):
    """A component failed to open, read or write."""


class SourceError(ComponentError):
    """A source failed."""


class SinkError(ComponentError):
    """A sink failed; decorators such as failover and stubbornAppend react to it."""


class CommitLogError(FlumeError):
    """The E2E commit log failed (ZooKeeper away or refusing): what node/commit_port.py
    makes of the zk/ errors, so that components, which never import zk, can catch it."""


class Interrupted(SinkError):
    """A sink gave up waiting (for disk space) because its flow stops: the batch was not
    taken and its source position was not committed, so a source with positions gives it
    again when the flow restarts. Not a failure of the flow."""


class DeliveryUnknown(SinkError):
    """A call failed after its request may have reached the receiver (a timeout, a
    connection broken while waiting for the answer): the receiver may or may not have
    taken the batch. A connection that could not be made is a plain SinkError."""
