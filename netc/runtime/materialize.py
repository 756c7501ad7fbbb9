"""Manifest IR + inventory → the contents of the classifier maps (DESIGN.md §6).

Pure: no kernel access, so it runs in tests, in `netc test --kernel` and in the loader alike.

- Atoms. Every address set a rule names, every container address and every host address cut
  the address space into elementary intervals; intervals with the same membership (which sets
  contain them) and the same identity (which labels live there, or host, or world) form one
  atom. netc_addrs maps address prefixes to atoms; addresses in no set and of no container
  miss the map and are atom 0, class world (IPv4 ones find ::ffff:0:0/96 saying so, so that
  they never fall through to an IPv6 prefix covering the v4-mapped space).
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
from typing import Any

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
    endpoints: dict[str, int] = field(default_factory=dict)  # container name -> endpoint id (counters, events)
    # "<service>\x1f<vip>\x1f<port>\x1f<proto>/<backend name>" -> backend id (netc_backends; see runtime/services.py)
    backends: dict[str, int] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict, repr=False)
    dirty: bool = field(default=False, repr=False)   # a new id was handed out since it was saved

    def _alloc(self, table: dict[str, int], kind: str, key: str) -> int:
        got = table.get(key)
        if got is None:
            got = self._next.get(kind) or max(table.values(), default=0) + 1
            table[key] = got
            self._next[kind] = got + 1
            self.dirty = True
        return got

    def pset(self, names: frozenset[str]) -> int:
        return self._alloc(self.psets, "p", ",".join(sorted(names)))

    def atom(self, sig: tuple[tuple[int, ...], tuple[str, ...]], set_names: list[str] | None = None) -> int:
        """An atom's id by its signature: the address sets containing it (by content when
        `set_names` names them, so that a policy change that adds or removes a set elsewhere
        does not renumber it) and its identity."""
        sets = sorted(set_names[i] for i in sig[0]) if set_names is not None else map(str, sig[0])
        return self._alloc(self.atoms, "a", ",".join(sets) + "|" + "\x1f".join(sig[1]))

    def endpoint(self, container: str) -> int:
        return self._alloc(self.endpoints, "e", container)

    def backend(self, key: str) -> int:
        """Never handed out twice while the version runs: a gone backend's id stays taken."""
        return self._alloc(self.backends, "b", key)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"psets": self.psets, "atoms": self.atoms, "endpoints": self.endpoints, "backends": self.backends}

    @staticmethod
    def from_json(d: dict[str, dict[str, int]]) -> Ids:
        return Ids(dict(d.get("psets", {})), dict(d.get("atoms", {})), dict(d.get("endpoints", {})),
                   dict(d.get("backends", {})))


@dataclass
class Contents:
    """What the maps must hold: map name → {key bytes: value bytes}, plus what it means."""

    maps: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    psets: dict[frozenset[str], int] = field(default_factory=dict)     # policy names → pset id
    endpoint_psets: dict[str, int] = field(default_factory=dict)       # container → pset id
    atoms: int = 0
    ids: Ids = field(default_factory=Ids)
    # the verdict-table entries of each (pset, direction, atom) and each (pset, direction), so an
    # inventory change can tell which groups of entries appeared or went without comparing all
    pairs: dict[tuple[int, int, int], dict[bytes, bytes]] = field(default_factory=dict)
    wild_pairs: dict[tuple[int, int], dict[bytes, bytes]] = field(default_factory=dict)
    atom_sigs: dict[int, tuple[tuple[int, ...], tuple[str, ...]]] = field(default_factory=dict)
    # after an incremental run: the groups that are new, and the previous run's groups that went
    changes: dict[str, tuple[list[Any], list[Any]]] | None = None
    # the IPv4 multibit trie laid out from netc_addrs (runtime/addr4.py): built when first asked for
    addr4: Any = field(default=None, repr=False, compare=False)

    def entries(self) -> int:
        return sum(len(m) for m in self.maps.values())


def _bucket(proto: int) -> int:
    return proto if proto in BUCKETS else abi.PROTO_OTHER


def _rule_axis(rule: Rule, bucket: int, frag: bool, proto: int | None) -> PortSet | None:
    """The port-field values a rule matches in a bucket, or None when it cannot match there
    (`proto`: the rule's protocol number, read once by the caller: an enum's value is slow)."""
    if proto is not None and proto != bucket:
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


