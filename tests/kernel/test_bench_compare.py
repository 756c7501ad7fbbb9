"""`netc bench compare` runs end to end at a small size: the lab is made and removed, netc's
programs counted the datagrams sent, and every figure is a number (no timing assertion)."""

from __future__ import annotations

import math

import pytest

from netc.bench.compare import run

pytestmark = pytest.mark.kernel


def test_bench_compare_small() -> None:
    packets = 2000
    with open("/proc/sys/kernel/bpf_stats_enabled") as fh:
        before = fh.read()
    result = run(200, packets=packets, rounds=1)
    with open("/proc/sys/kernel/bpf_stats_enabled") as fh:
        assert fh.read() == before          # restored
    for flow in ("denied", "allowed"):
        r = result[flow]
        assert packets <= r["netc_counted"] <= packets * 1.02, r
        assert r["netc_bpf_stats_ns"] > 0, r
        assert r["no_filter_ns"] > 0, r
        for k in ("netc_ns", "nftables_ns", "iptables_ns", "empty_chain_ns"):
            assert math.isfinite(r[k]), r      # differences of wall times: may be negative (see docs)
    assert "default deny" in result["denied"]["flow"]
