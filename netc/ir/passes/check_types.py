"""Pass: evaluate sets and selectors and check that every value is of the right kind and range.

The results (evaluated sets, inlined selectors, each rule's peer/ports/icmp) are kept in an Env
that lowering reads, so no value is computed twice.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field

from netc.diagnostics import Reporter, register_source
from netc.dsl import ast as A
from netc.ir.addrset import AddrSet, PortSet
from netc.ir.nodes import Peer, Protocol, Selector, SelKind
from netc.ir.passes.resolve_imports import Unit, display_path
from netc.ir.passes.resolve_names import Scope
from netc.source import SourceFile, Span

PRIORITY_MIN, PRIORITY_MAX = -(1 << 20), (1 << 20) - 1

ICMP_TYPES = {
    "echo-reply": 0, "dest-unreachable": 3, "destination-unreachable": 3, "source-quench": 4,
    "redirect": 5, "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14,
}
ICMPV6_TYPES = {
    "dest-unreachable": 1, "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129, "router-solicitation": 133,
    "router-advertisement": 134, "neighbor-solicitation": 135, "neighbor-advertisement": 136,
}


class SetKind(enum.Enum):
    PORTS = "ports"
    ADDRESSES = "addresses"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class SetValue:
    kind: SetKind
    ports: PortSet = PortSet(())
    addrs: AddrSet = AddrSet()


@dataclass
class Env:
    sets: dict[str, SetValue] = field(default_factory=dict)
    groups: dict[str, Selector] = field(default_factory=dict)
    # per rule (keyed by id() of the AST node): the evaluated match
    peers: dict[int, Peer] = field(default_factory=dict)
    ports: dict[int, PortSet | None] = field(default_factory=dict)
    icmp: dict[int, PortSet | None] = field(default_factory=dict)
    selectors: dict[int, Selector] = field(default_factory=dict)


def parse_address(text: str, span: Span, rep: Reporter) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An address or CIDR; warns when a CIDR has host bits set (and uses the network)."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        hint = "addresses are written like 10.0.0.1, 10.0.0.0/8, fd00::1 or fd00::/8"
        if "/" in text:
            base, _, plen = text.partition("/")
            maxlen = 128 if ":" in base else 32
            if plen.isdigit() and int(plen) > maxlen:
                hint = f"a prefix length is at most {maxlen}"
        rep.error("E301", f"`{text}` is not a valid address or CIDR", span, hint)
        return None
    if "/" in text:
        exact = ipaddress.ip_network(text.split("/")[0] + "/" + str(net.prefixlen), strict=False)
        if ipaddress.ip_address(text.split("/")[0]) != exact.network_address:
            rep.warning("W302", f"`{text}` has host bits set; it means {net}", span,
                        f"write {net} to say what you mean")
    return net


_V4_PLAIN = re.compile(r"(?:0|[1-9]\d{0,2})(?:\.(?:0|[1-9]\d{0,2})){3}")
_cidr_cache: dict[str, tuple[int, int, int, bool] | None] = {}


def _fast_cidr(text: str) -> tuple[int, int, int, bool] | None:
    """(version, first, last, host_bits_set) of an address or CIDR, or None if it is not valid.

    socket.inet_pton is the C parser; ipaddress does the same in Python at 20x the cost, which
    matters at 100,000 rules. Leading zeros in IPv4 octets are refused, as ipaddress does.
    """
    hit = _cidr_cache.get(text, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    base, slash, plen_s = text.partition("/")
    result: tuple[int, int, int, bool] | None = None
    try:
        if ":" in base:
            version, width, raw = 6, 128, socket.inet_pton(socket.AF_INET6, base)
        else:
            if not _V4_PLAIN.fullmatch(base):
                raise OSError
            version, width, raw = 4, 32, socket.inet_pton(socket.AF_INET, base)
        value = int.from_bytes(raw, "big")
        plen = width
        if slash:
            if not plen_s.isdigit() or len(plen_s) > 3:
                raise OSError
            plen = int(plen_s)
            if plen > width:
                raise OSError
        host = (1 << (width - plen)) - 1
        result = (version, value & ~host, (value & ~host) | host, bool(value & host))
    except OSError:
        result = None
    if len(_cidr_cache) < 1_000_000:
        _cidr_cache[text] = result
    return result


def _check_port(p: int, span: Span, rep: Reporter) -> bool:
    if not 0 <= p <= 65535:
        rep.error("E304", f"port {p} is outside 0-65535", span)
        return False
    return True


class Checker:
    def __init__(self, unit: Unit, scope: Scope, rep: Reporter):
        self.unit, self.scope, self.rep = unit, scope, rep
        self.env = Env()
        self._evaluating: list[str] = []
        self._failed: set[str] = set()   # sets and groups whose errors were reported once already
        self._decl_file: dict[int, str] = {}
        self._vips: dict[tuple[str, int, str], tuple[str, Span]] = {}   # (VIP, port, proto) -> (service, span)
        for m in unit.modules:
            for d in m.decls:
                self._decl_file[id(d)] = m.path

    # ------------------------------------------------------------------ sets
    def set_value(self, name: str, span: Span) -> SetValue | None:
        if name in self.env.sets:
            return self.env.sets[name]
        if name in self._failed:
            return None  # already reported where the set is defined
        decl = self.scope.values.get(name)
        if not isinstance(decl, A.LetDecl):
            return None
        if name in self._evaluating:
            chain = " -> ".join(self._evaluating[self._evaluating.index(name):] + [name])
            self.rep.error("E317", f"set `{name}` is defined in terms of itself: {chain}", span)
            return None
        self._evaluating.append(name)
        value = self.eval_set_expr(decl.value, self._decl_file.get(id(decl), ""))
        self._evaluating.pop()
        if value is not None:
            self.env.sets[name] = value
        else:
            self._failed.add(name)
        return value

    def eval_set_expr(self, expr: A.SetExpr, declaring_file: str) -> SetValue | None:
        if isinstance(expr, A.SetRef):
            return self.ref_value(expr.name)
        if isinstance(expr, A.SetFile):
            return self.read_set_file(expr, declaring_file)
        return self.eval_literal(expr)

    def ref_value(self, ident: A.Ident) -> SetValue | None:
        decl = self.scope.values.get(ident.text)
        if isinstance(decl, A.GroupDecl):
            self.rep.error("E306", f"`{ident.text}` is a group, not a set", ident.span,
                           "sets hold ports or addresses; groups can be used as peers directly")
            return None
        if decl is None:
            return None  # reported by resolve_names
        return self.set_value(ident.text, ident.span)

    def eval_literal(self, lit: A.SetLiteral) -> SetValue | None:
        ports: list[tuple[int, int]] = []
        addrs: list[AddrSet] = []
        kinds: dict[SetKind, Span] = {}
        ok = True
        for item in lit.items:
            if isinstance(item, A.PortItem):
                kinds.setdefault(SetKind.PORTS, item.span)
                pr = self.port_item(item)
                if pr is None:
                    ok = False
                else:
                    ports.append(pr)
            elif isinstance(item, A.AddrItem):
                kinds.setdefault(SetKind.ADDRESSES, item.span)
                a = self.addr_item(item)
                if a is None:
                    ok = False
                else:
                    addrs.append(a)
            else:
                v = self.ref_value(item.name)
                if v is None:
                    ok = False
                    continue
                if v.kind is SetKind.PORTS:
                    kinds.setdefault(SetKind.PORTS, item.span)
                    ports.extend(v.ports.ranges)
                elif v.kind is SetKind.ADDRESSES:
                    kinds.setdefault(SetKind.ADDRESSES, item.span)
                    addrs.append(v.addrs)
        if len(kinds) > 1:
            self.rep.error("E307", "a set mixes ports and addresses", lit.span,
                           "keep ports and addresses in separate sets",
                           notes=tuple((f"{k.value} start here", s) for k, s in kinds.items()))
            return None
        if not ok:
            return None
        if SetKind.PORTS in kinds:
            return SetValue(SetKind.PORTS, ports=PortSet.of(ports))
        if SetKind.ADDRESSES in kinds:
            return SetValue(SetKind.ADDRESSES, addrs=AddrSet.union_all(addrs))
        return SetValue(SetKind.EMPTY)

    def port_item(self, item: A.PortItem) -> tuple[int, int] | None:
        if not (_check_port(item.lo, item.span, self.rep) and _check_port(item.hi, item.span, self.rep)):
            return None
        if item.lo > item.hi:
            self.rep.error("E305", f"port range {item.lo}-{item.hi} is reversed", item.span,
                           f"write {item.hi}-{item.lo}")
            return None
        return (item.lo, item.hi)

    def cidr(self, text: str, span: Span) -> tuple[int, int, int] | None:
        parsed = _fast_cidr(text)
        if parsed is None:
            parse_address(text, span, self.rep)  # reports why, in the same words everywhere
            return None
        version, lo, hi, host_bits = parsed
        if host_bits:
            parse_address(text, span, self.rep)  # the host-bits warning
        return version, lo, hi

    def addr_item(self, item: A.AddrItem) -> AddrSet | None:
        net = self.cidr(item.address, item.span)
        if net is None:
            return None
        version, lo, hi = net
        result = AddrSet(((lo, hi),), ()) if version == 4 else AddrSet((), ((lo, hi),))
        for exc in item.excepts:
            sub = self.cidr(exc.text, exc.span)
            if sub is None:
                return None
            if sub[0] != version or not (lo <= sub[1] and sub[2] <= hi):
                self.rep.error("E303", f"`{exc.text}` is not inside {item.address}, so `except` removes nothing",
                               exc.span, "an `except` names a part of the CIDR before it")
                return None
            hole = AddrSet(((sub[1], sub[2]),), ()) if version == 4 else AddrSet((), ((sub[1], sub[2]),))
            result = result.subtract(hole)
        return result

    def read_set_file(self, expr: A.SetFile, declaring_file: str) -> SetValue | None:
        base = os.path.dirname(declaring_file) if declaring_file and not declaring_file.startswith("<") else "."
        path = expr.path if os.path.isabs(expr.path) else os.path.join(base, expr.path)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            self.rep.error("E316", f"cannot read set file \"{expr.path}\": {exc.strerror}", expr.span,
                           "set file paths are relative to the file that names them")
            return None
        src = SourceFile.from_text(display_path(path), text)
        register_source(src)
        self.unit.sources[src.path] = src
        bad = 0
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            col = raw.index(line[0]) + 1
            try:
                net = ipaddress.ip_network(line, strict=False)
            except ValueError:
                bad += 1
                if bad <= 20:
                    self.rep.error("E301", f"`{line}` is not a valid address or CIDR",
                                   Span(src.path, lineno, col, lineno, col + len(line)),
                                   "a set file holds one address or CIDR a line; `#` starts a comment")
                continue
            (v4 if net.version == 4 else v6).append((int(net.network_address), int(net.broadcast_address)))
        if bad:
            return None
        return SetValue(SetKind.ADDRESSES, addrs=AddrSet.union_all([AddrSet(tuple(sorted(v4)), tuple(sorted(v6)))]))

    # ------------------------------------------------------------------ selectors
    def selector(self, sel: A.Selector) -> Selector | None:
        if isinstance(sel, A.SelAll):
            return Selector(SelKind.ALL)
        if isinstance(sel, A.SelLabel):
            kind = {A.LabelOp.EQ: SelKind.EQ, A.LabelOp.NE: SelKind.NE, A.LabelOp.IN: SelKind.IN,
                    A.LabelOp.NOT_IN: SelKind.NOT_IN, A.LabelOp.HAS: SelKind.HAS}[sel.op]
            if sel.op in (A.LabelOp.IN, A.LabelOp.NOT_IN) and not sel.values:
                self.rep.warning("W318", f"`{sel.key} {sel.op.value} {{}}` has an empty set", sel.span)
            return Selector(kind, sel.key, tuple(sel.values))
        if isinstance(sel, A.SelGroup):
            return self.group(sel.name)
        if isinstance(sel, A.SelNot):
            child = self.selector(sel.child)
            return None if child is None else Selector(SelKind.NOT, children=(child,))
        children = [self.selector(c) for c in sel.children]
        if any(c is None for c in children):
            return None
        kind = SelKind.AND if isinstance(sel, A.SelAnd) else SelKind.OR
        return Selector(kind, children=tuple(c for c in children if c is not None))

    def group(self, ident: A.Ident) -> Selector | None:
        if ident.text in self.env.groups:
            return self.env.groups[ident.text]
        decl = self.scope.values.get(ident.text)
        if isinstance(decl, A.LetDecl):
            self.rep.error("E306", f"`{ident.text}` is a set, not a group", ident.span,
                           "a selector names groups or labels; sets of addresses are peers of rules")
            return None
        if decl is None:
            return None
        key = "group:" + ident.text
        if key in self._evaluating:
            chain = " -> ".join(x[6:] for x in self._evaluating[self._evaluating.index(key):]) + " -> " + ident.text
            self.rep.error("E315", f"group `{ident.text}` is defined in terms of itself: {chain}", ident.span)
            return None
        if key in self._failed:
            return None
        self._evaluating.append(key)
        sel = self.selector(decl.selector)
        self._evaluating.pop()
        if sel is not None:
            self.env.groups[ident.text] = sel
        else:
            self._failed.add(key)
        return sel

    # ------------------------------------------------------------------ rules
    def priority(self, value: int | None, span: Span) -> None:
        if value is not None and not PRIORITY_MIN <= value <= PRIORITY_MAX:
            self.rep.error("E314", f"priority {value} is outside {PRIORITY_MIN}..{PRIORITY_MAX}", span)

    def peers(self, peers: tuple[A.Peer, ...]) -> Peer | None:
        any_, world, host = False, False, False
        addrs: list[AddrSet] = []
        sels: list[Selector] = []
        ok = True
        for p in peers:
            if isinstance(p, A.PeerName):
                name = p.name.text
                if name == "any":
                    any_ = True
                elif name == "world":
                    world = True
                elif name == "host":
                    host = True
                else:
                    decl = self.scope.values.get(name)
                    if isinstance(decl, A.GroupDecl):
                        sel = self.group(p.name)
                        ok &= sel is not None
                        if sel is not None:
                            sels.append(sel)
                    elif isinstance(decl, A.LetDecl):
                        v = self.set_value(name, p.span)
                        if v is None:
                            ok = False
                        elif v.kind is SetKind.PORTS:
                            self.rep.error("E306", f"`{name}` is a set of ports, but a peer belongs here",
                                           p.span, f"to match ports write `port {name}`")
                            ok = False
                        else:
                            addrs.append(v.addrs)
                    else:
                        ok = False
            elif isinstance(p, A.PeerAddr):
                a = self.addr_item(p.item)
                ok &= a is not None
                if a is not None:
                    addrs.append(a)
            elif isinstance(p, A.PeerSet):
                v = self.eval_literal(p.literal)
                if v is None:
                    ok = False
                elif v.kind is SetKind.PORTS:
                    self.rep.error("E306", "this set holds ports, but a peer belongs here", p.span,
                                   "to match ports write `port {…}`")
                    ok = False
                else:
                    addrs.append(v.addrs)
            else:
                sel = self.selector(p.selector)
                ok &= sel is not None
                if sel is not None:
                    sels.append(sel)
        if not ok:
            return None
        if any_:
            return Peer(any=True)
        merged = addrs[0] if len(addrs) == 1 else AddrSet.union_all(addrs)
        return Peer(False, merged, tuple(sels), world, host)

    def ports(self, refs: tuple[A.PortRef, ...]) -> PortSet | None:
        ranges: list[tuple[int, int]] = []
        ok = True
        for ref in refs:
            if isinstance(ref, A.PortItem):
                r = self.port_item(ref)
                ok &= r is not None
                if r is not None:
                    ranges.append(r)
            elif isinstance(ref, A.PortName):
                decl = self.scope.values.get(ref.name.text)
                if isinstance(decl, A.GroupDecl):
                    self.rep.error("E306", f"`{ref.name.text}` is a group, but ports belong here", ref.span)
                    ok = False
                    continue
                v = self.set_value(ref.name.text, ref.span)
                if v is None:
                    ok = False
                elif v.kind is SetKind.ADDRESSES:
                    self.rep.error("E306", f"`{ref.name.text}` is a set of addresses, but ports belong here",
                                   ref.span, f"to match addresses name it as a peer: `from {ref.name.text}`")
                    ok = False
                else:
                    ranges.extend(v.ports.ranges)
            else:
                v = self.eval_literal(ref)
                if v is None:
                    ok = False
                elif v.kind is SetKind.ADDRESSES:
                    self.rep.error("E306", "this set holds addresses, but ports belong here", ref.span)
                    ok = False
                else:
                    ranges.extend(v.ports.ranges)
        return PortSet.of(ranges) if ok else None

    def icmp(self, m: A.IcmpMatch, protocol: Protocol | None, span: Span) -> PortSet | None:
        if protocol is None or not protocol.is_icmp:
            pname = "any protocol" if protocol is None else protocol.name.lower()
            self.rep.error("E308", f"an ICMP type on a rule for {pname}", m.span,
                           "ICMP types belong to `icmp` or `icmpv6` rules, e.g. `allow ingress icmp type echo-request`")
            return None
        table = ICMP_TYPES if protocol is Protocol.ICMP else ICMPV6_TYPES
        if isinstance(m.type, str):
            if m.type not in table:
                import difflib

                guess = difflib.get_close_matches(m.type, list(table), n=1)
                other = ICMPV6_TYPES if protocol is Protocol.ICMP else ICMP_TYPES
                other_name = "icmpv6" if protocol is Protocol.ICMP else "icmp"
                if m.type in other:
                    hint = f"`{m.type}` is an {other_name} type: write `{other_name} type {m.type}`"
                elif guess:
                    hint = f"did you mean `{guess[0]}`?"
                else:
                    hint = "known types: " + ", ".join(sorted(table))
                self.rep.error("E310", f"unknown {protocol.name.lower()} type `{m.type}`", m.span, hint)
                return None
            t = table[m.type]
        else:
            t = m.type
            if not 0 <= t <= 255:
                self.rep.error("E311", f"ICMP type {t} is outside 0-255", m.span)
                return None
        if m.code is not None:
            if not 0 <= m.code <= 255:
                self.rep.error("E311", f"ICMP code {m.code} is outside 0-255", m.span)
                return None
            v = (t << 8) | m.code
            return PortSet(((v, v),))
        return PortSet((((t << 8), (t << 8) | 255),))

    def rule(self, rule: A.RuleDecl) -> None:
        protocol = Protocol.from_name(rule.protocol) if rule.protocol else None
        self.priority(rule.priority, rule.span)
        if rule.direction == "ingress" and rule.to_peers:
            self.rep.error("E312", "an ingress rule names its peer with `from`, not `to`", rule.to_span or rule.span,
                           "traffic arriving at the endpoint comes from the peer: `allow ingress from PEER to port P`")
            return
        if rule.direction == "egress" and rule.from_peers:
            self.rep.error("E313", "an egress rule names its peer with `to`, not `from`",
                           rule.from_span or rule.span,
                           "traffic leaving the endpoint goes to the peer: `allow egress to PEER port P`")
            return
        peers = rule.from_peers or rule.to_peers
        peer = self.peers(peers) if peers else Peer(any=True)
        ports = None
        if rule.ports:
            if protocol is not None and protocol.is_icmp:
                self.rep.error("E309", f"a port on an {protocol.name.lower()} rule", rule.to_span or rule.span,
                               "ICMP has no ports; match its type with `type NAME`")
                return
            ports = self.ports(rule.ports)
            if ports is None:
                return
        icmp = None
        if rule.icmp is not None:
            icmp = self.icmp(rule.icmp, protocol, rule.span)
            if icmp is None:
                return
        if peer is None:
            return
        self.env.peers[id(rule)] = peer
        self.env.ports[id(rule)] = ports
        self.env.icmp[id(rule)] = icmp

    # ------------------------------------------------------------------ declarations
    def policy(self, p: A.PolicyDecl) -> None:
        sel = self.selector(p.selector)
        if sel is not None:
            self.env.selectors[id(p)] = sel
        self.priority(p.priority, p.span)
        seen: dict[str, A.DefaultDecl] = {}
        for d in p.defaults:
            if d.direction in seen:
                self.rep.error("E319", f"{d.direction} default is given twice in policy `{p.name.text}`", d.span,
                               notes=(("first given here", seen[d.direction].span),))
            seen[d.direction] = d
        for r in p.rules:
            self.rule(r)

    def service(self, s: A.ServiceDecl) -> None:
        from netc.ir.lb import DEFAULT_TABLE, is_prime

        for span in s.repeated:
            self.rep.error("E410", f"service `{s.name.text}` gives `balance` or `affinity` twice; only one "
                           "of each may be given", span, "keep the line you mean and delete the other")
        if not s.vips:
            self.rep.error("E401", f"service `{s.name.text}` has no `vip`", s.name.span,
                           "add `vip ADDRESS port PORT tcp`")
        for v in s.vips:
            parse_vip = parse_address(v.address, v.span, self.rep)
            if parse_vip is not None and parse_vip.num_addresses != 1:
                self.rep.error("E402", f"a VIP is one address, not the network {parse_vip}", v.span)
            if not 1 <= v.port <= 65535:
                self.rep.error("E304", f"port {v.port} is outside 1-65535", v.span)
            if v.protocol not in ("tcp", "udp"):
                self.rep.error("E403", f"services balance tcp and udp, not {v.protocol}", v.span)
            if parse_vip is not None and parse_vip.num_addresses == 1:
                key = (str(parse_vip.network_address), v.port, v.protocol)
                first = self._vips.get(key)
                if first is not None:
                    self.rep.error("E411", f"{key[0]} port {v.port} {v.protocol} is already a VIP of service "
                                   f"`{first[0]}`; a packet can go to one service only", v.span,
                                   "give this service another address or port",
                                   notes=(("first declared here", first[1]),))
                else:
                    self._vips[key] = (s.name.text, v.span)
        if not s.backends:
            self.rep.error("E404", f"service `{s.name.text}` has no `backends`", s.name.span,
                           "add `backends GROUP port PORT` or explicit addresses")
        for b in s.backends:
            if b.address is not None:
                net = parse_address(b.address, b.span, self.rep)
                if net is not None and net.num_addresses != 1:
                    self.rep.error("E402", f"a backend is one address, not the network {net}", b.span)
            elif b.selector is not None:
                sel = self.selector(b.selector)
                if sel is not None:
                    self.env.selectors[id(b)] = sel
            if b.port is not None and not 1 <= b.port <= 65535:
                self.rep.error("E304", f"port {b.port} is outside 1-65535", b.span)
            if b.weight is not None and not 1 <= b.weight <= 1000:
                self.rep.error("E405", f"weight {b.weight} is outside 1-1000", b.span,
                               "to stop new connections to a backend, use `netc service drain`")
        if s.balance is not None and s.balance.text not in ("maglev", "random", "round-robin"):
            self.rep.error("E406", f"unknown balance algorithm `{s.balance.text}`", s.balance.span,
                           "choose maglev, random or round-robin")
        if s.table_size is not None:
            if s.balance is None or s.balance.text != "maglev":
                self.rep.error("E407", "`table` sizes the Maglev table; it needs `balance maglev`", s.span)
            elif not (7 <= s.table_size <= 131071 and is_prime(s.table_size)):
                self.rep.error("E407", f"Maglev table size {s.table_size} must be a prime between 7 and 131071",
                               s.span, f"the default is {DEFAULT_TABLE}")
        if s.affinity is not None:
            kind, duration = s.affinity
            if kind.text != "client-ip":
                self.rep.error("E408", f"unknown affinity `{kind.text}`", kind.span, "netc supports `affinity client-ip DURATION`")
            if parse_duration(duration) <= 0:
                self.rep.error("E409", f"affinity timeout `{duration}` must be positive", s.span)

    def limit(self, lim: A.LimitDecl) -> None:
        sel = self.selector(lim.target)
        if sel is not None:
            self.env.selectors[id(lim)] = sel
        if lim.unit.text not in ("s", "m", "h"):
            self.rep.error("E501", f"unknown rate unit `/{lim.unit.text}`", lim.unit.span, "write /s, /m or /h")
        if lim.rate <= 0:
            self.rep.error("E502", "a rate must be positive", lim.span)
        if lim.burst is not None and lim.burst <= 0:
            self.rep.error("E502", "a burst must be positive", lim.span)
        if lim.per is not None and lim.per.text not in ("source", "destination", "endpoint"):
            self.rep.error("E503", f"unknown limit key `per {lim.per.text}`", lim.per.span,
                           "limits count per source, per destination or per endpoint")

    def observe(self, ob: A.ObserveDecl) -> None:
        from netc.ir.nodes import EventKind

        sel = self.selector(ob.target)
        if sel is not None:
            self.env.selectors[id(ob)] = sel
        names = {e.value for e in EventKind}
        for ev in ob.events:
            if ev.text not in names:
                self.rep.error("E601", f"unknown event kind `{ev.text}`", ev.span,
                               "events are: " + ", ".join(sorted(names)))
        for what, num, den, span in ob.samples:
            if what.text != "flows":
                self.rep.error("E602", f"cannot sample `{what.text}`", what.span, "write `sample flows 1/100`")
            if den <= 0 or not 0 < num <= den:
                self.rep.error("E603", f"sample rate {num}/{den} must be between 0 and 1", span)

    def test(self, t: A.TestDecl) -> None:
        names = {c.name.text for c in t.containers}
        for c in t.containers:
            for a in c.addresses:
                net = parse_address(a.text, a.span, self.rep)
                if net is not None and net.num_addresses != 1:
                    self.rep.error("E402", f"a container address is one address, not the network {net}", a.span)
        for e in t.expects:
            pkt = e.packet
            proto = Protocol.from_name(pkt.protocol)
            for ep in (pkt.src, pkt.dst) + ((e.backend,) if e.backend else ()):
                if ep.address is not None:
                    net = parse_address(ep.address, ep.span, self.rep)
                    if net is not None and net.num_addresses != 1:
                        self.rep.error("E402", "a packet goes to one address, not a network", ep.span)
                elif ep.name is not None and ep.name not in names and not isinstance(
                        self.scope.values.get(ep.name), A.GroupDecl):
                    self.rep.error("E701", f"`{ep.name}` is neither a container of this test nor a group",
                                   ep.span, "declare it with `container NAME {label: \"value\"} at ADDRESS`")
                if ep.port is not None:
                    _check_port(ep.port, ep.span, self.rep)
            fams = {4 if ":" not in ep.address else 6 for ep in (pkt.src, pkt.dst) if ep.address is not None}
            if len(fams) > 1:
                self.rep.error("E705", "a packet goes from and to addresses of one family; this one mixes "
                               "IPv4 and IPv6", pkt.span, "write both ends as IPv4 or both as IPv6")
            if proto is not None and proto.has_ports and pkt.dst.port is None:
                self.rep.error("E702", f"a {pkt.protocol} packet needs a destination port", pkt.dst.span,
                               "write NAME:PORT or ADDRESS:PORT")
            if pkt.icmp is not None:
                self.icmp(pkt.icmp, proto, pkt.span)
            if proto is None:
                self.rep.error("E703", "a test packet has one protocol; `any` is not a packet", pkt.span)
            if e.verdict == "dnat" and e.backend is None:
                self.rep.error("E704", "`expect dnat` needs the backend: `=> GROUP:PORT` or `=> ADDRESS:PORT`", e.span)
            if e.verdict != "dnat" and e.backend is not None:
                self.rep.error("E704", f"`=> backend` belongs to `expect dnat`, not `expect {e.verdict}`", e.span)


def parse_duration(text: str) -> int:
    """Seconds in `300s`, `5m`, `1h`, `1500ms` (rounded up)."""
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            value = int(text[: -len(suffix)]) * scale
            return max(1, int(value + 0.999)) if value > 0 else 0
    return 0


def check_types(unit: Unit, scope: Scope, rep: Reporter) -> Env:
    checker = Checker(unit, scope, rep)
    for name, decl in scope.values.items():
        if isinstance(decl, A.LetDecl):
            checker.set_value(name, decl.name.span)
        else:
            checker.group(decl.name)
    for module in unit.modules:
        for item in module.decls:
            if isinstance(item, A.PolicyDecl):
                checker.policy(item)
            elif isinstance(item, A.ServiceDecl):
                checker.service(item)
            elif isinstance(item, A.LimitDecl):
                checker.limit(item)
            elif isinstance(item, A.ObserveDecl):
                checker.observe(item)
            elif isinstance(item, A.TestDecl):
                checker.test(item)
    return checker.env
