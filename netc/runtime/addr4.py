"""IPv4 remote addresses in a multibit trie laid out in two array maps (docs/datapath.md).

netc_addrs (an LPM trie) maps every remote address to its atom and identity class. For IPv4 the
kernel's LPM trie visits one node per branch point, 16-19 of them at 100,000 rules; the datapath
instead reads IPv4 (v4-mapped) addresses from a multibit trie in ARRAY maps, whose lookups the
verifier inlines: strides 16-4-4-4-4, leaf-pushed, so a lookup is at most five array reads.

- netc_addr4_root: 65,536 slots indexed by the address's top 16 bits.
- netc_addr4_nodes: chunks of 16 slots, one per 4-bit stride below; chunk c is entries
  16c..16c+15.
- A slot is one 64-bit word: bit 63 set: a child chunk, its index in the low 32 bits; clear: a
  leaf (`leaf`/`unleaf` below and the datapath's decode are the only places that know its bits).
  0 is what an LPM miss gives (atom 0, the world).

The answer is exactly the LPM's: every v4-mapped entry of netc_addrs is painted into the slots its
prefix covers, longer prefixes over shorter ones, and the longest entry shorter than 96 bits that
covers ::ffff:0:0/96 (if any) is the default under them. Those v4-mapped entries are not written to
the LPM trie; the datapath sends every v4-mapped key (IPv4 packets, and IPv6 packets whose remote
is ::ffff:a.b.c.d) to the arrays.

A load lays the whole trie out at once, vectorized (`build`: numpy, a few passes per level, chunks
numbered in depth-first order), and copies it into the arrays through a memory mapping before any
program is attached (the arrays are BPF_F_MMAPABLE).

Updates (`netc sync`) rebuild the subtree under each root slot whose prefixes changed into chunks
that no packet can reach, write them, and only then the root slot (one aligned 64-bit word) that
points to them; the chunks it pointed to before are reused from the next sync on, never in the
same one. The syncing process keeps a copy of both arrays (read once through the mapping).
"""

from __future__ import annotations

import mmap
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netc.errors import LoadError
from netc.runtime import abi

ROOT_MAP = "netc_addr4_root"
NODES_MAP = "netc_addr4_nodes"
ARRAY_MAPS = (ROOT_MAP, NODES_MAP)
ROOT_BITS = 16
STRIDE = 4
CHUNK = 1 << STRIDE
ROOT_SLOTS = 1 << ROOT_BITS
# netc_addr4_root holds two halves, one per generation (netc_gen, runtime/slots.py): a change
# writes the root slots of its new subtrees into the inactive half, the flip makes them live, and
# settling copies them into the other half. Chunks are never written while a live slot reaches
# them, so no packet ever reads a slot that is being written.
ROOT_MAP_SLOTS = 2 * ROOT_SLOTS
CHILD = 1 << 63
SLOT = struct.Struct("<Q")
INDEX = struct.Struct("<I")
V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
BPF_F_MMAPABLE = 1 << 10
U64 = np.uint64

# netc_addrs' key and value (abi.ADDR_KEY, abi.ADDR_INFO) as numpy reads a run of them
_KEY = np.dtype([("plen", "<u4"), ("hi", ">u8"), ("mid", ">u4"), ("addr", ">u4")])
_INFO = np.dtype([("atom", "<u4"), ("klass", "<u4")])
assert _KEY.itemsize == abi.ADDR_KEY.size and _INFO.itemsize == abi.ADDR_INFO.size

# a leaf's slot value, or a chunk: a tuple of 16 subtrees
Tree = int | tuple[Any, ...]
Prefix = tuple[int, int, int]   # IPv4 prefix length, masked IPv4 value, leaf slot


# ---------------------------------------------------------------------------- the leaf encoding
# The only places that know a leaf's bits: leaf/unleaf (on ints, or elementwise on numpy uint64
# arrays), leaf_of/leaves_of (a netc_addrs value, or a run of them), and the datapath's decode
# after netc_addr4_lookup() in datapath.c.j2.
def leaf(atom: Any, klass: Any) -> Any:
    return (klass & 0xFF) << 32 | (atom & 0xFFFFFFFF)


def unleaf(slot: int) -> tuple[int, int]:
    return slot & 0xFFFFFFFF, (slot >> 32) & 0xFF


def leaf_of(info: bytes) -> int:
    """The leaf for a netc_addrs value."""
    return int(leaf(*abi.ADDR_INFO.unpack(info)))


