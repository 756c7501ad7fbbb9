"""Ethernet frames for a Packet, for BPF_PROG_TEST_RUN. Plain struct packing, no dependencies.

Checksums are left zero: the classifier never reads them. Tests cross-check these frames with
scapy's.
"""

from __future__ import annotations

import ipaddress
import struct

from netc.ir.eval import Packet

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def _l4(pkt: Packet) -> bytes:
    if pkt.protocol == 6:
        return struct.pack("!HHIIBBHHH", pkt.sport, pkt.dport, 1, 0, 5 << 4, pkt.tcp_flags, 65535, 0, 0)
    if pkt.protocol == 17:
        return struct.pack("!HHHH", pkt.sport, pkt.dport, 8, 0)
    if pkt.protocol == 132:
        return struct.pack("!HHII", pkt.sport, pkt.dport, 1, 0)
    if pkt.protocol in (1, 58):
        return struct.pack("!BBHHH", pkt.icmp_type or 0, pkt.icmp_code or 0, 0, pkt.icmp_id, 1)
    return b"\x00" * 8


def frame(pkt: Packet, payload: bytes = b"netc") -> bytes:
    src, dst = ipaddress.ip_address(pkt.src), ipaddress.ip_address(pkt.dst)
    if src.version != dst.version:
        raise ValueError(f"a packet from {src} to {dst} mixes address families")
    l4 = _l4(pkt) + payload
    if src.version == 4:
        frag = (1 << 13 | 100) if pkt.fragment else 0   # more fragments, offset 800 bytes
        if pkt.fragment:
            l4 = payload + b"\x00" * 8
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, frag, 64, pkt.protocol, 0,
                         src.packed, dst.packed)
        return DST_MAC + SRC_MAC + b"\x08\x00" + ip + l4
    if pkt.fragment:
        # fragment extension header with a non-zero offset: no L4 header follows
        ext = struct.pack("!BBHI", pkt.protocol, 0, (100 << 3) | 1, 0x1234)
        body = ext + payload + b"\x00" * 8
        ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), 44, 64, src.packed, dst.packed)
        return DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + body
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), pkt.protocol, 64, src.packed, dst.packed)
    return DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + l4
