"""`netc trace drops` on a lab: a kernel drop (no route at the node; no socket in a container)
is reported with its reason's name, and a netc denial in the same run as a netc (tc) drop.
The Prometheus metrics of the same run are checked against the live counters too.

Each test has its own lab, state directory and bpffs directory; everything is removed afterwards,
and the tracer subprocess is stopped by its pid."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netc import api
from netc.runtime import lab as labs
from netc.runtime import loader
from netc.runtime.netns import delete_netns, netns_exists

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]

TOPOLOGY = """\
name: trace
containers:
  - name: web-1
    labels: {app: web}
    serve: ["tcp:80"]
  - name: client-1
    labels: {app: client}
"""

POLICY = """\
group web = app == "web"

policy web-ingress for web {
    ingress default deny
    allow ingress tcp from any to port 80
}
"""


@pytest.fixture
def traced_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[labs.Lab, dict[str, str]]]:
    state = tmp_path / "state"
    bpffs = f"/sys/fs/bpf/netc-test-{secrets.token_hex(4)}"
    monkeypatch.setenv("NETC_STATE_DIR", str(state))
    monkeypatch.setenv("NETC_BPFFS", bpffs)
    topo = tmp_path / "topology.yaml"
    topo.write_text(TOPOLOGY)
    src = tmp_path / "policy.netp"
    src.write_text(POLICY)
    made: labs.Lab | None = None
    try:
        made = labs.up(topo)
        loader.load(api.compile(str(src)).object, str(src), loader.resolve_target(lab=made.name))
        env = {**os.environ, "NETC_STATE_DIR": str(state), "NETC_BPFFS": bpffs}
        yield made, env
    finally:
        problems = []
        with contextlib.suppress(Exception):
            for t in loader.status():
                loader.unload(t["target"], wait_s=10)
        if made is not None:
            try:
                labs.down(made.name)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"lab down: {exc}")
            for ns in made.namespaces:
                if netns_exists(ns):
                    problems.append(f"namespace {ns} left behind")
                    with contextlib.suppress(Exception):
                        delete_netns(ns)
        shutil.rmtree(bpffs, ignore_errors=True)
        if problems:
            pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


class Tracer:
    """`netc trace drops --json` as a subprocess; lines arrive on a queue."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "netc", "trace", "drops", "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            if line.startswith("tracing kernel drops"):
                self.ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                pytest.fail("netc trace drops did not start:\n" + "".join(self.err), pytrace=False)
            time.sleep(0.05)

    def collect_until(self, done: Any, timeout: float = 10) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(got):
            try:
                got.append(json.loads(self.lines.get(timeout=0.2)))
            except queue.Empty:
                continue
        return got

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def test_kernel_drops_and_netc_drops_are_told_apart(traced_lab: tuple[labs.Lab, dict[str, str]]) -> None:
    lab, env = traced_lab
    tracer = Tracer(["--lab", lab.name, "--duration", "40"], env)
    try:
        tracer.wait_ready()
        assert "netc attached to 2" in "".join(tracer.err)
        # netc: web-1's ingress is isolated and nothing allows port 22 -> dropped on its host-side veth
        assert labs.probe(lab, "client-1", "web-1", 22, timeout=0.5) == labs.TIMED_OUT
        # the kernel: the node has no route to 10.99.0.1 (the probe reports ENETUNREACH) ...
        with pytest.raises(labs.LabError, match="unreachable"):
            labs.probe(lab, "client-1", "10.99.0.1", 80, timeout=0.5)
        # ... and nothing listens on UDP 9 in client-1, whose ingress nothing isolates: the kernel
        # there drops the datagram (its ICMP answer may then meet web-1's default deny: no matter)
        assert labs.probe(lab, "web-1", "client-1", 9, udp=True, timeout=0.3) in (labs.REFUSED, labs.TIMED_OUT)

        def done(got: list[dict[str, Any]]) -> bool:
            return (any(d["kind"] == "netc" and d["dport"] == 22 for d in got)
                    and any(d["dst"] == "10.99.0.1" for d in got)
                    and any(d["kind"] == "kernel" and d["container"] == "client-1" and d["side"] == "container"
                            and d["protocol"] == "udp" for d in got))
        drops = tracer.collect_until(done)
    finally:
        rc = tracer.stop()
    assert rc in (0, 130), "".join(tracer.err)
    assert "Traceback" not in "".join(tracer.err)
    netc = [d for d in drops if d["kind"] == "netc"]
    assert netc, f"no netc drop among {drops}"
    d = netc[0]
    assert d["reason"] == "TC_EGRESS" and d["kind_text"] == "netc (tc) drop"
    addr = {c.name: c.addresses[0] for c in lab.containers}
    assert (d["container"], d["side"], d["protocol"], d["dst"], d["dport"]) == ("web-1", "host", "tcp", addr["web-1"], 22)
    assert d["interface"] == lab.containers[0].interface

    no_route = [d for d in drops if d["dst"] == "10.99.0.1"]
    assert no_route, f"no drop of the packet to 10.99.0.1 among {drops}"
    k = no_route[0]
    assert k["kind"] == "kernel" and k["kind_text"] == "kernel drop"
    assert k["reason"].isupper() and not k["reason"].startswith("reason "), k   # a name from the kernel's table
    assert k["reason"] not in ("TC_INGRESS", "TC_EGRESS")
    assert (k["container"], k["side"], k["src"], k["dport"]) == ("client-1", "host", addr["client-1"], 80)

    no_socket = [d for d in drops if d["kind"] == "kernel" and d["side"] == "container" and d["protocol"] == "udp"]
    assert no_socket and no_socket[0]["reason"] == "NO_SOCKET" and no_socket[0]["dport"] == 9, drops
    # nothing from outside the lab was reported
    assert {d["container"] for d in drops} <= {"web-1", "client-1"}


