"""`netc bench compare` runs end to end at a small size: the lab is made and removed, every system
judged every datagram as the reference semantics say, netc's programs counted the datagrams, and
every figure is a number (no timing assertion)."""

from __future__ import annotations

import math

import pytest

from netc.bench.compare import format_text, run

pytestmark = pytest.mark.kernel


def test_bench_compare_small() -> None:
    packets = 2000
    with open("/proc/sys/kernel/bpf_stats_enabled") as fh:
        before = fh.read()
    result = run(200, packets=packets, rounds=1)
    with open("/proc/sys/kernel/bpf_stats_enabled") as fh:
        assert fh.read() == before          # restored
    assert result["verdicts_ok"], result.get("verdicts_wrong")
    assert result["backlog_drops"] == 0
    for flow in ("denied", "allowed"):
        r = result[flow]
        assert packets <= r["netc_counted"] <= packets * 1.2, r      # plus the warm-up datagrams
        assert r["netc_bpf_stats_ns"] > 0, r
        assert r["no_filter_ns"] > 0, r
        for k in ("netc_ns", "nftables_ns", "iptables_ns", "netc_added_ns", "nftables_added_ns",
                  "iptables_added_ns", "empty_chain_added_ns", "ct_only_added_ns"):
            assert math.isfinite(r[k]), r      # differences of CPU times: may be negative when noisy
    assert "default deny" in result["denied"]["flow"]
    text = format_text(result)
    assert "netc" in text and "nftables" in text and "iptables" in text and "denied" in text
