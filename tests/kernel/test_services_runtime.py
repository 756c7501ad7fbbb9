"""The service maps of a loaded target, read back from the kernel: after `netc load`, after
`netc sync` with a backend container added and one removed, after `netc service drain|undrain`,
and across a reload. Each check compares the pinned maps with what runtime/services.py computes
from the reference semantics' backend lists."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netc import api
from netc.runtime import abi, loader
from netc.runtime import lab as labs
from netc.runtime import services as S
from netc.runtime.netns import in_netns
from netc.runtime.state import State

pytestmark = pytest.mark.kernel

POLICY = """
group api = app == "api"

service api-svc {
    vip 10.96.0.20 port 8080 tcp
    vip fd00:96::20 port 8080 tcp
    backends api
    balance maglev table 31
    affinity client-ip 300s
}

service rr-svc {
    vip 10.96.0.53 port 5353 udp
    backends api weight 2, 10.0.5.10 weight 1
    balance round-robin
}

service static-svc {
    vip 10.96.0.80 port 80 tcp
    backends 10.0.6.1, 10.0.6.2 weight 3
    balance random
}
"""

LAB = ("  - {name: api-1, labels: {app: api}, serve: ['tcp:8080', 'udp:5353']}\n"
       "  - {name: api-2, labels: {app: api}, serve: ['tcp:8080', 'udp:5353']}\n"
       "  - {name: client-1, labels: {app: client}}\n")


class Live:
    """The service maps of the target's running version, decoded."""

    def __init__(self, target: str):
        from netc.runtime.libbpf import Map

        with State() as st:
            self.run = S.running(target, st)
            self.drained = S.drained_set(st, target)
        base = os.path.join(os.environ["NETC_BPFFS"], target, f"v{self.run.version}", "maps")
        self.services: dict[bytes, tuple[int, ...]] = {}
        self.backends: dict[int, tuple[str, int, bool, int]] = {}
        self.slots: dict[int, int] = {}
        with Map.from_pinned(os.path.join(base, "netc_services")) as m:
            self.services = {k: abi.SERVICE.unpack(v) for k, v in m.items()}
        with Map.from_pinned(os.path.join(base, "netc_backends")) as m:
            self.backends_size = m.max_entries
            for i in sorted(set(self.run.ids.backends.values())):
                raw = m.lookup(i.to_bytes(4, "little"))
                assert raw is not None
                addr, port, _family, flags, svc_id = abi.BACKEND.unpack(raw)
                self.backends[i] = (S._addr16_text(addr), port, bool(flags & abi.BACKEND_ACTIVE), svc_id)
        with Map.from_pinned(os.path.join(base, "netc_lb_table")) as m:
            self.table_map = m.max_entries
            for e in S.vip_entries(self.run.program):
                _, tbase, tlen, _, _ = self.services[e.key]
                for slot in range(tbase, tbase + tlen):
                    raw = m.lookup(slot.to_bytes(4, "little"))
                    assert raw is not None
                    self.slots[slot] = int.from_bytes(raw, "little")

    def entry(self, name: str, vip: str) -> S.VipEntry:
        return next(e for e in S.vip_entries(self.run.program) if e.service.name == name and e.vip.address == vip)

    def region(self, e: S.VipEntry) -> int:
        return (self.services[e.key][1] - e.base) // e.size

    def table(self, e: S.VipEntry) -> list[int]:
        _, tbase, tlen, _, _ = self.services[e.key]
        return [self.slots[s] for s in range(tbase, tbase + tlen)]

    def bid(self, e: S.VipEntry, name: str) -> int:
        return self.run.ids.backends[S.backend_key(e, name)]

    def check_against_reference(self) -> None:
        """Every entry, table and backend is what compute() makes of the inventory the maps were
        written for and the drained set (so: eval.service_backends' lists, in order)."""
        expect = S.compute(self.run.program, self.run.inventory, self.drained, self.run.ids)
        assert not self.run.ids.dirty, "the kernel holds backends whose ids were never saved"
        for es in expect.entries:
            e = es.entry
            svc_id, tbase, tlen, balance, affinity = self.services[e.key]
            assert svc_id == e.svc_id and balance == abi.BALANCES[e.service.balance.value]
            assert affinity == (e.service.affinity_s or 0) * 10**9
            assert tbase in (e.region_base(0), e.region_base(1))
            assert self.table(e) == es.table(), f"{e.service.name} {e.vip.address}"
            for m in es.members:
                assert self.backends[m.id] == (m.address, m.port, m.active, e.svc_id), m
        assert len(self.services) == len(expect.entries)
        assert max(self.run.ids.backends.values()) < self.backends_size
        assert self.table_map == S.lb_table_slots(self.run.program)


