"""Counters, statistics and flow events of a loaded target, resolved to rules and containers.

Rule ids resolve to `file:line` through the manifest of the running version; endpoint ids and
addresses resolve to container names through the inventory the maps were last written for.
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from netc.errors import NetcError
from netc.ir.nodes import Program, Rule
from netc.runtime import abi
from netc.runtime.inventory import Inventory

DEFAULT_NAMES = {
    abi.RULE_ESTABLISHED: "(established: a tracked connection or its reply)",
    abi.RULE_RELATED: "(related: an ICMP error about a tracked connection)",
    abi.RULE_DEFAULT_ALLOW: "(default: no policy isolates this direction)",
    abi.RULE_DEFAULT_DENY: "(default deny: isolated, no rule matched)",
    abi.RULE_DEFAULT_ISO_ALLOW: "(default allow: isolated, every isolating policy says default allow)",
    abi.RULE_MALFORMED: "(malformed packet)",
}
DIRECTIONS = {abi.DIR_INGRESS: "ingress", abi.DIR_EGRESS: "egress"}
ACTIONS = {abi.ACTION_ALLOW: "allow", abi.ACTION_DENY: "deny", abi.ACTION_NONE: "none"}
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}


@dataclass
class TargetView:
    """What it takes to read a target's maps and to name what they say."""

    target: str
    version: int
    program: Program
    inventory: Inventory
    endpoint_names: dict[int, str]
    object_path: str

    def rule(self, rule_id: int) -> Rule | None:
        return self.program.rules_by_id.get(rule_id)

    def describe_rule(self, rule_id: int) -> tuple[str, str, str]:
        """(location, text, policy) of a rule id or a default."""
        r = self.rule(rule_id)
        if r is not None:
            return r.location, r.text, r.policy
        return DEFAULT_NAMES.get(rule_id, f"(rule {rule_id}, not in v{self.version})"), "", ""

    def container_of(self, address: str) -> str | None:
        c = self.inventory.by_address(address)
        return c.name if c else ("host" if self.inventory.is_host(address) else None)


def view(target: str) -> TargetView:
    from netc.api import read_manifest
    from netc.runtime.loader import _ids_path, _snapshot_path
    from netc.runtime.state import State

    with State() as st:
        active = st.active(target)
        if active is None:
            raise NetcError(f"nothing is loaded for `{target}`; `netc status` lists what is")
        with open(active.object, "rb") as fh:
            program = Program.from_json(read_manifest(fh.read())["ir"])
        with open(_snapshot_path(active.object)) as fh:
            inv = Inventory.from_dict(json.load(fh))
        with open(_ids_path(active.object)) as fh:
            endpoints = json.load(fh).get("endpoints", {})
    return TargetView(target, active.version, program, inv, {v: k for k, v in endpoints.items()},
                      active.object)


def _shared_map(target: str, name: str) -> Any:
    from netc.runtime.libbpf import Map
    from netc.runtime.loader import _paths

    path = os.path.join(_paths(target)[0], "shared", name)
    if not os.path.exists(path):
        raise NetcError(f"`{target}` has no {name} pinned at {path}; load it again with this netc")
    return Map.from_pinned(path)


# ---------------------------------------------------------------------- counters and stats
@dataclass(frozen=True)
class CounterRow:
    rule_id: int
    location: str
    text: str
    policy: str
    container: str
    direction: str
    action: str
    packets: int
    bytes: int


def _sum_cpus(raw: bytes) -> tuple[int, int]:
    from netc.runtime.libbpf import per_cpu_values

    packets = total_bytes = 0
    for v in per_cpu_values(raw, abi.COUNTER.size):
        p, b = abi.COUNTER.unpack(v)
        packets += p
        total_bytes += b
    return packets, total_bytes


def read_counters(target: str) -> list[CounterRow]:
    """Every counter, summed over CPUs, sorted by packets (most first)."""
    tv = view(target)
    totals: dict[tuple[int, int, int, int], tuple[int, int]] = {}
    with _shared_map(target, "netc_counters") as m:
        for key, raw in m.items():
            rule_id, endpoint_id, d, action, _ = abi.COUNTER_KEY.unpack(key)
            totals[(rule_id, endpoint_id, d, action)] = _sum_cpus(raw)
    # established and related packets, of endpoints with a slot in netc_ct_counters
    with _shared_map(target, "netc_ct_counters") as m:
        for slot in range(abi.CT_COUNTER_SLOTS):
            packets, total_bytes = _sum_cpus(m.lookup(slot.to_bytes(4, "little")) or b"")
            if packets:
                key = abi.ct_counter_key(slot)
                p0, b0 = totals.get(key, (0, 0))
                totals[key] = (p0 + packets, b0 + total_bytes)
    rows: list[CounterRow] = []
    for (rule_id, endpoint_id, d, action), (packets, total_bytes) in totals.items():
        loc, text, policy = tv.describe_rule(rule_id)
        rows.append(CounterRow(rule_id, loc, text, policy, tv.endpoint_names.get(endpoint_id, f"#{endpoint_id}"),
                               DIRECTIONS.get(d, str(d)), ACTIONS.get(action, str(action)), packets, total_bytes))
    rows.sort(key=lambda r: (-r.packets, r.location, r.container))
    return rows


def unmatched_rules(target: str, rows: list[CounterRow] | None = None) -> list[Rule]:
    """Rules of the running version that never decided a packet."""
    tv = view(target)
    hit = {r.rule_id for r in (rows if rows is not None else read_counters(target))}
    return [r for r in tv.program.rules if r.id not in hit and r.action.value != "audit"]


