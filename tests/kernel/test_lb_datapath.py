"""Service translation in the datapath, under BPF_PROG_TEST_RUN, with the service maps written by
hand (the runtime's own filling is tested with real traffic elsewhere): DNAT of a client's first
packet and of the rest of its connection, the reply given the VIP back, checksums still right,
policy judging the translated packet, hairpin, and the reject of a service with no backend."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from netc import api
from netc.ir.eval import Packet
from netc.ir.nodes import Direction
from netc.runtime import abi, addr4, slots
from netc.runtime.inventory import Container, Inventory
from netc.runtime.libbpf import BpfObject, prog_test_run
from netc.runtime.materialize import endpoint_for, materialize
from netc.runtime.packets import checksums_ok, frame

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
SYN, SYNACK, ACK, RST = 0x02, 0x12, 0x10, 0x04

SOURCE = """
group client = app == "client"
group web = app == "web"

policy client-out for client {
    egress default deny
    allow egress tcp to web port 8080
    allow egress udp to web port 5353
}

service web-svc {
    vip 10.96.0.20 port 80 tcp
    vip 10.96.0.20 port 53 udp
    vip fd00:96::20 port 80 tcp
    backends web port 8080
}

service gone-svc {
    vip 10.96.0.30 port 80 tcp
    backends (app == "nobody") port 80
}
"""

CLIENT = Container("c1", ("10.1.0.1", "fd00:1::1"), {"app": "client"})
WEB = Container("w1", ("10.1.0.2", "fd00:1::2"), {"app": "web"})
WEB2 = Container("w2", ("10.1.0.3", "fd00:1::3"), {"app": "web"})


class Lb:
    """A loaded copy of the program, the client's endpoint on ifindex 1, service maps by hand."""

    def __init__(self, tmp_path, source: str = SOURCE, containers=(CLIENT, WEB, WEB2)):
        path = tmp_path / "lb.netp"
        path.write_text(source)
        result = api.compile(str(path))
        self.program = result.program
        self.inventory = Inventory(list(containers))
        self.contents = materialize(self.program, self.inventory)
        self.obj = BpfObject.open_mem(result.object, "netc")
        self.obj.load()
        maps = self.obj.maps
        for name, entries in self.contents.maps.items():
            if name == "netc_addrs":
                entries = addr4.lpm_entries(entries)   # IPv4 remotes: in the arrays
                addr4.write(maps, self.contents)
            if name != "netc_endpoints" and entries:
                maps[name].update_batch(slots.encode_all(name, entries))
        from netc.runtime.loader import write_ct_timeouts

        write_ct_timeouts(maps["netc_ct_timeouts"])
        self.maps = maps
        self.progs = self.obj.programs
        self.be(CLIENT)

    def be(self, c: Container) -> None:
        key, value = endpoint_for(self.program, self.contents, c, 1, 1)
        self.maps["netc_endpoints"].update(key, slots.both("netc_endpoints", value))

    def service(self, svc_id: int, vip: str, port: int, proto: int, backends: list[tuple[str, int]],
                balance: int = abi.BALANCE_MAGLEV) -> None:
        table = self.maps["netc_lb_table"]
        for i, (addr, bport) in enumerate(backends):
            self.maps["netc_backends"].update(struct.pack("<I", svc_id * 10 + i),
                                              abi.backend(addr, bport, True, svc_id))
        size = 7
        base = (svc_id - 1) * 14
        for slot in range(size):
            bid = svc_id * 10 + slot % len(backends) if backends else 0
            table.update(struct.pack("<I", base + slot), struct.pack("<I", bid))
        self.maps["netc_services"].update(abi.svc_key(vip, port, proto),
                                          abi.service(svc_id, base, size if backends else 0, balance, 0))

    def run(self, direction: Direction, pkt: Packet) -> tuple[int, bytes]:
        prog = self.progs["netc_to_container" if direction is Direction.INGRESS else "netc_from_container"]
        r = prog_test_run(prog, frame(pkt, checksums=True))
        return r.retval, r.data_out

    def ct(self) -> list[tuple]:
        out = []
        for name in (*abi.CT_TABLES, abi.CT_REV_TABLE):   # IPv6, IPv4, service reverse entries
            for k, v in self.maps[name].items():
                key = abi.ct_key_from4(k) if name == "netc_ct4" else k
                out.append((abi.CT_KEY.unpack(key), abi.CT_ENTRY.unpack(v)))
        return out

    def close(self) -> None:
        self.obj.close()


