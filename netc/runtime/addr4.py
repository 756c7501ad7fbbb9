"""IPv4 remote addresses in a multibit trie laid out in two array maps (docs/datapath.md).

netc_addrs (an LPM trie) maps every remote address to its atom and identity class. For IPv4 the
kernel's LPM trie visits one node per branch point, 16-19 of them at 100,000 rules; the datapath
instead reads IPv4 (v4-mapped) addresses from a multibit trie in ARRAY maps, whose lookups the
verifier inlines: strides 16-4-4-4-4, leaf-pushed, so a lookup is at most five array reads.

- netc_addr4_root: 65,536 slots indexed by the address's top 16 bits.
- netc_addr4_nodes: chunks of 16 slots, one per 4-bit stride below; chunk c is entries
  16c..16c+15.
- A slot is one 64-bit word: bit 63 set: a child chunk, its index in the low 32 bits; clear: a
  leaf, atom in the low 32 bits and identity class in bits 32-39. 0 is what an LPM miss gives
  (atom 0, the world).

The answer is exactly the LPM's: every v4-mapped entry of netc_addrs is painted into the slots its
prefix covers, longer prefixes over shorter ones, and the longest entry shorter than 96 bits that
covers ::ffff:0:0/96 (if any) is the default under them. Those v4-mapped entries are not written to
the LPM trie; the datapath sends every v4-mapped key (IPv4 packets, and IPv6 packets whose remote
is ::ffff:a.b.c.d) to the arrays.

Updates (`netc sync`) rebuild the subtree under each root slot whose prefixes changed into chunks
that no packet can reach, write them, and only then the root slot (one aligned 64-bit word) that
points to them; the chunks it pointed to before are reused from the next sync on, never in the
same one.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netc.runtime import abi

ROOT_MAP = "netc_addr4_root"
NODES_MAP = "netc_addr4_nodes"
ARRAY_MAPS = (ROOT_MAP, NODES_MAP)
ROOT_BITS = 16
STRIDE = 4
CHUNK = 1 << STRIDE
ROOT_SLOTS = 1 << ROOT_BITS
CHILD = 1 << 63
SLOT = struct.Struct("<Q")
INDEX = struct.Struct("<I")
V4_MAPPED = b"\x00" * 10 + b"\xff\xff"

# a leaf's slot value, or a chunk: a tuple of 16 subtrees
Tree = int | tuple[Any, ...]
Prefix = tuple[int, int, int]   # IPv4 prefix length, masked IPv4 value, leaf slot


def leaf(atom: int, klass: int) -> int:
    return (klass & 0xFF) << 32 | (atom & 0xFFFFFFFF)


def unleaf(slot: int) -> tuple[int, int]:
    return slot & 0xFFFFFFFF, (slot >> 32) & 0xFF


def is_v4(key: bytes) -> bool:
    """A netc_addrs key the arrays answer for (a prefix inside ::ffff:0:0/96, 96 bits or longer)."""
    return key[4:16] == V4_MAPPED and abi.ADDR_KEY.unpack(key)[0] >= 96


def lpm_entries(addrs: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The netc_addrs entries that stay in the LPM trie."""
    return {k: v for k, v in addrs.items() if not is_v4(k)}


def key4(plen: int, value: int) -> bytes:
    return abi.ADDR_KEY.pack(plen + 96, V4_MAPPED + value.to_bytes(4, "big"))


def _prefix(key: bytes, info: bytes) -> Prefix:
    plen, addr = abi.ADDR_KEY.unpack(key)
    return plen - 96, int.from_bytes(addr[12:], "big"), leaf(*abi.ADDR_INFO.unpack(info))


def v4_default(addrs: Mapping[bytes, bytes]) -> int:
    """The slot of an IPv4 address no v4-mapped entry covers: the longest shorter entry over
    ::ffff:0:0/96, as the LPM would answer, else a miss (0)."""
    base = int.from_bytes(V4_MAPPED + b"\x00" * 4, "big")
    for plen in range(95, -1, -1):
        masked = base & (((1 << plen) - 1) << (128 - plen)) if plen else 0
        hit = addrs.get(abi.ADDR_KEY.pack(plen, masked.to_bytes(16, "big")))
        if hit is not None:
            return leaf(*abi.ADDR_INFO.unpack(hit))
    return 0


