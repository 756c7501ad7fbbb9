"""`netc bench lb`: what load balancing costs per packet, and how well Maglev spreads and keeps flows.

Per packet (BPF_PROG_TEST_RUN, DESIGN.md §7): a client's packet of an established connection to
a VIP, translated to its backend, and the backend's reply, given the VIP back. Both programs
rewrite the packet, so every repeat would otherwise see its own output: the harness in
restore.bpf.c writes the original headers back and tail-calls the program; the harness alone is
measured in the same run and subtracted. The empty program is measured in the same rounds.

Spread and disruption: 100,000 random flows to one VIP on 10 equal backends, looked up in the
Maglev table the runtime writes (netc/ir/lb.py, the same function, the same flow hash as the
kernel): the busiest backend's flows over the idlest's, and the share of flows whose backend
changes when one backend is removed (Maglev's ideal is 1/10).
"""

from __future__ import annotations

import ipaddress
import os
import random
from typing import Any

from netc import api
from netc.ir.eval import Packet
from netc.ir.lb import DEFAULT_TABLE, flow_hash, maglev_table
from netc.ir.nodes import Direction
from netc.runtime.inventory import Container, Inventory
from netc.runtime.packets import frame

POLICY = """
group client = app == "client"
group web = app == "web"

policy client-out for client {
    egress default deny
    allow egress tcp to web port 8080
}

service web-svc {
    vip 10.96.0.20 port 80 tcp
    backends web port 8080
    balance maglev
}
"""

VIP, VPORT, CLIENT, BACKEND_PORT = "10.96.0.20", 80, "10.0.0.5", 8080
SYN, SYNACK, ACK = 0x02, 0x12, 0x10


def _restore_harness() -> Any:
    from importlib import resources

    from netc.codegen.toolchain import compile_c
    from netc.runtime.libbpf import BpfObject

    src = resources.files("netc.bench").joinpath("restore.bpf.c").read_text()
    obj = BpfObject.open_mem(compile_c(src), "netc_bench_lb")
    obj.load()
    return obj


def _u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


def spread_and_moved(backends: int = 10, flows: int = 100_000, size: int = DEFAULT_TABLE,
                     seed: int = 1) -> tuple[float, float]:
    """(max/min flows per backend, share of flows that move when the last backend goes)."""
    rnd = random.Random(seed)
    names = [f"web-{i}" for i in range(backends)]
    full = maglev_table(names, [1] * backends, size)
    less = maglev_table(names[:-1], [1] * (backends - 1), size)
    vip = ipaddress.ip_address(VIP).packed
    dst = b"\x00" * 10 + b"\xff\xff" + vip
    counts = [0] * backends
    moved = 0
    for _ in range(flows):
        src = b"\x00" * 10 + b"\xff\xff" + rnd.getrandbits(32).to_bytes(4, "big")
        h = flow_hash(src, dst, rnd.randrange(1024, 65536), VPORT, 6) % size
        before, after = names[full[h]], names[less[h]]
        counts[full[h]] += 1
        moved += before != after
    return max(counts) / max(1, min(counts)), moved / flows


def run_lb(repeat: int = 100_000, rounds: int = 7, flows: int = 100_000) -> dict[str, Any]:
    from netc.bench.datapath import interleaved_medians
    from netc.runtime.libbpf import prog_test_run
    from netc.runtime.links import _probe_prog
    from netc.runtime.testrun import KernelClassifier, packet_destination, packet_source

    compiled = api.compile(POLICY, name="bench-lb.netp")
    client = Container("client-1", (CLIENT,), {"app": "client"})
    webs = [Container(f"web-{i}", (f"10.0.1.{10 + i}",), {"app": "web"}) for i in range(10)]
    inv = Inventory([client, *webs])
    out_pkt = Packet(6, CLIENT, VIP, 40000, VPORT, tcp_flags=ACK)
    empty = _probe_prog(3, 0)
    try:
        with KernelClassifier(compiled.object, compiled.program, inv) as kc:
            kc.stateless = False
            first = kc.classify(client, Direction.EGRESS, Packet(6, CLIENT, VIP, 40000, VPORT, tcp_flags=SYN))
            got = first.destination()
            if not first.allowed or got is None or got[1] != BACKEND_PORT:
                raise RuntimeError(f"the benchmark's first packet was not translated to a backend (got {got})")
            backend = got[0]
            in_pkt = Packet(6, backend, CLIENT, BACKEND_PORT, 40000, tcp_flags=ACK)
            reply = kc.classify(client, Direction.INGRESS, Packet(6, backend, CLIENT, BACKEND_PORT, 40000,
                                                                 tcp_flags=SYNACK))
            if reply.destination() != (CLIENT, 40000) or not reply.allowed:
                raise RuntimeError("the benchmark's reply was not translated back")
            again = kc.classify(client, Direction.EGRESS, out_pkt)
            if again.destination() != (backend, BACKEND_PORT):
                raise RuntimeError("the benchmark's connection did not keep its backend")
            h = _restore_harness()
            bare = _restore_harness()
            try:
                for obj in (h, bare):
                    obj.maps["netc_bench_frames"].update(_u32(0), frame(out_pkt)[:54])
                    obj.maps["netc_bench_frames"].update(_u32(1), frame(in_pkt)[:54])
                h.maps["netc_bench_ingress"].update(_u32(0), _u32(kc._progs["netc_from_container"]))
                h.maps["netc_bench_egress"].update(_u32(0), _u32(kc._progs["netc_to_container"]))
                hp, bp = h.programs, bare.programs
                # one run of each, checked before any timing is trusted
                r = prog_test_run(hp["netc_bench_restore_ingress"], frame(out_pkt))
                if r.retval != 0 or packet_destination(r.data_out) != (backend, BACKEND_PORT):
                    raise RuntimeError(f"harnessed translated packet: return {r.retval}, to {packet_destination(r.data_out)}")
                r = prog_test_run(hp["netc_bench_restore_egress"], frame(in_pkt))
                if r.retval != 0 or packet_source(r.data_out) != (VIP, VPORT):
                    raise RuntimeError(f"harnessed reply: return {r.retval}, from {packet_source(r.data_out)}")
                cases = {
                    "empty": (empty, frame(out_pkt)),
                    "translated": (hp["netc_bench_restore_ingress"], frame(out_pkt)),
                    "translated_harness": (bp["netc_bench_restore_ingress"], frame(out_pkt)),
                    "reply": (hp["netc_bench_restore_egress"], frame(in_pkt)),
                    "reply_harness": (bp["netc_bench_restore_egress"], frame(in_pkt)),
                }
                med = interleaved_medians(cases, repeat, rounds)
            finally:
                h.close()
                bare.close()
    finally:
        os.close(empty)
    spread, moved = spread_and_moved(flows=flows)
    return {
        "repeat": repeat, "rounds": rounds, "flows": flows, "backends": 10, "table_size": DEFAULT_TABLE,
        "empty_ns": round(med["empty"], 1),
        # the harness alone ends where the program would run: subtract it, keep the empty
        # program's own entry cost in, as every other figure does
        "translated_ns": round(med["translated"] - med["translated_harness"] + med["empty"], 1),
        "reply_ns": round(med["reply"] - med["reply_harness"] + med["empty"], 1),
        "spread_max_min": round(spread, 4),
        "moved_fraction": round(moved, 4),
    }

