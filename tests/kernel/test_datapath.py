"""The datapath's verdicts under BPF_PROG_TEST_RUN, on frames built with scapy and maps written by hand.

BPF_PROG_TEST_RUN puts the test skb on the loopback device (skb->ifindex == 1) unless the
context names another device, so the endpoint under test is ifindex 1.
"""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.sctp import SCTP

from netc.runtime import abi, addr4, slots
from netc.runtime.libbpf import prog_test_run
from netc.runtime.materialize import Contents

pytestmark = pytest.mark.kernel

TC_ACT_OK = 0
TC_ACT_SHOT = 2

LO = 1
PSET = 7
ATOM_V4 = 5  # 10.1.1.1/32
ATOM_V6 = 6  # fd00::1/128
CONTAINER = "10.0.0.5"
CONTAINER6 = "fd00::5"

TO = "netc_to_container"      # direction INGRESS: the remote is the source
FROM = "netc_from_container"  # direction EGRESS: the remote is the destination

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def eth(ethertype=None):
    return Ether(**MACS) if ethertype is None else Ether(type=ethertype, **MACS)


IPV4, IPV6 = 0x0800, 0x86DD


def v4(src="10.1.1.1", dst=CONTAINER, **kw):
    return eth() / IP(src=src, dst=dst, **kw)


def v6(src="fd00::1", dst=CONTAINER6, **kw):
    return eth() / IPv6(src=src, dst=dst, **kw)


def run(datapath, prog, frame, **kw) -> int:
    """One packet, judged as the first of its flow: tracked connections are forgotten after it
    (connection tracking has tests of its own)."""
    retval = prog_test_run(datapath.programs[prog], bytes(frame), **kw).retval
    for name in abi.CT_TABLES:
        ct = datapath.maps[name]
        for key in list(ct.keys()):
            ct.delete(key)
    return retval


def allow(priority=0):
    return abi.verdict(abi.rank(priority, False), abi.FIRST_RULE_ID, abi.ACTION_ALLOW, 0)


def deny(priority=0):
    return abi.verdict(abi.rank(priority, True), abi.FIRST_RULE_ID + 1, abi.ACTION_DENY, 0)


def add_addrs(datapath, addrs):
    """netc_addrs' entries as the loader writes them: IPv4 prefixes in the arrays, others in the LPM."""
    m = datapath.maps
    for k, v in addr4.lpm_entries(addrs).items():
        m["netc_addrs"].update(k, slots.both("netc_addrs", v))
    addr4.write(m, Contents(maps={"netc_addrs": addrs}))


def add_rule(datapath, atom, proto, port, port_bits, verdict, direction=abi.DIR_INGRESS):
    datapath.maps["netc_rules"].update(abi.rule_key(PSET, atom, direction, proto, port, port_bits),
                                       slots.both("netc_rules", verdict))


def add_wild(datapath, klass, proto, port, port_bits, verdict, direction=abi.DIR_INGRESS):
    datapath.maps["netc_wild"].update(abi.wild_key(PSET, direction, klass, proto, port, port_bits),
                                      slots.both("netc_wild", verdict))


@pytest.fixture
def policy(datapath):
    """Endpoint on ifindex 1: ingress isolated with default deny, egress not isolated.

    Atom ATOM_V4 is 10.1.1.1/32 and ATOM_V6 is fd00::1/128; rules allow tcp/443 from each, and
    ICMP / ICMPv6 echo requests from them.
    """
    m = datapath.maps
    m["netc_endpoints"].update(LO.to_bytes(4, "little"),
                               slots.both("netc_endpoints", abi.endpoint(PSET, 1, isolated=(True, False),
                                                                         default_deny=(True, False))))
    add_addrs(datapath, {abi.addr_key(ipaddress.ip_network("10.1.1.1/32")):
                         abi.ADDR_INFO.pack(ATOM_V4, abi.CLASS_CONTAINER),
                         abi.addr_key(ipaddress.ip_network("fd00::1/128")):
                         abi.ADDR_INFO.pack(ATOM_V6, abi.CLASS_CONTAINER)})
    add_rule(datapath, ATOM_V4, 6, 443, 16, allow())
    add_rule(datapath, ATOM_V6, 6, 443, 16, allow())
    add_rule(datapath, ATOM_V4, 1, 8 << 8, 8, allow())      # icmp type echo-request, any code
    add_rule(datapath, ATOM_V6, 58, 128 << 8, 8, allow())   # icmpv6 type echo-request
    return datapath


