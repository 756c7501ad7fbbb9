"""Ethernet frames for a Packet, for BPF_PROG_TEST_RUN. Plain struct packing, no dependencies.

Checksums are left zero unless asked for: the classifier never reads them, but service
translation updates them incrementally, so its tests build frames with valid ones and check them
again on the way out (`checksums_ok`). Tests cross-check these frames with scapy's.
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


def inet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


_CSUM_AT = {6: 16, 17: 6, 1: 2, 58: 2}


def _with_l4_checksum(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    at = _CSUM_AT.get(proto)
    if at is None or len(l4) < at + 2:
        return l4
    pseudo = b"" if proto == 1 else _pseudo(src, dst, proto, len(l4))
    c = inet_checksum(pseudo + l4) or (0xFFFF if proto == 17 else 0)
    return l4[:at] + struct.pack("!H", c) + l4[at + 2:]


def checksums_ok(raw: bytes) -> bool:
    """Whether an Ethernet frame's IPv4 header checksum and TCP/UDP/ICMP checksum are right."""
    eth = struct.unpack("!H", raw[12:14])[0]
    if eth == 0x0800:
        ihl = (raw[14] & 0xF) * 4
        if inet_checksum(raw[14:14 + ihl]) != 0:
            return False
        total = struct.unpack("!H", raw[16:18])[0]
        src, dst, proto, l4 = raw[26:30], raw[30:34], raw[23], raw[14 + ihl:14 + total]
    elif eth == 0x86DD:
        plen = struct.unpack("!H", raw[18:20])[0]
        src, dst, proto, l4 = raw[22:38], raw[38:54], raw[20], raw[54:54 + plen]
    else:
        return True
    if proto == 17 and len(src) == 4 and l4[6:8] == b"\x00\x00":
        return True  # IPv4 UDP without a checksum
    if proto not in _CSUM_AT:
        return True
    pseudo = b"" if proto == 1 else _pseudo(src, dst, proto, len(l4))
    return inet_checksum(pseudo + l4) == 0


def frame(pkt: Packet, payload: bytes = b"netc", *, checksums: bool = False) -> bytes:
    src, dst = ipaddress.ip_address(pkt.src), ipaddress.ip_address(pkt.dst)
    if src.version != dst.version:
        raise ValueError(f"a packet from {src} to {dst} mixes address families")
    l4 = _l4(pkt) + payload
    if checksums and not pkt.fragment:
        l4 = _with_l4_checksum(src.packed, dst.packed, pkt.protocol, l4)
    if src.version == 4:
        frag = (1 << 13 | 100) if pkt.fragment else 0   # more fragments, offset 800 bytes
        if pkt.fragment:
            l4 = payload + b"\x00" * 8
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, frag, 64, pkt.protocol, 0,
                         src.packed, dst.packed)
        if checksums:
            ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
        return DST_MAC + SRC_MAC + b"\x08\x00" + ip + l4
    if pkt.fragment:
        # fragment extension header with a non-zero offset: no L4 header follows
        ext = struct.pack("!BBHI", pkt.protocol, 0, (100 << 3) | 1, 0x1234)
        body = ext + payload + b"\x00" * 8
        ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), 44, 64, src.packed, dst.packed)
        return DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + body
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), pkt.protocol, 64, src.packed, dst.packed)
    return DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + l4
