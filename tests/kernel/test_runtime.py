"""`netc load`, `unload`, `sync` and `status` on real containers: a `netc lab` and real traffic.

Every test gets its own lab, its own state directory (NETC_STATE_DIR under tmp_path) and its own
bpffs directory (NETC_BPFFS=/sys/fs/bpf/netc-test-<random>), for in-process calls and for the
`netc` subprocesses alike; the `rt` fixture unloads, takes the lab down and removes the bpffs
directory even when the test fails.

There is no connection tracking yet, so every policy here isolates *ingress* only: replies go
from a server to a client whose ingress no policy isolates, and a verdict is decided by the
program on the server's host-side veth (`egress` hook) alone.

The lab (labels as in examples/lab.yaml, more servers):

    web-1     10.77.0.10  fd00:77::10   app=web     tcp:80 tcp:443 udp:53
    api-1     10.77.0.11  fd00:77::11   app=api     tcp:8080 udp:5353
    db-1      10.77.0.12  fd00:77::12   app=db      tcp:5432 udp:5432
    client-1  10.77.0.13  fd00:77::13   app=client  tcp:9000
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netc import api
from netc.runtime import lab as labs
from netc.runtime import loader
from netc.runtime.netns import delete_netns, in_netns, netns_exists, run_in_netns

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
PROBE_TIMEOUT = 0.3          # an allowed connection in the lab takes well under a millisecond
CONNECTED, TIMED_OUT = labs.CONNECTED, labs.TIMED_OUT
CONTAINERS = ("web-1", "api-1", "db-1", "client-1")
HOOKS = ("ingress", "egress")
STAGES = ("after-verify", "after-fill", "after-pin", "after-record", "mid-attach", "after-attach",
          "after-commit")

TOPOLOGY = """\
name: nrt
containers:
  - {name: web-1, labels: {app: web, tier: front, env: prod}, serve: ["tcp:80", "tcp:443", "udp:53"]}
  - {name: api-1, labels: {app: api, env: prod}, serve: ["tcp:8080", "udp:5353"]}
  - {name: db-1, labels: {app: db, env: prod}, serve: ["tcp:5432", "udp:5432"]}
  - {name: client-1, labels: {app: client}, serve: ["tcp:9000"]}
"""

GROUPS = """\
group web = app == "web"
group api = app == "api"
group db = app == "db"
group client = app == "client"
"""


def _two_policies(web_rule: str, db_rule: str) -> str:
    return (GROUPS + f"policy web-in for web {{\n    ingress default deny\n    {web_rule}\n}}\n"
            f"policy db-in for db {{\n    ingress default deny\n    {db_rule}\n}}\n")


POLICIES = {
    # A, B and C differ on the flows X, Y, Z, W below
    "A": _two_policies("allow ingress tcp from client to port 80", "allow ingress tcp from api to port 5432"),
    "B": _two_policies("allow ingress tcp from client to port 443", "allow ingress tcp from api to port 5432"),
    "C": _two_policies("allow ingress tcp from api to port 80", "allow ingress tcp from client to port 5432"),
    # TCP and UDP, both families (test 1)
    "traffic": GROUPS + """\
policy web-in for web {
    ingress default deny
    allow ingress tcp from client to port 80
    allow ingress udp from api to port 53
}
policy db-in for db {
    ingress default deny
    allow ingress tcp from api to port 5432
    allow ingress udp from client to port 5432
}
""",
    # inventory changes (test 10): api is isolated too, so a new api container can be denied
    "sync": GROUPS + """\
