"""Run classification in the kernel with BPF_PROG_TEST_RUN: `netc test --kernel` and `netc fuzz`.

The compiled object is loaded, its maps are filled from the materialized contents of a test
inventory, and every packet is run through the program for its direction. Test runs put the
skb on the loopback device (ifindex 1), so the endpoint under test is written to ifindex 1
before each packet; the rest of the maps are exactly what `netc load` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netc.ir.eval import Packet, evaluate_side
from netc.ir.nodes import Direction, Program
from netc.runtime import abi, slots
from netc.runtime.inventory import Container, Inventory
from netc.runtime.materialize import endpoint_for, materialize
from netc.runtime.packets import frame

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_UNSPEC = -1
TC_ACT_REDIRECT = 7
TEST_CT_ENTRIES = 4096
LOOPBACK = 1

PROGRAM_FOR = {Direction.INGRESS: "netc_to_container", Direction.EGRESS: "netc_from_container"}


@dataclass
class KernelVerdict:
    allowed: bool
    retval: int
    data_out: bytes = b""

    def destination(self) -> tuple[str, int] | None:
        """(address, port) the packet left with: where a service translated it to."""
        return packet_destination(self.data_out)


def packet_destination(raw: bytes) -> tuple[str, int] | None:
    """(address, port) a TCP/UDP Ethernet frame is sent to (no IPv6 extension headers)."""
    return _packet_end(raw, dst=True)


def packet_source(raw: bytes) -> tuple[str, int] | None:
    """(address, port) a TCP/UDP Ethernet frame comes from (no IPv6 extension headers)."""
    return _packet_end(raw, dst=False)


def _packet_end(raw: bytes, dst: bool) -> tuple[str, int] | None:
    import ipaddress
    import struct

    if raw[12:14] == b"\x08\x00" and len(raw) >= 38:
        l4 = 14 + (raw[14] & 0xF) * 4
        addr = raw[30:34] if dst else raw[26:30]
    elif raw[12:14] == b"\x86\xdd" and len(raw) >= 58:
        l4 = 54
        addr = raw[38:54] if dst else raw[22:38]
    else:
        return None
    off = l4 + (2 if dst else 0)
    return str(ipaddress.ip_address(addr)), struct.unpack("!H", raw[off:off + 2])[0]


class KernelClassifier:
    """A loaded copy of a compiled object, filled for one program and inventory."""

    def __init__(self, obj_bytes: bytes, program: Program, inventory: Inventory, *,
                 ct_entries: int | None = None):
        """ct_entries: size the connection-tracking tables (and affinity, reverse entries) so;
        test runs that judge a few packets each pass TEST_CT_ENTRIES, since preallocating the
        default 262,144 entries per case is most of a fuzz run's time. Benchmarks keep the
        default: a small LRU table would turn every new connection into an eviction."""
        from netc.runtime.libbpf import BpfObject

        self.program = program
        self.inventory = inventory
        self.contents = materialize(program, inventory)
        self.obj = BpfObject.open_mem(obj_bytes, "netc")
        from netc.runtime import addr4, services
        from netc.runtime.loader import map_sizes
        from netc.runtime.materialize import Ids

        sizes = map_sizes(self.contents, len(program.rules), len(inventory.containers))
        if ct_entries is not None:
            sizes["netc_ct"] = sizes["netc_ct4"] = ct_entries
            if program.services:
                sizes["netc_affinity"] = sizes["netc_ct_rev"] = ct_entries
        ids = Ids()
        self.lb = services.compute(program, inventory, {}, ids)   # what `netc load` writes too
        if program.services:
            # sized here, not by the object: one compiled object serves any program with services
            vips = len(services.vip_entries(program))
            sizes["netc_backends"] = services.backends_size(self.lb, ids)
            sizes["netc_services"] = max(1, vips)
            sizes["netc_lb_rr"] = vips + 1
            sizes["netc_lb_table"] = max(1, services.lb_table_slots(program))
        for name, n in sizes.items():
            self.obj.set_max_entries(name, n)
        self.obj.load()
        maps = self.obj.maps
        filled = dict(self.contents.maps)
        filled["netc_addrs"] = addr4.trie_of(self.contents).lpm   # IPv4 remotes: arrays
        addr4.write(maps, self.contents)
        if program.services:
            filled.update(services.initial_maps(self.lb))
        for name, entries in filled.items():
            if name == "netc_endpoints":
                continue   # written per packet's endpoint, on ifindex 1 (see classify)
            m = maps[name]
            items = slots.encode_all(name, entries) if name in slots.SLOTTED else list(entries.items())
            if items:
                m.update_batch(items)
        from netc.runtime.loader import write_ct_timeouts

        write_ct_timeouts(maps["netc_ct_timeouts"])
        self._endpoints = maps["netc_endpoints"]
        self._ct_tables = [maps[name] for name in abi.CT_TABLES]
        self._progs = self.obj.programs
        self._current: str | None = None
        self.stateless = True   # each classify() judges a first packet: tracked state is cleared

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> KernelClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def classify(self, container: Container, direction: Direction, pkt: Packet) -> KernelVerdict:
        from netc.runtime.libbpf import prog_test_run

        if self._current != container.name:
            key, value = endpoint_for(self.program, self.contents, container, LOOPBACK, 1)
            self._endpoints.update(key, slots.both("netc_endpoints", value))
            self._current = container.name
        run = prog_test_run(self._progs[PROGRAM_FOR[direction]], frame(pkt))
        if run.retval not in (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, TC_ACT_REDIRECT):
            raise AssertionError(f"unexpected return code {run.retval} for {pkt}")
        if self.stateless:
            self.flush_ct()
        # TC_ACT_REDIRECT: a service with no backend answered the client (ICMP port unreachable)
        return KernelVerdict(run.retval not in (TC_ACT_SHOT, TC_ACT_REDIRECT), run.retval, run.data_out)

    def ct_entries(self) -> list[tuple[bytes, bytes]]:
        """Every tracked connection: (key in its table, entry), IPv6 (netc_ct) then IPv4 (netc_ct4)."""
        return [item for m in self._ct_tables for item in m.items()]

    def flush_ct(self) -> None:
        """Forget every connection (and every client's remembered backend)."""
        for m in [*self._ct_tables, self.obj.maps.get("netc_affinity"), self.obj.maps.get("netc_ct_rev")]:
            if m is not None:
                for key in list(m.keys()):
                    m.delete(key)


def run_kernel_tests(path: str, run: Any, inventory: str | None) -> dict[int, tuple[bool, str]]:
    """For each expectation of a test run: does the kernel agree with the reference semantics?"""
    from netc import api
    from netc.ir.eval import translate
    from netc.ir.testing import TestWorld

    res = api.compile(path)
    inv = Inventory.load(inventory) if inventory else None
    out: dict[int, tuple[bool, str]] = {}
    for block in res.program.tests:
        world = TestWorld(res.program, block, inv)
        with KernelClassifier(res.object, res.program, world.inventory, ct_entries=TEST_CT_ENTRIES) as kc:
            for r in run.results:
                if r.block != block.name or r.packet is None:
                    continue
                pkt, t = translate(res.program, world.inventory, r.packet)
                sides = []
                agree = True
                notes = []
                for c, d in ((world.inventory.by_address(pkt.src), Direction.EGRESS),
                             (world.inventory.by_address(pkt.dst), Direction.INGRESS)):
                    if c is None:
                        continue
                    ref = evaluate_side(res.program, world.inventory, pkt, c, d)
                    if d is Direction.EGRESS and t is not None:
                        # the client's veth sees the packet to the VIP, and translates it itself
                        k = kc.classify(c, d, r.packet)
                        note = _translation_disagreement(res.program, t, k)
                        if note:
                            agree = False
                            notes.append(f"{c.name} egress: {note}")
                        if t.backend is None:
                            sides.append(k.allowed)
                            continue   # rejected: no side further judges it
                    else:
                        k = kc.classify(c, d, pkt)
                    sides.append(k.allowed)
                    if k.allowed != ref.allowed:
                        agree = False
                        notes.append(f"{c.name} {d.value}: kernel {'allows' if k.allowed else 'denies'}, "
                                     f"reference {'allows' if ref.allowed else 'denies'}")
                kernel_allowed = all(sides)
                msg = "kernel agrees" if agree else "; ".join(notes)
                if r.expectation.verdict != "dnat":
                    ok = agree and kernel_allowed == (r.expectation.verdict == "allow")
                else:
                    ok = agree
                out[id(r)] = (ok, msg + ("" if ok or not agree else
                                         f" (kernel {'allows' if kernel_allowed else 'denies'})"))
    return out


def _translation_disagreement(program: Program, t: Any, k: KernelVerdict) -> str:
    """Why the kernel's translation of a packet to a VIP is not the reference's ('' if it is)."""
    from netc.ir.nodes import Balance

    if t.backend is None:
        if k.retval != TC_ACT_REDIRECT:
            return f"service {t.service} has no backends: the kernel did not reject (return code {k.retval})"
        return ""
    if not k.allowed:
        return ""   # denied by policy: the packet is dropped, translated or not
    got = k.destination()
    svc = next(s for s in program.services if s.name == t.service)
    if svc.balance is Balance.MAGLEV:
        if got != (t.address, t.port):
            return f"kernel translated to {got}, reference to {t.address}:{t.port} ({t.backend})"
        return ""
    if got not in {(a, p) for _, a, p in t.candidates}:
        return f"kernel translated to {got}, which is none of service {t.service}'s backends"
    return ""