SLOTS = [(bucket, frag) for bucket in BUCKETS for frag in (False, True)]


def _axes(rule: Rule, cache: dict[int, list[PortSet | None]]) -> list[PortSet | None]:
    """The rule's port axis in every (bucket, fragment) slot, computed once per rule."""
    got = cache.get(rule.id)
    if got is None:
        proto = rule.protocol.value if rule.protocol is not None else None
        got = [_rule_axis(rule, bucket, frag, proto) for bucket, frag in SLOTS]
        cache[rule.id] = got
    return got


def _winners(rules: list[Rule], bucket: int, frag: bool,
             cands: list[tuple[Rule, PortSet]] | None = None) -> list[tuple[int, int, Rule]]:
    """Port intervals (lo, hi, winner), merged, for rules sorted best first."""
    if cands is None:
        cands = [(r, ax) for r in rules
                 if (ax := _rule_axis(r, bucket, frag, None if r.protocol is None else r.protocol.value)) is not None]
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


def _verdict(rule: Rule, order: dict[int, int], audit_rule: int = 0) -> bytes:
    action = abi.ACTION_DENY if rule.action is Action.DENY else abi.ACTION_ALLOW
    return abi.verdict(_rank(rule, order), rule.id, action, abi.VERDICT_LOG if rule.log else 0, audit_rule)


Sig = tuple[tuple[int, ...], tuple[str, ...]]


@dataclass
class _PsetRules:
    """One policy set's rules of one direction, indexed for atoms."""

    rules: list[Rule]
    by_sid: dict[int, list[Rule]]
    with_selectors: list[Rule]
    rank_of: dict[int, int]
    selector_hits: dict[tuple[str, ...], list[Rule]] = field(default_factory=dict)