def test_container_filter_and_plain_text(traced_lab: tuple[labs.Lab, dict[str, str]]) -> None:
    lab, env = traced_lab
    p = subprocess.Popen([sys.executable, "-m", "netc", "trace", "drops", "--lab", lab.name, "--container",
                          "client-1", "--duration", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    try:
        time.sleep(0.2)
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:   # until the tracer is attached, send now and then
            labs.probe(lab, "client-1", "web-1", 22, timeout=0.2)          # a netc drop on web-1: filtered out
            with contextlib.suppress(labs.LabError):
                labs.probe(lab, "client-1", "10.99.0.1", 80, timeout=0.2)  # a kernel drop on client-1's veth
            time.sleep(0.2)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
    assert p.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, err
    assert all("client-1" in ln for ln in lines) and not any("web-1" in ln for ln in lines), out
    assert any("kernel drop" in ln and "-> 10.99.0.1:80" in ln for ln in lines), out


def test_metrics_of_the_live_target(traced_lab: tuple[labs.Lab, dict[str, str]]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from netc.observe import metrics

    lab, _ = traced_lab
    for _ in range(3):
        assert labs.probe(lab, "client-1", "web-1", 22, timeout=0.3) == labs.TIMED_OUT
    assert labs.probe(lab, "client-1", "web-1", 80, timeout=2) == labs.CONNECTED
    httpd, thread = metrics.serve("127.0.0.1:0", targets=[lab.name])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    fams = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert not fams["netc_scrape_errors"], fams["netc_scrape_errors"]
    drops = {(s.labels["container"], s.labels["direction"], s.labels["reason"]): s.value
             for s in fams["netc_drops"] if s.labels["target"] == lab.name}
    assert drops.get(("web-1", "ingress", "default_deny"), 0) >= 3, drops   # SYN retransmits count too
    allowed = [s for s in fams["netc_rule_packets"] if s.labels["container"] == "web-1"
               and s.labels["action"] == "allow" and "port 80" in s.labels["rule"]]
    assert allowed and allowed[0].value >= 1 and allowed[0].labels["location"].endswith("policy.netp:5")
    assert {s.labels["mode"]: s.value for s in fams["netc_attachments"]} == {"tcx": 4}
    assert [s.value for s in fams["netc_events_lost"]] == [0]
