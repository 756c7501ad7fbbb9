"""The nftables and iptables exports enforce what eval.py decides: real traffic on a lab, every example.

For each examples/*.netp: a lab with one container per distinct label set that the file's
selectors (groups, policy selectors, peer selectors, service backends) are solved to
(netc.ir.testing.solve_labels), plus `outsider` (the brief's client), whose labels no selector names. Every container
serves the TCP and UDP ports probed. Then, once with `nft -f` of the nftables export and once
with `iptables-restore`/`ip6tables-restore` of the iptables export, all run inside the lab's
node namespace (a child that inherits only that network namespace):

- every ordered pair of containers, IPv4 and IPv6, TCP and UDP, on ports the file's rules name
  plus one they do not; and the node itself to every container and every container to the node
  (TCP), which exercises the `input`/`output` hooks and the `host` peer;
- result: connected or refused (the packet reached its destination) = allowed; timed out
  (0.3 s) = denied; compared with netc.ir.eval.evaluate on the lab's inventory.

The exports are stateful (established/related first), so a reply passes whenever the first
packet did: connect() succeeding is exactly the first packet's verdict. Services are not
exported (no load balancing): no probe goes to a VIP, only to container and node addresses.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import selectors
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netc import api
from netc.errors import NetcError
from netc.export import export_iptables, export_nftables
from netc.export.iptables import chain_name as ipt_chain_name
from netc.export.model import chains
from netc.export.nftables import chain_name as nft_chain_name
from netc.ir.eval import Packet, Verdict, evaluate
from netc.ir.nodes import Direction, Program, Selector
from netc.ir.testing import solve_labels
from netc.runtime import lab as labs
from netc.runtime.inventory import Inventory
from netc.runtime.netns import in_netns, list_netns, run_in_netns

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(glob.glob(str(ROOT / "examples" / "*.netp")))
BASE = "ncex"                 # every lab of this module is netc-ncex-...
TIMEOUT = 0.3
CLIENT_LABELS = {"netc-export-test": "client"}
UNNAMED_PORT = 7              # no example names it
MAX_TCP, MAX_UDP = 7, 3
NODE = "node"

# What the examples leave out between containers: deny beats allow at equal priority, a rule's
# own priority above and below a deny, `default allow`, `host` and `world` peers, ports without a
# protocol, `except` holes that fall on lab addresses (10.77.0.10+i, fd00:77::10+i), an
# IPv6-only peer, `(all)`, and a policy of audits only (its chains decide nothing).
EDGE_CASES = """\
group a = role == "a"
group b = role == "b"
group c = role == "c"
group d = role == "d"
group e = role == "e"

let lab_part = {10.77.0.0/24 except 10.77.0.10/31, fd00:77::/120 except fd00:77::12}

policy a-in for a {
    ingress default deny
    allow ingress tcp from b, c to port 80, 8080
    deny ingress tcp from c to port 80
    allow ingress udp from lab_part to port 53
    allow ingress from host to port 80
    deny ingress tcp from b to port 8080 priority -1
}

policy b-in for b {
    ingress default allow
    deny ingress from c
    allow ingress tcp from c to port 8080 priority 10 log
    deny ingress to port 53 log
}

policy c-eg for c {
    egress default deny
    allow egress to a, d port 80, 53
    allow egress tcp to world port 8080
    deny egress udp to fd00:77::/64 port 53
    allow egress udp to fd00:77::/64 port 53
}

policy d-both for d {
    ingress default deny
    egress default deny
    allow ingress tcp from (all) to port 8080
    allow ingress from world
    allow egress to lab_part
    deny egress tcp to e port 80
}

