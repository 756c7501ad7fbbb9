"""The IPv4 multibit trie answers exactly what the LPM trie over the same entries answers."""

from __future__ import annotations

import ipaddress
import random

from netc.runtime import abi, addr4


def _lpm(addrs: dict[bytes, bytes], value: int) -> tuple[int, int]:
    v = 0xFFFF << 32 | value
    for plen in range(128, -1, -1):
        masked = v & (((1 << plen) - 1) << (128 - plen)) if plen else 0
        hit = addrs.get(abi.ADDR_KEY.pack(plen, masked.to_bytes(16, "big")))
        if hit is not None:
            return abi.ADDR_INFO.unpack(hit)  # type: ignore[return-value]
    return 0, abi.CLASS_WORLD


def _random_addrs(rng: random.Random, n: int, v6_default: bool = False) -> dict[bytes, bytes]:
    out = {}
    for i in range(n):
        plen = rng.choice([0, 1, 7, 8, 12, 15, 16, 17, 19, 20, 23, 24, 25, 27, 28, 29, 31, 32, 32, 32])
        value = rng.getrandbits(32) & ((((1 << plen) - 1) << (32 - plen)) if plen else 0)
        if rng.random() < 0.5:   # keep them near each other so they nest
            value = (0x0A000000 | (value & 0xFFFF)) & ((((1 << plen) - 1) << (32 - plen)) if plen else 0)
        out[addr4.key4(plen, value)] = abi.ADDR_INFO.pack(i + 1, rng.randrange(3))
    if v6_default:
        out[abi.addr_key(ipaddress.ip_network("::/0"))] = abi.ADDR_INFO.pack(9999, abi.CLASS_WORLD)
        out[abi.addr_key(ipaddress.ip_network("fd00::/8"))] = abi.ADDR_INFO.pack(9998, abi.CLASS_WORLD)
    return out


def _probe(rng: random.Random, addrs: dict[bytes, bytes]) -> list[int]:
    near = [int.from_bytes(abi.ADDR_KEY.unpack(k)[1][12:], "big") for k in addrs if addr4.is_v4(k)]
    out = [rng.getrandbits(32) for _ in range(300)]
    for v in near[:300]:
        out += [v, v ^ 1, v | 0xFF, (v + 0x10) & 0xFFFFFFFF]
    return out


def _readers(root, nodes):  # type: ignore[no-untyped-def]
    def get(a):  # type: ignore[no-untyped-def]
        return lambda i: int(a[i]) if i < len(a) else 0
    return get(root), get(nodes)


def _reference_arrays(addrs: dict[bytes, bytes]) -> tuple[list[int], list[int]]:
    """The arrays laid out the straightforward way: the recursive trie, chunks numbered as a
    depth-first walk meets them."""
    nodes: list[int] = []

    def emit(t):  # type: ignore[no-untyped-def]
        if isinstance(t, int):
            return t
        idx = len(nodes) // addr4.CHUNK
        nodes.extend([0] * addr4.CHUNK)
        for i, c in enumerate(t):
            nodes[idx * addr4.CHUNK + i] = emit(c)
        return addr4.CHILD | idx
    root = [emit(t) for t in addr4.reference(addrs)]
    return root, nodes


def _any_prefixes(rng: random.Random, n: int) -> dict[bytes, bytes]:
    """Any length /0../32, overlapping often (a few bases), sometimes the ::ffff:0:0/96 world
    entry (the /0), sometimes IPv6 entries over it."""
    out = {}
    bases = [rng.getrandbits(32) for _ in range(3)]
    for _ in range(n):
        plen = rng.randrange(33)
        value = rng.choice(bases) ^ (rng.getrandbits(8) << rng.randrange(25)) if rng.random() < 0.8 else rng.getrandbits(32)
        value &= (((1 << plen) - 1) << (32 - plen)) if plen else 0
        out[addr4.key4(plen, value)] = abi.ADDR_INFO.pack(rng.randrange(1, 1 << 24), rng.randrange(4))
    if rng.random() < 0.5:
        out[addr4.key4(0, 0)] = abi.ADDR_INFO.pack(0, abi.CLASS_WORLD)
    if rng.random() < 0.3:
        out[abi.addr_key(ipaddress.ip_network("::/0"))] = abi.ADDR_INFO.pack(9999, abi.CLASS_WORLD)
    if rng.random() < 0.3:
        out[abi.addr_key(ipaddress.ip_network("::fffe:0:0/95"))] = abi.ADDR_INFO.pack(9997, abi.CLASS_HOST)
    return out