policy db-in for db {
    ingress default deny
    allow ingress tcp from api to port 5432
}
policy api-in for api {
    ingress default deny
    allow ingress tcp from web to port 8080
    allow ingress tcp from db    # the replies of api -> db (no connection tracking yet)
}
""",
}


@dataclass(frozen=True)
class Flow:
    src: str
    dst: str
    port: int
    udp: bool = False
    ipv6: bool = False

    def __str__(self) -> str:
        return (f"{'udp' if self.udp else 'tcp'}{'6' if self.ipv6 else '4'} "
                f"{self.src} -> {self.dst}:{self.port}")


X = Flow("client-1", "web-1", 80)      # A only
Y = Flow("client-1", "web-1", 443)     # B only
Z = Flow("client-1", "db-1", 5432)     # C only
W = Flow("api-1", "db-1", 5432)        # A and B, not C
XYZW = (X, Y, Z, W)
ALLOWED: dict[str | None, set[Flow]] = {
    "A": {X, W},
    "B": {Y, W},
    "C": {Z},
    None: {X, Y, Z, W},                # nothing attached: everything passes
}


# ---------------------------------------------------------------------------- kernel views
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_BPF_PROG_QUERY = 16
_TCX_ATTACH_TYPE = {"ingress": 46, "egress": 47}


def tcx_programs(netns: str, ifindex: int, hook: str) -> list[int]:
    """Program ids on an interface's tcx hook, as the kernel reports them (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * 64)()
    attr = (ctypes.c_uint8 * 72)()
    struct.pack_into("<II", attr, 0, ifindex, _TCX_ATTACH_TYPE[hook])
    struct.pack_into("<Q", attr, 16, ctypes.addressof(ids))
    struct.pack_into("<I", attr, 24, len(ids))
    with in_netns(netns):
        ret = _libc.syscall(ctypes.c_long(321), ctypes.c_int(_BPF_PROG_QUERY), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_QUERY ifindex {ifindex} {hook}: {os.strerror(err)}")
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def tc_filters(netns: str, interface: str, hook: str) -> str:
    """`tc filter show dev IF ingress|egress`, run with only the network namespace switched."""
    proc = run_in_netns(netns, ["tc", "filter", "show", "dev", interface, hook],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every policy of this module written to a .netp file and compiled once: name -> .bpf.o."""
    d = tmp_path_factory.mktemp("policies")
    out = {}
    for name, text in POLICIES.items():
        src = d / f"{name}.netp"
        src.write_text(text, encoding="utf-8")
        obj = d / f"{name}.bpf.o"
        obj.write_bytes(api.compile(str(src)).object)
        out[name] = obj
    return out


@dataclass
class Runtime:
    tmp: Path
    state: Path
    bpffs: str
    lab: labs.Lab
    policies: dict[str, Path]

    @property
    def name(self) -> str:
        return self.lab.name

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NETC_FAULT", "NETC_ATTACH")}
        env.update(NETC_STATE_DIR=str(self.state), NETC_BPFFS=self.bpffs, NO_COLOR="1")
        return env

    # --- the command
    def netc(self, *args: str, fault: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = self.env
        if fault:
            env["NETC_FAULT"] = fault
        return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=timeout)

    def cli_load(self, policy: str, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.netc("load", str(self.policies[policy]), "--lab", self.name, *extra, fault=fault)

    def status(self) -> dict[str, Any] | None:
        """Our target's entry of `netc status --json` (None when it is not listed)."""
        p = self.netc("status", "--json")
        assert p.returncode == 0, f"netc status failed ({p.returncode}):\n{p.stderr}"
        assert "Traceback" not in p.stderr, p.stderr
        entries = [t for t in json.loads(p.stdout) if t["target"] == self.name]
        return entries[0] if entries else None

    # --- the Python API
    def api_load(self, policy: str, **kw: Any) -> loader.LoadReport:
        target = loader.resolve_target(lab=self.name)
        return loader.load(self.policies[policy].read_bytes(), str(self.policies[policy]), target, **kw)

    # --- the kernel
    def containers(self) -> list[labs.LabContainer]:
        return labs.lab_by_name(self.name).containers

    def tcx(self) -> dict[tuple[str, str], list[int]]:
        """(container, hook) -> program ids on its host-side veth, for every container of the lab
        whose veth exists."""
        out = {}
        for c in self.containers():
            for h in HOOKS:
                try:
                    out[(c.name, h)] = tcx_programs(self.lab.node_netns, c.ifindex, h)
                except OSError as exc:
                    if exc.errno != errno.ENODEV:
                        raise
        return out

    def pins(self) -> list[str]:
        """Everything under our NETC_BPFFS (files and directories), relative paths."""
        if not os.path.isdir(self.bpffs):
            return []
        out = []
        for d, dirs, files in os.walk(self.bpffs):
            out += [os.path.relpath(os.path.join(d, n), self.bpffs) for n in dirs + files]
        return sorted(out)

    def version_complete(self, version: int) -> bool:
        """The pins of a version: its maps (policy and services) and both programs, published (no _partial)."""
        vdir = os.path.join(self.bpffs, self.name, f"v{version}")
        try:
            return (sorted(os.listdir(os.path.join(vdir, "maps"))) == sorted(loader.VERSION_MAPS)
                    and sorted(os.listdir(os.path.join(vdir, "progs"))) == sorted(loader.PROGRAM_FOR_HOOK.values()))
        except FileNotFoundError:
            return False

    # --- traffic
    def probe(self, flows: list[Flow] | tuple[Flow, ...], timeout: float = PROBE_TIMEOUT) -> dict[Flow, str]:
        """Probe every flow at once (one thread each): the batch takes one timeout at most."""
        def one(f: Flow) -> str:
            return labs.probe(self.name, f.src, f.dst, f.port, udp=f.udp, timeout=timeout, ipv6=f.ipv6)

        with ThreadPoolExecutor(max_workers=len(flows)) as ex:
            return dict(zip(flows, ex.map(one, flows), strict=True))

    def traffic_mismatch(self, allowed: dict[Flow, bool]) -> list[str]:
        got = self.probe(list(allowed))
        return [f"  {f}: {got[f]}, expected {CONNECTED if ok else TIMED_OUT}"
                for f, ok in allowed.items() if got[f] != (CONNECTED if ok else TIMED_OUT)]

    def expect_traffic(self, allowed: dict[Flow, bool], why: str) -> None:
        wrong = self.traffic_mismatch(allowed)
        assert not wrong, f"{why}: traffic does not match:\n" + "\n".join(wrong)

    def expect_policy(self, policy: str | None, why: str) -> None:
        self.expect_traffic({f: f in ALLOWED[policy] for f in XYZW}, f"{why} (expected policy {policy})")


def _cleanup(rt_lab: labs.Lab | None, bpffs: str) -> list[str]:
    problems: list[str] = []
    try:
        names = {t["target"] for t in loader.status()}
        if os.path.isdir(bpffs):
            names |= set(os.listdir(bpffs))
        for n in sorted(names):
            try:
                loader.unload(n, wait_s=10)
            except Exception as exc:  # noqa: BLE001 - go on cleaning, report at the end
                problems.append(f"unload {n}: {exc}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"status: {exc}")
    if rt_lab is not None:
        try:
            labs.down(rt_lab.name)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"lab down {rt_lab.name}: {exc}")
        for ns in rt_lab.namespaces:
            if netns_exists(ns):
                problems.append(f"namespace {ns} was left behind")
                with contextlib.suppress(Exception):
                    delete_netns(ns)
    shutil.rmtree(bpffs, ignore_errors=True)
    if os.path.exists(bpffs):
        problems.append(f"{bpffs} could not be removed")
    return problems


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policies: dict[str, Path]) -> Iterator[Runtime]:
    """A lab, a private state directory and a private bpffs directory; all removed afterwards."""
    state = tmp_path / "state"
    bpffs = f"/sys/fs/bpf/netc-test-{secrets.token_hex(4)}"
    monkeypatch.setenv("NETC_STATE_DIR", str(state))
    monkeypatch.setenv("NETC_BPFFS", bpffs)
    monkeypatch.delenv("NETC_FAULT", raising=False)
    monkeypatch.delenv("NETC_ATTACH", raising=False)
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY, encoding="utf-8")
    made: labs.Lab | None = None
    try:
        made = labs.up(topo)
        yield Runtime(tmp_path, state, bpffs, made, policies)
    finally:
        problems = _cleanup(made, bpffs)
        if problems:
            pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


