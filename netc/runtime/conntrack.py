"""`netc conntrack list` and `netc conntrack flush`: the connection-tracking table of a target.

Evictions are counted exactly without touching the datapath's fast path: the datapath counts
the entries it makes and removes (RST, expiry); user space counts what it flushes; an LRU table
loses entries only by those means or by eviction, so evictions = made - removed - flushed - live.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from netc.errors import NetcError
from netc.runtime import abi
from netc.runtime.observe import _shared_map, read_stats_raw, view


@dataclass(frozen=True)
class CtEntry:
    container: str
    protocol: str
    a: str
    port_a: int
    b: str
    port_b: int
    initiator: str          # "a" or "b"
    direction: str          # of the first packet, as the container sees it
    state: str
    age_s: float
    idle_s: float
    rule: str
    packets: int
    bytes: int
    key: bytes
    translated: str = ""    # service connections: the backend as "address:port"

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("key")
        return d


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.IPv4Address(raw[12:])) if family == 4 else str(ipaddress.IPv6Address(raw))


def _flushed_path(target: str) -> str:
    from netc.runtime.state import state_dir

    return os.path.join(state_dir(), "objects", f"{target}.ct-flushed")


def _tracked(target: str) -> Iterator[tuple[bytes, bytes]]:
    """Every tracked connection as (struct netc_ct_key, entry), from both tables (abi.ct_table),
    then the reverse entries of service connections (abi.CT_REV_TABLE)."""
    for name in abi.CT_TABLES:
        with _shared_map(target, name) as m:
            for key, value in m.items():
                yield (abi.ct_key_from4(key) if name == "netc_ct4" else key), value
    try:
        rev = _shared_map(target, abi.CT_REV_TABLE)
    except NetcError:
        return   # loaded by a netc from before services
    with rev as m:
        yield from m.items()


def entries(target: str, container: str | None = None) -> list[CtEntry]:
    return _scan(target, container)[0]


def _scan(target: str, container: str | None) -> tuple[list[CtEntry], list[bytes]]:
    """The listed entries, and the keys of the reverse-translation entries (not listed: each is
    the twin of a listed service connection)."""
    tv = view(target)
    by_ifindex = {c.ifindex: c.name for c in tv.inventory.containers if c.ifindex is not None}
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    out: list[CtEntry] = []
    twins: list[bytes] = []
    protos = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6", 0: "other"}
    for key, value in _tracked(target):
        ifindex, proto, family, _, a, b, pa, pb = abi.CT_KEY.unpack(key)
        (created, last, rule_id, state, orig_a, d, _flags, packets, octets,
         nat, _backend, nat_port, _nat_port2, nat_addr, _nat_addr2) = abi.CT_ENTRY.unpack(value)
        name = by_ifindex.get(ifindex, f"ifindex {ifindex}")
        if container and name != container:
            continue
        if nat & abi.NAT_REVERSE:
            twins.append(key)
            continue
        translated = f"{_addr(nat_addr, family)}:{nat_port}" if nat & abi.NAT_DNAT else ""
        loc, text, _ = tv.describe_rule(rule_id)
        out.append(CtEntry(name, protos.get(proto, str(proto)), _addr(a, family), pa, _addr(b, family), pb,
                           "a" if orig_a else "b", "ingress" if d == abi.DIR_INGRESS else "egress",
                           abi.CT_STATES.get(state, str(state)), round((now - created) / 1e9, 3),
                           round((now - last) / 1e9, 3), f"{loc} {text}".strip(), packets, octets, key,
                           translated))
    out.sort(key=lambda e: (e.container, e.age_s))
    return out, twins


def flush(target: str, container: str | None = None) -> int:
    """Delete tracked connections (of one container, or all); returns how many."""
    gone = twins_gone = 0
    listed, twins = _scan(target, container)
    for e in listed:
        name, key = abi.ct_table(e.key)
        with _shared_map(target, name) as m:
            gone += bool(m.delete(key))
    if twins:
        with _shared_map(target, abi.CT_REV_TABLE) as m:
            for k in twins:
                twins_gone += bool(m.delete(k))
    path = _flushed_path(target)
    before = 0
    if os.path.exists(path):
        with open(path) as fh:
            before = int(json.load(fh).get("flushed", 0))
    with open(path, "w") as fh:
        json.dump({"flushed": before + gone + twins_gone}, fh)  # every entry, for the eviction count
    return gone


def summary(target: str) -> dict[str, int]:
    raw = read_stats_raw(target)
    listed, twins = _scan(target, None)
    live = len(listed) + len(twins)
    flushed = 0
    path = _flushed_path(target)
    if os.path.exists(path):
        with open(path) as fh:
            flushed = int(json.load(fh).get("flushed", 0))
    made, removed = raw.get(abi.STAT_CT_CREATED, 0), raw.get(abi.STAT_CT_REMOVED, 0)
    return {"live": live, "created": made, "removed": removed, "flushed": flushed,
            "evicted": max(0, made - removed - flushed - live)}
