"""The policy as one nftables table: `table inet netc`, for `nft -f`.

    table inet netc { sets...; chain forward/input/output (base chains); one chain per container
    and direction }

- `forward` (container to container, and container to the outside): established and related
  packets first, then every container's egress chain by `iifname` (traffic from a container
  enters the node on its veth), then every ingress chain by `oifname` (traffic to a container
  leaves on its veth), each through a verdict map. `input` carries the egress chains (a container
  talking to the node itself), `output` the ingress chains (the node talking to a container).
- An egress chain ends a denied packet with `drop` and lets an allowed one `return`, so the
  destination's ingress chain still judges it; an ingress chain, always the last to look,
  `accept`s. A packet no chain drops is accepted by the base chain's policy.
- Address peers are named interval sets (`p<N>_v4`, `p<N>_v6`) of disjoint prefixes; ports are
  anonymous sets; ICMP types and codes are `icmp type`/`icmp code` matches.

The file replaces an earlier `table inet netc` in one transaction (the `table`/`delete table`
lines at the top) and touches no other table.
"""

from __future__ import annotations

from netc.export.model import (
    NDP_TYPES,
    PROTO_NAMES,
    Chain,
    Entry,
    clean,
    header_lines,
    icmp_parts,
    log_prefix,
    prefixes,
    rule_comment,
    slug,
)
from netc.export.model import chains as build_chains
from netc.ir.addrset import AddrSet, PortSet
from netc.ir.nodes import Action, Direction, Program
from netc.runtime.inventory import Inventory

COMMENT_MAX = 120          # nft refuses comments longer than 128 characters
_IND = "\t"


def chain_name(ch: Chain) -> str:
    word = "eg" if ch.direction is Direction.EGRESS else "in"
    return f"{word}_{ch.index}_{slug(ch.container.name, 24)}"