def _assert_running(st: dict[str, Any] | None, version: int, containers: tuple[str, ...] = CONTAINERS) -> None:
    assert st is not None, "netc status does not list the target"
    assert st["active_version"] == version, st
    atts = {(a["container"], a["hook"]): a for a in st["attachments"]}
    assert set(atts) == {(c, h) for c in containers for h in HOOKS}, sorted(atts)
    wrong = [a for a in atts.values()
             if a["version"] != version or a["running_version"] != version or a["problem"]]
    assert not wrong, f"attachments not running v{version}: {wrong}"


def _no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


# ---------------------------------------------------------------------------- 1. real traffic
def test_real_traffic_tcp_udp_ipv4_ipv6(rt: Runtime) -> None:
    """Allowed connections connect and denied ones time out, TCP and UDP, IPv4 and IPv6."""
    allowed = {
        Flow("client-1", "web-1", 80): True,
        Flow("api-1", "web-1", 80): False,              # web admits only client on tcp/80
        Flow("client-1", "web-1", 443): False,          # no rule for 443: default deny
        Flow("api-1", "web-1", 53, udp=True): True,
        Flow("client-1", "web-1", 53, udp=True): False,
        Flow("api-1", "db-1", 5432): True,
        Flow("client-1", "db-1", 5432): False,
        Flow("client-1", "db-1", 5432, udp=True): True,  # same port, other protocol, other peer
        Flow("api-1", "db-1", 5432, udp=True): False,
        Flow("client-1", "api-1", 8080): True,          # nothing isolates api's ingress
        Flow("client-1", "api-1", 5353, udp=True): True,
    }
    allowed |= {Flow(f.src, f.dst, f.port, f.udp, ipv6=True): ok for f, ok in list(allowed.items())}
    rt.expect_traffic(dict.fromkeys(allowed, True), "before the load every server answers")

    netp = rt.policies["traffic"].with_suffix("").with_suffix(".netp")   # compiled on the way
    p = rt.netc("load", str(netp), "--lab", rt.name)
    assert p.returncode == 0, p.stderr
    rt.expect_traffic(allowed, "after netc load")
    _assert_running(rt.status(), 1)

    p = rt.netc("unload", rt.name)
    assert p.returncode == 0, p.stderr
    rt.expect_traffic(dict.fromkeys(allowed, True), "after netc unload nothing is enforced")


