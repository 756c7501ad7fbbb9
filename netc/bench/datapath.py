"""Per-packet cost under BPF_PROG_TEST_RUN, measured the way DESIGN.md §7 says: medians of rounds
of many repeats, with an empty program measured in the same run, after checking one run's
return code.

`netc bench datapath --rules N`: an empty program; a packet of an established connection; the
first packet of an allowed connection (every repeat a new flow: the harness in harness.bpf.c
rotates the source port and tail-calls the program; the harness alone is subtracted); a denied
first packet; a first packet that falls to the default.

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
from netc.runtime import abi, slots
from netc.runtime.inventory import Container, Inventory
from netc.runtime.packets import frame

POLICY = """
group web = app == "web"
policy web-in for web {
    ingress default deny
    allow ingress tcp from 10.1.0.0/16 to port 443
}
"""


def interleaved_medians(cases: dict[str, tuple[int, bytes]], repeat: int, rounds: int) -> dict[str, float]:
    """ns per run of each case (program fd, packet): every round runs every case once, so drift on
    a shared machine hits all cases alike; the median over rounds."""
    from netc.runtime.libbpf import prog_test_run

    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, (fd, data) in cases.items():
            samples[name].append(prog_test_run(fd, data, repeat).duration_ns)
    return {k: statistics.median(v) for k, v in samples.items()}


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
            fields = list(abi.ENDPOINT.unpack(value))
            fields[8] = abi.OBSERVE_DENY            # observe
            on = slots.both("netc_endpoints", abi.ENDPOINT.pack(*fields))
            fields[8] = 0
            off = slots.both("netc_endpoints", abi.ENDPOINT.pack(*fields))
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


def _harness(prog_fd: int | None) -> tuple[Any, int]:
    """The bench harness loaded, its prog array pointing at prog_fd (None: empty, so the tail call
    falls through and the harness runs alone); returns (object, harness fd)."""
    from importlib import resources

    from netc.codegen.toolchain import compile_c
    from netc.runtime.libbpf import BpfObject

    src = resources.files("netc.bench").joinpath("harness.bpf.c").read_text()
    obj = BpfObject.open_mem(compile_c(src), "netc_bench")
    obj.load()
    if prog_fd is not None:
        obj.maps["netc_bench_target"].update((0).to_bytes(4, "little"), prog_fd.to_bytes(4, "little"))
    return obj, obj.programs["netc_bench_new_flow"]


def run_datapath(rules: int, repeat: int = 100_000, rounds: int = 7, seed: int = 1) -> dict[str, Any]:
    """Per-packet ns at N generated rules (see the module docstring for the cases)."""
    from netc.bench.generate import generate_policy
    from netc.runtime.links import _probe_prog
    from netc.runtime.testrun import KernelClassifier

    text = generate_policy(rules, seed)
    # one rule the benchmark's packets are sure to meet, and the container it protects
    text += ("policy bench-target for app == \"bench\" priority 50 {\n    ingress default deny\n"
             "    allow ingress tcp from 10.250.0.0/16 to port 443\n    deny ingress tcp from 10.251.0.0/16\n}\n")
    compiled = api.compile(text, name=f"bench-{rules}.netp")
    target = Container("bench-1", ("10.0.0.5",), {"app": "bench"})
    inv = Inventory([target, Container("web-1", ("10.0.0.6",), {"app": "web"})])
    allowed = Packet(6, "10.250.1.1", "10.0.0.5", 40000, 443)
    denied = Packet(6, "10.251.1.1", "10.0.0.5", 40000, 443)
    default = Packet(6, "192.0.2.1", "10.0.0.5", 40000, 8443)
    empty = _probe_prog(3, 0)
    try:
        with KernelClassifier(compiled.object, compiled.program, inv) as kc:
            prog = kc._progs["netc_to_container"]
            for pkt, want in ((allowed, True), (denied, False), (default, False)):
                if kc.classify(target, Direction.INGRESS, pkt).allowed != want:
                    raise RuntimeError(f"the benchmark's {pkt} should be {'allowed' if want else 'denied'}")
            hobj, harness = _harness(prog)
            bare_obj, bare = _harness(None)   # the harness alone
            try:
                cases = {
                    "empty": (empty, frame(allowed)),
                    "established": (prog, frame(allowed)),
                    "denied": (prog, frame(denied)),
                    "default": (prog, frame(default)),
                    "new_allowed_with_harness": (harness, frame(allowed)),
                    "harness_alone": (bare, frame(allowed)),
                }
                # the established case needs its connection: one packet makes it, and it stays
                kc.stateless = False
                kc.classify(target, Direction.INGRESS, allowed)
                med = interleaved_medians(cases, repeat, rounds)
            finally:
                hobj.close()
                bare_obj.close()
    finally:
        os.close(empty)
    # the harness alone ends in `return` where the program under test would run: add nothing for
    # it, subtract the harness (the empty program's own entry cost stays in, as in every figure)
    first = med["new_allowed_with_harness"] - med["harness_alone"] + med["empty"]
    return {"rules": len(compiled.program.rules), "repeat": repeat, "rounds": rounds,
            "empty_ns": round(med["empty"], 1), "established_ns": round(med["established"], 1),
            "first_allowed_ns": round(first, 1), "first_denied_ns": round(med["denied"], 1),
            "first_default_ns": round(med["default"], 1)}