policy e-audit for e {
    audit ingress tcp to port 80
    audit egress udp
}
"""
EDGE = "edge-cases.netp"


# ---------------------------------------------------------------------------- the lab for a file
def _selectors(program: Program) -> list[tuple[str, Selector]]:
    out: list[tuple[str, Selector]] = sorted(program.groups.items())
    for p in program.policies:
        out.append((f"for-{p.name}", p.selector))
        for r in p.rules:
            out += [(f"peer-{p.name}", s) for s in r.peer.selectors]
    for svc in program.services:
        out += [(f"backend-{svc.name}", b.selector) for b in svc.backends if b.selector is not None]
    return out


def _ports(program: Program) -> tuple[list[int], list[int]]:
    """TCP and UDP ports to probe: the first port of each rule's port set, in rule order, plus one unnamed."""
    tcp: list[int] = []
    udp: list[int] = []
    for r in program.rules:
        if r.ports is None:
            continue
        for lo, _hi in r.ports.ranges[:2]:
            port = max(lo, 1)
            proto = r.protocol.name.lower() if r.protocol else "any"
            if proto in ("tcp", "any") and port not in tcp:
                tcp.append(port)
            if proto in ("udp", "any") and port not in udp:
                udp.append(port)
    return tcp[:MAX_TCP] + [UNNAMED_PORT], udp[:MAX_UDP] + [UNNAMED_PORT]


def topology(program: Program, stem: str) -> tuple[dict, list[int], list[int]]:
    tcp, udp = _ports(program)
    serve = [f"tcp:{p}" for p in tcp] + [f"udp:{p}" for p in udp]
    seen: list[dict[str, str]] = []
    containers = []
    for name, sel in _selectors(program):
        labels = solve_labels(sel)
        if labels is None or labels in seen:
            continue
        seen.append(labels)
        cname = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:30] or "c"
        while any(c["name"] == cname for c in containers):
            cname += "x"
        containers.append({"name": cname, "labels": labels, "serve": serve})
    name = "outsider"
    while any(c["name"] == name for c in containers):
        name += "x"
    containers.append({"name": name, "labels": CLIENT_LABELS, "serve": serve})
    return {"name": f"{BASE}-{stem}"[:30], "containers": containers}, tcp, udp


@pytest.fixture(scope="module")
def state_dir() -> Iterator[str]:
    """A private lab state directory; every lab recorded there is removed at the end."""
    old = os.environ.get("NETC_STATE_DIR")
    with tempfile.TemporaryDirectory(prefix="netc-export-") as d:
        os.environ["NETC_STATE_DIR"] = d
        try:
            yield d
        finally:
            try:
                labs.down_all()
            finally:
                for ns in list_netns(f"netc-{BASE}-"):
                    with contextlib.suppress(NetcError):
                        labs.delete_netns(ns)
                if old is None:
                    os.environ.pop("NETC_STATE_DIR", None)
                else:
                    os.environ["NETC_STATE_DIR"] = old


# ---------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class Flow:
    src: str            # container name or NODE
    dst: str
    proto: str          # "tcp" | "udp"
    port: int
    family: int


def _addr(lab: labs.Lab, who: str, family: int) -> str:
    if who == NODE:
        return next(a for a in lab.host_addresses if (":" in a) == (family == 6))
    a = lab.container(who).address(family == 6)
    assert a is not None
    return a


def _netns(lab: labs.Lab, who: str) -> str:
    return lab.node_netns if who == NODE else lab.container(who).netns


