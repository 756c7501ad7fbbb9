"""`netc bench compare`: kernel time per packet spent in the filter itself, for netc, nftables
(with sets) and an iptables linear chain (iptables-nft), enforcing one generated policy on one lab.

Method (docs/performance.md, "netc against nftables and iptables"):

* netc: `kernel.bpf_stats_enabled` is set to 1 for the run (the old value is put back) and the
  `run_time_ns` / `run_cnt` of both loaded programs are read from `struct bpf_prog_info` before and
  after the traffic (offsets 192 and 200, computed from /usr/include/linux/bpf.h with offsetof).
* nftables and iptables-nft: a bcc kprobe + kretprobe on `nft_do_chain` (every base chain of both
  runs through it: `nft_do_chain_inet` for the inet table, `nft_do_chain_ipv4` for iptables-nft's
  ip tables) sums per CPU the entry-to-return time of calls whose `pkt->state->net` is the lab's
  node namespace. The probes' own cost is measured on an empty forward chain in the same run and
  subtracted (reported as `probe_overhead_ns`).
* Traffic: a fixed number of UDP datagrams from a Python sender in a client container; the figure
  is the filter time divided by the datagrams sent (a packet may cross several hooks), and each
  method's own count of packets is reported as a check that it saw the traffic.
* Systems alternate within each round (netc, nftables, iptables, empty chain); medians of rounds.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Any

import yaml

from netc import api
from netc.bench.generate import generate_policy

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# struct bpf_prog_info (linux/bpf.h): offsetof(run_time_ns) = 192, offsetof(run_cnt) = 200, size 232
INFO_SIZE, OFF_RUN_TIME, OFF_RUN_CNT = 232, 192, 200
SERVER_PORT_MIN = 1000

EMPTY_NFT = """table inet netc_bench_empty {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t}
}
"""


# ---------------------------------------------------------------------- picking the flows
def _pick_flows(text: str) -> tuple[str, int, int]:
    """(address for the allowed client, allowed UDP port, candidate lines checked) from the last
    `allow ingress udp from A.B.C.0/24 to port P` rule of bench-web (a rule deep in the set)."""
    in_web = False
    cands: list[tuple[str, int]] = []
    for line in text.splitlines():
        if line.startswith("policy "):
            in_web = line.startswith("policy bench-web ")
        m = re.fullmatch(r"\s+allow ingress udp from (\d+\.\d+\.\d+)\.0/24 to port (\d+)", line)
        if in_web and m:
            cands.append((m.group(1) + ".77", int(m.group(2))))
    if not cands:
        raise RuntimeError("the generated policy has no `allow ingress udp from x.y.z.0/24 to port P` "
                           "rule for web: use more rules")
    return cands[-1][0], cands[-1][1], len(cands)


def _check_flows(program: Any, inv: Any, lab: Any, allowed_port: int) -> tuple[int, dict[str, str]]:
    """Verify with the reference semantics that the allowed flow is allowed by a rule and find a
    denied port that no rule decides (default deny: every rule considered)."""
    from netc.ir.eval import Packet, evaluate

    web = lab.container("web").address(False)
    v = evaluate(program, inv, Packet(17, lab.container("client-in").address(False), web, 40000, allowed_port))
    if not v.allowed:
        raise RuntimeError(f"the reference semantics deny the flow meant to be allowed (udp {allowed_port})")
    why = {"allowed": " ".join(f"{s.rule.location} `{s.rule.text}`" for s in v.sides if s.rule)}
    src = lab.container("client").address(False)
    for port in range(9999, 1000, -1):
        v = evaluate(program, inv, Packet(17, src, web, 40000, port))
        if not v.allowed and all(s.rule is None for s in v.sides):
            why["denied"] = "; ".join(f"{s.endpoint.name} {s.direction.value}: {s.reason.value}" for s in v.sides)
            return port, why
    raise RuntimeError("no UDP port is denied by default for the client")


# ---------------------------------------------------------------------- traffic
def _send(lab: Any, client: str, dst: str, port: int, packets: int) -> tuple[int, int]:
    from netc.runtime.netns import in_netns

    with in_netns(lab.container(client).netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setblocking(False)
        payload = b"netc bench compare"
        sent = 0
        addr = (dst, port)
        t0 = time.perf_counter_ns()
        while sent < packets:
            try:
                s.sendto(payload, addr)
                sent += 1
            except BlockingIOError:
                time.sleep(0.0005)
        wall = time.perf_counter_ns() - t0
        time.sleep(0.05)          # let the last softirq work finish
        return sent, wall
    finally:
        s.close()


def _sink(lab: Any, port: int) -> socket.socket:
    """A UDP socket on the server that never reads: no replies, so the flow stays one way."""
    from netc.runtime.netns import in_netns

    with in_netns(lab.container("web").netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("0.0.0.0", port))
    return s


# ---------------------------------------------------------------------- netc: bpf_stats
def _prog_stats(fd: int) -> tuple[int, int]:
    from netc.runtime.links import _info

    raw = _info(fd, INFO_SIZE)
    return (int.from_bytes(raw[OFF_RUN_TIME:OFF_RUN_TIME + 8], "little"),
            int.from_bytes(raw[OFF_RUN_CNT:OFF_RUN_CNT + 8], "little"))


def _measure_netc(lab: Any, obj: bytes, name: str, flow: tuple[str, str, int], packets: int) -> tuple[float, int]:
    from netc.runtime import loader
    from netc.runtime.libbpf import bpf_obj_get

    target = loader.resolve_target(lab=lab.name)
    loader.load(obj, name, target)
    fds: list[int] = []
    try:
        pins = sorted(glob.glob(os.path.join(os.environ["NETC_BPFFS"], "**", "progs", "*"), recursive=True))
        fds = [bpf_obj_get(p) for p in pins]
        if len(fds) != 2:
            raise RuntimeError(f"expected the two pinned netc programs, found {pins}")
        before = [_prog_stats(fd) for fd in fds]
        sent, wall = _send(lab, *flow, packets)
        after = [_prog_stats(fd) for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)
        loader.unload(lab.name)
    ns = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    counts = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    # every packet runs the program of the first hook it crosses
    return {"stats_ns": ns / sent, "wall_ns": wall / sent, "counted": max(counts)}


# ---------------------------------------------------------------------- netfilter
def _node(lab: Any, argv: list[str], stdin: str | None = None) -> None:
    from netc.runtime.netns import run_in_netns

    proc = run_in_netns(lab.node_netns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(stdin, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {lab.node_netns} failed ({proc.returncode}): {err.strip()}")


def _flush_conntrack(lab: Any) -> None:
    from pyroute2 import Conntrack

    from netc.runtime.netns import in_netns

    with in_netns(lab.node_netns):
        ct = Conntrack()
    try:
        ct.flush()
    finally:
        ct.close()


def _measure_nf(lab: Any, apply: list[tuple[list[str], str]], flow: tuple[str, str, int],
                packets: int) -> dict[str, float]:
    for argv, text in apply:
        _node(lab, argv, text)
    try:
        _flush_conntrack(lab)
        sent, wall = _send(lab, *flow, packets)
    finally:
        if apply:
            _node(lab, ["nft", "flush", "ruleset"])     # iptables-nft's tables are nftables tables too
    return {"wall_ns": wall / sent}


# ---------------------------------------------------------------------- the run
def run(rules: int, packets: int = 50_000, rounds: int = 3, seed: int = 1) -> dict[str, Any]:
    from netc.export.iptables import export_iptables
    from netc.export.nftables import export_nftables
    from netc.runtime import lab as labmod
    from netc.runtime.inventory import Inventory

    text = generate_policy(rules, seed)
    client_in_addr, allowed_port, _ = _pick_flows(text)
    compiled = api.compile(text, name=f"bench-{rules}.netp")
    program = compiled.program
    tag = uuid.uuid4().hex[:6]
    saved = {k: os.environ.get(k) for k in ("NETC_STATE_DIR", "NETC_BPFFS")}
    with open(STATS_SYSCTL) as fh:
        old_stats = fh.read().strip()
    with tempfile.TemporaryDirectory(prefix="netc-bench-compare-") as tmp:
        os.environ["NETC_STATE_DIR"] = tmp
        os.environ["NETC_BPFFS"] = f"/sys/fs/bpf/netc-bench-{tag}"
        topo = {"name": f"cmp{tag}", "containers": [
            {"name": "web", "labels": {"app": "web"}},
            {"name": "api", "labels": {"app": "api"}},
            {"name": "db", "labels": {"app": "db"}},
            {"name": "client", "labels": {"app": "client"}},
            {"name": "client-in", "labels": {"app": "client"}, "addresses": [client_in_addr]},
        ]}
        topo_path = os.path.join(tmp, "topology.yaml")
        with open(topo_path, "w") as fh:
            yaml.safe_dump(topo, fh)
        lab = labmod.up(topo_path)
        sinks: list[socket.socket] = []
        try:
            inv = Inventory.load(lab.inventory_path)
            denied_port, why = _check_flows(program, inv, lab, allowed_port)
            web = lab.container("web").address(False)
            sinks = [_sink(lab, allowed_port)]
            nft_text = export_nftables(program, inv)
            ipt = export_iptables(program, inv)
            systems = {
                "nftables": [(["nft", "-f", "-"], nft_text)],
                "iptables": [(["iptables-restore"], ipt["iptables"]), (["ip6tables-restore"], ipt["ip6tables"])],
                "empty": [(["nft", "-f", "-"], EMPTY_NFT)],
                "none": [],
            }
            flows = {"denied": ("client", web, denied_port), "allowed": ("client-in", web, allowed_port)}
            with open(STATS_SYSCTL, "w") as fh:
                fh.write("1")
            samples: dict[tuple[str, str], list[dict[str, float]]] = {}
            for _ in range(rounds):
                for fname, flow in flows.items():
                    samples.setdefault(("netc", fname), []).append(
                        _measure_netc(lab, compiled.object, f"bench-{rules}.netp", flow, packets))
                    for sname, apply in systems.items():
                        samples.setdefault((sname, fname), []).append(
                            _measure_nf(lab, apply, flow, packets))
        finally:
            try:
                with open(STATS_SYSCTL, "w") as fh:
                    fh.write(old_stats)
            finally:
                for s in sinks:
                    s.close()
                try:
                    labmod.down(lab.name)
                finally:
                    import shutil

                    shutil.rmtree(os.environ["NETC_BPFFS"], ignore_errors=True)
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v

    def med(sys_: str, fname: str, key: str = "wall_ns") -> float:
        return statistics.median(x[key] for x in samples[(sys_, fname)])

    result: dict[str, Any] = {"rules": len(program.rules), "packets": packets, "rounds": rounds}
    for fname in flows:
        base = med("none", fname)
        r: dict[str, Any] = {
            "netc_ns": round(med("netc", fname) - base, 1),
            "nftables_ns": round(med("nftables", fname) - base, 1),
            "iptables_ns": round(med("iptables", fname) - base, 1),
            "empty_chain_ns": round(med("empty", fname) - base, 1),
            "no_filter_ns": round(base, 1),
            "netc_bpf_stats_ns": round(med("netc", fname, "stats_ns"), 1),
            "netc_counted": int(min(x["counted"] for x in samples[("netc", fname)])),
        }
        r["netc_over_iptables"] = round(r["netc_ns"] / r["iptables_ns"], 3) if r["iptables_ns"] > 0 else None
        r["netc_over_nftables"] = round(r["netc_ns"] / r["nftables_ns"], 3) if r["nftables_ns"] > 0 else None
        r["flow"] = f"udp {flows[fname][0]} -> web:{flows[fname][2]} ({why[fname]})"
        result[fname] = r
    # the headline figures: the denied flow, which no rule decides (every rule is considered)
    for k in ("netc_ns", "nftables_ns", "iptables_ns"):
        result[k] = result["denied"][k]
    result["method"] = ("added kernel time per packet: wall time of a non-blocking UDP send loop per datagram "
                        "(the node forwards it in the sender's softirq, so the filter runs in the loop) minus "
                        "the same with no filter, medians of " f"{rounds} alternating rounds of {packets} "
                        "datagrams; netc's bpf_stats run_time_ns per packet is reported beside it "
                        "(kprobe/fentry on nft_do_chain cannot load here: the kernel is locked down)")
    return result
