"""`netc lab` for real: namespaces, veths, addresses, routes, servers, probes, state, cleanup.

Every lab lives in a state directory under tmp_path (NETC_STATE_DIR) and every fixture tears
down what it made even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netc.errors import NetcError
from netc.runtime import lab
from netc.runtime.inventory import Inventory
from netc.runtime.netns import in_netns, list_netns, netns_exists, run_in_netns
from tests.schema_check import load_schema, validate

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
BASE = "nclt"   # the topology's name: every namespace of these tests starts with netc-nclt-

TOPOLOGY = f"""\
name: {BASE}
containers:
  - {{name: web, labels: {{app: web, tier: front}}, serve: ["tcp:80", "udp:53"]}}
  - {{name: db, labels: {{app: db}}, serve: ["tcp:5432"]}}
  - {{name: client, labels: {{app: client}}}}
"""


def _ours() -> set[str]:
    return set(list_netns(f"netc-{BASE}-"))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state directory; every lab recorded there is removed afterwards."""
    d = tmp_path / "state"
    monkeypatch.setenv("NETC_STATE_DIR", str(d))
    before = _ours()
    yield d
    names = [x.name for x in lab.list_labs()]
    try:
        lab.down_all()
    finally:
        leaked = sorted(ns for ns in _ours() - before if any(ns.startswith(f"netc-{n}-") for n in names))
        for ns in leaked:  # a last resort, so one broken test cannot leave namespaces behind
            with contextlib.suppress(NetcError):
                lab.delete_netns(ns)
        assert not leaked, f"namespaces left behind: {leaked}"


@pytest.fixture
def topo(tmp_path: Path) -> Path:
    p = tmp_path / "topo.yaml"
    p.write_text(TOPOLOGY, encoding="utf-8")
    return p


@pytest.fixture
def running(state: Path, topo: Path) -> lab.Lab:
    return lab.up(topo)


def _links(netns: str) -> dict[str, dict[str, int]]:
    from pyroute2 import IPRoute

    with in_netns(netns):
        ipr = IPRoute()
    with ipr:
        return {ln.get_attr("IFLA_IFNAME"): {"index": ln["index"], "link": ln.get_attr("IFLA_LINK") or 0}
                for ln in ipr.get_links()}


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _state_files(d: Path) -> list[str]:
    labs_dir = d / "labs"
    return sorted(p.name for p in labs_dir.iterdir() if p.name != ".lock") if labs_dir.exists() else []


# ---------------------------------------------------------------------------- connectivity

@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_and_udp_probes_connect_between_containers(running: lab.Lab, ipv6: bool) -> None:
    assert lab.probe(running, "client", "web", 80, ipv6=ipv6) == "connected"
    assert lab.probe(running, "client", "web", 53, udp=True, ipv6=ipv6) == "connected"
    assert lab.probe(running, "web", "db", 5432, ipv6=ipv6) == "connected"
    assert lab.probe(running, "db", "web", 53, udp=True, ipv6=ipv6) == "connected"


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_closed_ports_are_refused(running: lab.Lab, ipv6: bool) -> None:
    assert lab.probe(running, "client", "db", 81, ipv6=ipv6) == "refused"
    assert lab.probe(running, "client", "web", 54, udp=True, ipv6=ipv6) == "refused"
    assert lab.probe(running, "client", "client", 80, ipv6=ipv6) == "refused"


def test_probes_take_addresses_and_time_out_when_nothing_answers(running: lab.Lab) -> None:
    web = running.container("web")
    assert lab.probe(running, "client", web.address(), 80) == "connected"
    assert lab.probe(running, "client", web.address(ipv6=True), 80) == "connected"
    # a route to an address nobody owns: ARP goes unanswered, so the SYN is never sent
    from pyroute2 import IPRoute

    with in_netns(running.node_netns):
        ipr = IPRoute()
    with ipr:
        ipr.route("add", dst="10.77.0.200/32", oif=web.ifindex, scope=253)
    assert lab.probe(running, "client", "10.77.0.200", 80, timeout=0.2) == "timed out"
    with pytest.raises(lab.LabError, match="unreachable"):
        lab.probe(running, "client", "192.0.2.1", 80, timeout=0.2)   # no route out of the lab
    with pytest.raises(lab.LabError, match="neither a container"):
        lab.probe(running, "client", "nosuch", 80)


