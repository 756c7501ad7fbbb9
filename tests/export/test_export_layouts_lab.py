"""The nftables export's lookups in every layout, in the kernel: real traffic on a lab.

tests/kernel/test_export_lab.py checks every example, whose maps are small enough to sit in the
containers' chains. This file checks the other two shapes with the same probes: maps cut by
remote address into buckets behind an address map (what large policies get), and chains split
into blocks of rules looked up in turn, with continuation chains (what a policy gets when
painting its rules into one map would blow up). The policy puts overlapping CIDRs, `except`,
priorities both ways, deny beating allow, `log`, ports with and without a protocol and an
isolated egress on clients whose addresses sit inside and around those CIDRs, plus filler
rules so that the buckets are many. Each flow's result (connected or refused = allowed, timed
out = denied) is compared with netc.ir.eval.evaluate.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netc import api
from netc.errors import NetcError
from netc.export import export_nftables
from netc.export.nftables import plan
from netc.runtime import lab as labs
from netc.runtime.inventory import Inventory
from netc.runtime.netns import list_netns
from tests.kernel.test_export_lab import Flow, flush_conntrack, probe_all, run_node, verdict

pytestmark = pytest.mark.kernel

BASE = "nclay"
TCP, UDP = [80, 443, 8080, 7], [53, 5353, 7]
CLIENTS = {                      # name: address (IPv4 only: the CIDRs below are IPv4)
    "c-a": "10.210.0.5", "c-b": "10.210.1.5", "c-c": "10.210.1.130", "c-d": "10.210.7.9",
    "c-e": "10.211.0.5", "c-f": "10.211.3.5", "c-g": "172.30.5.5", "c-h": "172.30.6.5",
    "c-i": "192.0.2.44",
}
POLICY = """\
group web = app == "web"
group clients = app == "client"

policy web-in for web {
    ingress default deny
    allow ingress tcp from 10.210.0.0/16 to port 80, 443
    deny ingress tcp from 10.210.1.0/24 to port 443
    allow ingress tcp from 10.210.1.128/25 to port 443 priority 2
    allow ingress udp from {10.210.0.0/16 except 10.210.7.0/24} to port 53
    deny ingress from 10.211.0.0/16 priority 1 log
    allow ingress from 10.211.0.0/24 priority 1
    allow ingress from 10.211.0.0/16 to port 8080 priority 3
    allow ingress from 172.30.0.0/16 to port 8080
    deny ingress udp from 172.30.6.0/24
    allow ingress udp from 172.30.0.0/16 to port 5353
    allow ingress tcp to port 7 priority -1
    deny ingress tcp from 172.30.5.5 to port 7
    allow ingress to port 5353 priority -2
%(filler)s
}

policy web-out for web {
    egress default allow
    deny egress tcp to 10.210.1.0/24 port 8080
    deny egress tcp to 172.30.0.0/15 port 80 priority 1
    allow egress tcp to 172.30.5.5 port 80 priority 1
}

policy clients-out for clients {
    egress default deny
    allow egress tcp to web port 80, 443, 8080, 7
    allow egress udp to web port 53, 5353, 7
    deny egress udp to web port 7 priority 4
}
"""
# Filler rules on addresses no probe comes from, spread over the address space so that the
# address map has buckets on both sides of the probed ones.
FILLER = "\n".join(f"    {'deny' if i % 3 == 0 else 'allow'} ingress tcp from {20 + 9 * i}.{i}.0.0/16 to port "
                   f"{1000 + i}-{1010 + i}" for i in range(24))
LAYOUTS: dict[str, dict[str, int]] = {"default": {}, "buckets": {"bucket": 3},
                                      "blocks": {"bucket": 3, "factor": 0, "slack": 2}}


@pytest.fixture(scope="module")
def lab() -> Iterator[labs.Lab]:
    old = os.environ.get("NETC_STATE_DIR")
    with tempfile.TemporaryDirectory(prefix="netc-export-layouts-") as d:
        os.environ["NETC_STATE_DIR"] = d
        try:
            serve = [f"tcp:{p}" for p in TCP] + [f"udp:{p}" for p in UDP]
            topo = {"name": f"{BASE}-l", "containers": [{"name": "web", "labels": {"app": "web"}, "serve": serve}]
                    + [{"name": n, "labels": {"app": "client"}, "addresses": [a], "serve": serve}
                       for n, a in CLIENTS.items()]}
            path = Path(d) / "topology.json"
            path.write_text(json.dumps(topo))
            made = labs.up(path)
            try:
                yield made
            finally:
                labs.down(made)
        finally:
            for ns in list_netns(f"netc-{BASE}-"):
                with contextlib.suppress(NetcError):
                    labs.delete_netns(ns)
            if old is None:
                os.environ.pop("NETC_STATE_DIR", None)
            else:
                os.environ["NETC_STATE_DIR"] = old


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_enforces_what_eval_decides(layout: str, lab: labs.Lab) -> None:
    res = api.check(POLICY % {"filler": FILLER}, name="layouts.netp")
    assert res.ok and res.program is not None, [str(d) for d in res.errors]
    program = res.program
    inv = Inventory.load(lab.inventory_path)
    plans = {p.chain.name: p for p in plan(program, inv, **LAYOUTS[layout])}
    web_in = plans["web ingress"]
    if layout != "default":                 # the shape this layout is about is really there
        assert all(b.buckets for b in web_in.blocks if b.end - b.first > 3)
    if layout == "blocks":
        assert len(web_in.blocks) > 4 and len(plans["c-a egress"].blocks) > 1
    flows = [Flow(c, "web", "tcp", p, 4) for c in CLIENTS for p in TCP]
    flows += [Flow(c, "web", "udp", p, 4) for c in CLIENTS for p in UDP]
    flows += [Flow("web", c, "tcp", p, 4) for c in CLIENTS for p in (80, 8080)]
    text = export_nftables(program, inv, **LAYOUTS[layout])
    flush_conntrack(lab)
    run_node(lab, ["nft", "-f", "-"], text)
    try:
        results = probe_all(lab, flows)
    finally:
        run_node(lab, ["nft", "flush", "ruleset"])
        flush_conntrack(lab)
    bad = []
    tally = {True: 0, False: 0}
    for f in flows:
        got = results[f]
        assert not got.startswith("error"), f"probe {f}: {got}"
        v = verdict(program, inv, lab, f)
        tally[v.allowed] += 1
        if (got != "timed out") != v.allowed:
            why = "; ".join(f"{s.endpoint.name} {s.direction.value}: "
                            + (f"{s.rule.location} `{s.rule.text}`" if s.rule else s.reason.value) for s in v.sides)
            bad.append(f"{f.proto} {f.src} -> {f.dst}:{f.port}: kernel {got}, eval "
                       f"{'allows' if v.allowed else 'denies'} ({why})")
    assert tally[True] > 20 and tally[False] > 20, tally
    assert not bad, f"{layout}: {len(bad)} of {len(flows)} flows disagree:\n" + "\n".join(bad)