def _build(depth: int, default: int, prefixes: list[Prefix]) -> tuple[Any, ...]:
    """The chunk at `depth` bits (the root at 0): `prefixes` sorted by length, all longer than depth."""
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


def build(addrs: Mapping[bytes, bytes]) -> tuple[Any, ...]:
    """The whole trie for netc_addrs' contents: the root's 65,536 subtrees."""
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
            s = leaf(*abi.ADDR_INFO.unpack(hit))
    prefixes = sorted(_prefix(k, addrs[k]) for k in deep)
    return _build(ROOT_BITS, s, prefixes) if prefixes else s


def root_of(contents: Any) -> tuple[Any, ...]:
    """The trie for a materialization's netc_addrs, built once (cached on the Contents)."""
    if contents.addr4_root is None:
        contents.addr4_root = build(contents.maps.get("netc_addrs", {}))
    return contents.addr4_root  # type: ignore[no-any-return]


def write(maps: Mapping[str, Any], contents: Any) -> None:
    """Fill a fresh pair of arrays (sized by the loader's map_sizes) for a materialization's
    netc_addrs: every chunk before the root slots that point to it."""
    root = root_of(contents)
    _, nodes, roots = Layout.fill(contents.maps.get("netc_addrs", {}), maps[NODES_MAP].max_entries // CHUNK, root)
    maps[NODES_MAP].update_batch(nodes)
    maps[ROOT_MAP].update_batch(roots)


def chunks(tree: Tree) -> int:
    if isinstance(tree, int):
        return 0
    return 1 + sum(chunks(t) for t in tree if not isinstance(t, int))


def count_chunks(root: tuple[Any, ...]) -> int:
    return sum(chunks(t) for t in root if not isinstance(t, int))


def nodes_size(n_chunks: int) -> int:
    """netc_addr4_nodes' entries for a trie of n chunks, with room for syncs to rebuild subtrees."""
    return (n_chunks + n_chunks // 4 + 64) * CHUNK


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


def read_arrays(root_map: Any, nodes_map: Any) -> dict[str, dict[bytes, bytes]]:
    """The root array and the chunks reachable from it, read back from the kernel."""
    root_raw = root_map.array_values()
    nodes_raw = nodes_map.array_values()
    root: dict[bytes, bytes] = {}
    nodes: dict[bytes, bytes] = {}
    todo: list[int] = []
    for r in range(ROOT_SLOTS):
        raw = root_raw[r * SLOT.size:(r + 1) * SLOT.size] or SLOT.pack(0)
        root[INDEX.pack(r)] = raw
        slot = SLOT.unpack(raw)[0]
        if slot & CHILD:
            todo.append(slot & 0xFFFFFFFF)
    while todo:
        idx = todo.pop()
        for i in range(idx * CHUNK, (idx + 1) * CHUNK):
            raw = nodes_raw[i * SLOT.size:(i + 1) * SLOT.size] or SLOT.pack(0)
            nodes[INDEX.pack(i)] = raw
            slot = SLOT.unpack(raw)[0]
            if slot & CHILD:
                todo.append(slot & 0xFFFFFFFF)
    return {ROOT_MAP: root, NODES_MAP: nodes}


# a subtree where it lives: a leaf's slot value, or (chunk index, its 16 placed subtrees)
Placed = int | tuple[int, tuple[Any, ...]]


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


@dataclass
class Layout:
    """Where the trie lives in the arrays: each root slot's subtree with its chunk indices, and the
    free chunks. Kept by a Deployment between syncs (read back from the kernel when it starts)."""

    capacity: int                                  # chunks netc_addr4_nodes has room for
    placed: list[Placed] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)             # free from the next sync on
    deep: dict[int, set[bytes]] = field(default_factory=lambda: defaultdict(set))

    @property
    def root(self) -> list[Tree]:
        return [_logical(p) for p in self.placed]

    def used(self) -> list[int]:
        out: list[int] = []
        for p in self.placed:
            _indices(p, out)
        return out

    def _emit(self, old: Placed | None, tree: Tree, writes: list[tuple[bytes, bytes]],
              gone: list[int]) -> Placed:
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
        writes.extend((INDEX.pack(base + i), SLOT.pack(_slot(c))) for i, c in enumerate(children))
        return idx, children

    @classmethod
    def fill(cls, addrs: Mapping[bytes, bytes], capacity: int,
             root: tuple[Any, ...] | None = None) -> tuple[Layout, list[tuple[bytes, bytes]],
                                                            list[tuple[bytes, bytes]]]:
        """A layout for a fresh pair of arrays: (layout, node entries, root entries)."""
        if root is None:
            root = build(addrs)
        lay = cls(capacity, free=list(range(capacity - 1, -1, -1)))
        lay.index(addrs)
        nodes: list[tuple[bytes, bytes]] = []
        roots: list[tuple[bytes, bytes]] = []
        for r, t in enumerate(root):
            p = lay._emit(None, t, nodes, [])
            lay.placed.append(p)
            roots.append((INDEX.pack(r), SLOT.pack(_slot(p))))
        return lay, nodes, roots

    def index(self, addrs: Mapping[bytes, bytes]) -> None:
        self.deep = defaultdict(set)
        for k in addrs:
            if is_v4(k):
                plen, value, _ = _prefix(k, addrs[k])
                if plen > ROOT_BITS:
                    self.deep[value >> 16].add(k)

    @classmethod
    def read(cls, root_map: Any, nodes_map: Any, addrs: Mapping[bytes, bytes]) -> Layout:
        """The layout the kernel's arrays hold now."""
        capacity = nodes_map.max_entries // CHUNK
        root = memoryview(root_map.array_values()).cast("Q")
        nodes = memoryview(nodes_map.array_values()).cast("Q")
        lay = cls(capacity)
        lay.index(addrs)

        def walk(slot: int) -> Placed:
            if not slot & CHILD:
                return slot
            idx = slot & 0xFFFFFFFF
            return idx, tuple(walk(nodes[i]) for i in range(idx * CHUNK, (idx + 1) * CHUNK))

        lay.placed = [walk(root[r]) for r in range(ROOT_SLOTS)]
        taken = set(lay.used())
        lay.free = [i for i in range(capacity - 1, -1, -1) if i not in taken]
        return lay

    def plan(self, old: Mapping[bytes, bytes], new: Mapping[bytes, bytes], changed: Iterable[bytes],
             stale: Iterable[bytes]) -> Update:
        """What a sync changes for netc_addrs going from `old` to `new` (`changed`, `stale`: the keys
        that differ): `short` is set when the free chunks may not suffice (nothing may be written then)."""
        touched: set[int] = set()
        deep = {r: set(ks) for r, ks in self.deep.items()}
        keys = list(changed) + list(stale)
        for k in keys:
            if not is_v4(k):
                continue
            plen, value, _ = _prefix(k, old.get(k) or new[k])
            if plen > ROOT_BITS:
                touched.add(value >> 16)
                if k in new:
                    deep.setdefault(value >> 16, set()).add(k)
                else:
                    deep.get(value >> 16, set()).discard(k)
            else:
                lo = value >> 16
                touched.update(range(lo, lo + (1 << (ROOT_BITS - plen))))
        if any(not is_v4(k) and abi.ADDR_KEY.unpack(k)[0] < 96 for k in keys):
            touched = set(range(ROOT_SLOTS))   # the default under every IPv4 address may have moved
        trees = {r: subtree(new, deep.get(r, ()), r) for r in sorted(touched)}
        trees = {r: t for r, t in trees.items() if not _same(self.placed[r], t)}
        need = sum(_need(self.placed[r], t) for r, t in trees.items())
        return Update(trees, deep, need, short=need > len(self.free) + len(self.retired))

    def apply(self, upd: Update) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """(node entries, root entries) to write in that order; the layout moves to the new state."""
        assert not upd.short
        self.free.extend(self.retired)   # retired by the previous sync: no packet is still there
        self.retired = []
        nodes: list[tuple[bytes, bytes]] = []
        roots: list[tuple[bytes, bytes]] = []
        for r, t in upd.trees.items():
            p = self._emit(self.placed[r], t, nodes, self.retired)
            self.placed[r] = p
            roots.append((INDEX.pack(r), SLOT.pack(_slot(p))))
        self.deep = defaultdict(set, {r: ks for r, ks in upd.deep.items() if ks})
        return nodes, roots


@dataclass
class Update:
    trees: dict[int, Tree]
    deep: dict[int, set[bytes]]
    need: int
    short: bool