def read_stats_raw(target: str) -> dict[int, int]:
    """Every slot of netc_stats, summed over CPUs."""
    from netc.runtime.libbpf import per_cpu_values

    out: dict[int, int] = {}
    with _shared_map(target, "netc_stats") as m:
        for slot in range(abi.STATS):
            raw = m.lookup(slot.to_bytes(4, "little"))
            out[slot] = sum(int.from_bytes(v, "little") for v in per_cpu_values(raw, 8)) if raw else 0
    return out


def read_stats(target: str) -> dict[str, int]:
    raw = read_stats_raw(target)
    return {"events_lost": raw[abi.STAT_EVENTS_LOST], "counters_full": raw[abi.STAT_COUNTERS_FULL],
            "malformed": raw[abi.STAT_MALFORMED], "lb_new": raw[abi.STAT_LB_NEW],
            "lb_rejected": raw[abi.STAT_LB_REJECTED]}


# ---------------------------------------------------------------------- events
def _addr(raw: bytes, family: int) -> str:
    if family == 4:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def decode_event(data: bytes, tv: TargetView) -> dict[str, Any]:
    (ts, eid, rule_id, audit_rule, length, d, action, kind, proto, family,
     saddr, daddr, sport, dport) = abi.EVENT.unpack(data[:abi.EVENT.size])
    src, dst = _addr(saddr, family), _addr(daddr, family)
    rule = tv.rule(rule_id)
    audit = tv.rule(audit_rule) if audit_rule else None
    boot_offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    return {
        "time": datetime.datetime.fromtimestamp(boot_offset + ts / 1e9, datetime.UTC).isoformat(),
        "ts_ns": ts,
        "target": tv.target,
        "container": tv.endpoint_names.get(eid, f"#{eid}"),
        "direction": DIRECTIONS.get(d, str(d)),
        "kind": abi.EVENT_KINDS.get(kind, str(kind)),
        "verdict": ACTIONS.get(action, str(action)),
        "protocol": PROTOCOLS.get(proto, f"proto-{proto}"),
        "src": src, "sport": sport, "dst": dst, "dport": dport,
        "src_name": tv.container_of(src), "dst_name": tv.container_of(dst),
        "bytes": length,
        "rule": None if rule is None else {"id": rule.id, "location": rule.location, "text": rule.text,
                                           "policy": rule.policy},
        "default": None if rule is not None else DEFAULT_NAMES.get(rule_id, f"rule {rule_id}"),
        "audit_rule": None if audit is None else {"id": audit.id, "location": audit.location,
                                                  "text": audit.text, "policy": audit.policy},
    }


_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _ring_api() -> Any:
    from netc.runtime.libbpf import lib

    bpf = lib()
    bpf.ring_buffer__new.restype = ctypes.c_void_p
    bpf.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]
    bpf.ring_buffer__poll.restype = ctypes.c_int
    bpf.ring_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
    bpf.ring_buffer__consume.restype = ctypes.c_int
    bpf.ring_buffer__consume.argtypes = [ctypes.c_void_p]
    bpf.ring_buffer__free.restype = None
    bpf.ring_buffer__free.argtypes = [ctypes.c_void_p]
    return bpf


def drain_ring(map_fd: int) -> list[bytes]:
    """Every record waiting in a ring buffer map, consumed."""
    bpf = _ring_api()
    out: list[bytes] = []

    def on_sample(_ctx: int, data: int, size: int) -> int:
        out.append(ctypes.string_at(data, size))
        return 0

    callback = _SAMPLE_FN(on_sample)
    rb = bpf.ring_buffer__new(map_fd, callback, None, None)
    if not rb:
        raise NetcError(f"cannot read the ring buffer: {os.strerror(ctypes.get_errno() or 22)}")
    try:
        while bpf.ring_buffer__consume(rb) > 0:
            pass
    finally:
        bpf.ring_buffer__free(rb)
    return out


def stream_events(target: str, *, duration_s: float | None = None, poll_ms: int = 100,
                  stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Events from the target's ring, decoded, until duration_s passes or stop() says so."""
    tv = view(target)
    bpf = _ring_api()
    pending: list[bytes] = []

    def on_sample(_ctx: int, data: int, size: int) -> int:
        pending.append(ctypes.string_at(data, size))
        return 0

    callback = _SAMPLE_FN(on_sample)
    with _shared_map(target, "netc_events") as ring:
        rb = bpf.ring_buffer__new(ring.fd, callback, None, None)
        if not rb:
            raise NetcError(f"cannot read the event ring of `{target}`: {os.strerror(ctypes.get_errno() or 22)}")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while True:
                ret = bpf.ring_buffer__poll(rb, poll_ms)
                if ret < 0 and -ret != 4:   # EINTR is fine
                    raise NetcError(f"reading the event ring: {os.strerror(-ret)}")
                while pending:
                    yield decode_event(pending.pop(0), tv)
                if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop()):
                    return
        finally:
            bpf.ring_buffer__free(rb)


# ---------------------------------------------------------------------- explain from the live maps
def live_contents(target: str) -> tuple[TargetView, Any]:
    """The running version's classifier maps, read back from the kernel: the live generation's
    slot of every entry (runtime/slots.py), and its half of the IPv4 arrays."""
    from netc.runtime import addr4, slots
    from netc.runtime.loader import MAPS, _pinned_maps
    from netc.runtime.materialize import Contents

    tv = view(target)
    contents = Contents()
    with _pinned_maps(target, tv.version) as maps:
        gen = slots.read_generation(maps[slots.GEN_MAP])
        for name in MAPS:
            contents.maps[name] = {k: slots.decode(name, v, gen) for k, v in maps[name].items()}
        if addr4.ROOT_MAP in maps:   # IPv4 remotes: the arrays as the datapath walks them
            contents.addr4 = addr4.read_arrays(maps[addr4.ROOT_MAP], maps[addr4.NODES_MAP], gen)
    return tv, contents