@pytest.fixture
def lb(tmp_path):
    x = Lb(tmp_path)
    yield x
    x.close()


def tuple_of(raw: bytes) -> tuple[str, str, int, int, int]:
    """(src, dst, sport, dport, tcp flags) of a TCP/UDP frame."""
    if raw[12:14] == b"\x08\x00":
        src, dst = ipaddress.ip_address(raw[26:30]), ipaddress.ip_address(raw[30:34])
        l4 = 14 + (raw[14] & 0xF) * 4
    else:
        src, dst = ipaddress.ip_address(raw[22:38]), ipaddress.ip_address(raw[38:54])
        l4 = 54
    sport, dport = struct.unpack("!HH", raw[l4:l4 + 4])
    return str(src), str(dst), sport, dport, raw[l4 + 13] if len(raw) > l4 + 13 else 0


def test_first_packet_goes_to_the_backend_with_checksums_updated(lb):
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 8080)])
    ret, out = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
    assert ret == TC_ACT_OK
    assert tuple_of(out)[:4] == ("10.1.0.1", "10.1.0.2", 40000, 8080)
    assert checksums_ok(out)
    # two entries: forward (client, VIP) with the backend, reverse keyed by the translated tuple
    entries = lb.ct()
    assert sorted(v[9] for _, v in entries) == [abi.NAT_DNAT, abi.NAT_REVERSE]
    fwd = next(v for _, v in entries if v[9] == abi.NAT_DNAT)
    assert fwd[9] == abi.NAT_DNAT and fwd[11] == 8080


def test_the_rest_of_the_connection_and_its_replies(lb):
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 8080)])
    lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
    # the backend's SYN-ACK reaches the client from the VIP
    ret, out = lb.run(Direction.INGRESS, Packet(6, "10.1.0.2", "10.1.0.1", 8080, 40000, tcp_flags=SYNACK))
    assert ret == TC_ACT_OK
    assert tuple_of(out)[:4] == ("10.96.0.20", "10.1.0.1", 80, 40000)
    assert checksums_ok(out)
    # the client's ACK and data: to the backend again
    ret, out = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=ACK))
    assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("10.1.0.1", "10.1.0.2", 40000, 8080)
    assert checksums_ok(out)
    state = next(v for _, v in lb.ct() if v[9] == abi.NAT_DNAT)[3]
    assert state == abi.CT_ESTABLISHED


def test_a_connection_keeps_its_backend_when_the_table_changes(lb):
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 8080)])
    lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.3", 8080)])   # every slot now names another backend
    _, out = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=ACK))
    assert tuple_of(out)[1] == "10.1.0.2"
    _, out = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40001, 80, tcp_flags=SYN))
    assert tuple_of(out)[1] == "10.1.0.3"   # a new connection follows the new table


def test_policy_judges_the_translated_packet(lb):
    # the client may reach web on 8080 only: through the VIP (port 80) it gets there, directly on
    # port 80 it does not
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 8080)])
    ret, _ = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.1.0.2", 40000, 80, tcp_flags=SYN))
    assert ret == TC_ACT_SHOT
    lb.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 9999)])   # a backend port policy denies
    ret, _ = lb.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40002, 80, tcp_flags=SYN))
    assert ret == TC_ACT_SHOT


def test_udp_and_ipv6(lb):
    lb.service(2, "10.96.0.20", 53, 17, [("10.1.0.2", 5353)])
    ret, out = lb.run(Direction.EGRESS, Packet(17, "10.1.0.1", "10.96.0.20", 5000, 53))
    assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("10.1.0.1", "10.1.0.2", 5000, 5353)
    assert checksums_ok(out)
    ret, out = lb.run(Direction.INGRESS, Packet(17, "10.1.0.2", "10.1.0.1", 5353, 5000))
    assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("10.96.0.20", "10.1.0.1", 53, 5000)
    assert checksums_ok(out)

    lb.service(3, "fd00:96::20", 80, 6, [("fd00:1::2", 8080)])
    ret, out = lb.run(Direction.EGRESS, Packet(6, "fd00:1::1", "fd00:96::20", 40000, 80, tcp_flags=SYN))
    assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("fd00:1::1", "fd00:1::2", 40000, 8080)
    assert checksums_ok(out)
    ret, out = lb.run(Direction.INGRESS, Packet(6, "fd00:1::2", "fd00:1::1", 8080, 40000, tcp_flags=SYNACK))
    assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("fd00:96::20", "fd00:1::1", 80, 40000)
    assert checksums_ok(out)


