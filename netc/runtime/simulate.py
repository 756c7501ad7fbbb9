"""The datapath's lookups replayed in Python over materialized map contents.

It answers what the kernel program will answer for a packet, without a kernel: tests compare it
with the reference semantics (eval.py) on random policies, and the kernel with both.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netc.ir.eval import Packet, is_ndp
from netc.runtime import abi, addr4
from netc.runtime.materialize import Contents, _bucket


@dataclass(frozen=True)
class SimVerdict:
    allowed: bool
    rule_id: int          # a rule id, or one of abi.RULE_DEFAULT_*


def _addr4_trie(contents: Contents) -> addr4.Trie:
    """The IPv4 arrays: read back from the kernel (`explain --live`), or laid out from netc_addrs
    as a load lays them out."""
    return addr4.trie_of(contents)


def _lpm_addr(contents: Contents, addr: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(addr)
    value = (0xFFFF << 32 | int(ip)) if ip.version == 4 else int(ip)
    if value >> 32 == 0xFFFF:
        # v4-mapped: the datapath reads the multibit trie in the IPv4 arrays
        return _addr4_trie(contents).lookup(value & 0xFFFFFFFF)
    table = contents.maps["netc_addrs"]
    for plen in range(128, -1, -1):
        masked = value & (((1 << plen) - 1) << (128 - plen)) if plen else 0
        hit = table.get(abi.ADDR_KEY.pack(plen, masked.to_bytes(16, "big")))
        if hit is not None:
            atom, klass = abi.ADDR_INFO.unpack(hit)
            return atom, klass
    return 0, abi.CLASS_WORLD


def _lpm_port(table: dict[bytes, bytes], make_key, port: int) -> tuple[int, int, int, int] | None:  # type: ignore[no-untyped-def]
    for bits in range(16, -1, -1):
        masked = port & (((1 << bits) - 1) << (16 - bits)) if bits else 0
        hit = table.get(make_key(masked, bits))
        if hit is not None:
            rank, rule_id, action, flags, _, _audit = abi.VERDICT.unpack(hit)
            return rank, rule_id, action, flags
    return None


def classify(contents: Contents, ifindex: int, direction: int, pkt: Packet) -> SimVerdict:
    ep = contents.maps["netc_endpoints"].get(ifindex.to_bytes(4, "little"))
    if ep is None:
        return SimVerdict(True, abi.RULE_DEFAULT_ALLOW)
    pset, _eid, iso_in, iso_eg, deny_in, deny_eg, aud_in, aud_eg, _obs, _sample = abi.ENDPOINT.unpack(ep)
    if is_ndp(pkt):
        return SimVerdict(True, abi.RULE_DEFAULT_ALLOW)
    if not (iso_in, iso_eg)[direction] and not (aud_in, aud_eg)[direction]:
        return SimVerdict(True, abi.RULE_DEFAULT_ALLOW)
    remote = pkt.src if direction == abi.DIR_INGRESS else pkt.dst
    atom, klass = _lpm_addr(contents, remote)
    proto = _bucket(pkt.protocol)
    d = direction | (abi.DIR_FRAG if pkt.fragment else 0)
    if pkt.fragment or proto == abi.PROTO_OTHER:
        port = 0
    elif proto in (1, 58):
        port = ((pkt.icmp_type or 0) << 8) | (pkt.icmp_code or 0)
    else:
        port = pkt.dport
    a = _lpm_port(contents.maps["netc_rules"],
                  lambda p, b: abi.rule_key(pset, atom, d, proto, p, b), port)
    w = _lpm_port(contents.maps["netc_wild"],
                  lambda p, b: abi.wild_key(pset, d, klass, proto, p, b), port)
    best = max((x for x in (a, w) if x is not None), default=None)
    if not (iso_in, iso_eg)[direction]:
        return SimVerdict(True, abi.RULE_DEFAULT_ALLOW)   # only audit rules here: they never decide
    if best is None or best[2] == abi.ACTION_NONE:
        if (deny_in, deny_eg)[direction]:
            return SimVerdict(False, abi.RULE_DEFAULT_DENY)
        return SimVerdict(True, abi.RULE_DEFAULT_ISO_ALLOW)
    return SimVerdict(best[2] == abi.ACTION_ALLOW, best[1])
