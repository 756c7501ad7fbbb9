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


def _readers(nodes: list[tuple[bytes, bytes]], roots: list[tuple[bytes, bytes]]):  # type: ignore[no-untyped-def]
    n, r = dict(nodes), dict(roots)

    def get(t):  # type: ignore[no-untyped-def]
        return lambda i: addr4.SLOT.unpack(t[addr4.INDEX.pack(i)])[0] if addr4.INDEX.pack(i) in t else 0
    return get(r), get(n)


def test_trie_agrees_with_the_lpm() -> None:
    rng = random.Random(4)
    for case in range(12):
        addrs = _random_addrs(rng, rng.randrange(1, 300), v6_default=case % 3 == 0)
        root = addr4.build(addrs)
        _, nodes, roots = addr4.Layout.fill(addrs, addr4.count_chunks(root), root)
        root_get, node_get = _readers(nodes, roots)
        for v in _probe(rng, addrs):
            assert addr4.lookup(root_get, node_get, v) == _lpm(addrs, v), (case, hex(v))


def test_sync_rebuilds_only_what_changed_and_stays_exact() -> None:
    rng = random.Random(7)
    addrs = _random_addrs(rng, 200)
    root = addr4.build(addrs)
    lay, nodes, roots = addr4.Layout.fill(addrs, addr4.nodes_size(addr4.count_chunks(root)) // addr4.CHUNK, root)
    n, r = dict(nodes), dict(roots)
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
        n.update(wn)
        r.update(wr)
        addrs = new
        assert tuple(lay.root) == addr4.build(addrs)
        root_get, node_get = _readers(list(n.items()), list(r.items()))
        for v in _probe(rng, addrs):
            assert addr4.lookup(root_get, node_get, v) == _lpm(addrs, v), hex(v)
        # chunks in use are disjoint, and none is both used and free
        used = lay.used()
        assert len(used) == len(set(used))
        assert not set(used) & set(lay.free) and not set(used) & set(lay.retired)