# ---------------------------------------------------------------------------- 2. replacement
@pytest.mark.parametrize("how", ["in-place", "full"])
def test_replacement_without_a_gap(rt: Runtime, how: str) -> None:
    """Load B over A while probing: X (A only) flips off, Y (B only) flips on, Z (neither) never
    connects, and no observation is one that neither A nor B allows. Both ways: B in place (same
    programs, entries rewritten through the inactive slots) and in full (new programs and maps)."""
    rt.api_load("A")
    observed: list[tuple[Flow, float, float, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.is_set():
                for f in (X, Y, Z):
                    t0 = time.monotonic()
                    r = labs.probe(rt.name, f.src, f.dst, f.port, timeout=PROBE_TIMEOUT)
                    observed.append((f, t0, time.monotonic(), r))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def wait_for(pred: Any, what: str, limit: float = 15.0) -> None:
        deadline = time.monotonic() + limit
        while not pred():
            assert not errors, errors
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    prober = threading.Thread(target=loop, name="prober", daemon=True)
    prober.start()
    try:
        wait_for(lambda: sum(1 for o in observed if o[0] == Z) >= 2, "two probe rounds under A")
        start = time.monotonic()
        p = rt.cli_load("B", *(["--full"] if how == "full" else []))
        end = time.monotonic()
        wait_for(lambda: sum(1 for o in observed if o[0] == Z and o[1] > end) >= 2, "two probe rounds under B")
    finally:
        stop.set()
        prober.join(10)
    assert not prober.is_alive()
    assert not errors, errors
    assert p.returncode == 0, p.stderr

    allowed = {X: {"A"}, Y: {"B"}, Z: set()}
    for f, by in allowed.items():
        rs = [(t0, t1, r) for g, t0, t1, r in observed if g == f]
        odd = [r for _, _, r in rs if r not in (CONNECTED, TIMED_OUT) or (r == CONNECTED and not by)]
        assert not odd, f"{f}: results neither A nor B gives: {odd}"
        under_a = [r for t0, t1, r in rs if t1 < start]
        under_b = [r for t0, t1, r in rs if t0 > end]
        want_a = CONNECTED if "A" in by else TIMED_OUT
        want_b = CONNECTED if "B" in by else TIMED_OUT
        assert under_a and set(under_a) == {want_a}, f"{f} while A ran: {under_a}"
        assert under_b and set(under_b) == {want_b}, f"{f} once B was loaded: {under_b}"
        seq = [r for _, _, r in rs]
        flips = sum(1 for a, b in zip(seq, seq[1:], strict=False) if a != b)
        assert flips <= 1, f"{f} changed verdict back and forth: {seq}"
    _assert_running(rt.status(), 2)


# ---------------------------------------------------------------------------- 3. verifier rejection
INJECTION_POINT = "\treturn classify(skb, NETC_DIR_INGRESS);"
UNCHECKED_READ = ("\tif (*(volatile __u8 *)((void *)(long)skb->data + 64) == 0x42) /* no bounds check */\n"
                  "\t\treturn TC_ACT_SHOT;\n")


def rejected_object(netp: Path) -> bytes:
    """The real object of `netp` (with its real manifest) plus one unchecked packet read."""
    from netc.codegen.artifact import embed_manifest
    from netc.codegen.c.generator import generate_c
    from netc.codegen.planner import plan
    from netc.codegen.toolchain import compile_c

    res = api.check(str(netp))
    assert res.ok and res.program is not None, res.diagnostics
    program_plan = plan(res.program)
    manifest = api.manifest_for(res.program, program_plan.to_json())
    c_text = generate_c(program_plan, {"sources": [p for p, _ in res.program.sources],
                                       "source_sha256": manifest["source_sha256"]})
    assert c_text.count(INJECTION_POINT) == 1, "the generated C changed: update INJECTION_POINT"
    c_text = c_text.replace(INJECTION_POINT, UNCHECKED_READ + INJECTION_POINT)
    obj = embed_manifest(compile_c(c_text), api.encode_manifest(manifest))
    assert api.read_manifest(obj)["source_sha256"] == manifest["source_sha256"]
    return obj


def test_verifier_rejection_leaves_the_previous_version_running(rt: Runtime) -> None:
    rt.api_load("A")
    bad = rt.tmp / "rejected.bpf.o"
    bad.write_bytes(rejected_object(rt.policies["B"].with_suffix("").with_suffix(".netp")))
    p = rt.netc("load", str(bad), "--lab", rt.name)
    assert p.returncode != 0
    _no_traceback(p)
    assert "verifier" in p.stderr and "invalid access to packet" in p.stderr, p.stderr
    rt.expect_policy("A", "after the rejected load")
    st = rt.status()
    _assert_running(st, 1)
    assert st is not None and not [v for v in st["versions"] if v["version"] != 1 and v["state"] == "active"]
    assert not os.path.exists(os.path.join(rt.bpffs, rt.name, "v2")), rt.pins()


# ---------------------------------------------------------------------------- 4. a container disappears
def test_a_container_that_disappeared_is_reported_and_the_rest_are_loaded(rt: Runtime) -> None:
    from pyroute2 import IPRoute

    gone = rt.lab.container("web-1")
    with in_netns(rt.lab.node_netns):
        ipr = IPRoute()
    try:
        ipr.link("del", index=ipr.link_lookup(ifname=gone.interface)[0])
    finally:
        ipr.close()
    assert any(c.name == "web-1" for c in loader.resolve_target(lab=rt.name).inventory.containers)

    p = rt.cli_load("A")
    assert p.returncode == 0, p.stderr
    _no_traceback(p)
    assert "skipped web-1" in p.stderr, p.stderr
    assert "3 container(s)" in p.stdout, p.stdout
    rest = ("api-1", "db-1", "client-1")
    _assert_running(rt.status(), 1, rest)
    kernel = rt.tcx()
    assert all(len(kernel[(c, h)]) == 1 for c in rest for h in HOOKS), kernel
    rt.expect_traffic({Z: False, W: True, Flow("client-1", "db-1", 5432, ipv6=True): False,
                       Flow("api-1", "db-1", 5432, ipv6=True): True}, "db-1 is enforced")


# ---------------------------------------------------------------------------- 5. kill -9
@pytest.mark.parametrize("previous", [True, False], ids=["over-v1", "first-load"])
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_every_stage(rt: Runtime, stage: str, previous: bool) -> None:
    """`netc load` dies by SIGKILL at a stage. The very next command, `netc status`, must show every
    container running a complete version, the previous one (none on a first load) unless the kill
    came after the commit, and traffic must match it; the kernel must run nothing status does not
    list. Then a load recovers and succeeds, and unload leaves no pin, link, row or object."""
    if previous:
        rt.api_load("A")
    p = rt.cli_load("B", "--full", fault=f"kill:{stage}")
    assert p.returncode == -signal.SIGKILL, f"expected death by SIGKILL at {stage}: {p.returncode}\n{p.stderr}"

    # Right after the crash, before any other command took the lock. Every problem is collected
    # and reported at the end, so one run also says whether recovery and unload work.
    committed = stage == "after-commit"
    policy = "B" if committed else ("A" if previous else None)
    version = (2 if previous else 1) if committed else (1 if previous else None)
    problems: list[str] = []
    st = rt.status()
    listed = {(a["container"], a["hook"]): a for a in st["attachments"]} if st else {}
    running = {k: a["running_version"] for k, a in listed.items()}
    if version is None:
        if listed:
            problems.append(f"netc status lists attachments, expected none: {running}")
    else:
        if set(listed) != {(c, h) for c in CONTAINERS for h in HOOKS}:
            problems.append(f"netc status lists {sorted(listed)}, expected every container and hook")
        if set(running.values()) != {version}:
            problems.append(f"netc status: every attachment should run v{version}: {running}")
        if not rt.version_complete(version):
            problems.append(f"v{version} is not completely pinned: {rt.pins()}")
    shown = {k: len(v) for k, v in rt.tcx().items()}
    if shown != {k: int(k in listed) for k in shown}:
        problems.append(f"the kernel's tcx programs differ from what netc status lists: "
                        f"kernel {shown}, listed {sorted(listed)}")
    wrong = rt.traffic_mismatch({f: f in ALLOWED[policy] for f in XYZW})
    if wrong:
        problems.append(f"traffic does not match policy {policy}:\n" + "\n".join(wrong))

    # the next load recovers and succeeds
    p = rt.cli_load("C")
    assert p.returncode == 0, p.stderr
    st = rt.status()
    assert st is not None
    _assert_running(st, st["active_version"])
    assert st["active_version"] == max(v["version"] for v in st["versions"]), st["versions"]
    if stage in ("after-record", "mid-attach", "after-attach"):   # recorded as loading: rolled back
        killed = 2 if previous else 1
        assert [v["state"] for v in st["versions"] if v["version"] == killed] == ["interrupted"], st["versions"]
    rt.expect_policy("C", f"after recovering from kill -9 at {stage} and loading C")

    # unload leaves nothing: pins, tcx links, rows, objects
    p = rt.netc("unload", rt.name)
    assert p.returncode == 0, p.stderr
    assert rt.pins() == []
    kernel = rt.tcx()
    assert all(not v for v in kernel.values()), kernel
    with contextlib.closing(sqlite3.connect(rt.state / "state.db")) as db:
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("targets", "versions", "attachments")}
    assert rows == {"targets": 0, "versions": 0, "attachments": 0}
    assert os.listdir(rt.state / "objects") == []
    rt.expect_policy(None, "after unload")
    assert not problems, f"right after kill -9 at {stage}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------- 6. injected failure
@pytest.mark.parametrize("previous", [True, False], ids=["over-v1", "first-load"])
def test_injected_failure_mid_attach_rolls_back(rt: Runtime, previous: bool) -> None:
    if previous:
        rt.api_load("A")
    p = rt.cli_load("B", "--full", fault="fail:mid-attach")
    assert p.returncode not in (0, -signal.SIGKILL), p.returncode
    _no_traceback(p)
    assert "injected failure at mid-attach" in p.stderr, p.stderr
    st = rt.status()
    kernel = rt.tcx()
    if previous:
        _assert_running(st, 1)
        assert st is not None and [v["state"] for v in st["versions"]] == ["active"], st["versions"]
        assert all(len(v) == 1 for v in kernel.values()), kernel
        rt.expect_policy("A", "after the failed load")
    else:
        assert st is None or not st["attachments"], st
        assert all(not v for v in kernel.values()), kernel
        assert not [x for x in rt.pins() if "/links/" in x or "/v" in x], rt.pins()
        rt.expect_policy(None, "after the failed first load")


# ---------------------------------------------------------------------------- failed loads leave no files
@pytest.mark.parametrize("how", ["verifier", "fail:mid-attach"])
def test_a_failed_load_leaves_no_object_behind(rt: Runtime, how: str) -> None:
    """A load that fails (verifier, attach) keeps no copy of its object in $NETC_STATE_DIR/objects:
    nothing records it, so nothing would ever remove it, not even `netc unload`."""
    rt.api_load("A")
    objects = rt.state / "objects"
    before = sorted(os.listdir(objects))
    if how == "verifier":
        bad = rt.tmp / "rejected.bpf.o"
        bad.write_bytes(rejected_object(rt.policies["B"].with_suffix("").with_suffix(".netp")))
        p = rt.netc("load", str(bad), "--lab", rt.name)
    else:
        p = rt.cli_load("B", "--full", fault=how)
    assert p.returncode != 0
    assert sorted(os.listdir(objects)) == before, "the failed version's files stay in objects/"
    p = rt.netc("unload", rt.name)
    assert p.returncode == 0, p.stderr
    assert os.listdir(objects) == []


# ---------------------------------------------------------------------------- 7. the lock
def test_concurrent_loads_never_interleave(rt: Runtime) -> None:
    from netc.runtime.state import exclusive

    with exclusive():
        t0 = time.monotonic()
        p = rt.netc("load", str(rt.policies["A"]), "--lab", rt.name, "--wait", "0.5")
        waited = time.monotonic() - t0
        assert p.returncode != 0
        _no_traceback(p)
        assert "another netc command" in p.stderr and str(os.getpid()) in p.stderr, p.stderr
        assert waited >= 0.5
        assert rt.status() is None
        assert not [x for x in rt.pins() if x.startswith(rt.name + "/")], rt.pins()
        assert all(not v for v in rt.tcx().values())
    p = rt.netc("load", str(rt.policies["A"]), "--lab", rt.name, "--wait", "0.5")
    assert p.returncode == 0, p.stderr
    _assert_running(rt.status(), 1)
    rt.expect_policy("A", "after the load that got the lock")


# ---------------------------------------------------------------------------- 8. not root
@pytest.fixture
def world_readable(policies: dict[str, Path]) -> Iterator[Path]:
    """A directory an unprivileged user can read (tmp_path is root's, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="netc-nonroot-"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("command", ["load", "unload", "sync"])
def test_not_root_is_refused_plainly(world_readable: Path, policies: dict[str, Path], command: str) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to drop privileges", pytrace=False)
    d = world_readable
    obj = d / "a.bpf.o"
    shutil.copy(policies["A"], obj)
    inv = d / "inventory.json"
    inv.write_text(json.dumps({"containers": [{"name": "web-1", "addresses": ["10.77.0.10"],
                                               "labels": {"app": "web"}, "interface": "nothere0"}]}))
    for p in (obj, inv):
        p.chmod(0o644)
    state = d / "state"
    bpffs = f"/sys/fs/bpf/netc-test-{secrets.token_hex(4)}"
    args = {"load": ["load", str(obj), "--inventory", str(inv)], "unload": ["unload", "web"],
            "sync": ["sync", "web"]}[command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETC_")}
    env.update(NETC_STATE_DIR=str(state), NETC_BPFFS=bpffs, HOME=str(d))
    p = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        sys.executable, "-m", "netc", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=60)
    try:
        assert p.returncode not in (0, 2), (p.returncode, p.stderr)
        _no_traceback(p)
        assert "root" in p.stderr and "CAP_BPF" in p.stderr, p.stderr
        assert not state.exists() and not os.path.exists(bpffs)
    finally:
        shutil.rmtree(bpffs, ignore_errors=True)


# ---------------------------------------------------------------------------- 9. tc fallback
def test_tc_fallback(rt: Runtime) -> None:
    p = rt.cli_load("A", "--attach", "tc")
    assert p.returncode == 0, p.stderr
    rt.expect_policy("A", "tc clsact mode")
    st = rt.status()
    _assert_running(st, 1)
    assert st is not None and st["mode"] == "tc" and {a["mode"] for a in st["attachments"]} == {"tc"}
    assert all(not v for v in rt.tcx().values()), "tc mode made tcx links"
    node = rt.lab.node_netns
    for c in rt.containers():
        assert "netc_from_container" in tc_filters(node, c.interface, "ingress")
        assert "netc_to_container" in tc_filters(node, c.interface, "egress")

    p = rt.netc("unload", rt.name)
    assert p.returncode == 0, p.stderr
    for c in rt.containers():
        for hook in HOOKS:
            out = tc_filters(node, c.interface, hook)
            assert "netc_" not in out and f"pref {0xC0DE}" not in out, f"{c.interface} {hook}: {out}"
    rt.expect_policy(None, "after unloading tc mode")


# ---------------------------------------------------------------------------- 10. inventory changes
def _map_keys(rt: Runtime, version: int) -> dict[str, set[bytes]]:
    from netc.runtime.libbpf import Map

    out = {}
    for name in loader.MAPS:
        with Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{version}", "maps", name)) as m:
            out[name] = set(m.keys())
    return out


_ARRAYS_MATCH = """
import sys
from netc.runtime import addr4
from netc.runtime.loader import Deployment, _pinned_maps
d = Deployment(sys.argv[1])
with _pinned_maps(d.target.name, d.version) as maps:
    lay = addr4.Layout.read(maps[addr4.ROOT_MAP], maps[addr4.NODES_MAP], {})
assert lay.trees() == list(addr4.reference(d.contents.maps["netc_addrs"])), "the arrays are not the trie"
used = lay.used()
assert len(used) == len(set(used)), "two subtrees share a chunk"
"""


def _assert_arrays_match(rt: Runtime) -> None:
    """The IPv4 arrays in the kernel are the trie of what netc_addrs holds for the inventory now."""
    p = subprocess.run([sys.executable, "-c", _ARRAYS_MATCH, rt.name], capture_output=True, text=True,
                       env=rt.env, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr


def test_inventory_changes_apply_without_reload(rt: Runtime) -> None:
    rt.api_load("sync")
    keys0 = _map_keys(rt, 1)
    api2_in = Flow("client-1", "api-2", 8080)         # denied once api-2 is enforced (web only)
    api2_web = Flow("web-1", "api-2", 8080)
    api2_db = Flow("api-2", "db-1", 5432)             # allowed once db-1 knows api-2 is api
    api2_db6 = Flow("api-2", "db-1", 5432, ipv6=True)

    labs.add_container(rt.name, {"name": "api-2", "labels": {"app": "api", "env": "prod"}, "serve": ["tcp:8080"]})
    rt.expect_traffic({api2_in: True, api2_web: True, api2_db: False, api2_db6: False},
                      "a new container before sync (no program, unknown address)")
    p = rt.netc("sync", rt.name, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    rt.expect_traffic({api2_in: False, api2_web: True, api2_db: True, api2_db6: True,
                       Flow("client-1", "api-1", 8080): False, W: True}, "after sync")
    assert rep["attached"] == ["api-2"] and rep["detached"] == [], rep
    small = rep["written"]["netc_endpoints"] + rep["written"]["netc_addrs"]
    assert 1 <= small <= 4, rep["written"]
    assert rep["written"]["netc_rules"] == 0 and rep["written"]["netc_wild"] == 0, rep["written"]
    assert sum(rep["deleted"].values()) == 0, rep["deleted"]
    _assert_running(rt.status(), 1, CONTAINERS + ("api-2",))
    keys1 = _map_keys(rt, 1)
    assert keys1["netc_rules"] == keys0["netc_rules"] and keys1["netc_wild"] == keys0["netc_wild"]
    assert len(keys1["netc_addrs"]) > len(keys0["netc_addrs"])
    _assert_arrays_match(rt)

    labs.remove_container(rt.name, "api-2")
    p = rt.netc("sync", rt.name, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["detached"] == ["api-2"] and rep["attached"] == [], rep
    assert rep["deleted"]["netc_endpoints"] + rep["deleted"]["netc_addrs"] >= 1, rep["deleted"]
    _assert_running(rt.status(), 1)
    assert _map_keys(rt, 1) == keys0, "the removed container's entries are still in the maps"
    _assert_arrays_match(rt)
    assert not [x for x in rt.pins() if "api-2" in x], rt.pins()

    # relabel: client-1 becomes an api container, api-1 a client
    inv_path = labs.lab_by_name(rt.name).inventory_path
    with open(inv_path, encoding="utf-8") as fh:
        inv = json.load(fh)
    for c in inv["containers"]:
        if c["name"] == "client-1":
            c["labels"] = {"app": "api", "env": "prod"}
        elif c["name"] == "api-1":
            c["labels"] = {"app": "client"}
    client_in = Flow("web-1", "client-1", 9000)        # refused once client-1 is an api container
    rt.expect_traffic({Z: False, W: True, client_in: True}, "before relabelling")
    with open(inv_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(inv, fh)
    os.replace(inv_path + ".tmp", inv_path)
    p = rt.netc("sync", rt.name, "--json")
    assert p.returncode == 0, p.stderr
    rt.expect_traffic({Z: True, W: False, client_in: False, Flow("web-1", "api-1", 8080): True},
                      "after relabelling and sync")
    _assert_arrays_match(rt)


def test_a_policy_too_big_for_the_map_budget_is_refused_before_loading(monkeypatch) -> None:
    from netc.errors import LoadError
    from netc.runtime.inventory import Container, Inventory
    from netc.runtime.loader import map_sizes
    from netc.runtime.materialize import materialize

    res = api.check(os.path.join(ROOT, "examples", "three-tier.netp"))
    contents = materialize(res.program, Inventory([Container("a", ("10.0.0.1",), {"app": "web"}, ifindex=5)]))
    assert map_sizes(contents, 10, 1)["netc_addrs"] >= len(contents.maps["netc_addrs"])
    monkeypatch.setenv("NETC_MAP_MEMORY_LIMIT", "1000")
    with pytest.raises(LoadError, match=r"needs about .* of kernel map memory .*NETC_MAP_MEMORY_LIMIT"):
        map_sizes(contents, 10, 1)


# ---------------------------------------------------------------------------- 11. policy changes in place
def _live_maps(rt: Runtime, version: int) -> tuple[int, dict[str, dict[bytes, bytes]]]:
    """The generation and the four policy maps of a version, as the kernel holds them."""
    from netc.runtime import slots
    from netc.runtime.libbpf import Map

    out = {}
    for name in loader.MAPS:
        with Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{version}", "maps", name)) as m:
            out[name] = dict(m.items())
    with Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{version}", "maps", slots.GEN_MAP)) as g:
        gen = slots.read_generation(g)
    return gen, out


def _assert_settled_as(rt: Runtime, version: int, policy: str) -> None:
    """Every entry holds the policy's contents in both slots, and there is no other entry."""
    from netc.ir.nodes import Program
    from netc.runtime import addr4, slots
    from netc.runtime.libbpf import Map
    from netc.runtime.materialize import Ids, materialize

    with open(rt.state / "objects" / f"{rt.name}-v{version}.ids.json") as fh:
        ids = Ids.from_json(json.load(fh))
    program = Program.from_json(api.read_manifest(rt.policies[policy].read_bytes())["ir"])
    inv, _ = loader.live_inventory(loader.resolve_target(lab=rt.name))
    want = materialize(program, inv, ids)
    _, have = _live_maps(rt, version)
    for name in loader.MAPS:
        expected = dict(slots.encode_all(name, loader._lpm_addrs(want) if name == "netc_addrs" else want.maps[name]))
        assert have[name] == expected, f"{name}: {len(have[name])} entries in the kernel, {len(expected)} wanted"
    # the IPv4 arrays: both root halves alike, and they answer as the policy's netc_addrs does
    with Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{version}", "maps", addr4.ROOT_MAP)) as r, \
            Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{version}", "maps", addr4.NODES_MAP)) as n:
        root = addr4.read_array(r)
        assert (addr4.half(root, 0) == addr4.half(root, 1)).all(), "the root halves differ after settling"
        trie = addr4.read_arrays(r, n, 0)
    for c in inv.containers:
        for a in c.addresses:
            if ":" not in a:
                x = int.from_bytes(bytes(int(o) for o in a.split(".")), "big")
                assert trie.lookup(x) == addr4.build(want.maps["netc_addrs"]).lookup(x), a