# ---------------------------------------------------------------- unmanaged / parsing
@pytest.mark.parametrize("prog", [TO, FROM])
def test_arp_passes(datapath, prog):
    assert run(datapath, prog, eth() / ARP()) == TC_ACT_OK


@pytest.mark.parametrize("prog", [TO, FROM])
def test_ip_on_an_unmanaged_interface_passes(datapath, prog):
    assert run(datapath, prog, v4() / TCP(dport=80)) == TC_ACT_OK
    assert run(datapath, prog, v6() / TCP(dport=80)) == TC_ACT_OK


@pytest.mark.parametrize("prog", [TO, FROM])
def test_a_truncated_ipv4_header_is_dropped(datapath, prog):
    """The header says 24 bytes (ihl=6), the frame ends after 20."""
    header = bytearray(bytes(IP(src="10.1.1.1", dst=CONTAINER, proto=6)))
    header[0] = 0x46
    assert run(datapath, prog, eth(IPV4) / bytes(header)) == TC_ACT_SHOT


def test_test_run_refuses_frames_shorter_than_the_ip_header(datapath):
    """Kernel 6.18 checks this itself (EINVAL) before running the program: such frames can only
    be tested with real traffic. The program still checks bounds, as the verifier demands."""
    from netc.errors import LoadError

    with pytest.raises(LoadError, match="Invalid argument"):
        run(datapath, TO, eth(IPV4) / bytes(IP(src="10.1.1.1", dst=CONTAINER))[:12])


@pytest.mark.parametrize("frame", [
    eth(IPV4) / bytes(IP(src="10.1.1.1", dst=CONTAINER, ihl=4) / TCP()),      # ihl < 5
    eth(IPV4) / bytes(IP(src="10.1.1.1", dst=CONTAINER, ihl=15)),              # options run past the end
    eth(IPV4) / bytes(IP(src="10.1.1.1", dst=CONTAINER, version=6) / TCP()),   # not v4 in a v4 frame
    v4(proto=6) / bytes(TCP(dport=443))[:12],                                   # truncated TCP
    v4(proto=17) / bytes(UDP(dport=53))[:6],                                    # truncated UDP
    v4(proto=1) / b"\x08",                                                      # truncated ICMP
    v6(nh=6),                                                                   # TCP header missing
    v6(nh=0) / b"\x06",                                                         # truncated hop-by-hop
    eth() / Dot1Q(vlan=5) / IP(src="10.1.1.1", dst=CONTAINER) / TCP(dport=443),  # in-band VLAN tag
], ids=["ihl4", "ihl15", "version", "tcp", "udp", "icmp", "ipv6-tcp", "hbh", "vlan"])
def test_malformed_headers_are_dropped(datapath, frame):
    assert run(datapath, TO, frame) == TC_ACT_SHOT


# ---------------------------------------------------------------- policy, IPv4
def test_an_allowed_tcp_packet_passes(policy):
    assert run(policy, TO, v4() / TCP(sport=40000, dport=443)) == TC_ACT_OK


def test_another_port_is_denied_by_default(policy):
    assert run(policy, TO, v4() / TCP(sport=40000, dport=80)) == TC_ACT_SHOT


def test_another_source_is_denied_by_default(policy):
    assert run(policy, TO, v4(src="10.1.1.2") / TCP(dport=443)) == TC_ACT_SHOT


def test_the_remote_of_egress_is_the_destination(policy):
    """Egress is not isolated: passes. Once isolated, the destination decides."""
    assert run(policy, FROM, v4(src=CONTAINER, dst="10.1.1.1") / TCP(dport=443)) == TC_ACT_OK
    policy.maps["netc_endpoints"].update(LO.to_bytes(4, "little"),
                                         slots.both("netc_endpoints", abi.endpoint(PSET, 1, (True, True), (True, True))))
    assert run(policy, FROM, v4(src=CONTAINER, dst="10.1.1.1") / TCP(dport=443)) == TC_ACT_SHOT
    add_rule(policy, ATOM_V4, 6, 443, 16, allow(), direction=abi.DIR_EGRESS)
    assert run(policy, FROM, v4(src=CONTAINER, dst="10.1.1.1") / TCP(dport=443)) == TC_ACT_OK
    assert run(policy, FROM, v4(src="10.1.1.1", dst=CONTAINER) / TCP(dport=443)) == TC_ACT_SHOT