def test_fast_layout_is_the_reference_layout() -> None:
    rng = random.Random(11)
    for case in range(60):
        addrs = _any_prefixes(rng, rng.choice([1, 5, 40, 300, 2000]))
        trie = addr4.build(addrs)
        root, nodes = _reference_arrays(addrs)
        assert trie.root.tolist() == root, case
        assert trie.nodes.tolist() == nodes, case
        assert trie.lpm == addr4.lpm_entries(addrs) == {k: v for k, v in addrs.items() if not addr4.is_v4(k)}
        for v in _probe(rng, addrs)[:200]:
            assert trie.lookup(v) == _lpm(addrs, v), (case, hex(v))
    assert addr4.build({}).root.tolist() == [0] * addr4.ROOT_SLOTS


def test_trie_agrees_with_the_lpm() -> None:
    rng = random.Random(4)
    for case in range(12):
        addrs = _random_addrs(rng, rng.randrange(1, 300), v6_default=case % 3 == 0)
        trie = addr4.build(addrs)
        root_get, node_get = _readers(trie.root, trie.nodes)
        for v in _probe(rng, addrs):
            assert addr4.lookup(root_get, node_get, v) == _lpm(addrs, v), (case, hex(v))


def test_sync_rebuilds_only_what_changed_and_stays_exact() -> None:
    rng = random.Random(7)
    addrs = _random_addrs(rng, 200)
    trie = addr4.build(addrs)
    lay = addr4.Layout.fresh(addrs, addr4.nodes_size(trie.chunks) // addr4.CHUNK)
    # what the kernel holds: the fresh arrays, then every write a sync makes
    kroot, knodes = lay.root_slots.copy(), lay.node_slots.copy()
    assert lay.trees() == list(addr4.reference(addrs))
    for _ in range(20):
        new = dict(addrs)
        for k in rng.sample(sorted(new), 5):
            del new[k]
        for i in range(5):
            value = 0x0A000000 | rng.getrandbits(16)
            new[addr4.key4(32, value)] = abi.ADDR_INFO.pack(5000 + i, abi.CLASS_CONTAINER)
        new[addr4.key4(8, 0x0B000000)] = abi.ADDR_INFO.pack(77, abi.CLASS_WORLD)
        changed = [k for k, v in new.items() if addrs.get(k) != v]
        stale = [k for k in addrs if k not in new]
        upd = lay.plan(addrs, new, changed, stale)
        assert not upd.short
        wn, wr = lay.apply(upd)
        for table, writes in ((knodes, wn), (kroot, wr)):
            for k, v in writes:
                table[addr4.INDEX.unpack(k)[0]] = addr4.SLOT.unpack(v)[0]
        addrs = new
        assert (kroot == lay.root_slots).all() and (knodes == lay.node_slots).all()
        assert lay.trees() == list(addr4.reference(addrs))
        root_get, node_get = _readers(kroot, knodes)
        for v in _probe(rng, addrs):
            assert addr4.lookup(root_get, node_get, v) == _lpm(addrs, v), hex(v)
        # chunks in use are disjoint, and none is both used and free
        used = lay.used()
        assert len(used) == len(set(used))
        assert not set(used) & set(lay.free) and not set(used) & set(lay.retired)
        assert sorted(addr4._used(lay.root_slots, lay.node_slots).tolist()) == sorted(used)