def test_servers_answer_with_their_name(running: lab.Lab) -> None:
    web = running.container("web")
    with in_netns(running.container("client").netns):
        tcp = socket.create_connection((web.address(ipv6=True), 80), timeout=1)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tcp, udp:
        assert tcp.recv(100) == b"netc web tcp 80\n"
        udp.settimeout(1)
        udp.sendto(b"hi", (web.address(), 53))
        assert udp.recv(100) == b"netc web udp 53\n"


def test_the_node_forwards_and_the_root_namespace_is_untouched(running: lab.Lab) -> None:
    with in_netns(running.node_netns):
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        assert Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text().strip() == "1"
    root_links = _links("/proc/self/ns/net")
    assert not [n for n in root_links if any(n == c.interface for c in running.containers)]
    assert lab.exec(running, "client", ["ping", "-6", "-c1", "-W1", "fd00:77::10"],
                    stdout=subprocess.DEVNULL) == 0


def test_exec_runs_in_the_container_and_returns_the_status(running: lab.Lab) -> None:
    out = subprocess.PIPE
    p = run_in_netns(running.container("client").netns, ["ip", "-o", "addr", "show", "dev", "eth0"],
                     stdout=out, text=True)
    text, _ = p.communicate(timeout=5)
    assert "10.77.0.12/32" in text and "fd00:77::12/128" in text and "tentative" not in text
    assert lab.exec(running, "client", ["sh", "-c", "exit 3"]) == 3
    with pytest.raises(lab.LabError, match="command not found"):
        lab.exec(running, "client", ["no-such-command-netc"])


def test_in_netns_always_switches_back(running: lab.Lab) -> None:
    home = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(RuntimeError), in_netns(running.node_netns):
        assert os.readlink("/proc/thread-self/ns/net") != home
        raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == home


# ---------------------------------------------------------------------------- inventory

def test_the_inventory_loads_and_matches_the_node_veths(running: lab.Lab) -> None:
    inv = Inventory.load(running.inventory_path)
    assert inv.node_netns == running.node_netns and netns_exists(inv.node_netns)
    assert inv.host_addresses == ("10.77.0.1", "fd00:77::1")
    node = _links(running.node_netns)
    assert [c.name for c in inv.containers] == ["web", "db", "client"]
    for i, c in enumerate(inv.containers):
        assert c.interface is not None and len(c.interface) <= 15
        assert node[c.interface]["index"] == c.ifindex
        assert c.addresses == (f"10.77.0.{10 + i}", f"fd00:77::{10 + i}")
        assert c.netns is not None and netns_exists(c.netns)
        eth0 = _links(c.netns)["eth0"]
        assert eth0["link"] == c.ifindex            # the peer of eth0 is the recorded veth
    assert inv.by_name("web").labels == {"app": "web", "tier": "front"}
    data = json.loads(Path(running.inventory_path).read_text())
    assert validate(load_schema(ROOT / "docs" / "inventory.schema.json"), data) == []
    assert lab.lab_by_name(running.name).inventory().to_json() == data


def test_the_record_and_status_describe_the_lab(running: lab.Lab) -> None:
    rec = json.loads(Path(running.record_path).read_text())
    assert rec["state"] == "up" and rec["name"] == running.name
    assert rec["namespaces"] == running.namespaces and len(rec["veths"]) == 3 and len(rec["pids"]) == 2
    assert lab.latest_lab().name == running.name
    (st,) = lab.status()
    assert st["state"] == "up" and st["node_netns_present"]
    assert all(c["netns_present"] for c in st["containers"])
    assert [c["server_alive"] for c in st["containers"]] == [True, True, None]
    os.kill(running.container("db").server.pid, signal.SIGKILL)  # type: ignore[union-attr]
    for _ in range(200):
        if not running.container("db").server.alive():  # type: ignore[union-attr]
            break
        lab._reap(running.container("db").server.pid)  # type: ignore[union-attr]
        time.sleep(0.01)
    (st,) = lab.status()
    assert st["state"] == "degraded" and st["containers"][1]["server_alive"] is False


