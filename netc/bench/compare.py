"""`netc bench compare`: per-packet cost of netc, nftables (verdict maps, its best configuration)
and an iptables linear chain (iptables-nft), enforcing one generated policy on one lab, one method
for all three (docs/performance.md, "netc against nftables and iptables").

Method:

* Traffic: a fixed number of UDP datagrams from a Python non-blocking sender in a client
  container to the web container, for two flows checked with the reference semantics first:
  *denied* (a port no rule decides: the default, after every rule) and *allowed* (a port a rule
  deep in the list allows; web has a socket that never reads, so no reply and every datagram is
  judged by the rules).
* The sender is pinned to one CPU: veth delivery runs the node's forwarding and the filters in
  the sender's own softirq, on that CPU. A datagram's cost is the CPU time of the sending thread
  plus that CPU's ksoftirqd (softirq work deferred to it) per datagram: unlike wall time, it
  leaves out other processes sharing the CPU (wall time is reported too).
* Cost per packet = that under the system minus that under a *control* measured in the same
  round: a filter that gives the same verdict at the same hook at almost no cost. For the
  allowed flow the control is no filter at all. For the denied flow it is, for nftables and
  iptables, an nftables forward chain with one drop rule for the flow (both drop in the forward
  hook), and for netc a minimal tcx program dropping the flow on web's veth (where netc drops
  it). Without this, a filter that drops a packet is credited with the work it saves after its
  drop point (delivery to web, the ICMP port-unreachable). The figures over no filter are
  reported too (`*_added_ns`), with an empty nft chain and conntrack alone for reference.
* Every round applies each configuration once, in an order shuffled per round, and measures
  both flows under it; the figures are medians over rounds of per-round differences.
* Checks: web's UDP counters show that every system passed every allowed datagram and no denied
  one (`verdicts_ok`); the CPU's input backlog dropped nothing (`backlog_drops`).
* netc is also measured with `kernel.bpf_stats_enabled` set (restored after): `run_time_ns /
  run_cnt` of its programs (`struct bpf_prog_info` offsets 192 and 200, linux/bpf.h) give its
  cost from inside, beside the CPU-time figure (which is measured with the counters off, as they
  cost two clock reads per program run). netfilter has no such counter and the tracing programs
  that would time `nft_do_chain` (kprobe, fentry) cannot load on this kernel.
"""

from __future__ import annotations

import gc
import glob
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import yaml

from netc import api
from netc.bench.generate import generate_policy

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
# struct bpf_prog_info (linux/bpf.h): offsetof(run_time_ns) = 192, offsetof(run_cnt) = 200, size 232
INFO_SIZE, OFF_RUN_TIME, OFF_RUN_CNT = 232, 192, 200
WARM = 200                 # datagrams sent before each timed loop

EMPTY_NFT = """table inet netc_bench_empty {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t}
}
"""

# what statefulness alone costs netfilter: connection tracking, and the rule both exports start with
CT_NFT = """table inet netc_bench_ct {
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t}
}
"""

DROP_NFT = """table inet netc_bench_drop {{
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tudp dport {port} drop
\t}}
}}
"""

# the control for netc's denied flow: drop the flow where netc drops it, at the least cost
DROP_BPF = """
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tcx/egress")
int netc_bench_drop(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);

	if ((void *)(udp + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP) || ip->ihl != 5 ||
		ip->protocol != IPPROTO_UDP || udp->dest != __builtin_bswap16(DROP_PORT))
		return TC_ACT_OK;
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
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
def _backlog_drops(cpu: int) -> int:
    """Packets the CPU's input backlog dropped so far (/proc/net/softnet_stat: one line per online
    CPU, the second column the drops, the 13th the CPU number since kernel 5.10)."""
    with open("/proc/net/softnet_stat") as fh:
        lines = [ln.split() for ln in fh if ln.strip()]
    for i, cols in enumerate(lines):
        if (int(cols[12], 16) if len(cols) > 12 else i) == cpu:
            return int(cols[1], 16)
    return 0


def _ksoftirqd(cpu: int) -> str | None:
    """/proc/<pid>/schedstat of the CPU's ksoftirqd thread (softirq work deferred from the sender)."""
    for path in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(path) as fh:
                if fh.read().strip() == f"ksoftirqd/{cpu}":
                    return path[:-4] + "schedstat"
        except OSError:
            continue
    return None


