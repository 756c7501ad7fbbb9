"""The policy as one nftables table: `table inet netc`, for `nft -f`.

    table inet netc { verdict maps; chain forward/input/output (base chains); one chain per
    container and direction }

- `forward` (container to container, and container to the outside): established and related
  packets first, then every container's egress chain by `iifname` (traffic from a container
  enters the node on its veth), then every ingress chain by `oifname` (traffic to a container
  leaves on its veth), each through a verdict map. `input` carries the egress chains (a container
  talking to the node itself), `output` the ingress chains (the node talking to a container).
- An egress chain ends a denied packet with `drop` and lets an allowed one `return`, so the
  destination's ingress chain still judges it; an ingress chain, always the last to look,
  `accept`s. A packet no chain drops is accepted by the base chain's policy. (When an egress
  chain needs blocks, below, egress moves to a base chain of its own, `forward_egress`, at
  priority `filter - 1`, and its chains `accept`: a block's chain can only return to its caller.)
- A container's chain decides with a handful of lookups whatever its rule count. Its rules, in
  deciding order, are painted into disjoint regions (netc/export/regions.py), each holding the
  verdict of the first rule that covers it, in concatenated-key interval verdict maps:

      ip saddr . meta l4proto . th dport vmap @in_0_web_ports_v4      tcp, udp, sctp
      meta nfproto ipv4 meta l4proto { tcp, udp, sctp } th dport 0-65535 drop   none: the default
      ip saddr . icmp type . icmp code vmap @in_0_web_icmp_v4          icmp with its header
      icmp code 0-255 drop                                              none: the default
      ip saddr . meta l4proto vmap @in_0_web_l4_v4                      any other packet
      drop comment "default deny: ..."

  A packet whose port or ICMP header cannot be read skips the lookups that need it, so only
  rules without ports or ICMP types decide it, as in eval.py. A rule with `log` has a chain of
  its own (`<chain>_log_r<id>`) that the maps `goto`, so it logs exactly when it decides.
- A family's maps with more than BUCKET elements are cut by remote address into buckets, each a
  chain with its own small maps, reached through an interval map of addresses
  (`ip saddr vmap @in_0_web_addr_v4` → `goto in_0_web_v4_<j>`): a concatenated-range lookup
  (nft_set_pipapo) costs in proportion to its elements, an address interval map (rbtree) only
  in their logarithm.
- When painting a chain's rules into one set of maps would multiply elements (N address rules
  crossed with M port rules), the rules are split into consecutive blocks painted apart: each
  but the last is a chain the container's chain jumps to in turn and that returns when none of
  its rules matches; the first match over the blocks in order is the first match over all.
- `audit` rules stay plain rules at the top of the chain (after neighbour discovery), their
  addresses in named interval sets (`p<N>_v4`, `p<N>_v6`).

The file replaces an earlier `table inet netc` in one transaction (the `table`/`delete table`
lines at the top) and touches no other table.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

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
from netc.export.regions import Candidate, Interval, paint
from netc.ir.addrset import V4_MAX, V6_MAX, AddrSet, PortSet
from netc.ir.nodes import Action, Direction, Program
from netc.runtime.inventory import Inventory

COMMENT_MAX = 120          # nft refuses comments longer than 128 characters
_IND = "\t"
PORT_PROTOS = (6, 17, 132)                 # `th dport` is the destination port of all three
ICMP_OF_FAMILY = {4: 1, 6: 58}
AMAX = {4: V4_MAX, 6: V6_MAX}
# A block of rules is painted in one piece while its regions stay within this multiple of the
# entries a plain rule-per-prefix export would have (plus a constant); otherwise it is split.
BLOCK_FACTOR, BLOCK_SLACK = 4, 1024
# A family's maps larger than this are cut by remote address into buckets of about this many
# elements, reached through an interval map of addresses (one more lookup, much smaller maps).
BUCKET = 128


def chain_name(ch: Chain) -> str:
    word = "eg" if ch.direction is Direction.EGRESS else "in"
    return f"{word}_{ch.index}_{slug(ch.container.name, 24)}"


def _values(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _ports(ps: PortSet) -> str:
    return _values([str(a) if a == b else f"{a}-{b}" for a, b in ps.ranges])


def l4_matches(protos: tuple[int, ...] | None, ports: PortSet | None, icmp: PortSet | None) -> list[str]:
    """The protocol part of a plain rule (audits): one string per nft rule needed (usually one)."""
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


# ---------------------------------------------------------------------------- the plan
Element = tuple[Interval, tuple[Interval, ...], int]   # (address range, other fields' ranges, winner)


@dataclass(frozen=True)
class VMap:
    """One verdict map: disjoint elements (address range, other fields' ranges) → the winning rule.

    kind `ports`: fields (protocol, destination port); `icmp`: (type, code); `l4`: (protocol,).
    `winner` is an index into the chain's `rules` (deciding order).
    """

    name: str
    family: int
    kind: str
    elements: tuple[Element, ...]


@dataclass(frozen=True)
class Lookup:
    """One family's lookups over one range of remote addresses: its maps, ports then icmp then l4."""

    family: int
    span: Interval                 # the remote addresses it serves
    maps: tuple[VMap, ...]
    chain: str | None              # the bucket chain it is in; None: in the block's own chain


@dataclass(frozen=True)
class Block:
    """Consecutive rules (in deciding order) whose first match the lookups give."""

    first: int                     # rules[first:end] of the chain
    end: int
    chain: str                     # where its lookups run: the container's chain or a continuation
    inline: tuple[Lookup, ...]     # families looked up in `chain` itself
    buckets: tuple[tuple[int, str, tuple[Lookup, ...]], ...]   # (family, address map, its buckets)
    tail: str                      # when none of its rules matches: "default" (the last block), or
                                   # "return" to the container's chain, which jumps to the next block


@dataclass(frozen=True)
class ChainPlan:
    chain: Chain
    blocks: tuple[Block, ...]
    allow: str = "accept"          # what an allowed packet gets: `return` in an egress chain jumped
                                   # from the forward chain before the ingress chains (module doc)

    def lookups(self) -> list[Lookup]:
        return [lk for b in self.blocks for lk in b.inline + tuple(x for _, _, bs in b.buckets for x in bs)]

    def maps(self) -> list[VMap]:
        return [m for lk in self.lookups() for m in lk.maps]


def _family_part(e: Entry, family: int) -> tuple[Sequence[Interval], tuple[int, ...] | None] | None:
    """(remote address intervals, protocols or None) of an entry in one family; None: not in it."""
    for fam, part, protos in e.families():
        if fam == family:
            if part is None:
                return ((0, AMAX[family]),), protos
            return (part.v4 if family == 4 else part.v6), protos
    return None


FamilyParts = list[dict[int, tuple[Sequence[Interval], tuple[int, ...] | None]]]


def _family_parts(rules: Sequence[Entry]) -> FamilyParts:
    """For each rule: family → (remote address intervals, protocols or None), for the families it has."""
    out: FamilyParts = []
    for e in rules:
        d = {}
        for fam in (4, 6):
            fp = _family_part(e, fam)
            if fp is not None:
                d[fam] = fp
        out.append(d)
    return out


def _candidates(rules: Sequence[Entry], parts: FamilyParts, lo: int, hi: int, family: int, kind: str,
                proto: int) -> list[Candidate]:
    """The rules lo..hi-1 that can match a packet of `kind` (and protocol), as boxes to paint."""
    out: list[Candidate] = []
    for i in range(lo, hi):
        e = rules[i]
        fp = parts[i].get(family)
        if fp is None:
            continue
        addrs, protos = fp
        values: Sequence[Interval]
        if kind == "ports":
            if e.icmp is not None or (protos is not None and proto not in protos):
                continue
            values = e.ports.ranges if e.ports is not None else ((0, 65535),)
        elif kind == "icmp":
            if e.ports is not None or (protos is not None and proto not in protos):
                continue
            values = e.icmp.ranges if e.icmp is not None else ((0, 0xFFFF),)
        else:
            if e.ports is not None or e.icmp is not None:
                continue
            values = tuple((p, p) for p in sorted(protos)) if protos is not None else ((0, 255),)
        out.append((addrs, values, i))
    return out


def _linear_size(rules: Sequence[Entry], lo: int, hi: int) -> int:
    """Entries of a plain export of rules lo..hi-1 (prefix ranges × value ranges × protocols)."""
    n = 0
    for e in rules[lo:hi]:
        vals = len(e.ports.ranges) if e.ports is not None else len(e.icmp.ranges) if e.icmp is not None else 1
        for _, part, protos in e.families():
            addrs = 1 if part is None else len(part.v4) + len(part.v6)
            n += addrs * vals * (len(protos) if protos else 1)
    return n


def _icmp_boxes(lo: int, hi: int) -> list[tuple[Interval, Interval]]:
    """A `type << 8 | code` interval as (type range, code range) boxes: at most three."""
    tl, cl, th, ch = lo >> 8, lo & 255, hi >> 8, hi & 255
    if tl == th:
        return [((tl, tl), (cl, ch))]
    out = []
    if cl != 0:
        out.append(((tl, tl), (cl, 255)))
        tl += 1
    last = None
    if ch != 255:
        last = ((th, th), (0, ch))
        th -= 1
    if tl <= th:
        out.append(((tl, th), (0, 255)))
    if last is not None:
        out.append(last)
    return out


KINDS = ("ports", "icmp", "l4")
Painted = dict[tuple[str, int], list[Element]]          # (kind, family) → elements


def _paint_block(rules: Sequence[Entry], parts: FamilyParts, lo: int, hi: int, limit: int | None) -> Painted | None:
    """The elements of every map of one block of rules; None when they exceed `limit`."""
    left = limit if limit is not None else 1 << 62
    out: Painted = {}
    for family in (4, 6):
        for kind in KINDS:
            elems: list[Element] = []
            protos = PORT_PROTOS if kind == "ports" else (ICMP_OF_FAMILY[family],) if kind == "icmp" else (0,)
            vmax = 65535 if kind == "ports" else 0xFFFF if kind == "icmp" else 255
            for p in protos:
                regions = paint(_candidates(rules, parts, lo, hi, family, kind, p), AMAX[family], vmax, left)
                if regions is None:
                    return None
                for a, b, pieces in regions:
                    for v, w, t in pieces:
                        if kind == "ports":
                            elems.append(((a, b), ((p, p), (v, w)), t))
                        elif kind == "icmp":
                            elems += [((a, b), box, t) for box in _icmp_boxes(v, w)]
                        else:
                            elems.append(((a, b), ((v, w),), t))
                left -= sum(len(pieces) for _, _, pieces in regions)
            if elems:
                out[(kind, family)] = elems
    return out


def _buckets(elems: dict[str, list[Element]], size: int) -> list[tuple[Interval, dict[str, list[Element]]]]:
    """Cut the address axis so that about `size` elements start in each piece; elements that cross
    a cut are clipped into both sides."""
    starts = sorted(a for es in elems.values() for (a, _), _, _ in es)
    cuts = [starts[0]]
    for i in range(size, len(starts), size):
        if starts[i] > cuts[-1]:
            cuts.append(starts[i])
    end = max(b for es in elems.values() for (_, b), _, _ in es)
    spans = [(c, (cuts[i + 1] - 1) if i + 1 < len(cuts) else end) for i, c in enumerate(cuts)]
    out: list[dict[str, list[Element]]] = [{} for _ in spans]
    for kind, es in elems.items():
        for (a, b), fields, t in es:
            i = bisect.bisect_right(cuts, a) - 1
            while i < len(spans) and spans[i][0] <= b:
                lo, hi = max(a, spans[i][0]), min(b, spans[i][1])
                out[i].setdefault(kind, []).append(((lo, hi), fields, t))
                i += 1
    return [(span, got) for span, got in zip(spans, out, strict=True) if got]


def plan_chain(ch: Chain, *, bucket: int = BUCKET, factor: int = BLOCK_FACTOR, slack: int = BLOCK_SLACK) -> ChainPlan:
    """The lookups of one chain: its rules painted (one block, unless painting blows up), each
    family's maps cut into buckets of about `bucket` elements behind an address map when larger."""
    rules = ch.rules
    parts = _family_parts(rules)
    painted: list[tuple[int, int, Painted]] = []

    def split(lo: int, hi: int) -> None:
        if lo >= hi:
            return
        got = _paint_block(rules, parts, lo, hi, factor * _linear_size(rules, lo, hi) + slack)
        if got is None and hi - lo > 1:
            mid = (lo + hi) // 2
            split(lo, mid)
            split(mid, hi)
            return
        if got is None:              # one rule is never bigger than itself; be sure anyway
            got = _paint_block(rules, parts, lo, hi, None)
            assert got is not None
        painted.append((lo, hi, got))

    split(0, len(rules))
    name = chain_name(ch)
    blocks: list[Block] = []
    for k, (lo, hi, got) in enumerate(painted):
        last = k + 1 == len(painted)
        # the last block runs in the container's chain and ends with the default; the others
        # are chains of their own, jumped to in turn, that return when none of their rules match
        here = name if last else f"{name}_blk{k + 1}"
        tail = "default" if last else "return"
        inline: list[Lookup] = []
        bucketed: list[tuple[int, str, tuple[Lookup, ...]]] = []
        for family in (4, 6):
            elems = {kind: got[(kind, family)] for kind in KINDS if (kind, family) in got}
            if not elems:
                continue
            if sum(len(es) for es in elems.values()) <= bucket:
                maps = tuple(VMap(f"{here}_{kind}_v{family}", family, kind, tuple(es)) for kind, es in elems.items())
                inline.append(Lookup(family, (0, AMAX[family]), maps, None))
                continue
            lookups = []
            for j, (span, part) in enumerate(_buckets(elems, bucket)):
                bname = f"{here}_v{family}_{j}"
                maps = tuple(VMap(f"{bname}_{kind}", family, kind, tuple(es)) for kind, es in part.items())
                lookups.append(Lookup(family, span, maps, bname))
            bucketed.append((family, f"{here}_addr_v{family}", tuple(lookups)))
        blocks.append(Block(lo, hi, here, tuple(inline), tuple(bucketed), tail))
    return ChainPlan(ch, tuple(blocks))


def plan(program: Program, inventory: Inventory, *, bucket: int = BUCKET, factor: int = BLOCK_FACTOR,
         slack: int = BLOCK_SLACK) -> list[ChainPlan]:
    """Every chain with its lookups (what export_nftables renders)."""
    plans = [plan_chain(ch, bucket=bucket, factor=factor, slack=slack) for ch in build_chains(program, inventory)]
    if not split_egress(plans):
        plans = [dataclasses.replace(p, allow="return") if p.chain.direction is Direction.EGRESS else p
                 for p in plans]
    return plans


def split_egress(plans: list[ChainPlan]) -> bool:
    """Whether egress needs a forward base chain of its own (so that it can `accept`): only when an
    egress chain has several blocks of rules, whose chains can only return to it, not past it."""
    return any(p.chain.direction is Direction.EGRESS and len(p.blocks) > 1 for p in plans)


# ---------------------------------------------------------------------------- rendering
def _addr(family: int, lo: int, hi: int) -> str:
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    size = hi - lo + 1
    if lo == hi:
        return str(cls(lo))
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{cls(lo)}/{(32 if family == 4 else 128) - size.bit_length() + 1}"
    return f"{cls(lo)}-{cls(hi)}"


def _range(lo: int, hi: int, names: dict[int, str] | None = None) -> str:
    if lo == hi:
        return names.get(lo, str(lo)) if names else str(lo)
    return f"{lo}-{hi}"


_PROTO_WORDS = {6: "tcp", 17: "udp", 132: "sctp"}
_MAP_TYPES = {
    ("ports", 4): ("ipv4_addr . inet_proto . inet_service", "ip {side} . meta l4proto . th dport"),
    ("ports", 6): ("ipv6_addr . inet_proto . inet_service", "ip6 {side} . meta l4proto . th dport"),
    ("icmp", 4): ("ipv4_addr . icmp_type . icmp_code", "ip {side} . icmp type . icmp code"),
    ("icmp", 6): ("ipv6_addr . icmpv6_type . icmpv6_code", "ip6 {side} . icmpv6 type . icmpv6 code"),
    ("l4", 4): ("ipv4_addr . inet_proto", "ip {side} . meta l4proto"),
    ("l4", 6): ("ipv6_addr . inet_proto", "ip6 {side} . meta l4proto"),
}
_KIND_TEXT = {"ports": "tcp, udp and sctp by destination port", "icmp": "ICMP by type and code",
              "l4": "by protocol: what the lookups above could not read or did not hold"}


def _default(p: ChainPlan) -> str:
    return p.allow if p.chain.default_allow else "drop"


def _tail(p: ChainPlan, b: Block) -> str:
    return _default(p) if b.tail == "default" else b.tail


def _log_chain(ch: Chain, e: Entry) -> str:
    return f"{chain_name(ch)}_log_r{int(e.rule.id)}"


def _verdict(p: ChainPlan, e: Entry) -> str:
    if e.rule.log:
        return f"goto {_log_chain(p.chain, e)}"
    return p.allow if e.action is Action.ALLOW else "drop"


def _map_lines(p: ChainPlan, m: VMap) -> list[str]:
    ch = p.chain
    ktype, _ = _MAP_TYPES[(m.kind, m.family)]
    rows = []
    for (alo, ahi), fields, winner in m.elements:
        e = ch.rules[winner]
        key = [_addr(m.family, alo, ahi)] + [_range(a, b, _PROTO_WORDS if i == 0 and m.kind != "icmp" else None)
                                             for i, (a, b) in enumerate(fields)]
        rows.append(" . ".join(key) + f' comment "r{int(e.rule.id)}" : {_verdict(p, e)}')
    return [f"{_IND}# {clean(ch.name, 60)}, IPv{m.family}, {_KIND_TEXT[m.kind]}: {len(rows)} disjoint "
            "region(s), each the verdict of the first rule covering it",
            f"{_IND}map {m.name} {{",
            f"{_IND * 2}type {ktype} : verdict",
            f"{_IND * 2}flags interval",
            f"{_IND * 2}elements = {{ " + f",\n{_IND * 3}".join(rows) + " }",
            f"{_IND}}}"]


def _addr_map_lines(ch: Chain, name: str, family: int, lookups: tuple[Lookup, ...]) -> list[str]:
    rows = [f"{_addr(family, *lk.span)} : goto {lk.chain}" for lk in lookups]
    return [f"{_IND}# {clean(ch.name, 60)}, IPv{family}: which bucket of the maps holds a remote address",
            f"{_IND}map {name} {{",
            f"{_IND * 2}type {'ipv4_addr' if family == 4 else 'ipv6_addr'} : verdict",
            f"{_IND * 2}flags interval",
            f"{_IND * 2}elements = {{ " + f",\n{_IND * 3}".join(rows) + " }",
            f"{_IND}}}"]


def _lookup_lines(p: ChainPlan, lk: Lookup, tail: str) -> list[str]:
    """The lookups of one family (and address range), each kind followed by its fall to `tail`."""
    ch = p.chain
    side = "saddr" if ch.remote_is_source else "daddr"
    nfproto = "ipv4" if lk.family == 4 else "ipv6"
    out = []
    for m in lk.maps:
        _, expr = _MAP_TYPES[(m.kind, m.family)]
        out.append(f"{_IND * 2}{expr.format(side=side)} vmap @{m.name}")
        if m.kind == "ports":
            out.append(f"{_IND * 2}meta nfproto {nfproto} meta l4proto {{ tcp, udp, sctp }} th dport 0-65535 "
                       f'{tail} comment "a port no rule covers"')
        elif m.kind == "icmp":
            kw = "icmp" if lk.family == 4 else "icmpv6"
            out.append(f'{_IND * 2}{kw} code 0-255 {tail} comment "an ICMP type no rule covers"')
    return out


def _chain_lines(p: ChainPlan, sets: _Sets) -> tuple[list[str], list[str]]:
    """(the maps, the chains) of one container and direction."""
    ch = p.chain
    c = ch.container
    side = "saddr" if ch.remote_is_source else "daddr"
    maps: list[str] = []
    head = [f"{_IND * 2}# {clean(c.name, 60)} {ch.direction.value}"
            + (f": isolated by {clean(', '.join(ch.isolating), 90)}" if ch.isolated else ": not isolated, audits only"),
            f"{_IND * 2}icmpv6 type {_values([str(t) for t in NDP_TYPES])} {p.allow} "
            f'comment "neighbour discovery always passes"']
    for e in ch.audits:
        head.extend(_audit_lines(ch, e, sets))
    if ch.rules:
        head.append(f"{_IND * 2}# the rules in deciding order (priority, then deny before allow, then as "
                    "written); the maps hold the first that matches")
        for e in ch.rules:
            r = e.rule
            none = "" if any(True for _ in e.families()) else " (its peers hold no address in this inventory)"
            head.append(f"{_IND * 2}#   r{int(r.id)} {clean(r.location, 80)}: {clean(r.text, 100)}{none}")
    chains: list[str] = []
    sub: list[str] = []                  # the chains of blocks and buckets, after the container's
    body = head
    if len(p.blocks) > 1:
        body.append(f"{_IND * 2}# {len(p.blocks)} blocks of consecutive rules (painting them into one map would "
                    "have been too large), looked up in turn")
    for b in p.blocks:
        last = b.chain == chain_name(ch)
        lines: list[str] = []
        for lk in b.inline:
            lines += _lookup_lines(p, lk, _tail(p, b))
            for m in lk.maps:
                maps += _map_lines(p, m)
        for family, mapname, lookups in b.buckets:
            lines.append(f"{_IND * 2}{'ip' if family == 4 else 'ip6'} {side} vmap @{mapname}")
            maps += _addr_map_lines(ch, mapname, family, lookups)
            for lk in lookups:
                assert lk.chain is not None
                sub += [f"{_IND}chain {lk.chain} {{",
                        f"{_IND * 2}# remote addresses {_addr(lk.family, *lk.span)}",
                        *_lookup_lines(p, lk, _tail(p, b)),
                        f"{_IND * 2}{_tail(p, b)}",
                        f"{_IND}}}"]
                for m in lk.maps:
                    maps += _map_lines(p, m)
        if last:
            body += lines
        else:
            body.append(f"{_IND * 2}jump {b.chain}")
            sub += [f"{_IND}chain {b.chain} {{",
                    f"{_IND * 2}# rules {b.first + 1} to {b.end} of {len(ch.rules)} in deciding order; "
                    "returns when none matches",
                    *lines, f"{_IND}}}"]
    if ch.isolated:
        who = clean(", ".join(ch.isolating), 90)
        word = "default allow" if ch.default_allow else "default deny"
        body.append(f'{_IND * 2}{_default(p)} comment "{word}: {who}"')
    chains += [f"{_IND}chain {chain_name(ch)} {{", *body, f"{_IND}}}"] + sub
    for e in ch.rules:
        if e.rule.log and any(True for _ in e.families()):
            verdict = p.allow if e.action is Action.ALLOW else "drop"
            chains += [f"{_IND}chain {_log_chain(ch, e)} {{",
                       f'{_IND * 2}log prefix "{log_prefix(e.rule)}" {verdict} '
                       f'comment "{rule_comment(e.rule, COMMENT_MAX)}"',
                       f"{_IND}}}"]
    return maps, chains


class _Sets:
    """Named interval sets for the audits, one per distinct (family, prefixes); shared between rules."""

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


def _audit_lines(ch: Chain, e: Entry, sets: _Sets) -> list[str]:
    r = e.rule
    lines = []
    tail = f'log prefix "{log_prefix(r)}" comment "{rule_comment(r, COMMENT_MAX)}"'
    side = "saddr" if ch.remote_is_source else "daddr"
    for fam, part, protos in e.families():
        addr = ""
        if part is not None:
            setname = sets.name(fam, part, f"{clean(r.location, 100)}: {clean(r.text, 80)}")
            addr = f"{'ip' if fam == 4 else 'ip6'} {side} @{setname}"
        for l4 in l4_matches(protos, e.ports, e.icmp):
            match = " ".join(x for x in (addr, l4) if x)
            line = f"{_IND * 2}{match + ' ' if match else ''}{tail}"
            if line not in lines:       # `any` peer: one rule serves both families
                lines.append(line)
    if not lines:
        lines.append(f"{_IND * 2}# {clean(r.location, 100)}: its peers hold no address in this inventory")
    return lines


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


def export_nftables(program: Program, inventory: Inventory, *, bucket: int = BUCKET,
                    factor: int = BLOCK_FACTOR, slack: int = BLOCK_SLACK) -> str:
    """The whole ruleset as the text `nft -f` reads (`bucket`, `factor`, `slack`: see plan_chain)."""
    return render(program, inventory, plan(program, inventory, bucket=bucket, factor=factor, slack=slack))


def render(program: Program, inventory: Inventory, plans: list[ChainPlan]) -> str:
    """The text of planned chains (plan())."""
    chs = [p.chain for p in plans]
    sets = _Sets()
    bodies: list[str] = []
    maps: list[str] = []
    for p in plans:
        m, c = _chain_lines(p, sets)
        maps += m
        bodies += c + [""]
    egress, ingress = _dispatch(chs, Direction.EGRESS), _dispatch(chs, Direction.INGRESS)
    no_veth = [clean(c.name, 40) for c in inventory.containers if c.interface is None]

    out = ["#!/usr/sbin/nft -f"]
    out += [f"# {line}" for line in header_lines(program, inventory, "nftables")]
    if no_veth:
        out.append("# matched by address (the inventory names no host-side veth): " + ", ".join(no_veth))
    out += ["", "table inet netc", "delete table inet netc", "", "table inet netc {"]
    out += sets.render()
    out += maps
    # With several blocks in an egress chain, egress gets a base chain of its own, before the
    # forward chain (priority filter - 1): its `accept` only ends that base chain, and the
    # forward chain still judges the destination's ingress. Otherwise one forward chain.
    if split_egress(plans):
        bases = [("forward_egress", "forward", "filter - 1", egress), ("forward", "forward", "filter", ingress)]
    else:
        bases = [("forward", "forward", "filter", egress + ingress)]
    for cname, hook, prio, body in bases + [("input", "input", "filter", egress),
                                             ("output", "output", "filter", ingress)]:
        out += ["", f"{_IND}chain {cname} {{",
                f"{_IND * 2}type filter hook {hook} priority {prio}; policy accept;",
                f"{_IND * 2}ct state established,related accept"]
        out += [f"{_IND * 2}{line}" for line in body]
        out.append(f"{_IND}}}")
    out.append("")
    out += bodies
    while out and out[-1] == "":
        out.pop()
    out.append("}")
    return "\n".join(out) + "\n"
