"""Two slots per policy entry and one generation: a policy change in place, atomic, writing only the
entries it affects (docs/runtime.md, "Policy changes in place").

Every entry of netc_endpoints, netc_addrs, netc_rules and netc_wild holds two values, slot 0 and
slot 1; the datapath reads the generation (netc_gen, 0 or 1) once per packet and uses that slot
of every entry it finds. The materializer describes one generation (runtime/materialize.py
values); this module packs them into slots and computes a change from one generation's contents
(`old`) to the next (`new`):

1. stage: every key whose answer changes gets, in its live slot, what the old contents answer for
   it and, in the other slot, what the new contents answer for it:
   - a key in both: old value | new value;
   - a key being inserted: in the live slot, what the old table answered for the key's prefix
     (LPM maps: the longest old prefix covering it, or nothing: a zeroed slot, which the
     datapath treats as a miss), so inserting it changes no live answer;
   - a key being removed: in the other slot, what the new table answers for it (the longest new
     prefix covering it, or nothing), so that it reads as absent once the generation flips.
   After each write, every lookup under the live generation still gives the old answer, exactly.
2. flip: one write of netc_gen; from then on every lookup gives the new answer (the longest match
   among old and new keys is either a new key, read in its new slot, or a removed key whose new
   slot holds what the new table answers there). Then wait for programs that read the old
   generation to finish (libbpf.wait_for_programs: an RCU grace period).
3. settle: both slots of the changed keys := the new value; removed keys are deleted. Neither
   changes a live answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netc.runtime import abi

SLOTTED = ("netc_endpoints", "netc_addrs", "netc_rules", "netc_wild")
LPM = frozenset({"netc_addrs", "netc_rules", "netc_wild"})
GEN_MAP = "netc_gen"
# stage and settle write in dependency order (what an entry points at first); deletions go in reverse
WRITE_ORDER = ("netc_rules", "netc_wild", "netc_addrs", "netc_endpoints")

_SIZES = {"netc_addrs": abi.ADDR_INFO.size, "netc_rules": abi.VERDICT.size, "netc_wild": abi.VERDICT.size}
_ZERO_POLICY = bytes(abi.ENDPOINT_POLICY.size)
_ZERO_KEY = (0).to_bytes(4, "little")


def _split_endpoint(value: bytes) -> tuple[int, bytes, bool]:
    pset, eid, i0, i1, d0, d1, a0, a1, obs, sample = abi.ENDPOINT.unpack(value)
    return eid, abi.ENDPOINT_POLICY.pack(pset, i0, i1, d0, d1, a0, a1, obs, sample), bool(i0 or i1)


def encode(name: str, slot0: bytes | None, slot1: bytes | None) -> bytes:
    """The map value holding two generations' values (None: nothing, read as a miss)."""
    if name == "netc_endpoints":
        eid, tracked = 0, False
        parts = []
        for v in (slot0, slot1):
            if v is None:
                parts.append(_ZERO_POLICY)
                continue
            eid, policy, iso = _split_endpoint(v)
            tracked = tracked or iso
            parts.append(policy)
        return abi.ENDPOINT_SLOTS.pack(eid, int(tracked), parts[0], parts[1])
    zero = bytes(_SIZES[name])
    return (slot0 if slot0 is not None else zero) + (slot1 if slot1 is not None else zero)


def both(name: str, value: bytes) -> bytes:
    return encode(name, value, value)


def decode(name: str, raw: bytes, gen: int) -> bytes:
    """One generation's value of a map value (what the materializer would have produced)."""
    if name == "netc_endpoints":
        eid, _tracked, p0, p1 = abi.ENDPOINT_SLOTS.unpack(raw)
        pset, i0, i1, d0, d1, a0, a1, obs, sample = abi.ENDPOINT_POLICY.unpack(p1 if gen else p0)
        return abi.ENDPOINT.pack(pset, eid, i0, i1, d0, d1, a0, a1, obs, sample)
    size = _SIZES[name]
    return raw[size:2 * size] if gen else raw[:size]