def probe_all(lab: labs.Lab, flows: list[Flow]) -> dict[Flow, str]:
    """Every flow from one source at once (non-blocking sockets), one source after another.

    A listener gets at most two connections per wave (IPv4 and IPv6), far below its backlog.
    """
    out: dict[Flow, str] = {}
    sources = sorted({f.src for f in flows})
    for src in sources:
        wave = [f for f in flows if f.src == src]
        socks: dict[Flow, socket.socket] = {}
        with in_netns(_netns(lab, src)):
            for f in wave:
                fam = socket.AF_INET6 if f.family == 6 else socket.AF_INET
                s = socket.socket(fam, socket.SOCK_STREAM if f.proto == "tcp" else socket.SOCK_DGRAM)
                s.setblocking(False)
                socks[f] = s
        sel = selectors.DefaultSelector()
        try:
            for f, s in socks.items():
                dst = (_addr(lab, f.dst, f.family), f.port)
                if f.proto == "tcp":
                    rc = s.connect_ex(dst)
                    if rc not in (0, errno.EINPROGRESS):
                        raise AssertionError(f"connect {f}: {os.strerror(rc)}")
                    sel.register(s, selectors.EVENT_WRITE, f)
                else:
                    s.connect(dst)
                    s.send(b"netc export probe\n")
                    sel.register(s, selectors.EVENT_READ, f)
            deadline = time.monotonic() + TIMEOUT
            pending = len(socks)
            while pending and (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    f = key.data
                    s = socks[f]
                    if f.proto == "tcp":
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        result = {0: "connected", errno.ECONNREFUSED: "refused"}.get(err, f"error {err}")
                    else:
                        try:
                            s.recv(512)
                            result = "connected"
                        except ConnectionRefusedError:
                            result = "refused"
                        except BlockingIOError:
                            continue
                    out[f] = result
                    sel.unregister(s)
                    pending -= 1
            for f in socks:
                out.setdefault(f, "timed out")
        finally:
            sel.close()
            for s in socks.values():
                s.close()
    return out


def flows_for(lab: labs.Lab, tcp: list[int], udp: list[int]) -> list[Flow]:
    names = [c.name for c in lab.containers]
    out = []
    for a in names:
        for b in names:
            if a == b:
                continue
            for fam in (4, 6):
                out += [Flow(a, b, "tcp", p, fam) for p in tcp]
                out += [Flow(a, b, "udp", p, fam) for p in udp]
    for c in names:                       # the node's own traffic: the input and output hooks
        for fam in (4, 6):
            for p in tcp[:3]:
                out += [Flow(NODE, c, "tcp", p, fam), Flow(c, NODE, "tcp", p, fam)]
    return out


def verdict(program: Program, inv: Inventory, lab: labs.Lab, f: Flow) -> Verdict:
    proto = 6 if f.proto == "tcp" else 17
    pkt = Packet(proto, _addr(lab, f.src, f.family), _addr(lab, f.dst, f.family), 40000, f.port)
    return evaluate(program, inv, pkt)


# ---------------------------------------------------------------------------- applying rulesets
def run_node(lab: labs.Lab, argv: list[str], stdin: str | None = None) -> str:
    proc = run_in_netns(lab.node_netns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(stdin, timeout=60)
    assert proc.returncode == 0, f"{' '.join(argv)} in {lab.node_netns} failed ({proc.returncode}):\n{err}"
    return out


def flush_conntrack(lab: labs.Lab) -> None:
    """Forget the connections of the previous phase, so no probe rides on an old entry."""
    from pyroute2 import Conntrack

    with in_netns(lab.node_netns):
        ct = Conntrack()
    try:
        ct.flush()
    finally:
        ct.close()


def _nft_chain(text: str, name: str) -> str:
    m = re.search(rf"\tchain {re.escape(name)} {{\n.*?\n\t}}", text, re.S)
    return m.group(0) if m else f"(no chain {name}: the direction is open)"


def _ipt_chain(text: str, name: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith(f"-A {name} ")]
    return "\n".join(lines) or f"(no chain {name}: the direction is open)"


def describe(path: str, program: Program, inv: Inventory, lab: labs.Lab, f: Flow, got: str, v: Verdict,
             kind: str, text: str) -> str:
    shown = os.path.relpath(path, ROOT) if path.startswith(str(ROOT)) else path
    lines = [f"{kind}: {shown}: {f.proto} {f.src} -> {f.dst}:{f.port} IPv{f.family}: "
             f"kernel {got}, eval {'allows' if v.allowed else 'denies'}"]
    for s in v.sides:
        why = f"{s.rule.location} `{s.rule.text}`" if s.rule else s.reason.value
        lines.append(f"  eval: {s.endpoint.name} {s.direction.value} {'allows' if s.allowed else 'denies'}: {why}")
    for ch in chains(program, inv):
        if (ch.container.name, ch.direction) in ((f.src, Direction.EGRESS), (f.dst, Direction.INGRESS)):
            name = nft_chain_name(ch) if kind == "nftables" else ipt_chain_name(ch)
            body = _nft_chain(text, name) if kind == "nftables" else _ipt_chain(text, name)
            if kind == "nftables":       # and the sets the chain names
                for setname in sorted(set(re.findall(r"@(p\d+_v[46])", body))):
                    m = re.search(rf"\tset {setname} {{\n.*?\n\t}}", text, re.S)
                    body += "\n" + (m.group(0) if m else f"(no set {setname})")
            lines.append(f"  exported {ch.name}:\n" + "\n".join("    " + x for x in body.splitlines()))
    return "\n".join(lines)


def compare(path: str, program: Program, inv: Inventory, lab: labs.Lab, flows: list[Flow], kind: str,
            text: str) -> tuple[list[str], dict[str, int]]:
    results = probe_all(lab, flows)
    bad = []
    tally = {"allowed": 0, "denied": 0}
    for f in flows:
        got = results[f]
        assert not got.startswith("error"), f"{kind}: probe {f}: {got}"
        v = verdict(program, inv, lab, f)
        tally["allowed" if v.allowed else "denied"] += 1
        if (got != "timed out") != v.allowed:
            bad.append(describe(path, program, inv, lab, f, got, v, kind, text))
    return bad, tally


# ---------------------------------------------------------------------------- the test
def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES + [EDGE], ids=os.path.basename)
def test_exports_enforce_what_eval_decides(path: str, state_dir: str, tmp_path: Path) -> None:
    if path == EDGE:
        path = str(tmp_path / EDGE)
        Path(path).write_text(EDGE_CASES)
    res = api.check(path)
    assert res.ok and res.program is not None, [str(d) for d in res.errors]
    program = res.program
    stem = re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower())[:12]
    topo, tcp, udp = topology(program, stem)
    topo_path = tmp_path / "topology.json"
    topo_path.write_text(json.dumps(topo))
    lab = labs.up(topo_path)
    try:
        inv = Inventory.load(lab.inventory_path)
        flows = flows_for(lab, tcp, udp)
        problems: list[str] = []

        nft_text = export_nftables(program, inv)
        (tmp_path / "netc.nft").write_text(nft_text)
        run_node(lab, ["nft", "-f", str(tmp_path / "netc.nft")])
        bad, tally = compare(path, program, inv, lab, flows, "nftables", nft_text)
        problems += bad
        assert tally["allowed"] and tally["denied"], f"{path}: the probes should see both verdicts: {tally}"
        run_node(lab, ["nft", "flush", "ruleset"])
        assert run_node(lab, ["nft", "list", "ruleset"]).strip() == ""
        flush_conntrack(lab)

        parts = export_iptables(program, inv)
        run_node(lab, ["iptables-restore"], parts["iptables"])
        run_node(lab, ["ip6tables-restore"], parts["ip6tables"])
        print(f"\n{os.path.basename(path)}: {len(lab.containers)} containers, {len(flows)} flows, eval: {tally}")
        bad, _ = compare(path, program, inv, lab, flows, "iptables",
                         parts["iptables"] + parts["ip6tables"])
        problems += bad
        run_node(lab, ["nft", "flush", "ruleset"])   # iptables-nft's tables are nftables tables

        assert not problems, (f"{len(problems)} disagreement(s) of {2 * len(flows)} probes:\n"
                              + "\n\n".join(problems[:20]))
    finally:
        labs.down(lab)

