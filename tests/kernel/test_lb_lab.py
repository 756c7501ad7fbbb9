"""Load balancing with real traffic in a lab: clients connect to VIPs over TCP and UDP, IPv4 and
IPv6; backends receive connections in proportion to their weights; connections keep their backend
from start to end while a backend is added and another drained; a service without backends
refuses at once."""

from __future__ import annotations

import collections
import socket
import time

import pytest

from netc import api
from netc.runtime import lab as labs
from netc.runtime import loader
from netc.runtime import services as S
from netc.runtime.netns import in_netns

pytestmark = pytest.mark.kernel

POLICY = """
group client = app == "client"
group pool-a = pool == "a"
group pool-b = pool == "b"

# clients may reach the backends on the ports the services translate to, nothing else
policy clients-out for client {
    egress default deny
    allow egress tcp to pool-a, pool-b port 8080, 7000
    allow egress udp to pool-a, pool-b port 5353
}

service web {
    vip 10.96.0.20 port 80 tcp
    vip fd00:96::20 port 80 tcp
    backends pool-a port 8080 weight 1, pool-b port 8080 weight 2
    balance maglev
}

service web-dns {
    vip 10.96.0.21 port 53 udp
    vip fd00:96::21 port 53 udp
    backends pool-a port 5353, pool-b port 5353
    balance maglev
}

service long {
    vip 10.96.0.30 port 7000 tcp
    backends pool-a, pool-b
    balance maglev
}

service nobody {
    vip 10.96.0.40 port 80 tcp
    vip 10.96.0.40 port 53 udp
    backends (pool == "none") port 8080
}
"""

SERVERS = "serve: ['tcp:8080', 'udp:5353', 'echo:7000']"
LAB = (f"  - {{name: a-1, labels: {{pool: a}}, {SERVERS}}}\n"
       f"  - {{name: a-2, labels: {{pool: a}}, {SERVERS}}}\n"
       f"  - {{name: b-1, labels: {{pool: b}}, {SERVERS}}}\n"
       "  - {name: client-1, labels: {app: client}}\n")


def _load(lab, tmp_path) -> str:
    path = tmp_path / "lb.netp"
    path.write_text(POLICY)
    obj = api.compile(str(path)).object
    target = loader.resolve_target(lab=lab.name)
    loader.load(obj, str(path), target)
    return target.name


