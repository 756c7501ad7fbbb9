"""Source files and spans: every diagnostic and every rule points back into one of these."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class SourceFile:
    """The text of one .netp file (or a set file), with a line index for positions."""

    path: str
    text: str
    _line_starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @staticmethod
    def from_text(path: str, text: str) -> SourceFile:
        starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                starts.append(i + 1)
        return SourceFile(path, text, tuple(starts))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def line(self, lineno: int) -> str:
        """The text of line `lineno` (1-based) without its newline."""
        if lineno < 1 or lineno > len(self._line_starts):
            return ""
        start = self._line_starts[lineno - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), both 1-based, of a character offset."""
        import bisect

        offset = max(0, min(offset, len(self.text)))
        idx = bisect.bisect_right(self._line_starts, offset) - 1
        return idx + 1, offset - self._line_starts[idx] + 1

    def span(self, start: int, end: int) -> Span:
        line, col = self.position(start)
        end_line, end_col = self.position(end)
        return Span(self.path, line, col, end_line, end_col)


class Span(NamedTuple):
    """A region of a source file: 1-based line and column, end exclusive.

    A NamedTuple rather than a dataclass: the fast reader makes one for every node of a
    100,000-rule file, and a tuple is several times cheaper to build.
    """

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    @property
    def location(self) -> str:
        """`file:line`, the form rules are reported in."""
        return f"{self.path}:{self.line}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.path, "line": self.line, "col": self.col,
                "end_line": self.end_line, "end_col": self.end_col}

    @staticmethod
    def from_json(d: dict[str, object]) -> Span:
        return Span(str(d["file"]), int(d["line"]), int(d["col"]),  # type: ignore[call-overload]
                    int(d["end_line"]), int(d["end_col"]))  # type: ignore[call-overload]


NO_SPAN = Span("<none>", 0, 0, 0, 0)
