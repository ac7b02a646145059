"""The one exception tree of the project.

Lower-level errors are translated at the boundary (``raise SinkError(...) from exc``), so
callers catch ``FlumeError`` subclasses, never ``OSError`` from deep inside a component.
"""
from __future__ import annotations


class FlumeError(Exception):
    """Base of every error this project raises on purpose."""


class SpecError(FlumeError):
    """A dataflow spec is wrong. Carries the position and can render the spec with a caret.

    ``line`` and ``column`` are 1-based; ``column`` counts characters.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 text: str | None = None):
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
        """The message, then the offending spec line with a caret under the column."""
        if self.line is None:
            return f"spec error: {self.message}"
        head = f"spec error at line {self.line}, column {self.column}: {self.message}"
        if not self.text:
            return head
        # lines are counted on "\n" only, as the parser counts them (not splitlines(),
        # which also breaks on \f, \x1c.., \u2028, ...)
        lines = self.text.split("\n")
        if not 1 <= self.line <= len(lines):
            return head
        # one column per character: control characters (tabs, \r...) shown as spaces
        src = "".join(" " if ch < " " or ch == "\x7f" else ch
                      for ch in lines[self.line - 1].rstrip("\r"))
        caret = " " * (max(self.column or 1, 1) - 1) + "^"
        return f"{head}\n  {src}\n  {caret}"

    def __str__(self) -> str:
        return self.render()


class SpecErrors(SpecError):
    """Several spec problems found in one validation pass (every problem is reported)."""

    def __init__(self, errors: list[SpecError]):
        first = errors[0]
        super().__init__(first.message, first.line, first.column, first.text)
        self.errors = errors

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.errors]

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class ComponentError(FlumeError):
    """A component failed to open, read or write."""


class SourceError(ComponentError):
    """A source failed."""


class SinkError(ComponentError):
    """A sink failed; decorators such as failover and stubbornAppend react to it."""
