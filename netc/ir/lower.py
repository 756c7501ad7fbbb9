"""AST + checked Env → Policy IR. Runs only when the checks reported no error.

Rule ids are stable: a hash of the policy name and the rule's own text (plus its occurrence
number among identical rules), so editing one rule does not renumber the others and counters
keyed by rule id survive unrelated edits.
"""

from __future__ import annotations

import zlib

from netc.dsl import ast as A
from netc.ir import nodes as N
from netc.ir.lb import DEFAULT_TABLE
from netc.ir.passes.check_types import Env, parse_duration
from netc.ir.passes.resolve_imports import Unit
from netc.runtime.abi import FIRST_RULE_ID
from netc.source import SourceFile, Span


def span_text(sources: dict[str, SourceFile], span: Span) -> str:
    src = sources.get(span.path)
    if src is None:
        return ""
    lines = [src.line(n) for n in range(span.line, span.end_line + 1)]
    if not lines:
        return ""
    if len(lines) == 1:
        text = lines[0][span.col - 1: span.end_col - 1]
    else:
        lines[0] = lines[0][span.col - 1:]
        lines[-1] = lines[-1][: span.end_col - 1]
        text = " ".join(lines)
    return " ".join(text.split())


class _Ids:
    def __init__(self) -> None:
        self.used: set[int] = set()
        self.occurrences: dict[str, int] = {}

    def next(self, policy: str, text: str) -> int:
        key = policy + "\0" + text
        n = self.occurrences.get(key, 0)
        self.occurrences[key] = n + 1
        rid = zlib.crc32(f"{key}\0{n}".encode()) & 0x7FFFFFFF
        while rid < FIRST_RULE_ID or rid in self.used:
            rid = (rid * 1103515245 + 12345) & 0x7FFFFFFF
        self.used.add(rid)
        return rid


def lower(unit: Unit, env: Env) -> N.Program:
    ids = _Ids()
    policies: list[N.Policy] = []
    services: list[N.Service] = []
    limits: list[N.Limit] = []
    observes: list[N.Observe] = []
    tests: list[N.TestBlock] = []
    for module in unit.modules:
        for decl in module.decls:
            if isinstance(decl, A.PolicyDecl):
                policies.append(_policy(decl, env, ids, unit))
            elif isinstance(decl, A.ServiceDecl):
                services.append(_service(decl, env))
            elif isinstance(decl, A.LimitDecl):
                limits.append(_limit(decl, env))
            elif isinstance(decl, A.ObserveDecl):
                observes.append(_observe(decl, env))
            elif isinstance(decl, A.TestDecl):
                tests.append(_test(decl, unit))
    sources = tuple(sorted((path, src.sha256) for path, src in unit.sources.items()))
    program = N.Program(tuple(policies), tuple(services), tuple(limits), tuple(observes), tuple(tests),
                        dict(env.groups), sources)
    program.rules_by_id.update({r.id: r for p in program.policies for r in p.rules})
    return program


def _policy(decl: A.PolicyDecl, env: Env, ids: _Ids, unit: Unit) -> N.Policy:
    prio = decl.priority or 0
    rules: list[N.Rule] = []
    name = decl.name.text
    actions = {a.value: a for a in N.Action}
    directions = {d.value: d for d in N.Direction}
    protocols = {p.name.lower(): p for p in N.Protocol}
    for r in decl.rules:
        text = span_text(unit.sources, r.span)
        rules.append(N.Rule(
            id=ids.next(name, text),
            policy=name,
            action=actions[r.action],
            direction=directions[r.direction],
            protocol=protocols.get(r.protocol) if r.protocol else None,
            peer=env.peers[id(r)],
            ports=env.ports[id(r)],
            icmp=env.icmp[id(r)],
            priority=r.priority if r.priority is not None else prio,
            log=r.log,
            span=r.span,
            text=text,
        ))
    defaults = {N.Direction(d.direction): N.Action(d.action) for d in decl.defaults}
    isolates = set(defaults) | {r.direction for r in rules if r.action is not N.Action.AUDIT}
    return N.Policy(name, env.selectors[id(decl)], prio, defaults, frozenset(isolates), tuple(rules), decl.span)


def _service(decl: A.ServiceDecl, env: Env) -> N.Service:
    vips = tuple(N.Vip(str(_one(v.address)), v.port, N.Protocol[v.protocol.upper()]) for v in decl.vips)
    backends = tuple(
        N.Backend(str(_one(b.address)) if b.address else None, env.selectors.get(id(b)), b.port, b.weight or 1)
        for b in decl.backends)
    balance = N.Balance(decl.balance.text) if decl.balance else N.Balance.MAGLEV
    affinity = parse_duration(decl.affinity[1]) if decl.affinity else None
    return N.Service(decl.name.text, vips, backends, balance, decl.table_size or DEFAULT_TABLE, affinity, decl.span)


def _one(address: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(address, strict=False).network_address)


def _limit(decl: A.LimitDecl, env: Env) -> N.Limit:
    per_s = {"s": 1.0, "m": 60.0, "h": 3600.0}[decl.unit.text]
    rate = decl.rate / per_s
    burst = decl.burst if decl.burst is not None else max(1, decl.rate if decl.unit.text == "s" else int(rate) or 1)
    per = N.LimitKey(decl.per.text) if decl.per else N.LimitKey.ENDPOINT
    return N.Limit(env.selectors[id(decl)], N.Direction(decl.direction), rate, burst, per, decl.span)


def _observe(decl: A.ObserveDecl, env: Env) -> N.Observe:
    events = frozenset(N.EventKind(e.text) for e in decl.events)
    sample = (decl.samples[-1][1], decl.samples[-1][2]) if decl.samples else (1, 1)
    return N.Observe(env.selectors[id(decl)], events, sample, decl.span)


def _endpoint(ep: A.Endpoint) -> N.EndpointRef:
    return N.EndpointRef(_one(ep.address) if ep.address else None, ep.name, ep.port, ep.span)


def _test(decl: A.TestDecl, unit: Unit) -> N.TestBlock:
    containers = tuple(N.TestContainer(c.name.text, c.labels, tuple(_one(a.text) for a in c.addresses))
                       for c in decl.containers)
    expectations = []
    for e in decl.expects:
        pkt = e.packet
        itype = icode = None
        if pkt.icmp is not None:
            from netc.ir.passes.check_types import ICMP_TYPES, ICMPV6_TYPES

            table = ICMPV6_TYPES if pkt.protocol == "icmpv6" else ICMP_TYPES
            itype = table[pkt.icmp.type] if isinstance(pkt.icmp.type, str) else pkt.icmp.type
            icode = pkt.icmp.code or 0
        expectations.append(N.Expectation(
            e.verdict, N.Protocol.from_name(pkt.protocol), _endpoint(pkt.src), _endpoint(pkt.dst), itype, icode,
            _endpoint(e.backend) if e.backend else None, e.span, span_text(unit.sources, e.span)))
    return N.TestBlock(decl.name, containers, tuple(expectations), decl.span)