def test_icmp_echo_matches_type_and_code(policy):
    assert run(policy, TO, v4() / ICMP(type=8, code=0)) == TC_ACT_OK
    assert run(policy, TO, v4() / ICMP(type=8, code=3)) == TC_ACT_OK   # rule names the type only
    assert run(policy, TO, v4() / ICMP(type=13)) == TC_ACT_SHOT         # timestamp
    assert run(policy, TO, v4() / ICMP(type=0)) == TC_ACT_SHOT          # echo reply


def test_udp_and_sctp_ports(policy):
    assert run(policy, TO, v4() / UDP(dport=53)) == TC_ACT_SHOT
    add_rule(policy, ATOM_V4, 17, 53, 16, allow())
    add_rule(policy, ATOM_V4, 132, 0x2000, 3, allow())  # sctp 8192-16383: a port range as one prefix
    assert run(policy, TO, v4() / UDP(dport=53)) == TC_ACT_OK
    assert run(policy, TO, v4() / TCP(dport=53)) == TC_ACT_SHOT
    assert run(policy, TO, v4() / SCTP(dport=9000)) == TC_ACT_OK
    assert run(policy, TO, v4() / SCTP(dport=16384)) == TC_ACT_SHOT


def test_unknown_protocols_are_protocol_other(policy):
    gre = v4(proto=47) / (b"\x00" * 8)
    assert run(policy, TO, gre) == TC_ACT_SHOT
    add_rule(policy, ATOM_V4, abi.PROTO_OTHER, 0, 0, allow())
    assert run(policy, TO, gre) == TC_ACT_OK


def test_default_allow_lets_unmatched_traffic_through_but_not_denied_traffic(policy):
    policy.maps["netc_endpoints"].update(LO.to_bytes(4, "little"),
                                         slots.both("netc_endpoints", abi.endpoint(PSET, 1, (True, False), (False, False))))
    assert run(policy, TO, v4() / TCP(dport=80)) == TC_ACT_OK
    add_rule(policy, ATOM_V4, 6, 80, 16, deny())
    assert run(policy, TO, v4() / TCP(dport=80)) == TC_ACT_SHOT


# ---------------------------------------------------------------- the two tables
def test_wildcard_rules_match_by_class(policy):
    world = v4(src="192.0.2.9") / TCP(dport=8080)
    assert run(policy, TO, world) == TC_ACT_SHOT
    add_wild(policy, abi.CLASS_WORLD, 6, 8080, 16, allow())
    assert run(policy, TO, world) == TC_ACT_OK
    # 10.1.1.1 is a container, not the world
    assert run(policy, TO, v4() / TCP(dport=8080)) == TC_ACT_SHOT


def test_the_higher_rank_of_the_two_tables_wins(policy):
    pkt = v4() / TCP(dport=443)  # atom rule: allow at priority 0
    add_wild(policy, abi.CLASS_CONTAINER, 6, 443, 16, deny(priority=-1))
    assert run(policy, TO, pkt) == TC_ACT_OK        # lower priority deny loses
    add_wild(policy, abi.CLASS_CONTAINER, 6, 443, 16, deny(priority=0))
    assert run(policy, TO, pkt) == TC_ACT_SHOT      # equal priority: deny wins
    add_rule(policy, ATOM_V4, 6, 443, 16, allow(priority=10))
    assert run(policy, TO, pkt) == TC_ACT_OK        # higher priority allow wins


# ---------------------------------------------------------------- fragments
def test_a_first_fragment_is_classified_by_its_ports(policy):
    assert run(policy, TO, v4(flags="MF", frag=0) / TCP(dport=443)) == TC_ACT_OK
    assert run(policy, TO, v4(flags="MF", frag=0) / TCP(dport=80)) == TC_ACT_SHOT


FRAG_INGRESS = abi.DIR_INGRESS | abi.DIR_FRAG