# ---------------------------------------------------------------------------- lifecycle

def test_two_labs_from_one_topology_coexist(state: Path, topo: Path) -> None:
    a = lab.up(topo)
    b = lab.up(topo)
    assert a.name != b.name and a.name.startswith(f"{BASE}-") and b.name.startswith(f"{BASE}-")
    assert not set(a.namespaces) & set(b.namespaces)
    for x in (a, b):
        assert lab.probe(x, "client", "web", 80) == "connected"
    lab.down(a)
    assert lab.probe(b, "client", "web", 80, ipv6=True) == "connected"
    assert [x.name for x in lab.list_labs()] == [b.name]


def test_down_removes_namespaces_veths_servers_and_state(state: Path, topo: Path) -> None:
    made = lab.up(topo)
    pids = [c.server.pid for c in made.containers if c.server]
    veths = [c.interface for c in made.containers]
    assert len(pids) == 2 and all(not _gone(p) for p in pids)
    assert _state_files(state) == sorted([f"{made.name}.json", f"{made.name}.inventory.json",
                                          f"{made.name}.logs"])
    lab.down(made.name)
    assert not [ns for ns in made.namespaces if netns_exists(ns) or os.path.lexists(f"/run/netns/{ns}")]
    assert all(_gone(p) for p in pids)
    assert not set(veths) & set(_links("/proc/self/ns/net"))
    assert _state_files(state) == []
    with pytest.raises(lab.LabError, match="no lab named"):
        lab.down(made.name)


def test_down_all_removes_every_lab(state: Path, topo: Path) -> None:
    made = [lab.up(topo) for _ in range(3)]
    assert sorted(lab.down_all()) == sorted(x.name for x in made)
    assert lab.status() == [] and _state_files(state) == []
    assert not [ns for x in made for ns in x.namespaces if netns_exists(ns)]
    with pytest.raises(lab.LabError, match="no lab is up"):
        lab.latest_lab()


def test_add_and_remove_container(running: lab.Lab) -> None:
    c = lab.add_container(running.name, {"name": "web-2", "labels": {"app": "web"}, "serve": ["tcp:80"]})
    assert c.index == 3 and c.addresses == ("10.77.0.13", "fd00:77::13") and c.server is not None
    inv = Inventory.load(running.inventory_path)
    added = inv.by_name("web-2")
    assert added is not None and added.ifindex == _links(running.node_netns)[c.interface]["index"]
    assert lab.probe(running.name, "client", "web-2", 80) == "connected"
    assert lab.probe(running.name, "web-2", "db", 5432, ipv6=True) == "connected"
    with pytest.raises(lab.LabError, match="already has a container `web-2`"):
        lab.add_container(running.name, {"name": "web-2"})
    with pytest.raises(lab.LabError, match="also belongs to `web`"):
        lab.add_container(running.name, {"name": "dup", "addresses": ["10.77.0.10"]})

    lab.remove_container(running.name, "web-2")
    assert Inventory.load(running.inventory_path).by_name("web-2") is None
    assert not netns_exists(c.netns) and c.interface not in _links(running.node_netns)
    assert _gone(c.server.pid)
    with pytest.raises(lab.LabError, match="unreachable"):
        lab.probe(running.name, "client", "10.77.0.13", 80, timeout=0.2)
    # indexes are not reused: the next container gets a fresh veth name and address
    d = lab.add_container(running.name, {"name": "extra", "addresses": ["192.0.2.9"]})
    assert d.index == 4 and d.addresses == ("192.0.2.9",)
    assert lab.probe(running.name, "extra", "web", 80) == "connected"
    assert lab.lab_by_name(running.name).container("extra").ifindex == d.ifindex


# ---------------------------------------------------------------------------- failures