def encode_all(name: str, values: Mapping[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """Entries for a fresh map: both slots alike."""
    if name == "netc_endpoints":
        return [(k, both(name, v)) for k, v in values.items()]
    return [(k, v + v) for k, v in values.items()]


def read_generation(gen_map: Any) -> int:
    raw = gen_map.lookup(_ZERO_KEY)
    return int.from_bytes(raw[:4], "little") & 1 if raw else 0


# ---------------------------------------------------------------------- LPM answers in Python
def _masked(data: bytes, plen: int) -> bytes:
    nbytes, bits = divmod(plen, 8)
    if nbytes >= len(data):
        return data
    head = data[:nbytes]
    if bits:
        head += bytes([data[nbytes] & (0xFF << (8 - bits)) & 0xFF])
    return head + bytes(len(data) - len(head))


class Lpm:
    """A table of LPM-trie entries (canonical keys: prefixlen, then the data masked to it) asked the
    kernel's question: the value of the longest prefix containing a key."""

    def __init__(self, table: Mapping[bytes, bytes]):
        self.table = table
        self._lens: list[int] | None = None

    def lengths(self) -> list[int]:
        if self._lens is None:
            self._lens = sorted({int.from_bytes(k[:4], "little") for k in self.table}, reverse=True)
        return self._lens

    def covering(self, key: bytes) -> bytes | None:
        """The value of the longest entry whose prefix contains all of `key`'s prefix."""
        plen, data = int.from_bytes(key[:4], "little"), key[4:]
        for n in self.lengths():
            if n > plen:
                continue
            hit = self.table.get(n.to_bytes(4, "little") + _masked(data, n))
            if hit is not None:
                return hit
        return None


# ---------------------------------------------------------------------- a change
@dataclass
class MapDelta:
    """One map's change while slot `live` is live: what to write before the flip and after it."""

    name: str
    live: int
    stage: list[tuple[bytes, bytes]] = field(default_factory=list)    # before the flip
    settle: list[tuple[bytes, bytes]] = field(default_factory=list)   # after it: both slots new
    delete: list[bytes] = field(default_factory=list)                 # after it
    inserted: int = 0
    changed: int = 0

    def put(self, key: bytes, was: bytes | None, will: bytes | None, *, removed: bool = False) -> None:
        """Key gets `was` in the live slot and `will` in the other (None: a zeroed slot); after the
        flip it keeps `will` in both, or goes if `removed`."""
        self.stage.append((key, encode(self.name, *((was, will) if self.live == 0 else (will, was)))))
        if removed:
            self.delete.append(key)
        else:
            assert will is not None
            self.settle.append((key, both(self.name, will)))


def diff(name: str, old: Mapping[bytes, bytes], new: Mapping[bytes, bytes], live: int) -> MapDelta:
    """The change of one map from `old` to `new` contents while slot `live` is live."""
    out = MapDelta(name, live)
    lpm = name in LPM
    old_lpm, new_lpm = Lpm(old), Lpm(new)
    for k, v in new.items():
        was = old.get(k)
        if was == v:
            continue
        if was is None:
            out.inserted += 1
            was = old_lpm.covering(k) if lpm else None
        else:
            out.changed += 1
        out.put(k, was, v)
    for k in old:
        if k not in new:
            out.put(k, old[k], new_lpm.covering(k) if lpm else None, removed=True)
    return out


def _write(maps: Mapping[str, Any], deltas: Mapping[str, MapDelta], which: str) -> None:
    for name in WRITE_ORDER:
        entries = getattr(deltas[name], which) if name in deltas else []
        if entries:
            maps[name].update_batch(entries)


def stage(maps: Mapping[str, Any], deltas: Mapping[str, MapDelta]) -> None:
    _write(maps, deltas, "stage")


def flip(maps: Mapping[str, Any], live: int) -> int:
    """Make the other slot live (one write), and wait until no program reads the old one."""
    from netc.runtime.libbpf import wait_for_programs

    nxt = 1 - live
    maps[GEN_MAP].update(_ZERO_KEY, nxt.to_bytes(4, "little"))
    wait_for_programs()
    return nxt


def settle(maps: Mapping[str, Any], deltas: Mapping[str, MapDelta]) -> None:
    _write(maps, deltas, "settle")
    for name in reversed(WRITE_ORDER):
        d = deltas.get(name)
        for k in d.delete if d else ():
            maps[name].delete(k)


def diff_groups(name: str, added: Iterable[Mapping[bytes, bytes]], gone: Iterable[Mapping[bytes, bytes]],
                live: int) -> MapDelta:
    """The change of a verdict table given as whole groups of entries that appeared or went (an
    incremental materialization's `changes`). A group is every entry of one (policy set,
    direction, atom) or (policy set, direction), which every key carries in its fixed bits: no
    entry outside a group covers one inside it, so an inserted key answered nothing before and a
    removed key answers nothing after."""
    out = MapDelta(name, live)
    for group in added:
        for k, v in group.items():
            out.inserted += 1
            out.put(k, None, v)
    for group in gone:
        for k, v in group.items():
            out.put(k, v, None, removed=True)
    return out
