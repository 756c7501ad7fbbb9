"""Backend selection: Maglev consistent hashing and the flow hash shared with the datapath.

The flow hash and the table are defined here, in pure Python; the kernel code reproduces the
hash exactly and receives the table as a map, so `netc explain` and the kernel pick the same
backend for the same flow.

    >>> t = maglev_table(["a", "b", "c"], [1, 1, 1], 13)
    >>> sorted(set(t)) == [0, 1, 2], len(t)
    (True, 13)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

DEFAULT_TABLE = 16381


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _mix32(h: int) -> int:
    """murmur3's finalizer: cheap in BPF, good avalanche."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def flow_hash(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> int:
    """The 5-tuple hash: addresses as 16 bytes (IPv4 v4-mapped), ports in host order."""
    h = 0x9E3779B9
    for i in range(0, 16, 4):
        h = _mix32(h ^ int.from_bytes(src[i:i + 4], "big"))
    for i in range(0, 16, 4):
        h = _mix32(h ^ int.from_bytes(dst[i:i + 4], "big"))
    h = _mix32(h ^ ((sport << 16) | dport))
    return _mix32(h ^ proto)


def maglev_table(names: Sequence[str], weights: Sequence[int], size: int = DEFAULT_TABLE) -> list[int]:
    """Maglev's population (Eisenbud et al., NSDI'16), weighted: backend i takes weights[i] turns a round.

    Returns `size` entries, each an index into `names` (-1 when there are no backends).
    """
    n = len(names)
    if n == 0:
        return [-1] * size
    offsets, skips = [], []
    for name in names:
        raw = name.encode()
        offsets.append(zlib.crc32(b"offset:" + raw) % size)
        skips.append(zlib.crc32(b"skip:" + raw) % (size - 1) + 1)
    nexts = [0] * n
    table = [-1] * size
    filled = 0
    max_w = max(weights)
    credit = [0] * n
    while True:
        for i in range(n):
            credit[i] += weights[i]
            while credit[i] >= max_w:
                credit[i] -= max_w
                c = (offsets[i] + nexts[i] * skips[i]) % size
                while table[c] >= 0:
                    nexts[i] += 1
                    c = (offsets[i] + nexts[i] * skips[i]) % size
                table[c] = i
                nexts[i] += 1
                filled += 1
                if filled == size:
                    return table