def _values(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _ports(ps: PortSet) -> str:
    return _values([str(a) if a == b else f"{a}-{b}" for a, b in ps.ranges])


def l4_matches(protos: tuple[int, ...] | None, ports: PortSet | None, icmp: PortSet | None) -> list[str]:
    """The protocol part of a rule: one string per nft rule needed (usually one)."""
    if ports is not None:
        assert protos is not None
        if len(protos) == 1:
            return [f"{PROTO_NAMES[protos[0]]} dport {_ports(ports)}"]
        return [f"meta l4proto {_values([PROTO_NAMES[p] for p in protos])} th dport {_ports(ports)}"]
    if icmp is not None:
        assert protos is not None
        out = []
        whole, partial = icmp_parts(icmp)
        for p in protos:
            kw = "icmp" if p == 1 else "icmpv6"
            if whole:
                out.append(f"{kw} type {_values([str(t) for t in whole])}")
            for t, a, b in partial:
                out.append(f"{kw} type {t} {kw} code {a if a == b else f'{a}-{b}'}")
        return out
    if protos is None:
        return [""]
    return [f"meta l4proto {_values([PROTO_NAMES[p] for p in protos])}"]


class _Sets:
    """Named interval sets, one per distinct (family, prefixes); shared between rules."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, tuple[str, ...]], str] = {}
        self.defs: list[tuple[str, int, tuple[str, ...], str]] = []

    def name(self, family: int, part: AddrSet, why: str) -> str:
        elems = tuple(prefixes(part))
        key = (family, elems)
        if key not in self.by_key:
            name = f"p{len(self.by_key) + 1}_v{family}"
            self.by_key[key] = name
            self.defs.append((name, family, elems, why))
        return self.by_key[key]

    def render(self) -> list[str]:
        out = []
        for name, family, elems, why in self.defs:
            out.append(f"{_IND}# {why}")
            out.append(f"{_IND}set {name} {{")
            out.append(f"{_IND * 2}type {'ipv4_addr' if family == 4 else 'ipv6_addr'}")
            out.append(f"{_IND * 2}flags interval")
            rows = [", ".join(elems[i:i + 6]) for i in range(0, len(elems), 6)]
            out.append(f"{_IND * 2}elements = {{ " + f",\n{_IND * 3}".join(rows) + " }")
            out.append(f"{_IND}}}")
        return out


def _allow(ch: Chain) -> str:
    return "accept" if ch.direction is Direction.INGRESS else "return"


def _entry_lines(ch: Chain, e: Entry, sets: _Sets) -> list[str]:
    r = e.rule
    lines = []
    comment = f'comment "{rule_comment(r, COMMENT_MAX)}"'
    if r.action is Action.AUDIT:
        tail = f'log prefix "{log_prefix(r)}"'
    else:
        verdict = _allow(ch) if r.action is Action.ALLOW else "drop"
        tail = (f'log prefix "{log_prefix(r)}" ' if r.log else "") + verdict
    side = "saddr" if ch.remote_is_source else "daddr"
    for fam, part, protos in e.families():
        addr = ""
        if part is not None:
            setname = sets.name(fam, part, f"{clean(r.location, 100)}: {clean(r.text, 80)}")
            addr = f"{'ip' if fam == 4 else 'ip6'} {side} @{setname}"
        for l4 in l4_matches(protos, e.ports, e.icmp):
            match = " ".join(x for x in (addr, l4) if x)
            line = f"{_IND * 2}{match + ' ' if match else ''}{tail} {comment}"
            if line not in lines:       # `any` peer: one rule serves both families
                lines.append(line)
    if not lines:
        lines.append(f"{_IND * 2}# {clean(r.location, 100)}: its peers hold no address in this inventory")
    return lines


def _chain_lines(ch: Chain, sets: _Sets) -> list[str]:
    c = ch.container
    out = [f"{_IND}chain {chain_name(ch)} {{",
           f"{_IND * 2}# {clean(c.name, 60)} {ch.direction.value}"
           + (f": isolated by {clean(', '.join(ch.isolating), 90)}" if ch.isolated else ": not isolated, audits only"),
           f"{_IND * 2}icmpv6 type {_values([str(t) for t in NDP_TYPES])} {_allow(ch)} "
           f'comment "neighbour discovery always passes"']
    for e in ch.audits:
        out.extend(_entry_lines(ch, e, sets))
    for e in ch.rules:
        out.extend(_entry_lines(ch, e, sets))
    if ch.isolated:
        who = clean(", ".join(ch.isolating), 90)
        if ch.default_allow:
            out.append(f'{_IND * 2}{_allow(ch)} comment "default allow: {who}"')
        else:
            out.append(f'{_IND * 2}drop comment "default deny: {who}"')
    out.append(f"{_IND}}}")
    return out


def _dispatch(chs: list[Chain], direction: Direction) -> list[str]:
    """`iifname vmap {...}` (egress) or `oifname vmap {...}` (ingress); by address without a veth."""
    mine = [ch for ch in chs if ch.direction is direction]
    by_if = [f'"{ch.interface}" : jump {chain_name(ch)}' for ch in mine if ch.interface is not None]
    side = "saddr" if direction is Direction.EGRESS else "daddr"
    lines = []
    if by_if:
        key = "iifname" if direction is Direction.EGRESS else "oifname"
        lines.append(f"{key} vmap {{ {', '.join(by_if)} }}")
    for fam, kw in ((4, "ip"), (6, "ip6")):
        by_addr = [f"{a} : jump {chain_name(ch)}" for ch in mine if ch.interface is None
                   for a in ch.container.addresses if (":" in a) == (fam == 6)]
        if by_addr:
            lines.append(f"{kw} {side} vmap {{ {', '.join(by_addr)} }}")
    return lines


def export_nftables(program: Program, inventory: Inventory) -> str:
    """The whole ruleset as the text `nft -f` reads."""
    chs = build_chains(program, inventory)
    sets = _Sets()
    bodies: list[str] = []
    for ch in chs:
        bodies.extend(_chain_lines(ch, sets))
        bodies.append("")
    egress, ingress = _dispatch(chs, Direction.EGRESS), _dispatch(chs, Direction.INGRESS)
    no_veth = [clean(c.name, 40) for c in inventory.containers if c.interface is None]

    out = ["#!/usr/sbin/nft -f"]
    out += [f"# {line}" for line in header_lines(program, inventory, "nftables")]
    if no_veth:
        out.append("# matched by address (the inventory names no host-side veth): " + ", ".join(no_veth))
    out += ["", "table inet netc", "delete table inet netc", "", "table inet netc {"]
    out += sets.render()
    for hook, body in (("forward", egress + ingress), ("input", egress), ("output", ingress)):
        out += ["", f"{_IND}chain {hook} {{",
                f"{_IND * 2}type filter hook {hook} priority filter; policy accept;",
                f"{_IND * 2}ct state established,related accept"]
        out += [f"{_IND * 2}{line}" for line in body]
        out.append(f"{_IND}}}")
    out.append("")
    out += bodies
    while out and out[-1] == "":
        out.pop()
    out.append("}")
    return "\n".join(out) + "\n"