@pytest.mark.parametrize("family", [4, 6])
def test_no_backend_answers_port_unreachable(lb, family):
    vip, client = ("10.96.0.30", "10.1.0.1") if family == 4 else ("fd00:96::30", "fd00:1::1")
    lb.service(4, vip, 80, 6, [])
    pkt = Packet(6, client, vip, 40000, 80, tcp_flags=SYN)
    ret, out = lb.run(Direction.EGRESS, pkt)
    assert ret == TC_ACT_REDIRECT   # straight back to the client
    assert checksums_ok(out)
    sent = frame(pkt, checksums=True)
    assert out[:6] == sent[6:12] and out[6:12] == sent[:6]   # MACs swapped
    if family == 4:
        assert out[23] == 1 and out[34:36] == b"\x03\x03"                  # ICMP port unreachable
        assert str(ipaddress.ip_address(out[26:30])) == vip and out[42:42 + 28] == sent[14:42]
    else:
        assert out[20] == 58 and out[54:56] == b"\x01\x04"                 # ICMPv6 port unreachable
        assert str(ipaddress.ip_address(out[22:38])) == vip and out[62:62 + 48] == sent[14:62]
    assert lb.ct() == []


def test_hairpin_the_client_is_the_backend(tmp_path):
    source = SOURCE.replace('policy client-out for client {', 'policy client-out for client {\n'
                            '    allow ingress tcp from client to port 8080\n'
                            '    allow egress tcp to client port 8080')
    x = Lb(tmp_path, source)
    try:
        x.service(1, "10.96.0.20", 80, 6, [("10.1.0.1", 8080)])
        # leaving: to itself, from the VIP (the kernel would drop a packet from its own address)
        ret, out = x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
        assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("10.96.0.20", "10.1.0.1", 40000, 8080)
        assert checksums_ok(out)
        # arriving back at the same container: its ingress policy judges it as from the client
        ret, _ = x.run(Direction.INGRESS, Packet(6, "10.96.0.20", "10.1.0.1", 40000, 8080, tcp_flags=SYN))
        assert ret == TC_ACT_OK
        # its answer leaves the container to the VIP and comes back as the VIP's
        ret, out = x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 8080, 40000, tcp_flags=SYNACK))
        assert ret == TC_ACT_OK and tuple_of(out)[:4] == ("10.96.0.20", "10.1.0.1", 80, 40000)
        assert checksums_ok(out)
    finally:
        x.close()


def test_hairpin_ingress_sees_the_client_not_the_vip(tmp_path):
    source = SOURCE.replace('policy client-out for client {', 'policy client-out for client {\n'
                            '    allow ingress tcp from 10.96.0.20 to port 8080\n'
                            '    allow egress tcp to client port 8080')
    x = Lb(tmp_path, source)
    try:
        x.service(1, "10.96.0.20", 80, 6, [("10.1.0.1", 8080)])
        ret, _ = x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
        assert ret == TC_ACT_OK
        ret, _ = x.run(Direction.INGRESS, Packet(6, "10.96.0.20", "10.1.0.1", 40000, 8080, tcp_flags=SYN))
        assert ret == TC_ACT_SHOT   # the rule names the VIP; the packet is the client's
    finally:
        x.close()


def test_a_new_service_connection_is_a_translate_event(tmp_path):
    from netc.runtime.observe import drain_ring

    x = Lb(tmp_path, SOURCE + '\nobserve client { events translate }\n')
    try:
        x.service(1, "10.96.0.20", 80, 6, [("10.1.0.2", 8080)])
        drain_ring(x.maps["netc_events"].fd)
        x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=SYN))
        x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.96.0.20", 40000, 80, tcp_flags=ACK))  # established
        x.run(Direction.EGRESS, Packet(6, "10.1.0.1", "10.1.0.2", 40001, 8080, tcp_flags=SYN))  # no service
        events = [abi.EVENT.unpack(r) for r in drain_ring(x.maps["netc_events"].fd)]
        assert [e[7] for e in events] == [abi.EVENT_TRANSLATE]
        ev = events[0]
        assert str(ipaddress.ip_address(ev[11][12:])) == "10.1.0.2" and ev[13] == 8080   # the backend
    finally:
        x.close()