class Materializer:
    """Everything about a program that does not depend on the inventory, computed once; run() then
    materializes against an inventory, reusing every (policy set, atom) table computed before."""

    def __init__(self, program: Program):
        self.program = program
        self.order = {r.id: i for i, r in enumerate(program.rules)}   # ties go to the rule written first
        self.by_policy = {p.name: p for p in program.policies}
        self.addr_sets: list[AddrSet] = []
        self.set_index: dict[AddrSet, int] = {}
        for r in program.rules:
            if r.peer.any or r.peer.addrs.is_empty():
                continue
            if r.peer.addrs not in self.set_index:
                self.set_index[r.peer.addrs] = len(self.addr_sets)
                self.addr_sets.append(r.peer.addrs)
        # each set by its content, for atom ids that survive policy changes (Ids.atom)
        self.set_names = [_set_name(a) for a in self.addr_sets]
        self.regions = {4: self._regions(4, 32), 6: self._regions(6, 128)}
        self.starts = {v: [r[0] for r in self.regions[v]] for v in (4, 6)}
        self._pset_rules: dict[tuple[frozenset[str], Direction], _PsetRules] = {}
        self._regions_for: tuple[Ids, dict[int, Sig], dict[bytes, bytes]] | None = None
        self._pset_flags: dict[frozenset[str], tuple[Any, Any, Any]] = {}   # isolation, defaults, audits
        self._axes: dict[int, list[PortSet | None]] = {}
        self._pair_cache: dict[tuple[frozenset[str], Direction, Sig, int, int], dict[bytes, bytes]] = {}

    def _regions(self, version: int, width: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """Elementary address intervals with the address sets that contain them (a sweep)."""
        events: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for sid, aset in enumerate(self.addr_sets):
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
        return regions

    def region_of(self, version: int, x: int) -> tuple[int, ...]:
        j = bisect.bisect_right(self.starts[version], x) - 1
        regions = self.regions[version]
        return regions[j][2] if j >= 0 and regions[j][1] >= x else ()

    def pset_rules(self, names: frozenset[str], d: Direction) -> _PsetRules:
        key = (names, d)
        got = self._pset_rules.get(key)
        if got is None:
            rules = [r for n in sorted(names) for r in self.by_policy[n].rules if r.direction is d]
            rules.sort(key=lambda r: _rank(r, self.order), reverse=True)
            by_sid: dict[int, list[Rule]] = defaultdict(list)
            with_selectors: list[Rule] = []
            for r in rules:
                if r.peer.any:
                    continue
                if not r.peer.addrs.is_empty():
                    by_sid[self.set_index[r.peer.addrs]].append(r)
                if r.peer.selectors:
                    with_selectors.append(r)
            got = _PsetRules(rules, by_sid, with_selectors, {r.id: i for i, r in enumerate(rules)})
            self._pset_rules[key] = got
        return got

    def _atom_rules(self, pr: _PsetRules, sig: Sig, labels: dict[str, str] | None) -> list[Rule]:
        sids, ident = sig
        found: dict[int, Rule] = {}
        for sid in sids:
            for r in pr.by_sid.get(sid, ()):
                found[r.id] = r
        if labels is not None and pr.with_selectors:
            hits = pr.selector_hits.get(ident)
            if hits is None:
                hits = [r for r in pr.with_selectors if any(x.matches(labels) for x in r.peer.selectors)]
                pr.selector_hits[ident] = hits
            for r in hits:
                found[r.id] = r
        return sorted(found.values(), key=lambda r: pr.rank_of[r.id])

    def pair_entries(self, names: frozenset[str], pid: int, d: Direction, atom: int, sig: Sig,
                     labels: dict[str, str] | None) -> dict[bytes, bytes]:
        """netc_rules entries of one (policy set, direction, atom)."""
        ck = (names, d, sig, pid, atom)
        cached = self._pair_cache.get(ck)
        if cached is not None:
            return cached
        out: dict[bytes, bytes] = {}
        pr = self.pset_rules(names, d)
        ar = self._atom_rules(pr, sig, labels)
        if ar:
            # abi.rule_key with the fixed fields bound (one call per entry, ~600,000 at 100,000 rules)
            pack, fixed, dirs = abi.RULE_KEY.pack, abi.RULE_KEY_FIXED_BITS, (d.abi, d.abi | FRAG)
            _fill(out, ar, self.order, lambda proto, frag, port, bits:
                  pack(fixed + bits, pid, atom, dirs[frag], proto, port.to_bytes(2, "big")), self._axes)
        self._pair_cache[ck] = out
        return out

    def wild_entries(self, names: frozenset[str], pid: int, d: Direction) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        pr = self.pset_rules(names, d)
        for klass in (abi.CLASS_WORLD, abi.CLASS_HOST, abi.CLASS_CONTAINER):
            wr = [r for r in pr.rules if _class_match(r.peer, klass)]
            _fill(out, wr, self.order, lambda proto, frag, port, bits, k=klass:
                  abi.wild_key(pid, d.abi | (FRAG if frag else 0), k, proto, port, bits), self._axes)
        return out

    def run(self, inv: Inventory, ids: Ids | None = None, previous: Contents | None = None) -> Contents:
        """The map contents for an inventory. With `previous` (same program, same ids), groups of
        entries whose policy set and atom did not change are taken over as they are."""
        import gc

        enabled = gc.isenabled()
        gc.disable()   # millions of small acyclic objects at 100,000 rules: nothing for the GC to find
        try:
            return self._run(inv, ids, previous)
        finally:
            if enabled:
                gc.enable()

    def _run(self, inv: Inventory, ids: Ids | None, previous: Contents | None) -> Contents:
        program = self.program
        out = Contents(ids=ids if ids is not None else Ids())

        # ------------------------------------------------------------ endpoints and policy sets
        pset_of: dict[str, frozenset[str]] = {}
        for c in inv.containers:
            pset_of[c.name] = frozenset(p.name for p in program.policies if p.selector.matches(c.labels))
        for names in sorted(set(pset_of.values()), key=lambda x: sorted(x)):
            out.psets[names] = out.ids.pset(names)
        endpoints: dict[bytes, bytes] = {}
        for c in inv.containers:
            pid = out.psets[pset_of[c.name]]
            out.endpoint_psets[c.name] = pid
            eid = out.ids.endpoint(c.name)    # stable: counters and events are keyed by it
            if c.ifindex is None:
                continue
            endpoints[c.ifindex.to_bytes(4, "little")] = _endpoint_value(program, pset_of[c.name], pid, eid,
                                                                       c.labels, self._pset_flags)
        out.maps["netc_endpoints"] = endpoints

        # ------------------------------------------------------------ atoms
        # Regions come from the address sets alone; each container or host address is then one
        # more specific entry (/32, /128) on top, so a new container never rewrites a region.
        identity_of: dict[tuple[int, int], tuple[str, ...]] = {}
        labels_of_identity: dict[tuple[str, ...], dict[str, str]] = {}
        for c in inv.containers:
            ident = ("c",) + tuple(sorted(f"{k}={v}" for k, v in c.labels.items()))
            labels_of_identity[ident] = c.labels
            for a in c.addresses:
                identity_of[_addr(a)] = ident
        for h in inv.host_addresses:
            identity_of.setdefault(_addr(h), ("host",))
        if self._regions_for is None or self._regions_for[0] is not out.ids:
            region_sigs: dict[int, Sig] = {}
            region_addrs: dict[bytes, bytes] = {}
            for version, width in ((4, 32), (6, 128)):
                for lo, hi, sids in self.regions[version]:
                    rsig: Sig = (sids, ("world",))
                    atom = out.ids.atom(rsig, self.set_names)
                    region_sigs[atom] = rsig
                    for a, b in _without_v4_mapped(version, lo, hi):
                        _emit_addr(region_addrs, version, width, a, b, atom, abi.CLASS_WORLD)
            # IPv4 addresses live in the trie as ::ffff:a.b.c.d, and IPv6 regions leave that range
            # out. An IPv4 address no set names must stop here (atom 0, world), not fall through
            # to an IPv6 prefix around ::ffff:0:0/96 (a set like ::/0 except fc00::/7 has one).
            region_addrs.setdefault(abi.ADDR_KEY.pack(96, V4_MAPPED.to_bytes(16, "big")),
                                    abi.ADDR_INFO.pack(0, abi.CLASS_WORLD))
            self._regions_for = (out.ids, region_sigs, region_addrs)
        atom_sig: dict[int, Sig] = dict(self._regions_for[1])
        addrs_map: dict[bytes, bytes] = dict(self._regions_for[2])
        for (version, x), ident in sorted(identity_of.items()):
            sig: Sig = (self.region_of(version, x), ident)
            atom = out.ids.atom(sig, self.set_names)
            atom_sig[atom] = sig
            klass = abi.CLASS_CONTAINER if ident[0] == "c" else abi.CLASS_HOST
            _emit_addr(addrs_map, version, 32 if version == 4 else 128, x, x, atom, klass)
        out.maps["netc_addrs"] = addrs_map
        out.atoms = len(atom_sig) + 1

        # ------------------------------------------------------------ verdict tables
        out.atom_sigs = atom_sig
        psets = {pid: names for names, pid in out.psets.items()}
        if previous is not None and previous.ids is out.ids and previous.atom_sigs:
            self._verdicts_incremental(out, psets, labels_of_identity, previous)
        else:
            self._verdicts(out, psets, labels_of_identity, psets.keys(), atom_sig.keys())
            out.maps["netc_rules"] = {k: v for g in out.pairs.values() for k, v in g.items()}
            out.maps["netc_wild"] = {k: v for g in out.wild_pairs.values() for k, v in g.items()}
        return out

    def _verdicts(self, out: Contents, psets: dict[int, frozenset[str]],
                  labels_of_identity: dict[tuple[str, ...], dict[str, str]],
                  pids: Iterable[int], atoms: Iterable[int]) -> None:
        """Compute the groups of entries for every pset in `pids` × atom in `atoms`."""
        atoms = list(atoms)
        for pid in pids:
            names = psets[pid]
            for d in Direction:
                if not self.pset_rules(names, d).rules:
                    continue
                if (pid, d.abi) not in out.wild_pairs:
                    out.wild_pairs[(pid, d.abi)] = self.wild_entries(names, pid, d)
                for atom in atoms:
                    sig = out.atom_sigs[atom]
                    ident = sig[1]
                    labels = labels_of_identity.get(ident) if ident[0] == "c" else None
                    out.pairs[(pid, d.abi, atom)] = self.pair_entries(names, pid, d, atom, sig, labels)

    def _verdicts_incremental(self, out: Contents, psets: dict[int, frozenset[str]],
                              labels_of_identity: dict[tuple[str, ...], dict[str, str]],
                              previous: Contents) -> None:
        """Keep the groups of every (pset, atom) both runs have; compute only the new ones.
        `previous` is consumed: its tables become this run's (a sync replaces it anyway)."""
        old_pids = {pid for pid in previous.psets.values()}
        new_pids, new_atoms = set(psets), set(out.atom_sigs)
        rules_map = previous.maps.get("netc_rules", {})
        wild_map = previous.maps.get("netc_wild", {})
        gone_rules: list[Any] = []
        gone_wild: list[Any] = []
        if old_pids <= new_pids and set(previous.atom_sigs) <= new_atoms:
            out.pairs = previous.pairs            # nothing went: every group stays (the common case)
            out.wild_pairs = previous.wild_pairs
        else:
            for key, group in previous.pairs.items():
                if key[0] in new_pids and key[2] in new_atoms:
                    out.pairs[key] = group
                else:
                    gone_rules.append(group)
                    for k in group:
                        rules_map.pop(k, None)
            for wkey, group in previous.wild_pairs.items():
                if wkey[0] in new_pids:
                    out.wild_pairs[wkey] = group
                else:
                    gone_wild.append(group)
                    for k in group:
                        wild_map.pop(k, None)
        added_atoms = new_atoms - set(previous.atom_sigs)
        added_pids = new_pids - old_pids
        n_pairs, n_wild = len(out.pairs), len(out.wild_pairs)
        self._verdicts(out, psets, labels_of_identity, added_pids, new_atoms)
        self._verdicts(out, psets, labels_of_identity, new_pids - added_pids, added_atoms)
        # dicts keep insertion order: what _verdicts added is at the end
        new_rules = list(out.pairs.values())[n_pairs:] if len(out.pairs) > n_pairs else []
        new_wild = list(out.wild_pairs.values())[n_wild:] if len(out.wild_pairs) > n_wild else []
        for group in new_rules:
            rules_map.update(group)
        for group in new_wild:
            wild_map.update(group)
        out.maps["netc_rules"] = rules_map
        out.maps["netc_wild"] = wild_map
        out.changes = {"netc_rules": (new_rules, gone_rules), "netc_wild": (new_wild, gone_wild)}


def materialize(program: Program, inv: Inventory, ids: Ids | None = None) -> Contents:
    """The map contents; pass the Ids of the previous materialization of the same version to keep
    every unchanged entry byte for byte."""
    return Materializer(program).run(inv, ids)


V4_MAPPED_LO, V4_MAPPED_HI = V4_MAPPED, V4_MAPPED | 0xFFFFFFFF


def _without_v4_mapped(version: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """An IPv6 region minus ::ffff:0:0/96, where the trie keeps IPv4 addresses (an IPv6 packet
    with such an address is dropped before any lookup; eval.has_v4_mapped)."""
    if version == 4 or hi < V4_MAPPED_LO or lo > V4_MAPPED_HI:
        return [(lo, hi)]
    out = []
    if lo < V4_MAPPED_LO:
        out.append((lo, V4_MAPPED_LO - 1))
    if hi > V4_MAPPED_HI:
        out.append((V4_MAPPED_HI + 1, hi))
    return out


def _emit_addr(target: dict[bytes, bytes], version: int, width: int, lo: int, hi: int, atom: int,
               klass: int) -> None:
    info = abi.ADDR_INFO.pack(atom, klass)
    for value, plen in interval_to_prefixes(lo, hi, width):
        if version == 4:
            key = abi.ADDR_KEY.pack(plen + 96, (V4_MAPPED | value).to_bytes(16, "big"))
        else:
            key = abi.ADDR_KEY.pack(plen, value.to_bytes(16, "big"))
        target[key] = info


def _fill(target: dict[bytes, bytes], rules: list[Rule], order: dict[int, int], make_key,  # type: ignore[no-untyped-def]
          axes: dict[int, list[PortSet | None]] | None = None) -> None:
    """Entries for rules sorted best first: each port interval carries its winning decisive rule,
    and the best audit rule that also matches there (audit rules report, they never decide)."""
    if not rules:
        return
    cache = axes if axes is not None else {}
    if len(rules) == 1 and rules[0].action is not Action.AUDIT:
        # the common case at scale (an atom only one rule names): its own ranges, no sweep
        r = rules[0]
        value = _verdict(r, order)
        for slot, ax in enumerate(_axes(r, cache)):
            if ax is not None:
                bucket, frag = SLOTS[slot]
                for lo, hi in ax.ranges:
                    for port, plen in interval_to_prefixes(lo, hi, 16):
                        target[make_key(bucket, frag, port, plen)] = value
        return
    per_rule = [(r, _axes(r, cache), r.action is Action.AUDIT) for r in rules]
    for slot, (bucket, frag) in enumerate(SLOTS):
        dec_c = [(r, ax[slot]) for r, ax, audit in per_rule if not audit and ax[slot] is not None]
        aud_c = [(r, ax[slot]) for r, ax, audit in per_rule if audit and ax[slot] is not None]
        if not dec_c and not aud_c:
            continue
        win = _winners([], bucket, frag, dec_c)  # type: ignore[arg-type]
        aud = _winners([], bucket, frag, aud_c) if aud_c else []  # type: ignore[arg-type]
        for lo, hi, d, a in _overlay(win, aud):
            if d is not None:
                value = _verdict(d, order, a.id if a is not None else 0)
            else:
                assert a is not None
                value = abi.verdict(0, 0, abi.ACTION_NONE, 0, a.id)
            for port, plen in interval_to_prefixes(lo, hi, 16):
                target[make_key(bucket, frag, port, plen)] = value


def _overlay(win: list[tuple[int, int, Rule]], aud: list[tuple[int, int, Rule]]
             ) -> list[tuple[int, int, Rule | None, Rule | None]]:
    """Merge two sorted interval lists into intervals carrying (decisive, audit) winners."""
    if not aud:
        return [(lo, hi, r, None) for lo, hi, r in win]
    cuts = sorted({x for lo, hi, _ in win + aud for x in (lo, hi + 1)})
    out: list[tuple[int, int, Rule | None, Rule | None]] = []
    pos = [0, 0]

    def at(which: int, ivs: list[tuple[int, int, Rule]], x: int) -> Rule | None:
        # both lists are sorted and x only grows: walk forward
        j = pos[which]
        while j < len(ivs) and ivs[j][1] < x:
            j += 1
        pos[which] = j
        return ivs[j][2] if j < len(ivs) and ivs[j][0] <= x else None

    for i in range(len(cuts) - 1):
        lo, hi = cuts[i], cuts[i + 1] - 1
        d, a = at(0, win, lo), at(1, aud, lo)
        if d is None and a is None:
            continue
        if out and out[-1][2] is d and out[-1][3] is a and out[-1][1] == lo - 1:
            out[-1] = (out[-1][0], hi, d, a)
        else:
            out.append((lo, hi, d, a))
    return out


def _set_name(aset: AddrSet) -> str:
    import hashlib

    return hashlib.blake2b(repr((aset.v4, aset.v6)).encode(), digest_size=8).hexdigest()


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


def _endpoint_value(program: Program, names: frozenset[str], pid: int, endpoint_id: int,
                    labels: dict[str, str],
                    cache: dict[frozenset[str], tuple[Any, Any, Any]] | None = None) -> bytes:
    got = cache.get(names) if cache is not None else None
    if got is None:
        iso, deny = _isolation(program, names)
        audited = tuple(any(r.action is Action.AUDIT and r.direction is d
                            for p in program.policies if p.name in names for r in p.rules)
                        for d in (Direction.INGRESS, Direction.EGRESS))
        got = (iso, deny, audited)
        if cache is not None:
            cache[names] = got
    iso, deny, audited = got
    observe, sample = observe_flags(program, labels)
    return abi.endpoint(pid, endpoint_id, iso, deny, (audited[0], audited[1]), observe, sample)


def observe_flags(program: Program, labels: dict[str, str]) -> tuple[int, int]:
    """(NETC_OBSERVE_* flags, sample threshold) from the observe blocks selecting a container."""
    from netc.ir.nodes import EventKind

    flags, rate = 0, 0.0
    for ob in program.observes:
        if not ob.selector.matches(labels):
            continue
        if EventKind.DENY in ob.events:
            flags |= abi.OBSERVE_DENY
        if EventKind.ALLOW in ob.events:
            flags |= abi.OBSERVE_ALLOW
        if EventKind.TRANSLATE in ob.events:
            flags |= abi.OBSERVE_TRANSLATE
        if EventKind.NEW in ob.events:
            flags |= abi.OBSERVE_NEW
            num, den = ob.sample_flows
            rate = max(rate, num / den)
    return flags, min(0xFFFFFFFF, int(rate * (1 << 32))) if flags & abi.OBSERVE_NEW else 0


def endpoint_for(program: Program, contents: Contents, c: Container, ifindex: int, endpoint_id: int
                 ) -> tuple[bytes, bytes]:
    """The netc_endpoints entry for a container on a given ifindex (the loader and tests use it)."""
    names = frozenset(p.name for p in program.policies if p.selector.matches(c.labels))
    pid = contents.psets.get(names, 0)
    return ifindex.to_bytes(4, "little"), _endpoint_value(program, names, pid, endpoint_id, c.labels)
