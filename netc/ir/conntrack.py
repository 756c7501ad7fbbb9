"""The reference model of connection tracking: what the datapath's tracker must do, in Python.

It follows docs/semantics.md ("Connections"): per endpoint, a normalized 5-tuple; TCP SYN opens,
SYN-ACK then ACK establish, FIN from both sides closes, RST ends at once; UDP and SCTP by tuple;
ICMP echo by identifier (0: untracked); other protocols by addresses; timeouts per state; the
first packet of a connection is judged by the policy (eval.evaluate_side), every later packet of
it, and every reply, passes. Tracking only happens for containers with an isolated direction,
and never for non-first fragments. The kernel differential test replays packet sequences
through both and requires the same verdict at every step.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from netc.ir.eval import Packet, evaluate_side
from netc.ir.nodes import Direction, Program
from netc.runtime import abi
from netc.runtime.inventory import Container, Inventory

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
ECHO = {1: (0, 8), 58: (128, 129)}


@dataclass
class _Entry:
    state: int
    orig_a: bool
    last: float
    flags: int = 0


@dataclass
class ConntrackModel:
    timeouts: dict[int, float] = field(default_factory=lambda: dict(abi.CT_TIMEOUT_DEFAULTS_S))
    entries: dict[tuple[object, ...], _Entry] = field(default_factory=dict)

    @staticmethod
    def _key(c: Container, pkt: Packet) -> tuple[tuple[object, ...], bool] | None:
        proto = pkt.protocol
        if proto in (6, 17, 132):
            sp, dp = pkt.sport, pkt.dport
        elif proto in ECHO:
            if pkt.icmp_type not in ECHO[proto]:
                return (c.name, proto, "untracked"), True
            sp = dp = pkt.icmp_id
        else:
            proto, sp, dp = 0, 0, 0
        src, dst = ipaddress.ip_address(pkt.src).packed, ipaddress.ip_address(pkt.dst).packed
        if len(src) == 4:
            src, dst = b"\0" * 10 + b"\xff\xff" + src, b"\0" * 10 + b"\xff\xff" + dst
        from_a = (src, sp) <= (dst, dp) if src != dst else sp <= dp
        a, b = ((src, sp), (dst, dp)) if from_a else ((dst, dp), (src, sp))
        return (c.name, proto, a, b), from_a

    def step(self, program: Program, inv: Inventory, c: Container, d: Direction, pkt: Packet,
             now: float) -> bool:
        """Is this packet allowed through `c`'s hook for direction `d`, given what came before?"""
        policies = [p for p in program.policies if p.selector.matches(c.labels)]
        tracked = any(p.isolates for p in policies)
        if tracked and not pkt.fragment:
            got = self._key(c, pkt)
            assert got is not None
            key, from_a = got
            e = self.entries.get(key)
            if e is not None and now - e.last > self.timeouts[e.state]:
                del self.entries[key]
                e = None
            if e is not None:
                self._advance(key, e, pkt, from_a, now)
                return True
        side = evaluate_side(program, inv, pkt, c, d)
        if side.allowed and tracked and not pkt.fragment:
            self._create(c, pkt, now)
        return side.allowed

    def _advance(self, key: tuple[object, ...], e: _Entry, pkt: Packet, from_a: bool, now: float) -> None:
        if pkt.protocol == 6:
            f = pkt.tcp_flags
            initiator = from_a == e.orig_a
            if f & RST:
                del self.entries[key]
                return
            if e.state == abi.CT_SYN_SENT and not initiator and f & SYN and f & ACK:
                e.state = abi.CT_SYN_RECV
            elif e.state == abi.CT_SYN_RECV and initiator and f & ACK:
                e.state = abi.CT_ESTABLISHED
            if f & FIN:
                e.flags |= 1 if from_a else 2
                e.state = abi.CT_CLOSING if e.flags == 3 else abi.CT_FIN_WAIT
        e.last = now

    def _create(self, c: Container, pkt: Packet, now: float) -> None:
        proto = pkt.protocol
        if proto == 6:
            if pkt.tcp_flags & RST:
                return
            state = abi.CT_SYN_SENT if pkt.tcp_flags & SYN and not pkt.tcp_flags & ACK else abi.CT_ESTABLISHED
        elif proto in (17, 132):
            state = abi.CT_UDP
        elif proto in ECHO:
            if pkt.icmp_type not in ECHO[proto] or pkt.icmp_id == 0:
                return
            state = abi.CT_ICMP
        else:
            state = abi.CT_OTHER
        got = self._key(c, pkt)
        assert got is not None
        key, from_a = got
        self.entries[key] = _Entry(state, from_a, now)
