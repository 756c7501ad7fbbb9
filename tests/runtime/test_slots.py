"""Two slots and a generation (runtime/slots.py): a change is staged without changing any live answer,
one flip makes every new answer live, and settling changes none. Checked against a Python model of
the kernel's LPM lookup after every single write."""

from __future__ import annotations

import random

import pytest

from netc.runtime import abi, slots

V4 = b"\x00" * 10 + b"\xff\xff"


def key(plen: int, value: int) -> bytes:
    """An IPv4 prefix as netc_addrs keys it (masked, like the materializer's)."""
    value &= ((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1) if plen else 0
    return abi.ADDR_KEY.pack(plen + 96, V4 + value.to_bytes(4, "big"))


def lpm(table: dict[bytes, bytes], addr: int) -> bytes | None:
    """The kernel's answer: the value of the longest prefix containing addr."""
    for plen in range(32, -1, -1):
        hit = table.get(key(plen, addr))
        if hit is not None:
            return hit
    return None


ZERO = bytes(abi.ADDR_INFO.size)


def live_answer(kernel: dict[bytes, bytes], gen: int, addr: int) -> bytes:
    """What the datapath reads: the found entry's slot `gen`; a miss reads as a zeroed slot."""
    raw = lpm(kernel, addr)
    return ZERO if raw is None else slots.decode("netc_addrs", raw, gen)


def want(table: dict[bytes, bytes], addr: int) -> bytes:
    got = lpm(table, addr)
    return ZERO if got is None else got


def random_table(rng: random.Random, n: int) -> dict[bytes, bytes]:
    out = {}
    for _ in range(n):
        plen = rng.choice([0, 8, 12, 16, 20, 24, 28, 30, 32])
        out[key(plen, rng.getrandbits(32) & 0xFF0000FF | 0x0A000000)] = \
            abi.ADDR_INFO.pack(rng.randint(1, 5), rng.choice([abi.CLASS_WORLD, abi.CLASS_CONTAINER]))
    return out


def probes(*tables: dict[bytes, bytes]) -> list[int]:
    """Addresses at the edges of every prefix, and a few around them."""
    out = set()
    for t in tables:
        for k in t:
            plen, addr = abi.ADDR_KEY.unpack(k)
            lo = int.from_bytes(addr[12:], "big")
            hi = lo | ((1 << (128 - plen)) - 1)
            out.update({lo, hi, (lo - 1) & 0xFFFFFFFF, (hi + 1) & 0xFFFFFFFF})
    return sorted(out)


@pytest.mark.parametrize("seed", range(40))
def test_every_write_keeps_the_live_answer_and_the_flip_gives_the_new_one(seed):
    rng = random.Random(seed)
    old = random_table(rng, rng.randint(0, 12))
    new = dict(old)
    for k in rng.sample(sorted(new), k=min(len(new), rng.randint(0, 4))):
        del new[k]                                   # removed keys
    new.update(random_table(rng, rng.randint(0, 5)))  # inserted (and some changed) keys
    for k in rng.sample(sorted(new), k=min(len(new), 2)):
        new[k] = abi.ADDR_INFO.pack(rng.randint(6, 9), abi.CLASS_HOST)   # changed values
    live = rng.randint(0, 1)
    kernel = {k: slots.both("netc_addrs", v) for k, v in old.items()}
    addrs = probes(old, new)

    def check(gen: int, table: dict[bytes, bytes]) -> None:
        for a in addrs:
            assert live_answer(kernel, gen, a) == want(table, a), hex(a)

    d = slots.diff("netc_addrs", old, new, live)
    check(live, old)
    for k, v in d.stage:
        kernel[k] = v
        check(live, old)          # nothing a packet of the live generation sees has changed
    check(1 - live, new)          # the flip: every answer is the new one at once
    for k, v in d.settle:
        kernel[k] = v
        check(1 - live, new)
    for k in d.delete:
        del kernel[k]
        check(1 - live, new)
    assert kernel == {k: slots.both("netc_addrs", v) for k, v in new.items()}
    assert d.inserted == len(set(new) - set(old))
    assert d.changed == sum(1 for k in new if k in old and old[k] != new[k])
    assert len(d.delete) == len(set(old) - set(new))


def test_only_the_entries_that_change_are_written():
    old = {key(8, 0x0A000000): abi.ADDR_INFO.pack(1, 0), key(24, 0x0A010100): abi.ADDR_INFO.pack(2, 0)}
    new = dict(old)
    new[key(24, 0x0A010100)] = abi.ADDR_INFO.pack(3, 0)
    d = slots.diff("netc_addrs", old, new, 0)
    assert [k for k, _ in d.stage] == [key(24, 0x0A010100)] and not d.delete
    # live slot 0 keeps the old value, slot 1 gets the new one
    assert slots.decode("netc_addrs", d.stage[0][1], 0) == abi.ADDR_INFO.pack(2, 0)
    assert slots.decode("netc_addrs", d.stage[0][1], 1) == abi.ADDR_INFO.pack(3, 0)


def test_an_inserted_prefix_answers_what_the_old_table_answered_there():
    cover = abi.ADDR_INFO.pack(1, abi.CLASS_CONTAINER)
    old = {key(8, 0x0A000000): cover}
    new = {**old, key(16, 0x0A010000): abi.ADDR_INFO.pack(2, 0)}
    (k, v), = slots.diff("netc_addrs", old, new, 1).stage
    assert slots.decode("netc_addrs", v, 1) == cover      # live slot: the /8's answer
    assert slots.decode("netc_addrs", v, 0) == abi.ADDR_INFO.pack(2, 0)


def test_endpoints_keep_their_id_and_track_while_either_slot_isolates():
    before = abi.endpoint(3, 7, (True, False), (True, False))
    after = abi.endpoint(4, 7, (False, False), (False, False))
    raw = slots.encode("netc_endpoints", before, after)
    eid, tracked, _, _ = abi.ENDPOINT_SLOTS.unpack(raw)
    assert (eid, tracked) == (7, 1)
    assert slots.decode("netc_endpoints", raw, 0) == before
    assert slots.decode("netc_endpoints", raw, 1) == after
    assert abi.ENDPOINT_SLOTS.unpack(slots.both("netc_endpoints", after))[1] == 0


def test_groups_that_appear_or_go_are_staged_against_nothing():
    v = abi.verdict(abi.rank(0, False), 17, abi.ACTION_ALLOW, 0)
    added = {abi.rule_key(2, 5, 0, 6, 443, 16): v}
    gone = {abi.rule_key(1, 5, 0, 6, 80, 16): v}
    d = slots.diff_groups("netc_rules", [added], [gone], 0)
    staged = dict(d.stage)
    assert slots.decode("netc_rules", staged[next(iter(added))], 0) == bytes(abi.VERDICT.size)
    assert slots.decode("netc_rules", staged[next(iter(added))], 1) == v
    assert slots.decode("netc_rules", staged[next(iter(gone))], 1) == bytes(abi.VERDICT.size)
    assert d.delete == list(gone)
