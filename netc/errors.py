"""One error tree for everything netc raises on purpose.

NetcError
 ├─ DiagnosticsError      input had errors; carries the Diagnostics
 │   ├─ DslSyntaxError
 │   └─ SemanticError
 ├─ CompileError          clang or the planner failed
 ├─ LoadError             the kernel refused something
 │   ├─ VerifierError
 │   ├─ AttachError
 │   └─ NotSupportedError
 └─ UsageError            a command was called wrongly
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netc.diagnostics import Diagnostic


class NetcError(Exception):
    """Base of every error netc raises on purpose; its text is meant for people."""


class UsageError(NetcError):
    pass


class DiagnosticsError(NetcError):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        from netc.diagnostics import render_text

        super().__init__(render_text(diagnostics))


class DslSyntaxError(DiagnosticsError):
    pass


class SemanticError(DiagnosticsError):
    pass


class CompileError(NetcError):
    pass


class LoadError(NetcError):
    pass


class VerifierError(LoadError):
    """The verifier rejected a program. `log` is the whole verifier log; str() shows its end."""

    def __init__(self, message: str, log: str, rule: str | None = None, tail: int = 20):
        self.log = log
        self.rule = rule
        lines = [ln for ln in log.splitlines() if ln.strip()]
        shown = "\n".join("    " + ln for ln in lines[-tail:])
        text = f"{message}\n  verifier log (last {min(tail, len(lines))} of {len(lines)} lines):\n{shown}"
        if rule:
            text += f"\n  while checking code for rule {rule}"
        super().__init__(text)


class AttachError(LoadError):
    pass


class NotSupportedError(LoadError):
    pass
