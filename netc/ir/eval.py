"""The reference semantics: evaluate(program, inventory, packet) → verdict and deciding rule.

This is the definition the kernel is tested against (DESIGN.md §2, docs/semantics.md):
- A direction of an endpoint is isolated when a policy selecting it declares that direction
  (a default, or an allow/deny rule for it). Traffic in a direction nobody isolates passes.
- In an isolated direction the highest-priority matching rule decides; at equal priority deny
  beats allow. No match: deny, unless every isolating policy says `default allow`.
- Container to container needs the source's egress and the destination's ingress.
- A packet to a service VIP is translated first; policy sees the backend address and port.
- ICMPv6 neighbour discovery (types 133-137) always passes, like ARP for IPv4.
- A non-first fragment carries no ports: rules with ports or ICMP types do not match it.

    >>> from netc.api import check
    >>> prog = check("group web = app == \\"web\\"\\npolicy p for web { ingress default deny }").program
    >>> inv = Inventory([Container("web-1", ("10.0.0.5",), {"app": "web"})])
    >>> evaluate(prog, inv, Packet(6, "10.1.1.1", "10.0.0.5", 40000, 443)).allowed
    False
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace

from netc.ir.lb import flow_hash, maglev_table
from netc.ir.nodes import (
    Action,
    Balance,
    Direction,
    EventKind,
    Policy,
    Program,
    Protocol,
    Rule,
    Service,
)
from netc.runtime.inventory import Container, Inventory

NDP_TYPES = range(133, 138)


@dataclass(frozen=True, slots=True)
class Packet:
    protocol: int                  # IP protocol number
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    icmp_type: int | None = None
    icmp_code: int | None = None
    fragment: bool = False         # a non-first fragment: no L4 header
    tcp_flags: int = 0x02          # TCP only: SYN by default (the first packet of a connection)
    icmp_id: int = 1               # ICMP echo only: the identifier

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.src).version

    def __str__(self) -> str:
        name = {p.value: p.name.lower() for p in Protocol}.get(self.protocol, f"proto-{self.protocol}")

        def ep(a: str, port: int) -> str:
            a = f"[{a}]" if ":" in a and port else a
            return f"{a}:{port}" if port else a

        if self.protocol in (1, 58):
            return f"{name} {self.src} -> {self.dst} type {self.icmp_type} code {self.icmp_code}"
        return f"{name} {ep(self.src, self.sport)} -> {ep(self.dst, self.dport)}"


def is_ndp(pkt: Packet) -> bool:
    """ICMPv6 neighbour discovery over IPv6 with its ICMPv6 header present (not a later fragment)."""
    return (pkt.protocol == 58 and pkt.icmp_type in NDP_TYPES and not pkt.fragment
            and ":" in pkt.src)


V4_MAPPED_NET = ipaddress.IPv6Network("::ffff:0:0/96")


def has_v4_mapped(pkt: Packet) -> bool:
    """An IPv6 packet carrying an IPv4-mapped address (::ffff:a.b.c.d): never valid on the wire
    (RFC 4291 2.5.5.2); Linux drops such packets on receipt, and netc drops them too."""
    for a in (pkt.src, pkt.dst):
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.version == 6 and ip in V4_MAPPED_NET:
            return True
    return False


class Reason(enum.Enum):
    V4_MAPPED = "an IPv6 packet with an IPv4-mapped address (::ffff:a.b.c.d) is dropped"
    NOT_ISOLATED = "no policy isolates this direction"
    RULE = "a rule decided"
    DEFAULT_DENY = "isolated and no rule matched: default deny"
    DEFAULT_ALLOW = "isolated and no rule matched: every isolating policy says default allow"
    NDP = "ICMPv6 neighbour discovery always passes"


@dataclass(frozen=True)
class SideVerdict:
    endpoint: Container
    direction: Direction
    allowed: bool
    reason: Reason
    rule: Rule | None
    matched: tuple[Rule, ...] = ()          # every decisive rule that matched, best first
    audits: tuple[Rule, ...] = ()
    selecting: tuple[str, ...] = ()         # names of the policies that select the endpoint
    isolating: tuple[str, ...] = ()

    @property
    def location(self) -> str:
        if self.rule is not None:
            return self.rule.location
        return "(default)"


@dataclass(frozen=True)
class Translation:
    service: str
    vip: str
    vip_port: int
    backend: str | None          # backend name (container name or address); None: no backends
    address: str | None
    port: int | None
    candidates: tuple[tuple[str, str, int], ...]   # (name, address, port) of every eligible backend


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    packet: Packet                   # as policy saw it (after translation)
    original: Packet
    sides: tuple[SideVerdict, ...]
    translation: Translation | None = None
    events: tuple[tuple[EventKind, int | None], ...] = ()
    note: str = ""

    @property
    def deciding(self) -> SideVerdict | None:
        for s in self.sides:
            if not s.allowed:
                return s
        return self.sides[-1] if self.sides else None

    @property
    def rule(self) -> Rule | None:
        d = self.deciding
        return d.rule if d else None


@dataclass
class ServiceState:
    """Run-time state of services that the file cannot know: drained backends."""

    drained: dict[str, set[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------- matching
def _rank(r: Rule) -> tuple[int, int]:
    return (r.priority, 1 if r.action is Action.DENY else 0)


def remote_class(inv: Inventory, addr: str) -> tuple[str, Container | None]:
    c = inv.by_address(addr)
    if c is not None:
        return "container", c
    if inv.is_host(addr):
        return "host", None
    return "world", None


def match_failure(rule: Rule, pkt: Packet, remote: str, klass: str, rc: Container | None) -> str | None:
    """None when the rule matches the packet; otherwise the first reason it does not."""
    if rule.protocol is not None and rule.protocol.value != pkt.protocol:
        return f"protocol is {rule.protocol.name.lower()}"
    if rule.ports is not None:
        if pkt.protocol not in (6, 17, 132):
            return "it names ports and the packet has none"
        if pkt.fragment:
            return "it names ports and a non-first fragment carries none"
        if not rule.ports.contains(pkt.dport):
            return f"port {pkt.dport} is not in {rule.ports}"
    if rule.icmp is not None:
        if pkt.fragment or pkt.icmp_type is None:
            return "it names an ICMP type and the packet carries none"
        if not rule.icmp.contains((pkt.icmp_type << 8) | (pkt.icmp_code or 0)):
            return f"ICMP type {pkt.icmp_type} code {pkt.icmp_code} is not the one it names"
    p = rule.peer
    if p.any:
        return None
    if p.addrs.contains(remote):
        return None
    if p.world and klass == "world":
        return None
    if p.host and klass == "host":
        return None
    if rc is not None and any(s.matches(rc.labels) for s in p.selectors):
        return None
    who = rc.name if rc else remote
    return f"peer {who} ({klass}) is not among its peers"


def selecting_policies(program: Program, c: Container) -> list[Policy]:
    return [p for p in program.policies if p.selector.matches(c.labels)]


def evaluate_side(program: Program, inv: Inventory, pkt: Packet, c: Container, d: Direction) -> SideVerdict:
    remote = pkt.src if d is Direction.INGRESS else pkt.dst
    klass, rc = remote_class(inv, remote)
    selecting = selecting_policies(program, c)
    isolating = [p for p in selecting if d in p.isolates]
    names = tuple(p.name for p in selecting)
    iso_names = tuple(p.name for p in isolating)
    if has_v4_mapped(pkt):
        return SideVerdict(c, d, False, Reason.V4_MAPPED, None, (), (), names, iso_names)
    if is_ndp(pkt):
        return SideVerdict(c, d, True, Reason.NDP, None, (), (), names, iso_names)
    matched: list[Rule] = []
    audits: list[Rule] = []
    for p in selecting:
        for r in p.rules:
            if r.direction is d and match_failure(r, pkt, remote, klass, rc) is None:
                (audits if r.action is Action.AUDIT else matched).append(r)
    matched.sort(key=_rank, reverse=True)
    if not isolating:
        return SideVerdict(c, d, True, Reason.NOT_ISOLATED, None, tuple(matched), tuple(audits), names, iso_names)
    if matched:
        best = matched[0]
        return SideVerdict(c, d, best.action is Action.ALLOW, Reason.RULE, best, tuple(matched), tuple(audits),
                           names, iso_names)
    if all(p.defaults.get(d) is Action.ALLOW for p in isolating):
        return SideVerdict(c, d, True, Reason.DEFAULT_ALLOW, None, (), tuple(audits), names, iso_names)
    return SideVerdict(c, d, False, Reason.DEFAULT_DENY, None, (), tuple(audits), names, iso_names)


# ---------------------------------------------------------------------- services
def service_backends(svc: Service, inv: Inventory, version: int, vip_port: int,
                     state: ServiceState | None = None) -> list[tuple[str, str, int, int]]:
    """(name, address, port, weight) of every eligible backend, in a stable order."""
    drained = (state.drained.get(svc.name, set()) if state else set())
    out: dict[str, tuple[str, str, int, int]] = {}
    for b in svc.backends:
        port = b.port or vip_port
        if b.address is not None:
            if ipaddress.ip_address(b.address).version == version and b.address not in drained:
                out[b.address] = (b.address, b.address, port, b.weight)
        elif b.selector is not None:
            for c in inv.containers:
                if c.name in drained or not b.selector.matches(c.labels):
                    continue
                for a in c.addresses:
                    if ipaddress.ip_address(a).version == version:
                        out.setdefault(c.name, (c.name, a, port, b.weight))
                        break
    return [out[k] for k in sorted(out)]


def _addr16(a: str) -> bytes:
    ip = ipaddress.ip_address(a)
    return ip.packed if ip.version == 6 else b"\x00" * 10 + b"\xff\xff" + ip.packed


def choose_backend(svc: Service, pkt: Packet, backends: list[tuple[str, str, int, int]]) -> int:
    """Index of the backend a new flow goes to (maglev: exact; random/round-robin: the first)."""
    if not backends:
        return -1
    if svc.balance is not Balance.MAGLEV:
        return 0
    table = maglev_table([b[0] for b in backends], [b[3] for b in backends], svc.table_size)
    h = flow_hash(_addr16(pkt.src), _addr16(pkt.dst), pkt.sport, pkt.dport, pkt.protocol)
    return table[h % svc.table_size]


def translate(program: Program, inv: Inventory, pkt: Packet, state: ServiceState | None = None
              ) -> tuple[Packet, Translation | None]:
    try:
        dst = ipaddress.ip_address(pkt.dst)
    except ValueError:
        return pkt, None
    if inv.by_address(pkt.src) is None:
        return pkt, None   # translation happens at the client's veth: only containers are clients
    for svc in program.services:
        for vip in svc.vips:
            if ipaddress.ip_address(vip.address) == dst and vip.port == pkt.dport \
                    and vip.protocol.value == pkt.protocol:
                backends = service_backends(svc, inv, dst.version, vip.port, state)
                cands = tuple((b[0], b[1], b[2]) for b in backends)
                i = choose_backend(svc, pkt, backends)
                if i < 0:
                    return pkt, Translation(svc.name, vip.address, vip.port, None, None, None, cands)
                name, addr, port, _ = backends[i]
                return (replace(pkt, dst=addr, dport=port),
                        Translation(svc.name, vip.address, vip.port, name, addr, port, cands))
    return pkt, None


# ---------------------------------------------------------------------- the verdict
def _events(program: Program, sides: tuple[SideVerdict, ...], allowed: bool,
            translation: Translation | None) -> tuple[tuple[EventKind, int | None], ...]:
    out: list[tuple[EventKind, int | None]] = []
    for s in sides:
        wanted: set[EventKind] = set()
        for ob in program.observes:
            if ob.selector.matches(s.endpoint.labels):
                wanted |= ob.events
        if s.rule is not None and s.rule.log:
            out.append((EventKind.LOG, s.rule.id))
        for a in s.audits:
            out.append((EventKind.AUDIT, a.id))
        if not s.allowed and EventKind.DENY in wanted:
            out.append((EventKind.DENY, s.rule.id if s.rule else None))
        if translation is not None and EventKind.TRANSLATE in wanted and s.direction is Direction.EGRESS:
            # at the client's veth, where the translation happens
            out.append((EventKind.TRANSLATE, None))
    return tuple(out)


def evaluate(program: Program, inv: Inventory, pkt: Packet, state: ServiceState | None = None) -> Verdict:
    original = pkt
    translated, translation = translate(program, inv, pkt, state)
    if translation is not None and translation.backend is None:
        return Verdict(False, pkt, original, (), translation,
                       note=f"service {translation.service} has no backends: rejected")
    pkt = translated
    sides: list[SideVerdict] = []
    src = inv.by_address(pkt.src)
    if src is not None:
        sides.append(evaluate_side(program, inv, pkt, src, Direction.EGRESS))
    dst = inv.by_address(pkt.dst)
    if dst is not None:
        sides.append(evaluate_side(program, inv, pkt, dst, Direction.INGRESS))
    allowed = all(s.allowed for s in sides)
    t = tuple(sides)
    note = "" if sides else "neither end is a known container: netc does not see this packet"
    return Verdict(allowed, pkt, original, t, translation, _events(program, t, allowed, translation), note)
