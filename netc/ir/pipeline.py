"""The front end in one place: the passes, in order, and where the pipeline stops.

Each pass reports into the Reporter; after a pass that reported an error, the pipeline stops
(later passes would only report the same mistake again in other words).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netc.diagnostics import Diagnostic, Reporter, register_source
from netc.ir.lower import lower
from netc.ir.nodes import Program
from netc.ir.passes.check_types import check_types
from netc.ir.passes.lint_rules import lint_rules
from netc.ir.passes.resolve_imports import Unit, display_path, resolve_imports
from netc.ir.passes.resolve_names import resolve_names
from netc.source import SourceFile

PASSES = ("resolve_imports", "resolve_names", "check_types", "lower", "lint_rules")


@dataclass
class FrontEndResult:
    program: Program | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    unit: Unit | None = None

    @property
    def ok(self) -> bool:
        return self.program is not None


def load_source(path_or_text: str, *, name: str | None = None) -> tuple[SourceFile, str | None]:
    """A path to a .netp file, or .netp text itself (given `name`, or when it has a newline or brace)."""
    import os

    if name is None and "\n" not in path_or_text and "{" not in path_or_text and os.path.exists(path_or_text):
        with open(path_or_text, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        src = SourceFile.from_text(display_path(path_or_text), text)
        register_source(src)
        return src, path_or_text
    src = SourceFile.from_text(name or "<input>", path_or_text)
    register_source(src)
    return src, None


def front_end(src: SourceFile, path: str | None, *, lint: bool = True) -> FrontEndResult:
    import gc

    # The passes build millions of small acyclic objects at 100,000 rules; the cyclic collector
    # would walk them all again and again for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _front_end(src, path, lint)
    finally:
        if enabled:
            gc.enable()


def _front_end(src: SourceFile, path: str | None, lint: bool) -> FrontEndResult:
    rep = Reporter()
    unit = resolve_imports(src, path, rep)
    if rep.has_errors:
        return FrontEndResult(None, rep.diagnostics, unit)
    scope = resolve_names(unit, rep)
    if rep.has_errors:
        return FrontEndResult(None, rep.diagnostics, unit)
    env = check_types(unit, scope, rep)
    if rep.has_errors:
        return FrontEndResult(None, rep.diagnostics, unit)
    program = lower(unit, env)
    if lint:
        lint_rules(program, rep)
    return FrontEndResult(program, rep.diagnostics, unit)
