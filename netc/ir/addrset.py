"""Exact sets of addresses and ports as sorted disjoint intervals.

    >>> s = AddrSet.from_cidr("10.0.0.0/8").subtract(AddrSet.from_cidr("10.1.0.0/16"))
    >>> s.contains("10.2.3.4"), s.contains("10.1.2.3"), s.contains("fd00::1")
    (True, False, False)
    >>> [str(n) for n in AddrSet.from_cidr("10.0.0.0/8").subtract(AddrSet.from_cidr("10.128.0.0/9")).to_cidrs()]
    ['10.0.0.0/9']
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

Interval = tuple[int, int]  # inclusive

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _normalize(ivs: Iterable[Interval]) -> tuple[Interval, ...]:
    out: list[list[int]] = []
    for lo, hi in sorted(ivs):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def subtract_intervals(a: Sequence[Interval], b: Sequence[Interval]) -> tuple[Interval, ...]:
    """The parts of sorted disjoint intervals `a` not in sorted disjoint intervals `b`."""
    out: list[Interval] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            blo, bhi = b[k]
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
            if cur > hi:
                break
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def intersect_intervals(a: Sequence[Interval], b: Sequence[Interval]) -> tuple[Interval, ...]:
    """The parts of sorted disjoint intervals `a` that are also in sorted disjoint intervals `b`."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _covers(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> bool:
    return not subtract_intervals(b, a)


def _contains(ivs: tuple[Interval, ...], x: int) -> bool:
    import bisect

    i = bisect.bisect_right(ivs, (x, 1 << 129)) - 1
    return i >= 0 and ivs[i][0] <= x <= ivs[i][1]


def interval_to_prefixes(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    """Split [lo, hi] into aligned prefixes: yields (value, prefix length) in ascending order."""
    while lo <= hi:
        size = (lo & -lo).bit_length() - 1 if lo else bits
        while size > 0 and lo + (1 << size) - 1 > hi:
            size -= 1
        yield lo, bits - size
        lo += 1 << size


@dataclass(frozen=True, slots=True)
class AddrSet:
    v4: tuple[Interval, ...] = ()
    v6: tuple[Interval, ...] = ()

    @staticmethod
    def from_network(net: IPNetwork) -> AddrSet:
        lo = int(net.network_address)
        hi = int(net.broadcast_address)
        return AddrSet(((lo, hi),), ()) if net.version == 4 else AddrSet((), ((lo, hi),))

    @staticmethod
    def from_cidr(text: str) -> AddrSet:
        return AddrSet.from_network(ipaddress.ip_network(text, strict=False))

    @staticmethod
    def everything() -> AddrSet:
        return AddrSet(((0, V4_MAX),), ((0, V6_MAX),))

    @staticmethod
    def union_all(sets: Iterable[AddrSet]) -> AddrSet:
        v4: list[Interval] = []
        v6: list[Interval] = []
        for s in sets:
            v4.extend(s.v4)
            v6.extend(s.v6)
        return AddrSet(_normalize(v4), _normalize(v6))

    def union(self, other: AddrSet) -> AddrSet:
        return AddrSet(_normalize(self.v4 + other.v4), _normalize(self.v6 + other.v6))

    def subtract(self, other: AddrSet) -> AddrSet:
        return AddrSet(subtract_intervals(self.v4, other.v4), subtract_intervals(self.v6, other.v6))

    def intersect(self, other: AddrSet) -> AddrSet:
        return AddrSet(intersect_intervals(self.v4, other.v4), intersect_intervals(self.v6, other.v6))

    def covers(self, other: AddrSet) -> bool:
        return _covers(self.v4, other.v4) and _covers(self.v6, other.v6)

    def is_empty(self) -> bool:
        return not self.v4 and not self.v6

    def contains(self, addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
        return _contains(self.v4 if ip.version == 4 else self.v6, int(ip))

    def contains_int(self, version: int, value: int) -> bool:
        return _contains(self.v4 if version == 4 else self.v6, value)

    def to_cidrs(self) -> list[IPNetwork]:
        out: list[IPNetwork] = []
        for lo, hi in self.v4:
            for value, plen in interval_to_prefixes(lo, hi, 32):
                out.append(ipaddress.IPv4Network((value, plen)))
        for lo, hi in self.v6:
            for value, plen in interval_to_prefixes(lo, hi, 128):
                out.append(ipaddress.IPv6Network((value, plen)))
        return out

    def to_json(self) -> dict[str, list[str]]:
        return {"v4": [f"{lo:x}-{hi:x}" for lo, hi in self.v4], "v6": [f"{lo:x}-{hi:x}" for lo, hi in self.v6]}

    @staticmethod
    def from_json(d: dict[str, list[str]]) -> AddrSet:
        def parse(items: list[str]) -> tuple[Interval, ...]:
            return tuple((int(a, 16), int(b, 16)) for a, b in (x.split("-") for x in items))

        return AddrSet(parse(d.get("v4", [])), parse(d.get("v6", [])))


@dataclass(frozen=True, slots=True)
class PortSet:
    """Destination ports (or ICMP `type << 8 | code` values) as inclusive intervals."""

    ranges: tuple[Interval, ...]

    @staticmethod
    def of(ranges: Iterable[Interval]) -> PortSet:
        return PortSet(_normalize(ranges))

    @staticmethod
    def everything() -> PortSet:
        return PortSet(((0, 65535),))

    def contains(self, port: int) -> bool:
        return _contains(self.ranges, port)

    def covers(self, other: PortSet) -> bool:
        return _covers(self.ranges, other.ranges)

    def intersect(self, other: PortSet) -> PortSet:
        return PortSet(intersect_intervals(self.ranges, other.ranges))

    def is_empty(self) -> bool:
        return not self.ranges

    def to_json(self) -> list[list[int]]:
        return [[a, b] for a, b in self.ranges]

    @staticmethod
    def from_json(d: list[list[int]]) -> PortSet:
        return PortSet(tuple((int(a), int(b)) for a, b in d))

    def __str__(self) -> str:
        return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)