def _runtime_ns(schedstat: str | None) -> int:
    if schedstat is None:
        return 0
    try:
        with open(schedstat) as fh:
            return int(fh.read().split()[0])
    except OSError:
        return 0


def _send(lab: Any, client: str, dst: str, port: int, packets: int, cpu: int) -> dict[str, float]:
    """`packets` datagrams sent from one CPU: CPU ns and wall ns per datagram, backlog drops.

    CPU time is the sending thread's (the softirq work it runs on the way out is charged to it)
    plus what that CPU's ksoftirqd ran meanwhile (softirq work deferred to it); unlike wall time
    it leaves out other processes that share the CPU.
    """
    from netc.runtime.netns import in_netns

    with in_netns(lab.container(client).netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    old = os.sched_getaffinity(0)
    ksoft = _ksoftirqd(cpu)
    try:
        os.sched_setaffinity(0, {cpu})
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setblocking(False)
        payload = b"netc bench compare"
        addr = (dst, port)
        warm = 0
        for _ in range(WARM):                # warm: neighbour entries, route and socket caches
            try:
                s.sendto(payload, addr)
                warm += 1
            except BlockingIOError:
                pass
        time.sleep(0.02)
        drops = _backlog_drops(cpu)
        gc.disable()
        sent = 0
        k0 = _runtime_ns(ksoft)
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        while sent < packets:
            try:
                s.sendto(payload, addr)
                sent += 1
            except BlockingIOError:
                os.sched_yield()             # let ksoftirqd drain the backlog, on this CPU
        wall = time.perf_counter_ns() - t0
        cpu_ns = time.thread_time_ns() - c0
        time.sleep(0.02)                     # let the last softirq work finish
        cpu_ns += _runtime_ns(ksoft) - k0
        gc.enable()
        return {"cpu_ns": cpu_ns / sent, "wall_ns": wall / sent, "drops": _backlog_drops(cpu) - drops,
                "datagrams": sent + warm}
    finally:
        gc.enable()
        os.sched_setaffinity(0, old)
        s.close()


def _udp_arrived(lab: Any) -> int:
    """Datagrams that reached the web container's UDP layer (/proc/net/snmp of its namespace:
    InDatagrams + NoPorts + InErrors, so read, unread, full buffer and closed port all count)."""
    from netc.runtime.netns import in_netns

    with in_netns(lab.container("web").netns), open("/proc/thread-self/net/snmp") as fh:
        rows = [ln.split() for ln in fh if ln.startswith("Udp:")]
    d = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:]), strict=True))
    return d["InDatagrams"] + d["NoPorts"] + d["InErrors"]


def _sink(lab: Any, port: int) -> socket.socket:
    """A UDP socket on the server that never reads: no replies, so the flow stays one way."""
    from netc.runtime.netns import in_netns

    with in_netns(lab.container("web").netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("0.0.0.0", port))
    return s


# ---------------------------------------------------------------------- netc
def _prog_stats(fd: int) -> tuple[int, int]:
    from netc.runtime.links import _info

    raw = _info(fd, INFO_SIZE)
    return (int.from_bytes(raw[OFF_RUN_TIME:OFF_RUN_TIME + 8], "little"),
            int.from_bytes(raw[OFF_RUN_CNT:OFF_RUN_CNT + 8], "little"))


def _set_stats(on: bool) -> None:
    with open(STATS_SYSCTL, "w") as fh:
        fh.write("1" if on else "0")