def test_a_policy_change_is_applied_in_place(rt: Runtime) -> None:
    """B over A: the same programs stay attached, only the entries that differ are written, one
    flip makes them live, the version is recorded as v2 over the same pins."""
    rt.api_load("A")
    progs_before = rt.tcx()
    gen_before, maps_before = _live_maps(rt, 1)
    total = sum(len(m) for m in maps_before.values())
    p = rt.netc("load", str(rt.policies["B"]), "--lab", rt.name, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["in_place"] is True and rep["version"] == 2 and rep["previous"] == 1, rep
    written = sum(rep["written"].values())
    assert 1 <= written <= 4 and rep["unchanged"] >= total - 4, rep   # web's port 80 -> 443 only
    assert rt.tcx() == progs_before, "the programs were replaced"
    gen_after, _ = _live_maps(rt, 2)
    assert gen_after == 1 - gen_before
    assert not os.path.exists(os.path.join(rt.bpffs, rt.name, "v1")) and rt.version_complete(2)
    _assert_running(rt.status(), 2)
    rt.expect_policy("B", "after B in place")
    _assert_settled_as(rt, 2, "B")
    # and back again, then C (three rules change): each a new version over the same programs
    assert rt.api_load("A").in_place
    rt.expect_policy("A", "after A in place")
    rep3 = rt.api_load("C")
    assert rep3.in_place and rep3.version == 4 and rt.tcx() == progs_before
    rt.expect_policy("C", "after C in place")
    _assert_settled_as(rt, 4, "C")
    # a change of shape (a service brings the load-balancing code) loads in full
    shaped = rt.tmp / "with-service.netp"
    shaped.write_text(POLICIES["A"] + "service web-svc {\n    vip 10.96.0.30 port 80 tcp\n"
                      "    backends web port 80\n}\n")
    p = rt.netc("load", str(shaped), "--lab", rt.name, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["in_place"] is False and "programs differ" in rep["full_reason"], rep
    assert rt.tcx() != progs_before
    rt.expect_policy("A", "after the full load")


@pytest.mark.parametrize("stage", ["in-place-staged", "in-place-flipped"])
def test_kill_9_during_a_change_in_place(rt: Runtime, stage: str) -> None:
    """Killed after staging, nothing a packet sees has changed; killed after the flip, the new
    policy is live. Either way the next command settles the maps (takes the change back, or
    finishes it and records the version) and works."""
    rt.api_load("A")
    p = rt.cli_load("B", fault=f"kill:{stage}")
    assert p.returncode == -signal.SIGKILL, p.stderr
    flipped = stage == "in-place-flipped"
    rt.expect_policy("B" if flipped else "A", f"right after kill -9 at {stage}")
    p = rt.netc("sync", rt.name)    # any command that takes the lock recovers
    assert p.returncode == 0, p.stderr
    st = rt.status()
    version = 2 if flipped else 1
    _assert_running(st, version)
    rt.expect_policy("B" if flipped else "A", f"after recovering from kill -9 at {stage}")
    _assert_settled_as(rt, version, "B" if flipped else "A")
    assert not list((rt.state / "objects").glob("*.pending.json"))
    assert rt.api_load("C").in_place
    rt.expect_policy("C", "after loading C")


def test_a_failure_while_staging_takes_the_change_back(rt: Runtime) -> None:
    rt.api_load("A")
    before = sorted(os.listdir(rt.state / "objects"))
    p = rt.cli_load("B", fault="fail:in-place-staged")
    assert p.returncode not in (0, -signal.SIGKILL), p.returncode
    _no_traceback(p)
    assert "injected failure at in-place-staged" in p.stderr, p.stderr
    _assert_running(rt.status(), 1)
    rt.expect_policy("A", "after the failed change")
    _assert_settled_as(rt, 1, "A")
    assert sorted(os.listdir(rt.state / "objects")) == before


@pytest.mark.parametrize("stage", ["sync-staged", "sync-flipped"])
def test_kill_9_during_a_sync(rt: Runtime, stage: str) -> None:
    rt.api_load("sync")
    api2_db = Flow("api-2", "db-1", 5432)             # allowed once db-1 knows api-2 is api
    labs.add_container(rt.name, {"name": "api-2", "labels": {"app": "api", "env": "prod"}, "serve": ["tcp:8080"]})
    p = rt.netc("sync", rt.name, fault=f"kill:{stage}")
    assert p.returncode == -signal.SIGKILL, p.stderr
    rt.expect_traffic({api2_db: stage == "sync-flipped"}, f"right after kill -9 at {stage}")
    p = rt.netc("sync", rt.name)
    assert p.returncode == 0, p.stderr
    rt.expect_traffic({api2_db: True, Flow("client-1", "api-2", 8080): False}, "after the next sync")
    _assert_settled_as(rt, 1, "sync")


def test_a_change_in_place_keeps_the_services_running(rt: Runtime) -> None:
    """quickstart-revoke changes a rule of quickstart-update and keeps its service: in place, and
    the VIP still takes connections afterwards."""
    target = loader.resolve_target(lab=rt.name)
    for name in ("quickstart-update", "quickstart-revoke"):
        path = ROOT / "examples" / f"{name}.netp"
        rep = loader.load(api.compile(str(path)).object, str(path), target)
    assert rep.in_place, rep.full_reason
    assert sum(rep.written.values()) <= 2 and sum(rep.deleted.values()) <= 2, (rep.written, rep.deleted)
    vip = Flow("client-1", "10.96.0.20", 80)
    rt.expect_traffic({vip: True, Z: False, W: True}, "after the change in place")


def test_a_cidr_change_in_place_moves_ipv4_subtrees_through_the_inactive_root_half(rt: Runtime) -> None:
    """The rule's address moves from client-1's to another: new chunks and root slots staged in the
    inactive half of the IPv4 arrays, live at the flip, both halves alike after settling."""
    rule = "allow ingress tcp from {} to port 80"
    first, second = rt.tmp / "cidr-a.netp", rt.tmp / "cidr-b.netp"
    first.write_text(_two_policies(rule.format("10.77.0.13/32"), "allow ingress tcp from api to port 5432"))
    second.write_text(_two_policies(rule.format("10.77.0.11/32"), "allow ingress tcp from api to port 5432"))
    target = loader.resolve_target(lab=rt.name)
    loader.load(api.compile(str(first)).object, str(first), target)
    from_client, from_api = Flow("client-1", "web-1", 80), Flow("api-1", "web-1", 80)
    rt.expect_traffic({from_client: True, from_api: False}, "the first address")
    rep = loader.load(api.compile(str(second)).object, str(second), target)
    assert rep.in_place, rep.full_reason
    assert rep.written["netc_addr4_root"] >= 1, rep.written
    rt.expect_traffic({from_client: False, from_api: True}, "after the change in place")
    from netc.runtime import addr4
    from netc.runtime.libbpf import Map

    with Map.from_pinned(os.path.join(rt.bpffs, rt.name, f"v{rep.version}", "maps", addr4.ROOT_MAP)) as r:
        root = addr4.read_array(r)
    assert (addr4.half(root, 0) == addr4.half(root, 1)).all()
