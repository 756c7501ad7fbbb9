"""`test` blocks run against the reference semantics.

A test's world is: the containers the test declares, the inventory given on the command line
(if any), and one synthetic container for each group a packet names, whose labels are solved
from the group's selector and whose addresses come from the benchmarking ranges 198.18.0.0/15
and 2001:db8:ffff::/48, which policies rarely name.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass

from netc.ir.eval import Packet, Verdict, evaluate
from netc.ir.nodes import Balance, EndpointRef, Expectation, Program, Protocol, Selector, SelKind, TestBlock
from netc.runtime.inventory import Container, Inventory

SYNTH_V4 = ipaddress.ip_network("198.18.0.0/15")
SYNTH_V6 = ipaddress.ip_network("2001:db8:ffff::/48")
DEFAULT_SPORT = 49152


class TestSetupError(Exception):
    pass


@dataclass(frozen=True)
class ExpectationResult:
    block: str
    expectation: Expectation
    passed: bool
    verdict: Verdict | None
    message: str
    packet: Packet | None = None


def solve_labels(sel: Selector, limit: int = 64) -> dict[str, str] | None:
    """Some label set the selector matches, or None when none was found."""
    for cand in _candidates(sel, limit):
        if sel.matches(cand):
            return cand
    return None


def _merge(options: list[list[dict[str, str]]], limit: int) -> list[dict[str, str]]:
    """Label sets that satisfy one candidate of every list at once."""
    result: list[dict[str, str]] = [{}]
    for cands in options:
        merged = []
        for a in result:
            for b in cands:
                if all(a.get(key, v) == v for key, v in b.items()):
                    merged.append({**a, **b})
        result = merged[:limit]
    return result


def _candidates(sel: Selector, limit: int, want: bool = True) -> list[dict[str, str]]:
    """Label sets that make `sel` evaluate to `want` (candidates; the caller verifies them)."""
    k = sel.kind
    if k is SelKind.NOT:
        return _candidates(sel.children[0], limit, not want)
    if k in (SelKind.AND, SelKind.OR):
        kids = [_candidates(c, limit, want) for c in sel.children]
        if (k is SelKind.AND) == want:          # every child must come out `want`
            return _merge(kids, limit)
        return list(itertools.chain.from_iterable(kids))[:limit]   # one child suffices
    if k is SelKind.ALL:
        return [{}] if want else []
    positive = {SelKind.EQ: [{sel.key: sel.values[0]}] if sel.values else [],
                SelKind.IN: [{sel.key: v} for v in sel.values],
                SelKind.HAS: [{sel.key: "true"}]}
    if k in positive:
        return positive[k][:limit] if want else [{}]
    # NE and NOT_IN: absent keys satisfy them; the listed values falsify them
    return [{}] if want else [{sel.key: v} for v in sel.values][:limit]


def _keys(sel: Selector) -> list[str]:
    if sel.children:
        return [k for c in sel.children for k in _keys(c)]
    return [sel.key] if sel.key else []


class TestWorld:
    def __init__(self, program: Program, block: TestBlock, base: Inventory | None):
        self.program = program
        containers = list(base.containers) if base else []
        self.host_addresses = base.host_addresses if base else ()
        names = {c.name for c in containers}
        self._v4 = SYNTH_V4.hosts()
        self._v6 = SYNTH_V6.hosts()
        used = {a for c in containers for a in c.addresses}
        for tc in block.containers:
            addrs = tc.addresses or (self._next(4, used), self._next(6, used))
            containers = [c for c in containers if c.name != tc.name]
            containers.append(Container(tc.name, tuple(addrs), dict(tc.labels)))
            names.add(tc.name)
            used.update(addrs)
        for e in block.expectations:
            for ep in (e.src, e.dst, e.backend):
                if ep is None or ep.name is None or ep.name in names:
                    continue
                sel = program.groups.get(ep.name)
                if sel is None:
                    raise TestSetupError(f"{ep.span}: `{ep.name}` is neither a container nor a group")
                labels = solve_labels(sel)
                if labels is None:
                    raise TestSetupError(f"{ep.span}: no container can match group `{ep.name}` "
                                         "(its selector contradicts itself)")
                addrs = (self._next(4, used), self._next(6, used))
                used.update(addrs)
                containers.append(Container(ep.name, addrs, labels))
                names.add(ep.name)
        self.inventory = Inventory(containers, self.host_addresses)

    def _next(self, version: int, used: set[str]) -> str:
        it = self._v4 if version == 4 else self._v6
        while True:
            a = str(next(it))
            if a not in used:
                return a

    def address(self, ep: EndpointRef, version: int) -> str:
        if ep.address is not None:
            return ep.address
        assert ep.name is not None
        c = self.inventory.by_name(ep.name)
        if c is None:
            raise TestSetupError(f"{ep.span}: unknown container `{ep.name}`")
        for a in c.addresses:
            if ipaddress.ip_address(a).version == version:
                return a
        raise TestSetupError(f"{ep.span}: `{ep.name}` has no IPv{version} address")

    def packet(self, e: Expectation) -> Packet:
        version = 4
        for ep in (e.src, e.dst):
            if ep.address is not None:
                version = ipaddress.ip_address(ep.address).version
                break
        if e.protocol is Protocol.ICMPV6:
            version = 6
        src = self.address(e.src, version)
        dst = self.address(e.dst, version)
        proto = e.protocol.value if e.protocol else 255
        if e.protocol is not None and e.protocol.is_icmp:
            itype = e.icmp_type if e.icmp_type is not None else (8 if e.protocol is Protocol.ICMP else 128)
            return Packet(proto, src, dst, 0, 0, itype, e.icmp_code or 0)
        return Packet(proto, src, dst, e.src.port or DEFAULT_SPORT, e.dst.port or 0)

    def backend_matches(self, ep: EndpointRef, name: str | None, address: str | None, port: int | None) -> bool:
        if ep.port is not None and ep.port != port:
            return False
        if ep.address is not None:
            return ep.address == address
        assert ep.name is not None
        if ep.name == name:
            return True
        sel = self.program.groups.get(ep.name)
        c = self.inventory.by_name(name) if name else None
        return sel is not None and c is not None and sel.matches(c.labels)


def _describe(v: Verdict) -> str:
    d = v.deciding
    word = "allowed" if v.allowed else "denied"
    if v.translation is not None and v.translation.backend is None:
        return f"denied: {v.note}"
    if d is None:
        return f"{word} ({v.note})"
    who = f"{d.endpoint.name} {d.direction.value}"
    if d.rule is not None:
        return f"{word} by {d.rule.location} `{d.rule.text}` ({who})"
    return f"{word} by default: {d.reason.value} ({who})"


def run_block(program: Program, block: TestBlock, inventory: Inventory | None = None) -> list[ExpectationResult]:
    try:
        world = TestWorld(program, block, inventory)
    except TestSetupError as exc:
        return [ExpectationResult(block.name, e, False, None, str(exc)) for e in block.expectations]
    results = []
    for e in block.expectations:
        try:
            pkt = world.packet(e)
        except TestSetupError as exc:
            results.append(ExpectationResult(block.name, e, False, None, str(exc)))
            continue
        v = evaluate(program, world.inventory, pkt)
        if e.verdict == "dnat":
            t = v.translation
            if t is None:
                ok, msg = False, f"not translated: {pkt.dst}:{pkt.dport} is no service VIP"
            elif t.backend is None:
                ok, msg = False, f"service {t.service} has no backends"
            else:
                assert e.backend is not None
                svc = next(s for s in program.services if s.name == t.service)
                if svc.balance is Balance.MAGLEV:
                    ok = world.backend_matches(e.backend, t.backend, t.address, t.port)
                    msg = f"translated by service {t.service} to {t.backend} ({t.address}:{t.port}); {_describe(v)}"
                else:
                    # random and round-robin may pick any eligible backend: every one must match
                    wrong = [c for c in t.candidates if not world.backend_matches(e.backend, *c)]
                    ok = not wrong
                    picks = ", ".join(f"{n} ({a}:{p})" for n, a, p in (wrong or t.candidates))
                    msg = (f"service {t.service} ({svc.balance.value}) may pick "
                           f"{'one of ' if not wrong else ''}{picks}"
                           f"{'' if not wrong else ', which the expectation does not name'}; {_describe(v)}")
        else:
            ok = v.allowed == (e.verdict == "allow")
            msg = _describe(v)
        results.append(ExpectationResult(block.name, e, ok, v, msg, pkt))
    return results


def run_tests(program: Program, inventory: Inventory | None = None) -> list[ExpectationResult]:
    out: list[ExpectationResult] = []
    for block in program.tests:
        out.extend(run_block(program, block, inventory))
    return out
