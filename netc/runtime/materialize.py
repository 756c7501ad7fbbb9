"""Manifest IR + inventory → the contents of the classifier maps (DESIGN.md §6).

Pure: no kernel access, so it runs in tests, in `netc test --kernel` and in the loader alike.

- Atoms. Every address set a rule names, every container address and every host address cut
  the address space into elementary intervals; intervals with the same membership (which sets
  contain them) and the same identity (which labels live there, or host, or world) form one
  atom. netc_addrs maps address prefixes to atoms; addresses in no set and of no container
  miss the map and are atom 0, class world.
- Verdict tables. For each policy set (the policies selecting an endpoint, shared by every
  endpoint with the same set), direction, atom and protocol, the destination-port axis is cut
  into intervals carrying the winning rule (priority, then deny over allow); each interval is
  stored as at most 30 prefixes in netc_rules. Rules whose peer is `any`, `world` or `host` go
  to netc_wild keyed by identity class instead of atom, so they do not multiply across atoms;
  the datapath looks up both and keeps the higher rank, which is exact because "best of" is
  associative.
- Non-first fragments carry no ports: they are looked up with the direction's FRAG bit set,
  where only rules without ports or ICMP types have entries.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from netc.ir.addrset import AddrSet, PortSet, interval_to_prefixes
from netc.ir.nodes import Action, Direction, Peer, Program, Protocol, Rule
from netc.runtime import abi
from netc.runtime.inventory import Container, Inventory

BUCKETS = (Protocol.TCP.value, Protocol.UDP.value, Protocol.SCTP.value, Protocol.ICMP.value,
           Protocol.ICMPV6.value, abi.PROTO_OTHER)
PORT_BUCKETS = frozenset({Protocol.TCP.value, Protocol.UDP.value, Protocol.SCTP.value})
ICMP_BUCKETS = frozenset({Protocol.ICMP.value, Protocol.ICMPV6.value})
FRAG = abi.DIR_FRAG

V4_MAPPED = 0xFFFF << 32


@dataclass
class Ids:
    """Atom and policy-set ids, kept from one materialization to the next of the same version, so
    that an inventory change rewrites only the entries it affects (ids do not shift)."""

    psets: dict[str, int] = field(default_factory=dict)    # "name,name" -> id
    atoms: dict[str, int] = field(default_factory=dict)    # "sid,sid|identity" -> id

    def pset(self, names: frozenset[str]) -> int:
        key = ",".join(sorted(names))
        if key not in self.psets:
            self.psets[key] = max(self.psets.values(), default=0) + 1
        return self.psets[key]

    def atom(self, sig: tuple[tuple[int, ...], tuple[str, ...]]) -> int:
        key = ",".join(map(str, sig[0])) + "|" + "\x1f".join(sig[1])
        if key not in self.atoms:
            self.atoms[key] = max(self.atoms.values(), default=0) + 1
        return self.atoms[key]

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"psets": self.psets, "atoms": self.atoms}

    @staticmethod
    def from_json(d: dict[str, dict[str, int]]) -> Ids:
        return Ids(dict(d.get("psets", {})), dict(d.get("atoms", {})))


@dataclass
class Contents:
    """What the maps must hold: map name → {key bytes: value bytes}, plus what it means."""

    maps: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    psets: dict[frozenset[str], int] = field(default_factory=dict)     # policy names → pset id
    endpoint_psets: dict[str, int] = field(default_factory=dict)       # container → pset id
    atoms: int = 0
    ids: Ids = field(default_factory=Ids)

    def entries(self) -> int:
        return sum(len(m) for m in self.maps.values())


def _bucket(proto: int) -> int:
    return proto if proto in BUCKETS else abi.PROTO_OTHER


def _rule_axis(rule: Rule, bucket: int, frag: bool) -> PortSet | None:
    """The port-field values a rule matches in a bucket, or None when it cannot match there."""
    if rule.protocol is not None and rule.protocol.value != bucket:
        return None
    if frag:
        if rule.ports is not None or rule.icmp is not None:
            return None
        return PortSet(((0, 0),))
    if rule.ports is not None:
        return rule.ports if bucket in PORT_BUCKETS else None
    if rule.icmp is not None:
        return rule.icmp if bucket in ICMP_BUCKETS else None
    if bucket == abi.PROTO_OTHER:
        return PortSet(((0, 0),))
    return PortSet.everything()


def _rank(rule: Rule, order: dict[int, int]) -> int:
    return abi.rank(rule.priority, rule.action is Action.DENY, order[rule.id])


def _winners(rules: list[Rule], bucket: int, frag: bool) -> list[tuple[int, int, Rule]]:
    """Port intervals (lo, hi, winner), merged, for rules sorted best first."""
    cands = [(r, ax) for r in rules if (ax := _rule_axis(r, bucket, frag)) is not None]
    if not cands:
        return []
    if len(cands) == 1 or cands[0][1].ranges == ((0, 65535),):
        r, ax = cands[0]
        return [(lo, hi, r) for lo, hi in ax.ranges]
    cuts = {0, 65536}
    for _, ax in cands:
        for lo, hi in ax.ranges:
            cuts.add(lo)
            cuts.add(hi + 1)
    points = sorted(cuts)
    out: list[tuple[int, int, Rule]] = []
    for i in range(len(points) - 1):
        lo, hi = points[i], points[i + 1] - 1
        for r, ax in cands:
            if ax.contains(lo):
                if out and out[-1][2] is r and out[-1][1] == lo - 1:
                    out[-1] = (out[-1][0], hi, r)
                else:
                    out.append((lo, hi, r))
                break
    return out


def _verdict(rule: Rule, order: dict[int, int]) -> bytes:
    action = abi.ACTION_DENY if rule.action is Action.DENY else abi.ACTION_ALLOW
    return abi.verdict(_rank(rule, order), rule.id, action, abi.VERDICT_LOG if rule.log else 0)


class _Atoms:
    """Elementary address intervals → atom ids, for one address family."""

    def __init__(self) -> None:
        self.cuts: dict[int, set[int]] = {4: {0}, 6: {0}}

    def add(self, version: int, lo: int, hi: int) -> None:
        self.cuts[version].add(lo)
        self.cuts[version].add(hi + 1)


def materialize(program: Program, inv: Inventory, ids: Ids | None = None) -> Contents:
    """The map contents; pass the Ids of the previous materialization of the same version to keep
    every unchanged entry byte for byte."""
    out = Contents(ids=ids if ids is not None else Ids())
    rules_by_dir: dict[str, list[Rule]] = {}
    order = {r.id: i for i, r in enumerate(program.rules)}   # ties go to the rule written first
    policies = list(program.policies)

    # ---------------------------------------------------------------- endpoints and policy sets
    pset_of: dict[str, frozenset[str]] = {}
    for c in inv.containers:
        pset_of[c.name] = frozenset(p.name for p in policies if p.selector.matches(c.labels))
    for names in sorted(set(pset_of.values()), key=lambda s: sorted(s)):
        out.psets[names] = out.ids.pset(names)
    endpoints: dict[bytes, bytes] = {}
    for i, c in enumerate(inv.containers):
        pid = out.psets[pset_of[c.name]]
        out.endpoint_psets[c.name] = pid
        if c.ifindex is None:
            continue
        iso, deny = _isolation(program, pset_of[c.name])
        endpoints[c.ifindex.to_bytes(4, "little")] = abi.endpoint(pid, i + 1, iso, deny)
    out.maps["netc_endpoints"] = endpoints

    # ---------------------------------------------------------------- atoms
    addr_sets: list[AddrSet] = []
    set_index: dict[AddrSet, int] = {}
    for r in program.rules:
        if r.action is Action.AUDIT or r.peer.any:
            continue
        if not r.peer.addrs.is_empty() and r.peer.addrs not in set_index:
            set_index[r.peer.addrs] = len(addr_sets)
            addr_sets.append(r.peer.addrs)
    identity_of: dict[tuple[int, int], tuple[str, ...]] = {}   # (version, address) → identity key
    for c in inv.containers:
        ident = ("c",) + tuple(sorted(f"{k}={v}" for k, v in c.labels.items()))
        for a in c.addresses:
            v, x = _addr(a)
            identity_of[(v, x)] = ident
    for h in inv.host_addresses:
        v, x = _addr(h)
        identity_of.setdefault((v, x), ("host",))
    labels_of_identity: dict[tuple[str, ...], dict[str, str]] = {}
    for c in inv.containers:
        ident = ("c",) + tuple(sorted(f"{k}={v}" for k, v in c.labels.items()))
        labels_of_identity[ident] = c.labels

    # Regions come from the address sets alone; each container or host address is then one more
    # specific entry (/32, /128) on top, so adding a container never rewrites a region's prefixes.
    atom_sig: dict[int, tuple[tuple[int, ...], tuple[str, ...]]] = {}
    addrs_map: dict[bytes, bytes] = {}

    def emit(version: int, width: int, lo: int, hi: int, atom: int, klass: int) -> None:
        info = abi.ADDR_INFO.pack(atom, klass)
        for value, plen in interval_to_prefixes(lo, hi, width):
            if version == 4:
                key = abi.ADDR_KEY.pack(plen + 96, (V4_MAPPED | value).to_bytes(16, "big"))
            else:
                key = abi.ADDR_KEY.pack(plen, value.to_bytes(16, "big"))
            addrs_map[key] = info

    for version, width in ((4, 32), (6, 128)):
        events: dict[int, list[tuple[int, int]]] = defaultdict(list)  # point → [(+1/-1, set id)]
        for sid, aset in enumerate(addr_sets):
            for lo, hi in (aset.v4 if version == 4 else aset.v6):
                events[lo].append((1, sid))
                events[hi + 1].append((-1, sid))
        points = sorted(events)
        active: dict[int, int] = {}
        regions: list[tuple[int, int, tuple[int, ...]]] = []
        for i, pt in enumerate(points):
            for delta, sid in events[pt]:
                n = active.get(sid, 0) + delta
                if n:
                    active[sid] = n
                else:
                    active.pop(sid, None)
            if i + 1 >= len(points) or not active:
                continue
            lo, hi = pt, min(points[i + 1] - 1, (1 << width) - 1)
            sids = tuple(sorted(active))
            if regions and regions[-1][2] == sids and regions[-1][1] == lo - 1:
                regions[-1] = (regions[-1][0], hi, sids)
            else:
                regions.append((lo, hi, sids))
        for lo, hi, sids in regions:
            sig: tuple[tuple[int, ...], tuple[str, ...]] = (sids, ("world",))
            atom = out.ids.atom(sig)
            atom_sig[atom] = sig
            emit(version, width, lo, hi, atom, abi.CLASS_WORLD)
        starts = [r[0] for r in regions]
        for (v, x), ident in sorted(identity_of.items()):
            if v != version:
                continue
            j = bisect.bisect_right(starts, x) - 1
            sids = regions[j][2] if j >= 0 and regions[j][1] >= x else ()
            sig = (sids, ident)
            atom = out.ids.atom(sig)
            atom_sig[atom] = sig
            klass = abi.CLASS_CONTAINER if ident[0] == "c" else abi.CLASS_HOST
            emit(version, width, x, x, atom, klass)
    out.maps["netc_addrs"] = addrs_map
    out.atoms = len(atom_sig) + 1

    # ---------------------------------------------------------------- verdict tables
    rules_map: dict[bytes, bytes] = {}
    wild_map: dict[bytes, bytes] = {}
    by_policy = {p.name: p for p in policies}
    for names, pid in out.psets.items():
        for d in Direction:
            key = f"{pid}:{d.value}"
            rules = [r for n in sorted(names) for r in by_policy[n].rules
                     if r.direction is d and r.action is not Action.AUDIT]
            rules.sort(key=lambda r: _rank(r, order), reverse=True)
            rules_by_dir[key] = rules
            if not rules:
                continue
            # wildcard peers, by identity class
            for klass in (abi.CLASS_WORLD, abi.CLASS_HOST, abi.CLASS_CONTAINER):
                wr = [r for r in rules if _class_match(r.peer, klass)]
                _fill(wild_map, wr, order, lambda proto, frag, port, bits, k=klass, p=pid, dd=d.abi:
                      abi.wild_key(p, dd | (FRAG if frag else 0), k, proto, port, bits))
            # atom-specific peers: index rules by the address sets they name, so each atom only
            # looks at the rules that can match it (10,000 rules x 9,000 atoms must not be a product)
            specific = [r for r in rules if not r.peer.any and (not r.peer.addrs.is_empty() or r.peer.selectors)]
            if not specific:
                continue
            by_sid: dict[int, list[Rule]] = defaultdict(list)
            with_selectors: list[Rule] = []
            for r in specific:
                if not r.peer.addrs.is_empty():
                    by_sid[set_index[r.peer.addrs]].append(r)
                if r.peer.selectors:
                    with_selectors.append(r)
            rank_of = {r.id: i for i, r in enumerate(rules)}   # rules are sorted best first
            selector_hits: dict[tuple[str, ...], list[Rule]] = {}
            for atom, (sids, ident) in sorted(atom_sig.items()):
                found: dict[int, Rule] = {}
                for sid in sids:
                    for r in by_sid.get(sid, ()):
                        found[r.id] = r
                if ident[0] == "c" and with_selectors:
                    hits = selector_hits.get(ident)
                    if hits is None:
                        labels = labels_of_identity[ident]
                        hits = [r for r in with_selectors if any(x.matches(labels) for x in r.peer.selectors)]
                        selector_hits[ident] = hits
                    for r in hits:
                        found[r.id] = r
                if found:
                    ar = sorted(found.values(), key=lambda r: rank_of[r.id])
                    _fill(rules_map, ar, order, lambda proto, frag, port, bits, a=atom, p=pid, dd=d.abi:
                          abi.rule_key(p, a, dd | (FRAG if frag else 0), proto, port, bits))
    out.maps["netc_rules"] = rules_map
    out.maps["netc_wild"] = wild_map
    return out


def _fill(target: dict[bytes, bytes], rules: list[Rule], order: dict[int, int], make_key) -> None:  # type: ignore[no-untyped-def]
    if not rules:
        return
    for bucket in BUCKETS:
        for frag in (False, True):
            for lo, hi, r in _winners(rules, bucket, frag):
                value = _verdict(r, order)
                for port, plen in interval_to_prefixes(lo, hi, 16):
                    target[make_key(bucket, frag, port, plen)] = value


def _class_match(peer: Peer, klass: int) -> bool:
    if peer.any:
        return True
    if klass == abi.CLASS_WORLD:
        return peer.world
    if klass == abi.CLASS_HOST:
        return peer.host
    return False


def _addr(a: str) -> tuple[int, int]:
    import ipaddress

    ip = ipaddress.ip_address(a)
    return ip.version, int(ip)


def _isolation(program: Program, names: Iterable[str]) -> tuple[tuple[bool, bool], tuple[bool, bool]]:
    """(isolated[ingress, egress], default_deny[ingress, egress]) for a policy set."""
    pols = [p for p in program.policies if p.name in set(names)]
    iso: list[bool] = []
    deny: list[bool] = []
    for d in (Direction.INGRESS, Direction.EGRESS):
        isolating = [p for p in pols if d in p.isolates]
        iso.append(bool(isolating))
        deny.append(bool(isolating) and not all(p.defaults.get(d) is Action.ALLOW for p in isolating))
    return (iso[0], iso[1]), (deny[0], deny[1])


def endpoint_for(program: Program, contents: Contents, c: Container, ifindex: int, endpoint_id: int
                 ) -> tuple[bytes, bytes]:
    """The netc_endpoints entry for a container on a given ifindex (the loader and tests use it)."""
    names = frozenset(p.name for p in program.policies if p.selector.matches(c.labels))
    pid = contents.psets.get(names, 0)
    iso, deny = _isolation(program, names)
    return ifindex.to_bytes(4, "little"), abi.endpoint(pid, endpoint_id, iso, deny)
