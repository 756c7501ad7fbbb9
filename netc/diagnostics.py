"""Diagnostics: one type for every error, warning and note about user input, and its renderings.

    >>> from netc.source import Span
    >>> d = Diagnostic(Severity.ERROR, "E201", "undefined name `corp`", Span("a.netp", 3, 9, 3, 13))
    >>> str(d)
    'a.netp:3:9: error[E201]: undefined name `corp`'
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from netc.source import SourceFile, Span


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span
    hint: str | None = None
    notes: tuple[tuple[str, Span | None], ...] = ()

    def __str__(self) -> str:
        return f"{self.span}: {self.severity.value}[{self.code}]: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            **self.span.to_json(),
            "hint": self.hint,
            "notes": [{"message": m, **(s.to_json() if s else {})} for m, s in self.notes],
        }


@dataclass
class Reporter:
    """Collects diagnostics for a pass; passes report, the pipeline decides whether to stop."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span, hint: str | None = None,
              notes: tuple[tuple[str, Span | None], ...] = ()) -> None:
        self.diagnostics.append(Diagnostic(Severity.ERROR, code, message, span, hint, notes))

    def warning(self, code: str, message: str, span: Span, hint: str | None = None,
                notes: tuple[tuple[str, Span | None], ...] = ()) -> None:
        self.diagnostics.append(Diagnostic(Severity.WARNING, code, message, span, hint, notes))

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diags)


# Sources known to the renderer, so it can show the offending line.
_SOURCES: dict[str, SourceFile] = {}


def register_source(src: SourceFile) -> None:
    _SOURCES[src.path] = src


def _excerpt(span: Span, colour: bool) -> list[str]:
    src = _SOURCES.get(span.path)
    if src is None or span.line < 1:
        return []
    text = src.line(span.line).replace("\t", " ")
    width = (span.end_col - span.col) if span.end_line == span.line else len(text) - span.col + 1
    width = max(1, width)
    gutter = f"{span.line:>4} | "
    marker = " " * (len(gutter) - 2) + "| " + " " * (span.col - 1) + "^" + "~" * (width - 1)
    if colour:
        marker = "\x1b[1;31m" + marker + "\x1b[0m"
    return [gutter + text, marker]


def render_one(d: Diagnostic, colour: bool = False) -> str:
    head = str(d)
    if colour:
        tone = {"error": "1;31", "warning": "1;33", "note": "1;36"}[d.severity.value]
        head = f"\x1b[1m{d.span}:\x1b[0m \x1b[{tone}m{d.severity.value}[{d.code}]\x1b[0m: {d.message}"
    lines = [head, *_excerpt(d.span, colour)]
    for message, span in d.notes:
        lines.append(f"  note: {message}" + (f" ({span})" if span else ""))
    if d.hint:
        lines.append(f"  hint: {d.hint}")
    return "\n".join(lines)


def render_text(diags: Iterable[Diagnostic], colour: bool = False) -> str:
    return "\n".join(render_one(d, colour) for d in diags)


def render_json(diags: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)


def render_sarif(diags: Iterable[Diagnostic], tool_version: str) -> str:
    """SARIF 2.1.0, the format GitHub code scanning and most CI systems read."""
    diags = list(diags)
    level = {"error": "error", "warning": "warning", "note": "note"}
    rules = sorted({d.code for d in diags})
    results = []
    for d in diags:
        results.append({
            "ruleId": d.code,
            "level": level[d.severity.value],
            "message": {"text": d.message + (f" (hint: {d.hint})" if d.hint else "")},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": d.span.path},
                    "region": {"startLine": max(1, d.span.line), "startColumn": max(1, d.span.col),
                               "endLine": max(1, d.span.end_line), "endColumn": max(1, d.span.end_col)},
                }
            }],
        })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "netc", "version": tool_version,
                                "rules": [{"id": r} for r in rules]}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2)
