"""First-match winners over disjoint regions: how the nftables export makes a chain of N rules one lookup.

A chain's rules are in deciding order (model.chains): the first one that matches a packet
decides. Seen from one packet field at a time, each rule is a box: a set of remote addresses
times a set of values of a second field (destination ports, ICMP `type << 8 | code`, or
protocol numbers). `paint` cuts the address axis at every edge of every box, and for each piece
paints the second axis in rule order: the first rule paints what it covers, the next one what is
left, and so on. Each painted piece (address range × value range) has exactly one winner, the
first rule covering it, so a verdict map holding these disjoint pieces gives the verdict of the
first match in one lookup, whatever the rule count.

    >>> cands = [(((10, 19),), ((80, 80),), 0),      # rule 0: addresses 10-19, port 80
    ...          (((0, 99),), ((0, 65535),), 1)]     # rule 1: addresses 0-99, any port
    >>> for lo, hi, pieces in paint(cands, 99, 65535, 100):
    ...     print(lo, hi, pieces)
    0 9 ((0, 65535, 1),)
    10 19 ((0, 79, 1), (80, 80, 0), (81, 65535, 1))
    20 99 ((0, 65535, 1),)

Painting multiplies where boxes cross (N address rules under M port rules can make N × M
pieces), so `paint` stops at a limit and the export then splits the chain into consecutive
blocks of rules, each painted on its own and looked up in turn (first match over blocks in
order is first match over the whole list).
"""

from __future__ import annotations

from collections.abc import Sequence

from netc.ir.addrset import intersect_intervals, subtract_intervals

Interval = tuple[int, int]          # inclusive
Piece = tuple[int, int, int]        # (value lo, value hi, winner)
Region = tuple[int, int, tuple[Piece, ...]]   # (address lo, address hi, pieces of the value axis)
# one candidate: its address intervals, its value intervals (both sorted, disjoint), its winner tag
Candidate = tuple[Sequence[Interval], Sequence[Interval], int]


def paint_values(order: Sequence[int], values: Sequence[Sequence[Interval]], tags: Sequence[int],
                 vmax: int) -> tuple[Piece, ...]:
    """The value axis [0, vmax] painted by the candidates `order` (positions, earliest first)."""
    remaining: Sequence[Interval] = ((0, vmax),)
    pieces: list[Piece] = []
    for i in order:
        got = intersect_intervals(remaining, values[i])
        if got:
            pieces.extend((lo, hi, tags[i]) for lo, hi in got)
            remaining = subtract_intervals(remaining, values[i])
            if not remaining:
                break
    pieces.sort()
    merged: list[Piece] = []
    for lo, hi, t in pieces:               # neighbours with the same winner become one piece
        if merged and merged[-1][2] == t and merged[-1][1] + 1 == lo:
            merged[-1] = (merged[-1][0], hi, t)
        else:
            merged.append((lo, hi, t))
    return tuple(merged)


def paint(cands: Sequence[Candidate], amax: int, vmax: int, limit: int) -> list[Region] | None:
    """Disjoint regions of [0, amax] × [0, vmax] with the first candidate covering each.

    `cands` are in deciding order. Regions no candidate covers are left out. Neighbouring
    address ranges painted alike are merged. None when the pieces would exceed `limit`.
    """
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for pos, (addrs, _, _) in enumerate(cands):
        for lo, hi in addrs:
            starts.setdefault(lo, []).append(pos)
            ends.setdefault(hi + 1, []).append(pos)
    points = sorted(set(starts) | set(ends))
    values = [c[1] for c in cands]
    tags = [c[2] for c in cands]
    active: set[int] = set()
    cache: dict[tuple[int, ...], tuple[Piece, ...]] = {}
    out: list[Region] = []
    count = 0
    for k, p in enumerate(points):
        for pos in ends.get(p, ()):
            active.discard(pos)
        active.update(starts.get(p, ()))
        if not active or p > amax:
            continue
        hi = points[k + 1] - 1 if k + 1 < len(points) else amax
        key = tuple(sorted(active))
        pieces = cache.get(key)
        if pieces is None:
            pieces = cache[key] = paint_values(key, values, tags, vmax)
        if not pieces:
            continue
        if out and out[-1][2] == pieces and out[-1][1] + 1 == p:
            out[-1] = (out[-1][0], hi, pieces)
            continue
        count += len(pieces)
        if count > limit:
            return None
        out.append((p, hi, pieces))
    return out