@pytest.fixture
def env(make_lab, tmp_path):  # type: ignore[no-untyped-def]
    lb = make_lab(LAB)
    policy = tmp_path / "svc.netp"
    policy.write_text(POLICY)
    obj = api.compile(str(policy)).object
    loader.load(obj, str(policy), loader.resolve_target(lab=lb.name))
    return lb, obj, str(policy)


def netc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def banner(lab: str, client: str, vip: str, port: int = 8080) -> str:
    """Connect from a container to a VIP; the lab server's first line names the backend."""
    c = labs.lab_by_name(lab).container(client)
    with in_netns(c.netns):
        s = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(2)
        s.connect((vip, port))
        return s.recv(100).decode().split()[1]


def test_load_fills_the_service_maps(env) -> None:  # type: ignore[no-untyped-def]
    lb, _, _ = env
    live = Live(lb.name)
    live.check_against_reference()
    v4, v6 = live.entry("api-svc", "10.96.0.20"), live.entry("api-svc", "fd00:96::20")
    rr, static = live.entry("rr-svc", "10.96.0.53"), live.entry("static-svc", "10.96.0.80")
    assert [e.svc_id for e in (v4, v6, rr, static)] == [1, 2, 3, 4]
    assert all(live.region(e) == 0 for e in (v4, v6, rr, static))
    assert live.services[v4.key][1:3] == (0, 31) and live.services[v6.key][1:3] == (62, 31)
    # round-robin: api-1 and api-2 twice each and 10.0.5.10 once, in one cycle of 5 slots
    names = {live.bid(rr, n): n for n in ("api-1", "api-2", "10.0.5.10")}
    assert sorted(names[b] for b in live.table(rr)) == ["10.0.5.10", "api-1", "api-1", "api-2", "api-2"]
    assert live.backends[live.bid(v4, "api-1")][:2] == (labs.lab_by_name(lb.name).container("api-1").address(False),
                                                       8080)
    assert live.backends[live.bid(v6, "api-1")][0].startswith("fd00:")
    assert live.backends[live.bid(rr, "10.0.5.10")] == ("10.0.5.10", 5353, True, 3)
    assert live.services[static.key][2] == 16381   # random uses the weighted Maglev table
    # the datapath balances on them
    assert banner(lb.name, "client-1", "10.96.0.20") in ("api-1", "api-2")
    assert banner(lb.name, "client-1", "fd00:96::20") in ("api-1", "api-2")
    assert os.path.exists(os.path.join(os.environ["NETC_BPFFS"], lb.name, "shared", "netc_affinity"))


def test_sync_switches_only_the_affected_tables(env) -> None:  # type: ignore[no-untyped-def]
    lb, _, _ = env
    before = Live(lb.name)
    v4, rr, static = before.entry("api-svc", "10.96.0.20"), before.entry("rr-svc", "10.96.0.53"), \
        before.entry("static-svc", "10.96.0.80")
    labs.add_container(lb.name, {"name": "api-3", "labels": {"app": "api"}, "serve": ["tcp:8080"]})
    rep = loader.Deployment(lb.name).sync()
    assert rep.attached == ["api-3"]
    # three entries select api containers (two api-svc VIPs, rr-svc); static-svc is not rewritten
    assert rep.written["netc_services"] == 3
    assert rep.written["netc_lb_table"] == 31 + 31 + 7
    after = Live(lb.name)
    after.check_against_reference()
    assert after.region(v4) == 1 and after.region(rr) == 1 and after.region(static) == 0
    assert after.bid(v4, "api-3") in after.table(v4)
    for k, i in before.run.ids.backends.items():
        assert after.run.ids.backends[k] == i, "a backend was renumbered"

    api2 = after.bid(v4, "api-2")
    labs.remove_container(lb.name, "api-2")
    rep = loader.Deployment(lb.name).sync()
    assert rep.detached == ["api-2"]
    gone = Live(lb.name)
    gone.check_against_reference()
    assert gone.region(v4) == 0 and gone.region(rr) == 0 and gone.region(static) == 0
    assert api2 not in gone.table(v4)
    assert gone.backends[api2][2] is False and gone.backends[api2][1] == 8080   # flags 0, address kept
    assert set(gone.table(v4)) == {gone.bid(v4, "api-1"), gone.bid(v4, "api-3")}
    # a sync with no change writes nothing
    rep = loader.Deployment(lb.name).sync()
    assert rep.written["netc_services"] == rep.written["netc_lb_table"] == rep.written["netc_backends"] == 0


