"""Connection tracking: TCP states, UDP and ICMP echo, related ICMP errors, eviction accounting,
and real traffic in a lab with a server whose egress is closed."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from netc import api
from netc.ir.eval import Packet
from netc.ir.nodes import Direction
from netc.runtime import abi
from netc.runtime.inventory import Container, Inventory
from netc.runtime.testrun import KernelClassifier

pytestmark = pytest.mark.kernel

SERVER_LOCKED = """
group db = app == "db"
group client = app == "client"
policy db-locked for db {
    ingress default deny
    egress default deny
    allow ingress from client
}
"""

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
DB, CLIENT = "10.0.0.7", "10.0.0.9"


@pytest.fixture
def kc():  # type: ignore[no-untyped-def]
    compiled = api.compile(SERVER_LOCKED, name="ct.netp")
    db = Container("db-1", (DB,), {"app": "db"})
    client = Container("client-1", (CLIENT,), {"app": "client"})
    with KernelClassifier(compiled.object, compiled.program, Inventory([db, client])) as k:
        k.stateless = False
        k.db = db  # type: ignore[attr-defined]
        yield k


def _states(k: KernelClassifier) -> list[int]:
    return [abi.CT_ENTRY.unpack(v)[3] for _, v in k.ct_entries()]


def test_tcp_handshake_data_and_close(kc) -> None:  # type: ignore[no-untyped-def]
    db = kc.db
    into = lambda flags: kc.classify(db, Direction.INGRESS, Packet(6, CLIENT, DB, 40000, 5432, tcp_flags=flags))  # noqa: E731
    out = lambda flags: kc.classify(db, Direction.EGRESS, Packet(6, DB, CLIENT, 5432, 40000, tcp_flags=flags))  # noqa: E731
    assert into(SYN).allowed and _states(kc) == [abi.CT_SYN_SENT]
    assert out(SYN | ACK).allowed and _states(kc) == [abi.CT_SYN_RECV]     # egress is closed: state lets it out
    assert into(ACK).allowed and _states(kc) == [abi.CT_ESTABLISHED]
    assert out(ACK).allowed and into(ACK).allowed
    assert out(FIN | ACK).allowed and _states(kc) == [abi.CT_FIN_WAIT]
    assert into(FIN | ACK).allowed and _states(kc) == [abi.CT_CLOSING]
    assert out(ACK).allowed


def test_a_reset_ends_the_connection(kc) -> None:  # type: ignore[no-untyped-def]
    db = kc.db
    assert kc.classify(db, Direction.INGRESS, Packet(6, CLIENT, DB, 40001, 5432, tcp_flags=SYN)).allowed
    assert kc.classify(db, Direction.EGRESS, Packet(6, DB, CLIENT, 5432, 40001, tcp_flags=RST | ACK)).allowed
    assert _states(kc) == []
    # the connection is gone: the server's egress policy judges its next packet again
    assert not kc.classify(db, Direction.EGRESS, Packet(6, DB, CLIENT, 5432, 40001, tcp_flags=ACK)).allowed


def test_the_server_cannot_open_a_connection(kc) -> None:  # type: ignore[no-untyped-def]
    assert not kc.classify(kc.db, Direction.EGRESS, Packet(6, DB, CLIENT, 40002, 80, tcp_flags=SYN)).allowed
    assert not kc.classify(kc.db, Direction.EGRESS, Packet(17, DB, CLIENT, 40002, 53)).allowed
    assert _states(kc) == []


def test_udp_and_icmp_echo_replies_pass(kc) -> None:  # type: ignore[no-untyped-def]
    db = kc.db
    assert kc.classify(db, Direction.INGRESS, Packet(17, CLIENT, DB, 5000, 53)).allowed
    assert kc.classify(db, Direction.EGRESS, Packet(17, DB, CLIENT, 53, 5000)).allowed
    assert not kc.classify(db, Direction.EGRESS, Packet(17, DB, CLIENT, 53, 5001)).allowed   # another flow
    assert kc.classify(db, Direction.INGRESS, Packet(1, CLIENT, DB, icmp_type=8, icmp_code=0, icmp_id=77)).allowed
    assert kc.classify(db, Direction.EGRESS, Packet(1, DB, CLIENT, icmp_type=0, icmp_code=0, icmp_id=77)).allowed
    assert not kc.classify(db, Direction.EGRESS, Packet(1, DB, CLIENT, icmp_type=0, icmp_code=0, icmp_id=78)).allowed


def test_each_family_has_its_table_and_user_space_reads_both() -> None:
    """IPv4 connections are tracked in netc_ct4 under a 20-byte key, IPv6 ones in netc_ct; the
    keys the kernel wrote read back as the same struct netc_ct_key (abi.ct_key_from4, ct_table)."""
    import ipaddress

    compiled = api.compile(SERVER_LOCKED, name="ct.netp")
    db = Container("db-1", (DB, "fd00::7"), {"app": "db"})
    client = Container("client-1", (CLIENT, "fd00::9"), {"app": "client"})
    with KernelClassifier(compiled.object, compiled.program, Inventory([db, client])) as k:
        k.stateless = False
        for src, dst in ((CLIENT, DB), ("fd00::9", "fd00::7")):
            assert k.classify(db, Direction.INGRESS, Packet(6, src, dst, 40000, 5432, tcp_flags=SYN)).allowed
            assert k.classify(db, Direction.EGRESS, Packet(6, dst, src, 5432, 40000, tcp_flags=SYN | ACK)).allowed
        (key6, _), = k.obj.maps["netc_ct"].items()
        (key4, _), = k.obj.maps["netc_ct4"].items()
    v4 = abi.CT_KEY.unpack(abi.ct_key_from4(key4))
    assert v4[1:4] == (6, 4, 0) and v4[6:] == (5432, 40000)   # a is the lower end: the server
    assert (v4[4], v4[5]) == (ipaddress.ip_address(f"::ffff:{DB}").packed, ipaddress.ip_address(f"::ffff:{CLIENT}").packed)
    assert abi.ct_table(abi.ct_key_from4(key4)) == ("netc_ct4", key4)
    v6 = abi.CT_KEY.unpack(key6)
    assert v6[1:3] == (6, 6) and v6[4] == ipaddress.ip_address("fd00::7").packed
    assert abi.ct_table(key6) == ("netc_ct", key6)


def test_an_icmp_error_about_a_tracked_connection_is_related(kc) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether

    from netc.runtime.libbpf import prog_test_run

    db = kc.db
    assert kc.classify(db, Direction.INGRESS, Packet(17, CLIENT, DB, 5000, 9999)).allowed

    def unreachable(sport: int) -> bytes:
        # the db answers "port unreachable", quoting the datagram it got
        return bytes(Ether() / IP(src=DB, dst=CLIENT) / ICMP(type=3, code=3)
                     / IP(src=CLIENT, dst=DB) / UDP(sport=sport, dport=9999))

    prog = kc._progs["netc_from_container"]
    assert prog_test_run(prog, unreachable(5000)).retval == 0   # about the tracked flow: related
    assert prog_test_run(prog, unreachable(5001)).retval == 2   # about nothing we know: the policy


# ---------------------------------------------------------------------- real traffic
@pytest.fixture
def lab(make_lab, tmp_path):  # type: ignore[no-untyped-def]
    lb = make_lab("  - {name: db-1, labels: {app: db}, serve: ['tcp:5432', 'udp:5353']}\n"
                  "  - {name: client-1, labels: {app: client}, serve: ['tcp:80']}\n")
    return lb, tmp_path


def _udp_exchange(lb, sport: int) -> bool:  # type: ignore[no-untyped-def]
    """One datagram from client-1:sport to db-1:5353 and its answer, on a fixed 5-tuple."""
    from netc.runtime.netns import in_netns

    with in_netns(lb.containers[1].netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", sport))
        s.settimeout(0.3)
        s.sendto(b"hi", ("10.77.0.10", 5353))
        try:
            return b"netc" in s.recvfrom(100)[0]
        except (TimeoutError, ConnectionRefusedError):
            return False
    finally:
        s.close()


def test_server_with_closed_egress_answers_but_cannot_call_out(lab) -> None:  # type: ignore[no-untyped-def]
    from netc.runtime import lab as labmod
    from netc.runtime import loader

    lb, tmp = lab
    policy = tmp / "locked.netp"
    policy.write_text(SERVER_LOCKED)
    target = loader.resolve_target(lab=lb.name)
    loader.load(api.compile(str(policy)).object, str(policy), target)
    assert labmod.probe(lb.name, "client-1", "db-1", 5432) == "connected"
    assert labmod.probe(lb.name, "client-1", "db-1", 5432, ipv6=True) == "connected"
    assert labmod.probe(lb.name, "client-1", "db-1", 5353, udp=True) == "connected"
    assert labmod.probe(lb.name, "client-1", "db-1", 5354, udp=True) == "refused"   # related ICMP passes
    assert labmod.probe(lb.name, "db-1", "client-1", 80, timeout=0.3) == "timed out"
    assert _udp_exchange(lb, 41000)

    # a policy change applies to new connections; the tracked one goes on until flushed
    udp_closed = SERVER_LOCKED.replace("allow ingress from client", "allow ingress tcp from client")
    policy.write_text(udp_closed)
    loader.load(api.compile(str(policy)).object, str(policy), target)
    assert _udp_exchange(lb, 41000), "a tracked flow keeps going across a policy update"
    assert not _udp_exchange(lb, 41001), "a new flow follows the new policy"
    listed = subprocess.run([sys.executable, "-m", "netc", "conntrack", "list", lb.name, "--json",
                             "--container", "db-1"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    import json

    doc = json.loads(listed.stdout)
    assert any(e["protocol"] == "udp" and 41000 in (e["port_a"], e["port_b"]) for e in doc["entries"])
    flushed = subprocess.run([sys.executable, "-m", "netc", "conntrack", "flush", lb.name],
                             capture_output=True, text=True)
    assert flushed.returncode == 0, flushed.stderr
    assert not _udp_exchange(lb, 41000), "after a flush the new policy judges the old flow too"
    assert labmod.probe(lb.name, "client-1", "db-1", 5432) == "connected"


def test_ipv4_connections_of_a_target_an_older_netc_loaded_keep_going(lab) -> None:  # type: ignore[no-untyped-def]
    """Before netc_ct4, IPv4 connections were tracked in netc_ct: a load over such a target moves them."""
    import os

    from netc.runtime import loader
    from netc.runtime.libbpf import Map

    lb, tmp = lab
    policy = tmp / "locked.netp"
    policy.write_text(SERVER_LOCKED)
    target = loader.resolve_target(lab=lb.name)
    loader.load(api.compile(str(policy)).object, str(policy), target)
    assert _udp_exchange(lb, 41000)
    shared = os.path.join(loader._paths(lb.name)[0], "shared")
    with Map.from_pinned(os.path.join(shared, "netc_ct4")) as ct4, \
            Map.from_pinned(os.path.join(shared, "netc_ct")) as ct:
        for key4, value in list(ct4.items()):   # as the older program kept them
            ct.update(abi.ct_key_from4(key4), value)
    os.unlink(os.path.join(shared, "netc_ct4"))
    policy.write_text(SERVER_LOCKED.replace("allow ingress from client", "allow ingress tcp from client"))
    loader.load(api.compile(str(policy)).object, str(policy), target)
    assert _udp_exchange(lb, 41000), "the tracked flow keeps going across the upgrade"
    assert not _udp_exchange(lb, 41001), "a new flow follows the new policy"
    with Map.from_pinned(os.path.join(shared, "netc_ct")) as ct:
        assert not list(ct.items()), "no IPv4 connection is left behind in netc_ct"


def test_a_full_table_evicts_the_oldest_and_counts_it(lab) -> None:  # type: ignore[no-untyped-def]
    from netc.runtime import conntrack, loader

    lb, tmp = lab
    policy = tmp / "locked.netp"
    policy.write_text(SERVER_LOCKED)
    loader.load(api.compile(str(policy)).object, str(policy), loader.resolve_target(lab=lb.name),
                conntrack_size=32)
    for port in range(42000, 42100):
        _udp_exchange(lb, port)
    totals = conntrack.summary(lb.name)
    assert totals["live"] <= 40
    assert totals["evicted"] > 0
    assert totals["created"] == totals["removed"] + totals["flushed"] + totals["live"] + totals["evicted"]
