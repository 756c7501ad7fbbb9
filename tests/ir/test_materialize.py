"""Materialized maps, replayed in Python, agree with the reference semantics (no kernel needed)."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netc import api
from netc.ir.eval import Packet, Reason, evaluate_side
from netc.ir.nodes import Direction
from netc.runtime import abi
from netc.runtime.inventory import Container, Inventory
from netc.runtime.materialize import materialize
from netc.runtime.simulate import classify
from tests.netp_strategies import LABEL_KEYS, LABEL_VALUES, program


def random_inventory(rng: random.Random) -> Inventory:
    containers = []
    for i in range(rng.randint(1, 5)):
        labels = {k: rng.choice(LABEL_VALUES) for k in rng.sample(LABEL_KEYS, rng.randint(0, 3))}
        v4 = f"10.{rng.choice([0, 1])}.{rng.choice([0, 1, 2])}.{10 + i}"
        v6 = f"fd00::{i + 1:x}"
        containers.append(Container(f"c{i}", (v4, v6), labels, ifindex=100 + i))
    return Inventory(containers, host_addresses=("10.0.0.1", "fd00::ffff"))


def random_packet(rng: random.Random, inv: Inventory, c: Container, direction: Direction) -> Packet:
    version = rng.choice([4, 6])
    own = next(a for a in c.addresses if ipaddress.ip_address(a).version == version)
    pool4 = ["10.0.0.1", "10.1.0.5", "10.1.1.7", "192.168.0.9", "8.8.8.8", "10.0.1.200", "10.0.3.3"]
    pool6 = ["fd00::ffff", "fd00::1:2", "2001:db8::5", "fd00:0:0:1::9", "fe80::1"]
    others = [a for o in inv.containers for a in o.addresses if ipaddress.ip_address(a).version == version]
    remote = rng.choice((pool4 if version == 4 else pool6) + others)
    proto = rng.choice([6, 17, 132, 1 if version == 4 else 58, 47])
    src, dst = (remote, own) if direction is Direction.INGRESS else (own, remote)
    frag = rng.random() < 0.1
    if proto in (1, 58):
        t = rng.choice([0, 3, 8, 11] if proto == 1 else [1, 128, 129, 135])
        return Packet(proto, src, dst, 0, 0, t, rng.choice([0, 1]), frag)
    return Packet(proto, src, dst, rng.randint(1024, 65535),
                  rng.choice([0, 22, 53, 80, 443, 1000, 1500, 3000, 5432, 8080, 9000, 65535]), fragment=frag)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program(), st.integers(0, 2**32))
def test_simulated_maps_agree_with_reference(text: str, seed: int) -> None:
    res = api.check(text, name="gen.netp")
    assert res.program is not None, res.errors
    rng = random.Random(seed)
    inv = random_inventory(rng)
    contents = materialize(res.program, inv)
    for _ in range(40):
        c = rng.choice(inv.containers)
        d = rng.choice([Direction.INGRESS, Direction.EGRESS])
        pkt = random_packet(rng, inv, c, d)
        ref = evaluate_side(res.program, inv, pkt, c, d)
        assert c.ifindex is not None
        sim = classify(contents, c.ifindex, abi.DIR_INGRESS if d is Direction.INGRESS else abi.DIR_EGRESS, pkt)
        assert sim.allowed == ref.allowed, (text, pkt, d, ref, sim)
        if ref.reason is Reason.RULE:
            assert ref.rule is not None and sim.rule_id == ref.rule.id, (text, pkt, ref.rule.text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program(), st.integers(0, 2**32))
def test_incremental_run_equals_a_full_run(text: str, seed: int) -> None:
    """An inventory change applied to the previous contents gives exactly what a fresh run gives."""
    from netc.runtime.materialize import Materializer

    res = api.check(text, name="gen.netp")
    assert res.program is not None
    rng = random.Random(seed)
    inv = random_inventory(rng)
    m = Materializer(res.program)
    first = m.run(inv)
    changed = list(inv.containers)
    if len(changed) > 1 and rng.random() < 0.5:
        changed.pop(rng.randrange(len(changed)))
    labels = {k: rng.choice(LABEL_VALUES) for k in rng.sample(LABEL_KEYS, rng.randint(0, 3))}
    changed.append(Container("new", ("10.1.2.99", "fd00::99"), labels, ifindex=999))
    inv2 = Inventory(changed, inv.host_addresses)
    incremental = m.run(inv2, first.ids, previous=first)
    full = Materializer(res.program).run(inv2, first.ids)
    for name in full.maps:
        assert incremental.maps[name] == full.maps[name], name
