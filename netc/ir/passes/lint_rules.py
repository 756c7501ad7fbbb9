"""Pass: warnings about rules that cannot do what they seem to (shadowed, conflicting, unreachable).

The checks compare rules of the same direction among policies with the same selector, where
the comparison is exact. Coverage is detected against rules whose peer is `any` or the same
peer set, which is where shadowing happens in practice; at most CANDIDATES earlier rules are
compared with each rule, so the pass stays linear at 100,000 rules.
"""

from __future__ import annotations

from collections import defaultdict

from netc.diagnostics import Reporter
from netc.ir.nodes import Action, Direction, Peer, Program, Protocol, Rule

CANDIDATES = 64


def _rank(r: Rule) -> tuple[int, int]:
    return (r.priority, 1 if r.action is Action.DENY else 0)


def _peer_key(p: Peer) -> Peer:
    return p  # frozen and hashable: equal peers are equal keys


def _peer_covers(a: Peer, b: Peer) -> bool:
    if a.any:
        return True
    if b.any:
        return False
    return (a.addrs.covers(b.addrs) and all(s in a.selectors for s in b.selectors)
            and (a.world or not b.world) and (a.host or not b.host))


def _covers(a: Rule, b: Rule) -> bool:
    if a.protocol is not None and a.protocol != b.protocol:
        return False
    if a.ports is not None and (b.ports is None or not a.ports.covers(b.ports)):
        return False
    if a.icmp is not None and (b.icmp is None or not a.icmp.covers(b.icmp)):
        return False
    return _peer_covers(a.peer, b.peer)


def _same_match(a: Rule, b: Rule) -> bool:
    return a.protocol == b.protocol and a.ports == b.ports and a.icmp == b.icmp and a.peer == b.peer


def lint_rules(program: Program, rep: Reporter) -> None:
    groups: dict[tuple[object, Direction], list[Rule]] = defaultdict(list)
    for p in program.policies:
        sel = p.selector
        for r in p.rules:
            if r.action is not Action.AUDIT:
                groups[(sel, r.direction)].append(r)
        _lint_isolation(p, rep)
        for r in p.rules:
            _lint_family(r, rep)

    for rules in groups.values():
        wildcard: list[Rule] = []           # earlier-or-higher rules with peer `any`
        by_peer: dict[Peer, list[Rule]] = defaultdict(list)
        exact: dict[tuple[object, ...], dict[Action, Rule]] = defaultdict(dict)
        for r in sorted(rules, key=lambda r: (-r.priority, 0 if r.action is Action.DENY else 1, r.span)):
            key = _peer_key(r.peer)
            sig = (r.protocol, r.ports, r.icmp, key, r.priority)
            other = exact[sig]
            if r.action is Action.ALLOW and Action.DENY in other:
                d = other[Action.DENY]
                rep.warning("W802", "this allow and a deny match the same packets at the same priority; "
                            "the deny wins", r.span, "remove one, or give the one that should win a higher priority",
                            notes=(("the deny is here", d.span),))
            other.setdefault(r.action, r)
            coverer = None
            for cand in wildcard[:CANDIDATES] + by_peer[key][:CANDIDATES]:
                if _rank(cand) > _rank(r) and _covers(cand, r):
                    coverer = cand
                    break
            if coverer is not None:
                why = "a higher priority" if coverer.priority > r.priority else "the same priority, and deny wins"
                rep.warning("W801", f"this rule never decides: `{coverer.text}` matches every packet it does "
                            f"with {why}", r.span, "remove it, or raise its priority",
                            notes=(("the covering rule", coverer.span),))
            if r.peer.any:
                wildcard.append(r)
            by_peer[key].append(r)


def _lint_isolation(p: object, rep: Reporter) -> None:
    from netc.ir.nodes import Policy

    assert isinstance(p, Policy)
    for d in Direction:
        rules = [r for r in p.rules if r.direction is d and r.action is not Action.AUDIT]
        if d in p.defaults or not rules:
            continue
        if all(r.action is Action.DENY for r in rules):
            rep.warning("W804", f"policy `{p.name}` has only deny rules for {d.value} and no {d.value} default, "
                        f"so it isolates {d.value} and denies everything else too", rules[0].span,
                        f"add `{d.value} default allow` if it should only block what it names")


def _lint_family(r: Rule, rep: Reporter) -> None:
    if r.protocol is None or r.peer.any or r.peer.selectors or r.peer.world or r.peer.host:
        return
    if r.protocol is Protocol.ICMP and not r.peer.addrs.v4:
        rep.warning("W805", "an icmp rule whose peers are all IPv6 addresses never matches", r.span,
                    "IPv6 uses `icmpv6`")
    elif r.protocol is Protocol.ICMPV6 and not r.peer.addrs.v6:
        rep.warning("W805", "an icmpv6 rule whose peers are all IPv4 addresses never matches", r.span,
                    "IPv4 uses `icmp`")