def test_a_bad_topology_creates_nothing(state: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: {BASE}\ncontainers:\n  - {{name: a}}\n  - {{name: b, addresses: [10.1.2.300]}}\n")
    before = _ours()
    with pytest.raises(lab.TopologyError, match=r"bad.yaml: containers\[1\] \(b\): `10.1.2.300` is not"):
        lab.up(bad)
    assert _ours() == before and _state_files(state) == []


def _assert_nothing_left(state: Path, before: set[str], pids: list[int]) -> None:
    assert _ours() == before, f"left behind: {_ours() - before}"
    assert _state_files(state) == []
    assert all(_gone(p) for p in pids)


def test_a_server_that_fails_undoes_the_whole_lab(state: Path, topo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_argv, real_start = lab._server_argv, lab._start_server
    pids: list[int] = []

    def argv(c: lab.LabContainer) -> list[str]:
        if c.name == "db":
            return [sys.executable, "-c", "import sys; print('no database today', file=sys.stderr); sys.exit(3)"]
        return real_argv(c)

    def start(lab_: lab.Lab, c: lab.LabContainer):  # type: ignore[no-untyped-def]
        p = real_start(lab_, c)
        pids.append(p.pid)
        return p

    monkeypatch.setattr(lab, "_server_argv", argv)
    monkeypatch.setattr(lab, "_start_server", start)
    before = _ours()
    with pytest.raises(lab.LabError, match=r"server of `db` exited \(status 3\).*no database today"):
        lab.up(topo)
    assert len(pids) == 2
    _assert_nothing_left(state, before, pids)


def test_a_failure_while_wiring_undoes_the_whole_lab(state: Path, topo: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = lab._wire_container

    def wire(lab_: lab.Lab, ipr: object, c: lab.LabContainer) -> None:
        if c.name == "client":
            lab.create_netns(c.netns)     # as far as the real thing gets before failing
            lab_.made_netns.add(c.netns)
            raise lab.LabError("injected failure")
        real(lab_, ipr, c)

    monkeypatch.setattr(lab, "_wire_container", wire)
    before = _ours()
    with pytest.raises(lab.LabError, match="injected failure"):
        lab.up(topo)
    _assert_nothing_left(state, before, [])


# ---------------------------------------------------------------------------- the command line

def _netc(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETC_STATE_DIR=str(state))
    return subprocess.run([sys.executable, "-m", "netc", "lab", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)


def test_the_cli(state: Path, topo: Path) -> None:
    up = _netc(state, "up", str(topo))
    assert up.returncode == 0, up.stderr
    name, inventory = up.stdout.split()
    assert inventory == str(state / "labs" / f"{name}.inventory.json") and Path(inventory).exists()
    assert _netc(state, "inventory").stdout.strip() == inventory
    probe = _netc(state, "probe", name, "client", "web", "80", "--ipv6")
    assert (probe.returncode, probe.stdout.strip()) == (0, "connected")
    probe = _netc(state, "probe", name, "client", "web", "54", "--udp")
    assert (probe.returncode, probe.stdout.strip()) == (1, "refused")
    ex = _netc(state, "exec", name, "client", "--", "sh", "-c", "echo hi; exit 4")
    assert (ex.returncode, ex.stdout) == (4, "hi\n")
    st = _netc(state, "status", "--json")
    assert json.loads(st.stdout)[0]["name"] == name
    bad = _netc(state, "probe", name, "nobody", "web", "80")
    assert bad.returncode == 1 and "no container `nobody`" in bad.stderr and "Traceback" not in bad.stderr
    down = _netc(state, "down", name)
    assert down.returncode == 0 and _state_files(state) == []
    again = _netc(state, "down")
    assert again.returncode == 1 and "no lab is up" in again.stderr and "Traceback" not in again.stderr


def test_a_failed_add_container_leaves_the_lab_as_it_was(running: lab.Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    before = Path(running.inventory_path).read_text()
    monkeypatch.setattr(lab, "_server_argv", lambda c: [sys.executable, "-c", "raise SystemExit(5)"])
    with pytest.raises(lab.LabError, match=r"server of `web-2` exited \(status 5\)"):
        lab.add_container(running, {"name": "web-2", "serve": ["tcp:80"]})
    assert Path(running.inventory_path).read_text() == before
    assert not netns_exists(f"netc-{running.name}-web-2")
    assert f"nc{running.hex}3" not in _links(running.node_netns)
    assert lab.probe(running, "client", "web", 80) == "connected"
