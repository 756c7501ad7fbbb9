"""Per-packet cost under BPF_PROG_TEST_RUN, measured the way DESIGN.md §7 says: medians of rounds
of many repeats, with an empty program measured in the same run, after checking one run's
return code.

`netc bench events`: a flood of denied packets with the endpoint's deny events on and off (the
ring fills at once and stays full, as under a real flood without a reader).
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from netc import api
from netc.ir.eval import Packet
from netc.ir.nodes import Direction
from netc.runtime import abi
from netc.runtime.inventory import Container, Inventory
from netc.runtime.packets import frame

POLICY = """
group web = app == "web"
policy web-in for web {
    ingress default deny
    allow ingress tcp from 10.1.0.0/16 to port 443
}
"""


def _median_ns(prog_fd: int, data: bytes, repeat: int, rounds: int) -> float:
    from netc.runtime.libbpf import prog_test_run

    return statistics.median(prog_test_run(prog_fd, data, repeat).duration_ns for _ in range(rounds))


def run_events(repeat: int = 100_000, rounds: int = 7) -> dict[str, Any]:
    from netc.runtime.links import _probe_prog
    from netc.runtime.materialize import endpoint_for
    from netc.runtime.testrun import KernelClassifier

    compiled = api.compile(POLICY, name="bench-events.netp")
    web = Container("web-1", ("10.0.0.5",), {"app": "web"})
    inv = Inventory([web])
    denied = frame(Packet(6, "192.0.2.1", "10.0.0.5", 40000, 443))
    empty = _probe_prog(3, 0)
    try:
        with KernelClassifier(compiled.object, compiled.program, inv) as kc:
            prog = kc._progs["netc_to_container"]
            key, value = endpoint_for(compiled.program, kc.contents, web, 1, 1)
            on = bytearray(value)
            fields = list(abi.ENDPOINT.unpack(value))
            fields[8] = abi.OBSERVE_DENY            # observe
            on = bytearray(abi.ENDPOINT.pack(*fields))
            fields[8] = 0
            off = abi.ENDPOINT.pack(*fields)
            endpoints = kc.obj.maps["netc_endpoints"]
            check = kc.classify(web, Direction.INGRESS, Packet(6, "192.0.2.1", "10.0.0.5", 40000, 443))
            if check.allowed:
                raise RuntimeError("the benchmark's packet should be denied")
            results: dict[str, list[float]] = {"empty": [], "events_off": [], "events_on": []}
            for _ in range(rounds):   # interleave, so drift on a shared machine hits all three alike
                results["empty"].append(_median_ns(empty, denied, repeat, 1))
                endpoints.update(key, off)
                results["events_off"].append(_median_ns(prog, denied, repeat, 1))
                endpoints.update(key, bytes(on))
                results["events_on"].append(_median_ns(prog, denied, repeat, 1))
            stats = kc.obj.maps["netc_stats"]
            from netc.runtime.libbpf import per_cpu_values

            raw = stats.lookup(abi.STAT_EVENTS_LOST.to_bytes(4, "little")) or b""
            lost = sum(int.from_bytes(v, "little") for v in per_cpu_values(raw, 8))
    finally:
        os.close(empty)
    med = {k: statistics.median(v) for k, v in results.items()}
    return {"repeat": repeat, "rounds": rounds, "empty_ns": round(med["empty"], 1),
            "events_off_ns": round(med["events_off"], 1), "events_on_ns": round(med["events_on"], 1),
            "difference_ns": round(med["events_on"] - med["events_off"], 1), "events_lost": lost}