def test_a_non_first_fragment_is_looked_up_without_ports(policy):
    """Only rules naming no port have entries under DIR_FRAG (the materializer puts them there)."""
    frag = v4(proto=6, frag=100) / (b"\x00" * 16)   # no TCP header in it
    assert run(policy, TO, frag) == TC_ACT_SHOT    # tcp/443 names a port: cannot match
    add_rule(policy, ATOM_V4, 6, 0, 16, allow(), direction=abi.DIR_INGRESS)
    assert run(policy, TO, frag) == TC_ACT_SHOT    # port 0 of ordinary packets is not the fragment table
    add_rule(policy, ATOM_V4, 6, 0, 16, allow(), direction=FRAG_INGRESS)  # "allow tcp from 10.1.1.1"
    assert run(policy, TO, frag) == TC_ACT_OK
    add_wild(policy, abi.CLASS_CONTAINER, 6, 0, 16, deny(priority=5), direction=FRAG_INGRESS)
    assert run(policy, TO, frag) == TC_ACT_SHOT


def test_a_non_first_ipv6_fragment_matches_only_rules_without_ports(policy):
    frag = v6() / IPv6ExtHdrFragment(nh=6, offset=100) / (b"\x00" * 16)
    assert run(policy, TO, frag) == TC_ACT_SHOT
    add_rule(policy, ATOM_V6, 6, 0, 16, allow(), direction=FRAG_INGRESS)
    assert run(policy, TO, frag) == TC_ACT_OK
    first = v6() / IPv6ExtHdrFragment(nh=6, offset=0, m=1) / TCP(dport=443)
    assert run(policy, TO, first) == TC_ACT_OK


# ---------------------------------------------------------------- IPv6
def test_ipv6_tcp(policy):
    assert run(policy, TO, v6() / TCP(dport=443)) == TC_ACT_OK
    assert run(policy, TO, v6() / TCP(dport=80)) == TC_ACT_SHOT
    assert run(policy, TO, v6(src="fd00::2") / TCP(dport=443)) == TC_ACT_SHOT


def test_ipv4_mapped_addresses_do_not_confuse_families(policy):
    # an IPv6 packet with an IPv4-mapped address is never valid on the wire: dropped, as Linux
    # drops it (eval.has_v4_mapped), instead of being judged as the IPv4 address it spells
    assert run(policy, TO, v6(src="::ffff:10.1.1.1") / TCP(dport=443)) == TC_ACT_SHOT
    assert run(policy, TO, v4(src="10.1.1.1") / TCP(dport=443)) == TC_ACT_OK
    assert run(policy, TO, v4(src="0.0.0.1") / TCP(dport=443)) == TC_ACT_SHOT


def test_ipv6_extension_headers_are_skipped(policy):
    pkt = v6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(dport=443)
    assert run(policy, TO, pkt) == TC_ACT_OK
    pkt = v6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(dport=80)
    assert run(policy, TO, pkt) == TC_ACT_SHOT


def test_a_too_long_extension_header_chain_is_dropped(policy):
    chain = IPv6ExtHdrDestOpt()
    for _ in range(6):
        chain = chain / IPv6ExtHdrDestOpt()
    assert run(policy, TO, v6() / chain / TCP(dport=443)) == TC_ACT_SHOT  # 7 headers
    chain = IPv6ExtHdrDestOpt()
    for _ in range(5):
        chain = chain / IPv6ExtHdrDestOpt()
    assert run(policy, TO, v6() / chain / TCP(dport=443)) == TC_ACT_OK    # 6 headers


def test_icmpv6_echo(policy):
    assert run(policy, TO, v6() / ICMPv6EchoRequest()) == TC_ACT_OK
    assert run(policy, TO, v6(src="fd00::2") / ICMPv6EchoRequest()) == TC_ACT_SHOT


def test_neighbour_discovery_always_passes(policy):
    assert run(policy, TO, v6(src="fe80::1", dst="ff02::1:ff00:5") / ICMPv6ND_NS(tgt=CONTAINER6)) == TC_ACT_OK


# ---------------------------------------------------------------- test_run and skb->ifindex
def test_the_context_picks_the_interface(policy):
    from netc.errors import LoadError
    from netc.runtime.libbpf import skb_ctx

    pkt = v4() / TCP(dport=80)
    assert run(policy, TO, pkt, ctx=skb_ctx(ifindex=LO)) == TC_ACT_SHOT
    with pytest.raises(LoadError, match="No such device"):
        run(policy, TO, pkt, ctx=skb_ctx(ifindex=0x7FFFFFF0))