# ---------------------------------------------------------------------- netfilter
def _node(lab: Any, argv: list[str], stdin: str | None = None) -> None:
    from netc.runtime.netns import run_in_netns

    proc = run_in_netns(lab.node_netns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(stdin, timeout=300)
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


# ---------------------------------------------------------------------- the run
Flow = tuple[str, str, int]          # (client container, destination address, UDP port)


class _Bench:
    """One lab, the flows, and one `apply → measure → remove` per configuration."""

    def __init__(self, lab: Any, packets: int, cpu: int, flows: dict[str, Flow], obj: bytes, name: str,
                 nft_text: str, ipt: dict[str, str]):
        self.lab, self.packets, self.cpu, self.flows = lab, packets, cpu, flows
        self.obj, self.name, self.nft_text, self.ipt = obj, name, nft_text, ipt
        self.backlog_drops = 0

    def send(self, flow: Flow) -> dict[str, float]:
        before = _udp_arrived(self.lab)
        got = _send(self.lab, *flow, self.packets, self.cpu)
        self.backlog_drops += int(got.pop("drops"))
        got["arrived"] = (_udp_arrived(self.lab) - before) / got.pop("datagrams")   # 1: passed; 0: dropped
        return got

    def netfilter(self, apply: list[tuple[list[str], str]], only: tuple[str, ...]) -> dict[str, dict[str, float]]:
        for argv, text in apply:
            _node(self.lab, argv, text)
        try:
            out = {}
            for fname in only:
                _flush_conntrack(self.lab)
                out[fname] = self.send(self.flows[fname])
            return out
        finally:
            if apply:
                _node(self.lab, ["nft", "flush", "ruleset"])     # iptables-nft's tables are nftables tables too

    def netc(self) -> dict[str, dict[str, float]]:
        from netc.runtime import loader
        from netc.runtime.libbpf import bpf_obj_get

        loader.load(self.obj, self.name, loader.resolve_target(lab=self.lab.name))
        fds: list[int] = []
        try:
            pins = sorted(glob.glob(os.path.join(os.environ["NETC_BPFFS"], "**", "progs", "*"), recursive=True))
            fds = [bpf_obj_get(p) for p in pins]
            if len(fds) != 2:
                raise RuntimeError(f"expected the two pinned netc programs, found {pins}")
            out: dict[str, dict[str, float]] = {}
            for fname, flow in self.flows.items():
                _set_stats(False)
                got = self.send(flow)
                _set_stats(True)
                before = [_prog_stats(fd) for fd in fds]
                on = self.send(flow)
                after = [_prog_stats(fd) for fd in fds]
                _set_stats(False)
                ns = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                counts = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
                # every datagram meets both programs (client's veth, then web's): count the busier one
                out[fname] = {**got, "stats_on_cpu_ns": on["cpu_ns"], "stats_ns": ns / max(max(counts), 1),
                              "counted": float(max(counts))}
            return out
        finally:
            for fd in fds:
                os.close(fd)
            loader.unload(self.lab.name)

    def drop_tcx(self, port: int) -> dict[str, dict[str, float]]:
        """The control for netc's denied flow: a minimal tcx program dropping it on web's veth."""
        from netc.codegen.toolchain import compile_c
        from netc.runtime.libbpf import BpfObject
        from netc.runtime.links import Hook, link_detach, tcx_attach
        from netc.runtime.netns import in_netns

        obj = BpfObject.open_mem(compile_c(f"#define DROP_PORT {port}\n" + DROP_BPF), "netc_bench_drop")
        try:
            obj.load()
            web = self.lab.container("web")
            with in_netns(self.lab.node_netns):
                link = tcx_attach(obj.programs["netc_bench_drop"], web.ifindex, Hook.EGRESS)
            try:
                return {"denied": self.send(self.flows["denied"])}
            finally:
                link_detach(link)
                os.close(link)
        finally:
            obj.close()


def _configs(b: _Bench, denied_port: int) -> dict[str, Callable[[], dict[str, dict[str, float]]]]:
    both = ("denied", "allowed")
    return {
        "none": lambda: b.netfilter([], both),
        "netc": b.netc,
        "nftables": lambda: b.netfilter([(["nft", "-f", "-"], b.nft_text)], both),
        "iptables": lambda: b.netfilter([(["iptables-restore"], b.ipt["iptables"]),
                                         (["ip6tables-restore"], b.ipt["ip6tables"])], both),
        "empty_chain": lambda: b.netfilter([(["nft", "-f", "-"], EMPTY_NFT)], both),
        "ct_only": lambda: b.netfilter([(["nft", "-f", "-"], CT_NFT)], both),
        "drop_forward": lambda: b.netfilter([(["nft", "-f", "-"], DROP_NFT.format(port=denied_port))], ("denied",)),
        "drop_tcx": lambda: b.drop_tcx(denied_port),
    }


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
    cpu = max(os.sched_getaffinity(0))
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
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
            assert web is not None
            sinks = [_sink(lab, allowed_port)]
            flows: dict[str, Flow] = {"denied": ("client", web, denied_port),
                                      "allowed": ("client-in", web, allowed_port)}
            t0 = time.perf_counter()
            nft_text = export_nftables(program, inv)
            export_s = time.perf_counter() - t0
            bench = _Bench(lab, packets, cpu, flows, compiled.object, f"bench-{rules}.netp", nft_text,
                           export_iptables(program, inv))
            configs = _configs(bench, denied_port)
            rng = random.Random(seed)
            for _ in range(rounds):
                order = list(configs)
                rng.shuffle(order)
                for cname in order:
                    for fname, got in configs[cname]().items():
                        samples.setdefault((cname, fname), []).append(got)
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
                    shutil.rmtree(os.environ["NETC_BPFFS"], ignore_errors=True)
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
    return _summary(samples, program, rules, packets, rounds, cpu, flows, why, bench.backlog_drops, export_s)


def _summary(samples: dict[tuple[str, str], list[dict[str, float]]], program: Any, rules: int, packets: int,
             rounds: int, cpu: int, flows: dict[str, Flow], why: dict[str, str], backlog_drops: int,
             export_s: float) -> dict[str, Any]:
    def diff(a: str, b: str, fname: str, key: str = "cpu_ns", base_key: str | None = None) -> float:
        """Median over rounds of (a − b): both measured in the same round."""
        xs, ys = samples[(a, fname)], samples[(b, fname)]
        return round(statistics.median(x[key] - y[base_key or key] for x, y in zip(xs, ys, strict=True)), 1)

    def med(a: str, fname: str, key: str = "cpu_ns") -> float:
        return round(statistics.median(x[key] for x in samples[(a, fname)]), 1)

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b > 0 else None

    result: dict[str, Any] = {"rules": len(program.rules), "packets": packets, "rounds": rounds, "cpu": cpu}
    control = {"allowed": {"netc": "none", "nftables": "none", "iptables": "none"},
               "denied": {"netc": "drop_tcx", "nftables": "drop_forward", "iptables": "drop_forward"}}
    for fname in flows:
        r: dict[str, Any] = {}
        for sysname in ("netc", "nftables", "iptables"):
            r[f"{sysname}_ns"] = diff(sysname, control[fname][sysname], fname)
        r["netc_bpf_stats_ns"] = med("netc", fname, "stats_ns")
        r["netc_over_iptables"] = ratio(r["netc_ns"], r["iptables_ns"])
        r["netc_over_nftables"] = ratio(r["netc_ns"], r["nftables_ns"])
        for sysname in ("netc", "nftables", "iptables"):
            r[f"{sysname}_wall_ns"] = diff(sysname, control[fname][sysname], fname, "wall_ns")
        for sysname in ("netc", "nftables", "iptables", "empty_chain", "ct_only"):
            r[f"{sysname}_added_ns"] = diff(sysname, "none", fname)
        r["netc_stats_on_added_ns"] = diff("netc", "none", fname, "stats_on_cpu_ns", "cpu_ns")
        if fname == "denied":
            r["drop_forward_added_ns"] = diff("drop_forward", "none", fname)
            r["drop_tcx_added_ns"] = diff("drop_tcx", "none", fname)
        r["no_filter_ns"] = med("none", fname)
        r["netc_counted"] = int(min(x["counted"] for x in samples[("netc", fname)]))
        r["flow"] = f"udp {flows[fname][0]} -> web:{flows[fname][2]} ({why[fname]})"
        result[fname] = r
    # the headline: the denied flow, which no rule decides (every rule considered), and both ratios
    for k in ("netc_ns", "nftables_ns", "iptables_ns", "netc_over_iptables", "netc_over_nftables"):
        result[k] = result["denied"][k]
    result["target_met"] = all(
        result[f]["netc_ns"] <= max(result[f]["iptables_ns"], 0) / 10 and result[f]["netc_ns"] <= result[f]["nftables_ns"]
        for f in flows)
    # every system must have done what the reference semantics say with every datagram (the
    # denied flow reaches web only without a filter or with the empty chain)
    expect = {"denied": {"none": True, "empty_chain": True, "ct_only": True}, "allowed": {}}
    wrong = [f"{c} {f}: {x['arrived']:.2f} of the datagrams reached web"
             for (c, f), xs in samples.items() for x in xs
             if abs(x["arrived"] - (1.0 if expect[f].get(c, f == "allowed") else 0.0)) > 0.05]
    result["verdicts_ok"] = not wrong
    if wrong:
        result["verdicts_wrong"] = wrong[:10]
    result["backlog_drops"] = backlog_drops
    result["nftables_export_s"] = round(export_s, 2)
    result["method"] = (
        f"ns per packet = CPU time per datagram (the sending thread, pinned to CPU {cpu}, plus that CPU's "
        "ksoftirqd: the node forwards and filters in the sender's softirq) under the system, minus the same "
        "under a control giving the same verdict at the same hook at almost no cost (allowed: no filter; "
        "denied: one nft drop rule in the forward hook for nftables and iptables, a minimal tcx drop program on "
        f"web's veth for netc); medians over {rounds} rounds (configurations shuffled per round) of {packets} "
        "datagrams. *_wall_ns: the same from wall time; *_added_ns: over no filter at all; netc_bpf_stats_ns: "
        "run_time_ns/run_cnt of netc's programs per datagram (kernel.bpf_stats_enabled, set for that pass only)")
    return result


def format_text(result: dict[str, Any]) -> str:
    """The figures side by side, one row per flow (what `netc bench compare` prints without --json)."""
    cols = ("netc", "nftables", "iptables")
    lines = [f"{result['rules']} rules, ns per packet, medians of {result['rounds']} rounds of "
             f"{result['packets']} datagrams (docs/performance.md)",
             f"{'':10}{'netc':>10}{'nftables':>11}{'iptables':>11}{'netc bpf_stats':>16}"
             f"{'netc/iptables':>15}{'netc/nftables':>15}"]
    for fname in ("denied", "allowed"):
        r = result[fname]
        nums = "".join(f"{r[f'{c}_ns']:>{10 if c == 'netc' else 11},.0f}" for c in cols)
        lines.append(f"{fname:10}{nums}{r['netc_bpf_stats_ns']:>16,.0f}"
                     f"{r['netc_over_iptables'] if r['netc_over_iptables'] is not None else '-':>15}"
                     f"{r['netc_over_nftables'] if r['netc_over_nftables'] is not None else '-':>15}")
    for fname in ("denied", "allowed"):
        r = result[fname]
        lines.append(f"{fname} over no filter ({r['no_filter_ns']:,.0f} ns): netc {r['netc_added_ns']:,.0f}, "
                     f"nftables {r['nftables_added_ns']:,.0f}, iptables {r['iptables_added_ns']:,.0f}, "
                     f"empty nft chain {r['empty_chain_added_ns']:,.0f}, conntrack alone {r['ct_only_added_ns']:,.0f}"
                     + (f", drop control forward {r['drop_forward_added_ns']:,.0f} / tcx {r['drop_tcx_added_ns']:,.0f}"
                        if fname == "denied" else ""))
    lines.append(f"target (netc <= iptables/10 and <= nftables, both flows): "
                 f"{'met' if result['target_met'] else 'not met'}; every datagram judged as eval.py says: "
                 f"{'yes' if result['verdicts_ok'] else 'NO: ' + '; '.join(result['verdicts_wrong'])}; "
                 f"backlog drops {result['backlog_drops']}")
    return "\n".join(lines)