def leaves_of(infos: bytes) -> np.ndarray:
    """The leaves for netc_addrs values laid end to end."""
    a = np.frombuffer(infos, _INFO)
    return leaf(a["atom"].astype(U64), a["klass"].astype(U64))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- netc_addrs' entries
def is_v4(key: bytes) -> bool:
    """A netc_addrs key the arrays answer for (a prefix inside ::ffff:0:0/96, 96 bits or longer)."""
    return key[4:16] == V4_MAPPED and abi.ADDR_KEY.unpack(key)[0] >= 96


def _parse(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """netc_addrs keys as a numpy record array, and which of them is_v4."""
    k = np.frombuffer(b"".join(keys), _KEY)
    return k, (k["hi"] == 0) & (k["mid"] == 0xFFFF) & (k["plen"] >= 96)


def lpm_entries(addrs: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The netc_addrs entries that stay in the LPM trie."""
    if not addrs:
        return {}
    ks = list(addrs)
    _, v4 = _parse(ks)
    return {ks[i]: addrs[ks[i]] for i in np.flatnonzero(~v4).tolist()}


def key4(plen: int, value: int) -> bytes:
    return abi.ADDR_KEY.pack(plen + 96, V4_MAPPED + value.to_bytes(4, "big"))


def _prefix(key: bytes, info: bytes) -> Prefix:
    plen, addr = abi.ADDR_KEY.unpack(key)
    return plen - 96, int.from_bytes(addr[12:], "big"), leaf_of(info)


def v4_default(addrs: Mapping[bytes, bytes]) -> int:
    """The slot of an IPv4 address no v4-mapped entry covers: the longest shorter entry over
    ::ffff:0:0/96, as the LPM would answer, else a miss (0)."""
    base = int.from_bytes(V4_MAPPED + b"\x00" * 4, "big")
    for plen in range(95, -1, -1):
        masked = base & (((1 << plen) - 1) << (128 - plen)) if plen else 0
        hit = addrs.get(abi.ADDR_KEY.pack(plen, masked.to_bytes(16, "big")))
        if hit is not None:
            return leaf_of(hit)
    return 0


# ---------------------------------------------------------------------------- the whole trie, at once
@dataclass
class Trie:
    """The trie as the arrays hold it: root slots and chunk slots (chunk c at 16c..16c+15)."""

    root: np.ndarray                     # uint64[65536]
    nodes: np.ndarray                    # uint64[16 * chunks]
    lpm: dict[bytes, bytes] = field(default_factory=dict)   # the entries left to the LPM trie

    @property
    def chunks(self) -> int:
        return len(self.nodes) // CHUNK

    def lookup(self, addr: int) -> tuple[int, int]:
        nodes = self.nodes
        return lookup(lambda i: int(self.root[i]), lambda i: int(nodes[i]) if i < len(nodes) else 0, addr)


def build(addrs: Mapping[bytes, bytes]) -> Trie:
    """The trie for netc_addrs' contents, laid out as a load writes it (see _layout)."""
    if not addrs:
        return Trie(np.zeros(ROOT_SLOTS, U64), np.zeros(0, U64), {})
    ks = list(addrs)
    keys, v4 = _parse(ks)
    sel = np.flatnonzero(v4)
    lpm = {ks[i]: addrs[ks[i]] for i in np.flatnonzero(~v4).tolist()}
    slots = leaves_of(b"".join(addrs.values()))[sel]
    plen = keys["plen"][sel].astype(np.int64) - 96
    value = keys["addr"][sel].astype(np.int64)
    root, nodes = _layout(plen, value, slots, v4_default(lpm))
    return Trie(root, nodes, lpm)


def _layout(plen: np.ndarray, value: np.ndarray, slots: np.ndarray, default: int) -> tuple[np.ndarray, np.ndarray]:
    """(root slots, chunk slots) for IPv4 prefixes (plen, masked value, leaf), vectorized.

    Per level, prefixes are painted shortest first, one length at a time (prefixes of one length
    are disjoint). A chunk exists under a slot when a longer prefix falls in it, and starts as 16
    copies of what the slot held (leaf pushing). Chunks are numbered depth first (a chunk, then
    the subtrees of its slots in order; root slots in order): by (first address, depth)."""
    root = np.full(ROOT_SLOTS, default, U64)
    for n in range(ROOT_BITS + 1):
        at = plen == n
        if at.any():
            root.reshape(1 << n, 1 << (ROOT_BITS - n))[value[at] >> (32 - n)] = slots[at][:, None]
    levels: list[tuple[int, np.ndarray, np.ndarray]] = []   # (depth, sorted chunk keys, chunk slots)
    for depth in range(ROOT_BITS, 32, STRIDE):
        keys = np.unique(value[plen > depth] >> (32 - depth))
        if not levels:
            under = root[keys]
        else:
            _, pkeys, pslots = levels[-1]
            under = pslots[np.searchsorted(pkeys, keys >> STRIDE), keys & (CHUNK - 1)]
        ch = np.repeat(under[:, None], CHUNK, axis=1)
        for n in range(depth + 1, depth + STRIDE + 1):
            at = plen == n
            if at.any():
                v = value[at]
                ch.reshape(len(keys), 1 << (n - depth), 1 << (depth + STRIDE - n))[
                    np.searchsorted(keys, v >> (32 - depth)), (v >> (32 - n)) & ((1 << (n - depth)) - 1)
                ] = slots[at][:, None]
        levels.append((depth, keys, ch))
    total = sum(len(k) for _, k, _ in levels)
    first = np.concatenate([k << (32 - d) for d, k, _ in levels])
    depths = np.concatenate([np.full(len(k), d) for d, k, _ in levels])
    index = np.empty(total, np.int64)
    index[np.lexsort((depths, first))] = np.arange(total)
    # child pointers, once every level's leaves are pushed
    off = 0
    for i, (_, keys, _) in enumerate(levels):
        ptr = U64(CHILD) | index[off:off + len(keys)].astype(U64)
        if i == 0:
            root[keys] = ptr
        else:
            _, pkeys, pslots = levels[i - 1]
            pslots[np.searchsorted(pkeys, keys >> STRIDE), keys & (CHUNK - 1)] = ptr
        off += len(keys)
    nodes = np.empty((total, CHUNK), U64)
    off = 0
    for _, keys, ch in levels:
        nodes[index[off:off + len(keys)]] = ch
        off += len(keys)
    return root, nodes.reshape(-1)


def trie_of(contents: Any) -> Trie:
    """The trie for a materialization's netc_addrs, built once (cached on the Contents)."""
    if contents.addr4 is None:
        contents.addr4 = build(contents.maps.get("netc_addrs", {}))
    return contents.addr4  # type: ignore[no-any-return]


def nodes_size(n_chunks: int) -> int:
    """netc_addr4_nodes' entries for a trie of n chunks, with room for syncs to rebuild subtrees."""
    return (n_chunks + n_chunks // 4 + 64) * CHUNK


# ---------------------------------------------------------------------------- the arrays in the kernel
def _mapping(m: Any, write: bool) -> mmap.mmap | None:
    """The array map's values mapped into this process, if the map was made BPF_F_MMAPABLE."""
    from netc.runtime.libbpf import map_info

    if not map_info(m.fd).map_flags & BPF_F_MMAPABLE:
        return None
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
    try:
        return mmap.mmap(m.fd, m.max_entries * SLOT.size, mmap.MAP_SHARED, prot)
    except OSError as exc:
        raise LoadError(f"map {m.name}: cannot map its {m.max_entries:,} slots into memory: "
                        f"{exc.strerror or exc}") from None


def _store(m: Any, values: np.ndarray) -> None:
    """Slots 0..len(values)-1 of an array map no program reads yet, all at once."""
    if len(values) > m.max_entries:
        raise LoadError(f"map {m.name}: {len(values):,} slots do not fit in {m.max_entries:,}")
    if not len(values):
        return
    mm = _mapping(m, write=True)
    if mm is None:   # an object compiled before the arrays were mappable: one batch update
        m.update_batch_raw(np.arange(len(values), dtype="<u4").tobytes(), values.astype("<u8").tobytes(),
                           len(values))
        return
    try:
        dst = np.frombuffer(mm, U64, count=len(values))
        dst[:] = values
        del dst
    finally:
        mm.close()


def read_array(m: Any) -> np.ndarray:
    """An array map's slots, all of them (a copy)."""
    mm = _mapping(m, write=False)
    if mm is None:
        return np.frombuffer(m.array_values(), "<u8").astype(U64)
    try:
        src = np.frombuffer(mm, U64, count=m.max_entries)
        out = src.copy()
        del src
    finally:
        mm.close()
    return out


def write(maps: Mapping[str, Any], contents: Any) -> None:
    """Fill a fresh pair of arrays (sized by the loader's map_sizes) for a materialization's
    netc_addrs: the chunks before the root slots that point to them, in both halves."""
    trie = trie_of(contents)
    _store(maps[NODES_MAP], trie.nodes)
    _store(maps[ROOT_MAP], np.concatenate([trie.root, trie.root]))


def half(root: np.ndarray, gen: int) -> np.ndarray:
    """The root slots a packet of generation `gen` reads."""
    return root[gen * ROOT_SLOTS:(gen + 1) * ROOT_SLOTS]


def in_half(roots: list[tuple[bytes, bytes]], gen: int) -> list[tuple[bytes, bytes]]:
    """Root entries (index within a half, value) as entries of generation `gen`'s half."""
    return [(INDEX.pack(INDEX.unpack(k)[0] + gen * ROOT_SLOTS), v) for k, v in roots]


def copy_half(root_map: Any, gen: int) -> None:
    """Make the other half what generation `gen`'s half is (settling, or recovering from a crash)."""
    root = read_array(root_map)
    other = 1 - gen
    entries = [(INDEX.pack(other * ROOT_SLOTS + i), SLOT.pack(int(v)))
               for i, v in enumerate(half(root, gen).tolist()) if v != root[other * ROOT_SLOTS + i]]
    if entries:
        root_map.update_batch(entries)


def read_arrays(root_map: Any, nodes_map: Any, gen: int = 0) -> Trie:
    """The arrays as the kernel holds them, generation `gen`'s half of the root (`netc explain
    --live` walks them)."""
    return Trie(half(read_array(root_map), gen).copy(), read_array(nodes_map))


def lookup(root: Callable[[int], int], node: Callable[[int], int], addr: int) -> tuple[int, int]:
    """The datapath's walk, over slot readers: (atom, class) for an IPv4 address (an int)."""
    s = root(addr >> 16)
    shift = ROOT_BITS
    while s & CHILD and shift > 0:
        shift -= STRIDE
        s = node((s & 0xFFFFFFFF) * CHUNK + ((addr >> shift) & (CHUNK - 1)))
    if s & CHILD:
        return 0, abi.CLASS_WORLD
    return unleaf(s)


# ---------------------------------------------------------------------------- one root slot's subtree
def _build(depth: int, default: int, prefixes: list[Prefix]) -> tuple[Any, ...]:
    """The chunk at `depth` bits (the root at 0): `prefixes` sorted by length, all longer than
    depth. Straightforward and recursive: what a sync rebuilds, and the reference for _layout."""
    width = ROOT_BITS if depth == 0 else STRIDE
    end = depth + width
    slots: list[Any] = [default] * (1 << width)
    deeper: dict[int, list[Prefix]] = defaultdict(list)
    for p in prefixes:
        plen, value, s = p
        i = (value >> (32 - end)) & ((1 << width) - 1)
        if plen <= end:
            n = 1 << (end - plen)
            slots[i:i + n] = [s] * n
        else:
            deeper[i].append(p)
    for i, sub in deeper.items():
        slots[i] = _build(end, slots[i], sub)
    return tuple(slots)


def reference(addrs: Mapping[bytes, bytes]) -> tuple[Any, ...]:
    """The whole trie as nested tuples, built the straightforward way (tests compare)."""
    prefixes = sorted(_prefix(k, v) for k, v in addrs.items() if is_v4(k))
    return _build(0, v4_default(addrs), prefixes)


def subtree(addrs: Mapping[bytes, bytes], deep: Iterable[bytes], r: int) -> Tree:
    """What root slot r holds: the longest entry of 16 bits or fewer over it, and below it the
    longer entries inside it (`deep`: their keys)."""
    s = v4_default(addrs)
    for plen in range(0, ROOT_BITS + 1):
        masked = (r << 16) & ((((1 << plen) - 1) << (32 - plen)) if plen else 0)
        hit = addrs.get(key4(plen, masked))
        if hit is not None:
            s = leaf_of(hit)
    prefixes = sorted(_prefix(k, addrs[k]) for k in deep)
    return _build(ROOT_BITS, s, prefixes) if prefixes else s


# ---------------------------------------------------------------------------- syncs
# a subtree where it lives: a leaf's slot value, or (chunk index, its 16 placed subtrees)
Placed = int | tuple[int, tuple[Any, ...]]
Write = tuple[int, int]   # (slot index, slot value)


def _same(p: Placed, t: Tree) -> bool:
    if isinstance(p, int) or isinstance(t, int):
        return p == t
    return all(_same(a, b) for a, b in zip(p[1], t, strict=True))


def _indices(p: Placed, out: list[int]) -> None:
    if not isinstance(p, int):
        out.append(p[0])
        for c in p[1]:
            _indices(c, out)


def _need(old: Placed | None, t: Tree) -> int:
    """Chunks placing t where old was takes (Layout._emit)."""
    if (old is not None and _same(old, t)) or isinstance(t, int):
        return 0
    olds = old[1] if old is not None and not isinstance(old, int) else (None,) * CHUNK
    return 1 + sum(_need(o, c) for o, c in zip(olds, t, strict=True))


def _logical(p: Placed) -> Tree:
    return p if isinstance(p, int) else tuple(_logical(c) for c in p[1])


def _slot(p: Placed) -> int:
    return p if isinstance(p, int) else CHILD | p[0]


def _used(root: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The chunks reachable from the root slots."""
    chunks = nodes.reshape(-1, CHUNK)
    out = []
    slots = root
    for _ in range(4):
        level = (slots[(slots & U64(CHILD)) != 0] & U64(0xFFFFFFFF)).astype(np.int64)
        level = level[level < len(chunks)]
        if not level.size:
            break
        out.append(level)
        slots = chunks[level].reshape(-1)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class Deep:
    """The v4-mapped keys longer than /16 under each root slot (what rebuilding its subtree
    needs): read from the netc_addrs the arrays were written for, then kept up to date by syncs."""

    def __init__(self, addrs: Mapping[bytes, bytes]):
        self.changed: dict[int, set[bytes]] = {}
        self._keys = list(addrs)
        if self._keys:
            keys, v4 = _parse(self._keys)
            sel = np.flatnonzero(v4 & (keys["plen"] > 96 + ROOT_BITS))
            top = keys["addr"][sel] >> 16
            order = np.argsort(top, kind="stable")
            self._top, self._idx = top[order], sel[order]
        else:
            self._top = self._idx = np.zeros(0, np.int64)

    def get(self, r: int) -> set[bytes]:
        if r in self.changed:
            return self.changed[r]
        lo, hi = np.searchsorted(self._top, [r, r + 1])
        return {self._keys[i] for i in self._idx[lo:hi].tolist()}


@dataclass
class Layout:
    """Where the trie lives in the arrays: a copy of both arrays as the kernel holds them, the free
    chunks, and the keys under each root slot. Kept by a Deployment between syncs."""

    capacity: int                                  # chunks netc_addr4_nodes has room for
    root_slots: np.ndarray                         # uint64[65536]: netc_addr4_root
    node_slots: np.ndarray                         # uint64[16 * capacity]: netc_addr4_nodes
    free: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)             # free from the next sync on
    deep: Deep = field(default_factory=lambda: Deep({}))

    @classmethod
    def fresh(cls, addrs: Mapping[bytes, bytes], capacity: int, trie: Trie | None = None) -> Layout:
        """The layout `write` gives a fresh pair of arrays with room for `capacity` chunks."""
        trie = trie if trie is not None else build(addrs)
        if trie.chunks > capacity:
            raise LoadError(f"{trie.chunks:,} chunks do not fit in {capacity:,}")
        nodes = np.zeros(capacity * CHUNK, U64)
        nodes[:len(trie.nodes)] = trie.nodes
        return cls(capacity, trie.root.copy(), nodes, list(range(capacity - 1, trie.chunks - 1, -1)), [], Deep(addrs))

    @classmethod
    def read(cls, root_map: Any, nodes_map: Any, addrs: Mapping[bytes, bytes], gen: int = 0) -> Layout:
        """The layout the kernel's arrays hold now, in generation `gen`'s half (`addrs`: the
        netc_addrs they were written for). A chunk either half reaches is taken."""
        both, nodes = read_array(root_map), read_array(nodes_map)
        root = half(both, gen).copy()
        capacity = len(nodes) // CHUNK
        taken = np.zeros(capacity, bool)
        taken[_used(both, nodes)] = True
        free = np.flatnonzero(~taken)[::-1].tolist()
        return cls(capacity, root, nodes, free, [], Deep(addrs))

    def placed(self, slot: int) -> Placed:
        """The subtree a slot value points to, with its chunk indices."""
        if not slot & CHILD:
            return slot
        idx = slot & 0xFFFFFFFF
        return idx, tuple(self.placed(s) for s in self.node_slots[idx * CHUNK:(idx + 1) * CHUNK].tolist())

    def trees(self) -> list[Tree]:
        """Every root slot's subtree (tests compare them with `reference`)."""
        return [_logical(self.placed(s)) for s in self.root_slots.tolist()]

    def used(self) -> list[int]:
        out: list[int] = []
        for s in self.root_slots.tolist():
            _indices(self.placed(s), out)
        return out

    def _emit(self, old: Placed | None, tree: Tree, writes: list[Write], gone: list[int]) -> Placed:
        """Place `tree` where `old` was: chunks whose contents are unchanged stay where they are
        (no packet sees a difference); a changed chunk goes to a free one, written before its
        parent. The chunks `old` no longer uses go to `gone`."""
        if old is not None and _same(old, tree):
            return old
        if isinstance(tree, int):
            if old is not None:
                _indices(old, gone)
            return tree
        idx = self.free.pop()
        olds: tuple[Any, ...] = (None,) * CHUNK
        if old is not None and not isinstance(old, int):
            olds = old[1]
            gone.append(old[0])
        children = tuple(self._emit(o, t, writes, gone) for o, t in zip(olds, tree, strict=True))
        base = idx * CHUNK
        writes.extend((base + i, _slot(c)) for i, c in enumerate(children))
        return idx, children

    def plan(self, old: Mapping[bytes, bytes], new: Mapping[bytes, bytes], changed: Iterable[bytes],
             stale: Iterable[bytes]) -> Update:
        """What a sync changes for netc_addrs going from `old` to `new` (`changed`, `stale`: the keys
        that differ): `short` is set when the free chunks may not suffice (nothing may be written then)."""
        touched: set[int] = set()
        deep: dict[int, set[bytes]] = {}
        keys = list(changed) + list(stale)
        for k in keys:
            if not is_v4(k):
                continue
            plen, value, _ = _prefix(k, old.get(k) or new[k])
            if plen > ROOT_BITS:
                r = value >> 16
                touched.add(r)
                if r not in deep:
                    deep[r] = set(self.deep.get(r))
                if k in new:
                    deep[r].add(k)
                else:
                    deep[r].discard(k)
            else:
                lo = value >> 16
                touched.update(range(lo, lo + (1 << (ROOT_BITS - plen))))
        if any(not is_v4(k) and abi.ADDR_KEY.unpack(k)[0] < 96 for k in keys):
            touched = set(range(ROOT_SLOTS))   # the default under every IPv4 address may have moved
        trees = {r: subtree(new, deep[r] if r in deep else self.deep.get(r), r) for r in sorted(touched)}
        olds = {r: self.placed(int(self.root_slots[r])) for r in trees}
        trees = {r: t for r, t in trees.items() if not _same(olds[r], t)}
        need = sum(_need(olds[r], t) for r, t in trees.items())
        return Update(trees, deep, need, short=need > len(self.free) + len(self.retired), olds=olds)

    def plan_change(self, old: Mapping[bytes, bytes], new: Mapping[bytes, bytes]) -> Update:
        """plan() for netc_addrs going from `old` to `new` (every key compared)."""
        return self.plan(old, new, [k for k, v in new.items() if old.get(k) != v], [k for k in old if k not in new])

    def apply(self, upd: Update) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """(node entries, root entries) to write in that order; the layout moves to the new state."""
        assert not upd.short
        self.free.extend(self.retired)   # retired by the previous sync: no packet is still there
        self.retired = []
        nodes: list[Write] = []
        roots: list[Write] = []
        for r, t in upd.trees.items():
            p = self._emit(upd.olds[r], t, nodes, self.retired)
            roots.append((r, _slot(p)))
        for i, s in nodes:
            self.node_slots[i] = s
        for r, s in roots:
            self.root_slots[r] = s
        self.deep.changed.update(upd.deep)
        return ([(INDEX.pack(i), SLOT.pack(s)) for i, s in nodes],
                [(INDEX.pack(r), SLOT.pack(s)) for r, s in roots])


@dataclass
class Update:
    trees: dict[int, Tree]
    deep: dict[int, set[bytes]]
    need: int
    short: bool
    olds: dict[int, Placed] = field(default_factory=dict)