def test_drain_and_undrain(env) -> None:  # type: ignore[no-untyped-def]
    lb, obj, policy = env
    live = Live(lb.name)
    v4, v6, rr = live.entry("api-svc", "10.96.0.20"), live.entry("api-svc", "fd00:96::20"), \
        live.entry("rr-svc", "10.96.0.53")
    api1 = live.bid(v4, "api-1")
    api1_addr = labs.lab_by_name(lb.name).container("api-1").address(False)

    # a connection held open across the drain, counted by `show`
    held = []
    c = labs.lab_by_name(lb.name).container("client-1")
    with in_netns(c.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("10.96.0.20", 8080))
    held.append(s)
    try:
        p = netc("service", "drain", "api-svc", api1_addr, "--target", lb.name)   # by address
        assert p.returncode == 0, p.stderr
        assert "drained api-1 of api-svc" in p.stdout
        after = Live(lb.name)
        after.check_against_reference()
        assert after.drained == {"api-svc": {"api-1"}}
        assert after.region(v4) == 1 and after.region(v6) == 1 and after.region(rr) == 0
        assert api1 not in after.table(v4) and after.backends[api1][2] is False
        assert after.backends[after.bid(rr, "api-1")][2] is True    # drained from api-svc only
        for _ in range(5):
            assert banner(lb.name, "client-1", "10.96.0.20") == "api-2"

        p = netc("service", "show", "api-svc", "--target", lb.name, "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        states = {(v["address"], b["name"]): b["state"] for v in doc["vips"] for b in v["backends"]}
        assert states == {("10.96.0.20", "api-1"): "drained", ("10.96.0.20", "api-2"): "active",
                          ("fd00:96::20", "api-1"): "drained", ("fd00:96::20", "api-2"): "active"}
        assert doc["vips"][0]["region"] == 1 and doc["vips"][0]["table_len"] == 31
        assert doc["vips"][0]["connections"] >= 1
        p = netc("service", "list", "--target", lb.name, "--json")
        assert [s["name"] for s in json.loads(p.stdout)["services"]] == ["api-svc", "rr-svc", "static-svc"]

        # explain --live takes the drained set into account, as the kernel does
        p = netc("explain", "--live", "--target", lb.name, "--json", "--packet",
                 "tcp client-1:40000 -> 10.96.0.20:8080")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["translation"]["backend"] == "api-2"

        # remembered across a reload, with the same ids
        loader.load(obj, policy, loader.resolve_target(lab=lb.name))
        reloaded = Live(lb.name)
        assert reloaded.run.version == 2
        reloaded.check_against_reference()
        assert reloaded.bid(v4, "api-1") == api1 and reloaded.backends[api1][2] is False
        assert api1 not in reloaded.table(v4)

        # draining every backend: table_len 0 (the datapath refuses new connections)
        assert netc("service", "drain", "api-svc", "api-2", "--target", lb.name).returncode == 0
        assert Live(lb.name).services[v4.key][2] == 0

        p = netc("service", "undrain", "api-svc", "api-1", "--target", lb.name)
        assert p.returncode == 0, p.stderr
        p = netc("service", "undrain", "api-svc", "api-2", "--target", lb.name)
        assert p.returncode == 0, p.stderr
        back = Live(lb.name)
        back.check_against_reference()
        assert back.drained == {} and back.backends[api1][2] is True and api1 in back.table(v4)
        p = netc("service", "undrain", "api-svc", "api-2", "--target", lb.name)
        assert p.returncode == 0 and "already" in p.stdout
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("args, message", [
    (("drain", "nope", "api-1"), "has no service `nope` (its services: api-svc, rr-svc, static-svc)"),
    (("drain", "api-svc", "client-1"), "has no backend `client-1` (its backends: api-1, api-2)"),
    (("drain", "api-svc", "10.9.9.9"), "has no backend `10.9.9.9`"),
    (("show", "nope"), "has no service `nope`"),
])
def test_operator_errors_are_messages(env, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    lb, _, _ = env
    p = netc("service", *args, "--target", lb.name)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert message in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_help_of_every_service_command() -> None:
    for sub in ((), ("list",), ("show",), ("drain",), ("undrain",)):
        p = netc("service", *sub, "--help")
        assert p.returncode == 0 and "Usage: " in p.stdout, p.stderr