def _tcp_greeting(ns: str, addr: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with in_netns(ns):
        s = socket.socket(family, socket.SOCK_STREAM)
    with s:
        s.settimeout(2.0)
        s.connect((addr, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().split()[1]   # "netc <name> tcp <port>"


def _udp_exchange(ns: str, addr: str, port: int, n: int) -> collections.Counter[str]:
    """n requests, each from its own (connected) socket: a reply is only accepted from the VIP."""
    got: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        with in_netns(ns):
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(2.0)
            s.connect((addr, port))
            s.send(b"hello\n")
            got[s.recv(256).decode().split()[1]] += 1
    return got


def test_weights_both_families_and_udp(make_lab, tmp_path) -> None:
    lab = make_lab(LAB)
    _load(lab, tmp_path)
    ns = lab.container("client-1").netns

    counts: collections.Counter[str] = collections.Counter()
    for _ in range(3000):
        counts[_tcp_greeting(ns, "10.96.0.20", 80)] += 1
    # weights 1 (a-1), 1 (a-2), 2 (b-1): a quarter, a quarter, a half; each within 10% of its share
    want = {"a-1": 0.25, "a-2": 0.25, "b-1": 0.5}
    assert set(counts) == set(want), counts
    for name, share in want.items():
        assert abs(counts[name] / 3000 - share) <= 0.1 * share, (name, counts)

    six: collections.Counter[str] = collections.Counter()
    for _ in range(200):
        six[_tcp_greeting(ns, "fd00:96::20", 80)] += 1
    assert set(six) == set(want), six

    udp = _udp_exchange(ns, "10.96.0.21", 53, 200)
    assert set(udp) == set(want), udp
    udp6 = _udp_exchange(ns, "fd00:96::21", 53, 200)
    assert set(udp6) == set(want), udp6


def test_no_backend_refuses_at_once(make_lab, tmp_path) -> None:
    lab = make_lab(LAB)
    _load(lab, tmp_path)
    t0 = time.monotonic()
    assert labs.probe(lab.name, "client-1", "10.96.0.40", 80, timeout=3.0) == labs.REFUSED
    assert labs.probe(lab.name, "client-1", "10.96.0.40", 53, udp=True, timeout=3.0) == labs.REFUSED
    assert time.monotonic() - t0 < 2.0   # an answer, not a time-out


def test_connections_keep_their_backend_while_backends_come_and_go(make_lab, tmp_path) -> None:
    lab = make_lab(LAB)
    target = _load(lab, tmp_path)
    ns = lab.container("client-1").netns

    conns: list[tuple[socket.socket, str]] = []
    try:
        for i in range(60):
            with in_netns(ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2.0)
            s.connect(("10.96.0.30", 7000))
            s.sendall(f"hello {i}\n".encode())
            conns.append((s, s.recv(256).decode().split()[1]))
        first = collections.Counter(name for _, name in conns)
        assert len(first) == 3, first

        # in the middle of the run: a new backend appears, and one of the busy ones is drained
        labs.add_container(lab.name, {"name": "b-2", "labels": {"pool": "b"},
                                      "serve": ["tcp:8080", "udp:5353", "echo:7000"]})
        loader.Deployment(target).sync()
        drained = first.most_common(1)[0][0]
        S.set_drained(target, "long", drained, True)

        broken = 0
        for i, (s, name) in enumerate(conns):
            try:
                s.sendall(f"again {i}\n".encode())
                answer = s.recv(256).decode().split()
                if answer[:2] != ["netc", name]:
                    broken += 1
            except OSError:
                broken += 1
        assert broken == 0

        # new connections: never the drained backend; the new one takes its share
        fresh: collections.Counter[str] = collections.Counter()
        for _ in range(300):
            with in_netns(ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with s:
                s.settimeout(2.0)
                s.connect(("10.96.0.30", 7000))
                s.sendall(b"new\n")
                fresh[s.recv(256).decode().split()[1]] += 1
        assert drained not in fresh, fresh
        assert fresh["b-2"] > 0, fresh
    finally:
        for s, _ in conns:
            s.close()


def test_hairpin_a_backend_reaches_its_own_service(make_lab, tmp_path) -> None:
    lab = make_lab(LAB)
    _load(lab, tmp_path)
    ns = lab.container("a-1").netns
    got: collections.Counter[str] = collections.Counter()
    for _ in range(60):
        got[_tcp_greeting(ns, "10.96.0.20", 80)] += 1
    # a-1 is one of the service's backends: some of its connections are given itself
    assert got["a-1"] > 0 and set(got) == {"a-1", "a-2", "b-1"}, got


def test_conntrack_lists_a_service_connection_once_and_flush_removes_both_entries(make_lab, tmp_path) -> None:
    from netc.runtime import conntrack

    lab = make_lab(LAB)
    target = _load(lab, tmp_path)
    ns = lab.container("client-1").netns
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(2.0)
        s.connect(("10.96.0.30", 7000))
        s.sendall(b"hello\n")
        backend = s.recv(256).decode().split()[1]
        mine = [e for e in conntrack.entries(target, "client-1") if e.translated]
        assert len(mine) == 1
        e = mine[0]
        assert {e.a, e.b} == {lab.container("client-1").address(), "10.96.0.30"}
        assert e.translated == f"{lab.container(backend).address()}:7000"
        listed, twins = conntrack._scan(target, "client-1")
        assert len(twins) == 1
        conntrack.flush(target, "client-1")
        listed, twins = conntrack._scan(target, "client-1")
        assert listed == [] and twins == []
