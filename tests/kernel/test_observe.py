"""Counters, events and explain --live: in the kernel, and with real traffic in a lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from netc import api
from netc.ir.eval import Packet
from netc.ir.nodes import Direction
from netc.runtime import abi, slots
from netc.runtime.inventory import Container, Inventory
from netc.runtime.libbpf import per_cpu_values, prog_test_run
from netc.runtime.materialize import endpoint_for
from netc.runtime.observe import drain_ring
from netc.runtime.packets import frame
from netc.runtime.testrun import KernelClassifier

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

POLICY = """
group web = app == "web"
policy web-in for web {
    ingress default deny
    allow ingress tcp to port 80, 443
    deny ingress udp to port 53 log
}
observe web { events deny }
"""


def _lost(kc: KernelClassifier) -> int:
    raw = kc.obj.maps["netc_stats"].lookup(abi.STAT_EVENTS_LOST.to_bytes(4, "little")) or b""
    return sum(int.from_bytes(v, "little") for v in per_cpu_values(raw, 8))


def test_a_flood_fills_the_ring_and_every_lost_event_is_counted() -> None:
    compiled = api.compile(POLICY, name="flood.netp")
    web = Container("web-1", ("10.0.0.5",), {"app": "web"})
    with KernelClassifier(compiled.object, compiled.program, Inventory([web])) as kc:
        pkt = Packet(6, "192.0.2.1", "10.0.0.5", 40000, 22)          # denied by default, observed
        assert not kc.classify(web, Direction.INGRESS, pkt).allowed   # one event already
        n = 20000
        run = prog_test_run(kc._progs["netc_to_container"], frame(pkt), repeat=n)
        assert run.retval == 2
        events = drain_ring(kc.obj.maps["netc_events"].fd)
        assert len(events) + _lost(kc) == n + 1
        assert 1000 < len(events) < n, "the ring should have filled"
        ev = abi.EVENT.unpack(events[0][:abi.EVENT.size])
        assert ev[7] == abi.EVENT_DENY and ev[2] == abi.RULE_DEFAULT_DENY and ev[13] == 22


def _count(kc: KernelClassifier, rule_id: int, eid: int) -> tuple[int, int]:
    if rule_id in (abi.RULE_ESTABLISHED, abi.RULE_RELATED) and eid < abi.CT_COUNTER_ENDPOINTS:
        raw = kc.obj.maps["netc_ct_counters"].lookup(abi.ct_counter_slot(eid, rule_id, abi.DIR_INGRESS).to_bytes(4, "little"))
    else:
        key = abi.COUNTER_KEY.pack(rule_id, eid, abi.DIR_INGRESS, abi.ACTION_ALLOW, 0)
        raw = kc.obj.maps["netc_counters"].lookup(key)
    assert raw is not None
    values = [abi.COUNTER.unpack(v) for v in per_cpu_values(raw, abi.COUNTER.size)]
    return sum(p for p, _ in values), sum(b for _, b in values)


@pytest.mark.parametrize("eid", [1, abi.CT_COUNTER_ENDPOINTS], ids=["array-slot", "past-the-array"])
def test_counters_count_packets_and_bytes_per_rule(eid: int) -> None:
    """The first packet counts against the rule that allowed it, the rest of the connection
    against connection tracking (established): in netc_ct_counters, or in netc_counters for an
    endpoint id the array has no slot for."""
    compiled = api.compile(POLICY, name="count.netp")
    web = Container("web-1", ("10.0.0.5",), {"app": "web"})
    allow = next(r for r in compiled.program.rules if r.action.value == "allow")
    with KernelClassifier(compiled.object, compiled.program, Inventory([web])) as kc:
        pkt = Packet(6, "192.0.2.1", "10.0.0.5", 40000, 443)
        data = frame(pkt)
        kc.classify(web, Direction.INGRESS, pkt)           # sets the endpoint up; state is cleared
        key, value = endpoint_for(compiled.program, kc.contents, web, 1, eid)
        kc.obj.maps["netc_endpoints"].update(key, slots.both("netc_endpoints", value))
        kc.obj.maps["netc_counters"].delete(abi.COUNTER_KEY.pack(allow.id, 1, abi.DIR_INGRESS, abi.ACTION_ALLOW, 0))
        kc.classify(web, Direction.INGRESS, pkt)
        prog_test_run(kc._progs["netc_to_container"], data, repeat=100)
        assert _count(kc, allow.id, eid) == (2, 2 * len(data))
        assert _count(kc, abi.RULE_ESTABLISHED, eid) == (99, 99 * len(data))


# ---------------------------------------------------------------------- real traffic in a lab
@pytest.fixture
def env(make_lab, tmp_path):  # type: ignore[no-untyped-def]
    lb = make_lab("  - {name: web-1, labels: {app: web}, serve: ['tcp:80', 'udp:53']}\n"
                  "  - {name: client-1, labels: {app: client}}\n")
    policy = tmp_path / "obs.netp"
    policy.write_text(POLICY)
    return lb, str(policy)


def test_a_denied_connection_is_an_event_naming_its_rule_and_the_counter_matches(env) -> None:  # type: ignore[no-untyped-def]
    from netc.runtime import lab as labmod
    from netc.runtime import loader
    from netc.runtime.observe import read_counters, stream_events

    lb, policy = env
    loader.load(api.compile(policy).object, policy, loader.resolve_target(lab=lb.name))
    events: list[dict] = []
    done = threading.Event()
    reader = threading.Thread(target=lambda: events.extend(
        stream_events(lb.name, poll_ms=20, stop=done.is_set)))
    reader.start()
    k = 5
    try:
        for _ in range(k):   # each UDP probe is one datagram; the deny rule drops it
            assert labmod.probe(lb.name, "client-1", "web-1", 53, udp=True, timeout=0.2) == "timed out"
        assert labmod.probe(lb.name, "client-1", "web-1", 80) == "connected"
    finally:
        import time

        time.sleep(0.3)
        done.set()
        reader.join(5)
    deny_rule = next(r for r in api.check(policy).program.rules if r.action.value == "deny")
    mine = [e for e in events if e["protocol"] == "udp" and e["dport"] == 53]
    assert len(mine) == k, events
    e = mine[0]
    assert e["container"] == "web-1" and e["direction"] == "ingress" and e["verdict"] == "deny"
    assert e["src_name"] == "client-1" and e["dst_name"] == "web-1" and e["src"] == "10.77.0.11"
    assert e["rule"]["location"].endswith("obs.netp:6") and e["kind"] == "log"
    rows = read_counters(lb.name)
    denied = [r for r in rows if r.rule_id == deny_rule.id]
    assert len(denied) == 1 and denied[0].packets == k and denied[0].container == "web-1"
    # the rest of the TCP connection passed as established, both ways, and is reported as such
    est = {r.direction: r for r in rows if r.rule_id == abi.RULE_ESTABLISHED and r.container == "web-1"}
    assert set(est) == {"ingress", "egress"} and all(r.packets > 0 and r.action == "allow" for r in est.values())

    live = subprocess.run([sys.executable, "-m", "netc", "explain", "--live", "--target", lb.name,
                           "--packet", "udp client-1 -> web-1:53", "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    assert live.returncode == 0, live.stderr
    doc = json.loads(live.stdout)
    assert not doc["allowed"]
    side = next(s for s in doc["sides"] if s["container"] == "web-1")
    assert side["location"].endswith("obs.netp:6") and side["rule_id"] == deny_rule.id

    st = subprocess.run([sys.executable, "-m", "netc", "stats", lb.name, "--json"], capture_output=True,
                        text=True, cwd=ROOT, env=os.environ.copy())
    assert st.returncode == 0, st.stderr
    assert any(c["rule_id"] == deny_rule.id and c["packets"] == k for c in json.loads(st.stdout)["counters"])
