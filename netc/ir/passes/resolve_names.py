"""Pass: collect every declared name; report duplicates, reserved names and undefined references.

Sets (`let`) and groups share one namespace, since both are named where a peer is expected.
Policies, services and tests have a namespace each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from netc.diagnostics import Reporter
from netc.dsl import ast as A
from netc.dsl.parser import KEYWORDS
from netc.ir.passes.resolve_imports import Unit

BUILTIN_PEERS = frozenset({"any", "world", "host"})


@dataclass
class Scope:
    values: dict[str, A.LetDecl | A.GroupDecl] = field(default_factory=dict)
    policies: dict[str, A.PolicyDecl] = field(default_factory=dict)
    services: dict[str, A.ServiceDecl] = field(default_factory=dict)


def _closest(name: str, candidates: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return match[0] if match else None


def _selector_refs(sel: A.Selector) -> Iterator[A.Ident]:
    if isinstance(sel, A.SelGroup):
        yield sel.name
    elif isinstance(sel, A.SelNot):
        yield from _selector_refs(sel.child)
    elif isinstance(sel, (A.SelAnd, A.SelOr)):
        for c in sel.children:
            yield from _selector_refs(c)


def _set_refs(value: A.SetExpr | A.SetLiteral) -> Iterator[A.Ident]:
    if isinstance(value, A.SetRef):
        yield value.name
    elif isinstance(value, A.SetLiteral):
        for item in value.items:
            if isinstance(item, A.SetRef):
                yield item.name


def _references(module: A.Module) -> Iterator[A.Ident]:
    for decl in module.decls:
        if isinstance(decl, A.LetDecl):
            yield from _set_refs(decl.value)
        elif isinstance(decl, A.GroupDecl):
            yield from _selector_refs(decl.selector)
        elif isinstance(decl, A.PolicyDecl):
            yield from _selector_refs(decl.selector)
            for rule in decl.rules:
                for peer in rule.from_peers + rule.to_peers:
                    if isinstance(peer, A.PeerName) and peer.name.text not in BUILTIN_PEERS:
                        yield peer.name
                    elif isinstance(peer, A.PeerSet):
                        yield from _set_refs(peer.literal)
                    elif isinstance(peer, A.PeerSelector):
                        yield from _selector_refs(peer.selector)
                for port in rule.ports:
                    if isinstance(port, A.PortName):
                        yield port.name
                    elif isinstance(port, A.SetLiteral):
                        yield from _set_refs(port)
        elif isinstance(decl, A.ServiceDecl):
            for b in decl.backends:
                if b.selector is not None:
                    yield from _selector_refs(b.selector)
        elif isinstance(decl, (A.LimitDecl, A.ObserveDecl)):
            yield from _selector_refs(decl.target)


def resolve_names(unit: Unit, rep: Reporter) -> Scope:
    scope = Scope()
    for module in unit.modules:
        for decl in module.decls:
            if isinstance(decl, (A.LetDecl, A.GroupDecl)):
                name = decl.name
                if name.text in KEYWORDS or name.text in BUILTIN_PEERS:
                    what = "a keyword" if name.text in KEYWORDS else "a built-in peer"
                    rep.error("E006", f"`{name.text}` is {what} and cannot be used as a name", name.span,
                              f"choose another name, such as `{name.text}_set` or `my-{name.text}`")
                    continue
                prev = scope.values.get(name.text)
                if prev is not None:
                    rep.error("E202", f"`{name.text}` is defined twice", name.span, "rename one of them",
                              notes=(("first defined here", prev.name.span),))
                    continue
                scope.values[name.text] = decl
            elif isinstance(decl, A.PolicyDecl):
                prev_p = scope.policies.get(decl.name.text)
                if prev_p is not None:
                    rep.error("E203", f"policy `{decl.name.text}` is defined twice", decl.name.span,
                              "policy names identify rules in counters and events; rename one of them",
                              notes=(("first defined here", prev_p.name.span),))
                    continue
                scope.policies[decl.name.text] = decl
            elif isinstance(decl, A.ServiceDecl):
                prev_s = scope.services.get(decl.name.text)
                if prev_s is not None:
                    rep.error("E204", f"service `{decl.name.text}` is defined twice", decl.name.span,
                              notes=(("first defined here", prev_s.name.span),))
                    continue
                scope.services[decl.name.text] = decl

    known = sorted(scope.values)
    for module in unit.modules:
        for ref in _references(module):
            if ref.text not in scope.values:
                guess = _closest(ref.text, known + sorted(BUILTIN_PEERS))
                hint = (f"did you mean `{guess}`?" if guess else
                        "define it with `let NAME = {…}` or `group NAME = selector`")
                if ref.text == "all":
                    hint = "as a peer, `any` means every address and `(all)` every container"
                rep.error("E201", f"undefined name `{ref.text}`", ref.span, hint)
    return scope
