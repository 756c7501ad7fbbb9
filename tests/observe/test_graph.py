"""`netc graph`: known flows give the expected nodes, edges and counts in DOT, SVG and a page that a
headless Chromium renders (its DOM after the page's script ran)."""

from __future__ import annotations

import html.parser
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netc.observe import graph as G
from netc.observe.cli import graph as graph_command

ROOT = Path(__file__).resolve().parents[2]
SVG_NS = "{http://www.w3.org/2000/svg}"

R80 = {"id": 16, "location": "q.netp:15", "text": "allow ingress tcp from any to port 80", "policy": "web-in"}
R_BAD = {"id": 17, "location": "q.netp:17", "text": "deny ingress from 203.0.113.66 log", "policy": "web-in"}
AUDIT = {"id": 30, "location": "q.netp:40", "text": "audit ingress tcp to port 5432", "policy": "db-in"}
IP = {"web-1": "10.77.0.10", "api-1": "10.77.0.11", "db-1": "10.77.0.12", "client-1": "10.77.0.13"}
NAME = {v: k for k, v in IP.items()}


def flow(container: str, direction: str, verdict: str, src: str, sport: int, dst: str, dport: int,
         nbytes: int = 60, rule: dict[str, Any] | None = None, default: str | None = None,
         proto: str = "tcp", audit: dict[str, Any] | None = None) -> dict[str, Any]:
    s, d = IP.get(src, src), IP.get(dst, dst)
    return {"time": "2026-11-26T09:00:00.000Z", "ts_ns": 1, "target": "t", "container": container,
            "direction": direction, "kind": "deny" if verdict == "deny" else "allow", "verdict": verdict,
            "protocol": proto, "src": s, "sport": sport, "dst": d, "dport": dport, "src_name": NAME.get(s),
            "dst_name": NAME.get(d), "bytes": nbytes, "rule": rule, "default": None if rule else default,
            "audit_rule": audit}


def known_flows() -> list[dict[str, Any]]:
    f = []
    for i in range(3):   # client-1 -> web-1:80, seen at both ends, with its replies: 3 + 3 packets
        f.append(flow("client-1", "egress", "allow", "client-1", 40000 + i, "web-1", 80, default="not isolated"))
        f.append(flow("web-1", "ingress", "allow", "client-1", 40000 + i, "web-1", 80, rule=R80))
        f.append(flow("web-1", "egress", "allow", "web-1", 80, "client-1", 40000 + i, nbytes=500, default="not isolated"))
    for i in range(2):   # client-1 -> web-1:22: allowed out, denied in
        f.append(flow("client-1", "egress", "allow", "client-1", 41000 + i, "web-1", 22, default="not isolated"))
        f.append(flow("web-1", "ingress", "deny", "client-1", 41000 + i, "web-1", 22, default="default deny"))
    f.append(flow("db-1", "ingress", "deny", "web-1", 42000, "db-1", 5432, nbytes=74, default="default deny",
                  audit=AUDIT))
    for i in range(4):
        f.append(flow("web-1", "ingress", "deny", "203.0.113.66", 50000 + i, "web-1", 80, rule=R_BAD))
    f.append(flow("api-1", "egress", "allow", "api-1", 43000, "198.51.100.53", 53, nbytes=71, proto="udp",
                  default="not isolated"))
    f.append(flow("web-1", "ingress", "allow", "10.77.0.1", 44000, "web-1", 80, rule=R80))
    return f


class Inv:  # the parts of an Inventory the graph uses
    labels = {"web-1": {"app": "web", "tier": "front"}, "api-1": {"app": "api"}, "db-1": {"tier": "data"},
              "client-1": {}}

    def by_name(self, name: str) -> Any:
        from netc.runtime.inventory import Container

        return Container(name, (IP[name],), self.labels[name]) if name in IP else None

    def by_address(self, addr: str) -> Any:
        return self.by_name(NAME[addr]) if addr in NAME else None

    def is_host(self, addr: str) -> bool:
        return addr == "10.77.0.1"


EXPECTED_NODES = {"node-c-client-1", "node-c-web-1", "node-c-db-1", "node-c-api-1", "node-world", "node-host"}
EXPECTED_EDGES = {   # id: (allowed, denied, allowed bytes, denied bytes)
    "edge-c-client-1--c-web-1": (6, 2, 3 * 60 + 3 * 500, 2 * 60),
    "edge-c-web-1--c-db-1": (0, 1, 0, 74),
    "edge-world--c-web-1": (0, 4, 0, 240),
    "edge-c-api-1--world": (1, 0, 71, 0),
    "edge-host--c-web-1": (1, 0, 60, 0),
}


@pytest.fixture
def g() -> G.Graph:
    return G.build_graph(known_flows(), Inv())


def test_counts_each_packet_once_and_folds_replies(g: G.Graph) -> None:
    assert set(g.nodes) == EXPECTED_NODES
    got = {e.id: (e.allowed, e.denied, e.allowed_bytes, e.denied_bytes) for e in g.edges.values()}
    assert got == EXPECTED_EDGES
    e = g.edges[("node-c-client-1", "node-c-web-1")]
    assert e.ports == {"tcp/80": 6, "tcp/22": 2}
    assert e.status == "mixed"
    assert g.nodes["node-c-web-1"].group == "app=web"
    assert g.nodes["node-c-db-1"].group == "tier=data"        # no app label: the first label
    assert g.nodes["node-c-client-1"].group == "client"        # no labels: the name without its number
    assert g.nodes["node-world"].addresses == {"203.0.113.66", "198.51.100.53"}


def test_without_an_inventory_unknown_addresses_are_world(g: G.Graph) -> None:
    g2 = G.build_graph(known_flows())
    assert "node-host" not in g2.nodes and "10.77.0.1" in g2.nodes["node-world"].addresses
    assert g2.nodes["node-c-web-1"].group == "web"


def test_dot_has_the_nodes_edges_and_counts(g: G.Graph) -> None:
    dot = G.render_dot(g)
    assert dot.startswith("digraph netc {") and dot.rstrip().endswith("}")
    for nid in EXPECTED_NODES:
        assert f'"{nid}" [label=' in dot
    lines = {ln.split(" [", 1)[0].strip(): ln for ln in dot.splitlines() if " -> " in ln}
    assert set(lines) == {f'"{e.src}" -> "{e.dst}"' for e in g.edges.values()}
    mixed = lines['"node-c-client-1" -> "node-c-web-1"']
    assert 'label="✓6 ✗2 · 1.8 kB"' in mixed and "style=dashed" in mixed and "#d62728" in mixed
    assert "q.netp:15" in mixed and "default: default deny" in mixed
    allowed = lines['"node-c-api-1" -> "node-world"']
    assert 'label="✓1 · 71 B"' in allowed and "dashed" not in allowed
    assert 'subgraph "cluster_' in dot and 'label="app=web"' in dot
    assert "audit q.netp:40" in lines['"node-c-web-1" -> "node-c-db-1"']


def test_svg_parses_and_has_one_element_per_node_and_edge(g: G.Graph) -> None:
    root = ET.fromstring(G.render_svg(g))
    assert root.tag == f"{SVG_NS}svg"
    nodes = {el.get("id"): el for el in root.iter(f"{SVG_NS}g") if "node" in (el.get("class") or "").split()}
    edges = {el.get("id"): el for el in root.iter(f"{SVG_NS}g") if "edge" in (el.get("class") or "").split()}
    assert set(nodes) == EXPECTED_NODES
    assert set(edges) == set(EXPECTED_EDGES)
    for eid, (a, d, ab, db) in EXPECTED_EDGES.items():
        el = edges[eid]
        assert (int(el.get("data-allowed")), int(el.get("data-denied")),
                int(el.get("data-allowed-bytes")), int(el.get("data-denied-bytes"))) == (a, d, ab, db)
        path = el.find(f"{SVG_NS}path")
        title = el.find(f"{SVG_NS}title")
        assert path is not None and title is not None
        classes = el.get("class").split()
        if d:
            assert "denied" in classes and path.get("stroke-dasharray") and path.get("stroke") == G.DENY_COLOR
        else:
            assert "denied" not in classes and not path.get("stroke-dasharray")
    assert "q.netp:17" in edges["edge-world--c-web-1"].find(f"{SVG_NS}title").text
    assert nodes["node-c-web-1"].get("data-name") == "web-1"
    for el in nodes.values():   # inside the canvas
        shape = el.find(f"{SVG_NS}rect") if el.find(f"{SVG_NS}rect") is not None else el.find(f"{SVG_NS}ellipse")
        x = float(shape.get("x", shape.get("cx", 0)))
        assert 0 <= x <= float(root.get("width"))


def test_text_from_flows_is_escaped() -> None:
    f = flow("web-1", "ingress", "deny", "client-1", 1, "web-1", 2,
             rule={"id": 99, "location": "x.netp:1", "text": "deny </title><script>alert(1)</script>", "policy": "p"})
    page = G.render_html(G.build_graph([f]))
    assert "<script>alert(1)" not in page
    assert "</script>" not in page.split('id="netc-graph-data">', 1)[1].split("</script>", 1)[0]
    ET.fromstring(G.render_svg(G.build_graph([f])))   # still well-formed


def test_page_is_self_contained(g: G.Graph) -> None:
    page = G.render_html(g)
    assert not re.search(r"<(script|img|link|iframe|object|embed)\b[^>]*\s(src|href)=", page)
    for fetch in ("http://", "https://", "@import", "url(h", "url(//"):
        assert fetch not in page.replace('xmlns="http://www.w3.org/2000/svg"', ""), fetch


def test_the_command_reads_stdin_and_picks_the_format(tmp_path: Path) -> None:
    lines = "\n".join(json.dumps(f) for f in known_flows()) + "\nnot json\n"
    r = CliRunner().invoke(graph_command, ["--input", "-", "--format", "dot"], input=lines)
    assert r.exit_code == 0, r.output
    assert "digraph netc" in r.output and "<stdin>:21: not JSON" in r.output
    out = tmp_path / "map.svg"
    r = CliRunner().invoke(graph_command, ["--input", str(tmp_path / "none.jsonl"), "-o", str(out)])
    assert r.exit_code == 1 and "No such file" in r.output
    (tmp_path / "f.jsonl").write_text(lines)
    r = CliRunner().invoke(graph_command, ["--input", str(tmp_path / "f.jsonl"), "-o", str(out)])
    assert r.exit_code == 0 and out.read_text().startswith("<svg")
    (tmp_path / "empty.jsonl").write_text("# nothing\n")
    r = CliRunner().invoke(graph_command, ["--input", str(tmp_path / "empty.jsonl")])
    assert r.exit_code == 1 and "no flows to draw" in r.output and "Traceback" not in r.output


def test_the_example_flows_with_the_lab_topology() -> None:
    flows = G.read_flows(io.StringIO((ROOT / "examples" / "flows.jsonl").read_text()), "examples/flows.jsonl")
    assert not flows.problems
    g = G.build_graph(flows, G.load_inventory(str(ROOT / "examples" / "lab.yaml")))
    assert {n.name for n in g.nodes.values()} == {"web-1", "api-1", "db-1", "client-1", "world", "host"}
    assert any(e.denied for e in g.edges.values()) and any(not e.denied for e in g.edges.values())


# ---------------------------------------------------------------------- in a browser
class DomIndex(html.parser.HTMLParser):
    """Elements by id, and every element's attributes with its tag, from Chromium's --dump-dom."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict[str, str]]] = {}
        self.all: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.all.append((tag, a))
        if "id" in a:
            self.by_id[a["id"]] = (tag, a)


def test_page_renders_in_headless_chromium(g: G.Graph, tmp_path: Path,
                                           chromium: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    page = tmp_path / "map.html"
    page.write_text(G.render_html(g), encoding="utf-8")
    p = chromium("--dump-dom", "--virtual-time-budget=2000", page.as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    dom = DomIndex()
    dom.feed(p.stdout)
    body = [a for t, a in dom.all if t == "body"]
    assert body and body[0].get("data-ready") == "true", "the page's script did not run to the end"
    classes = {i: set(a.get("class", "").split()) for i, (_, a) in dom.by_id.items()}
    nodes = {i for i, c in classes.items() if "node" in c and dom.by_id[i][0] == "g"}
    edges = {i for i, c in classes.items() if "edge" in c and dom.by_id[i][0] == "g"}
    assert nodes == EXPECTED_NODES
    assert edges == set(EXPECTED_EDGES)
    for eid, (allowed, denied, _, _) in EXPECTED_EDGES.items():
        attrs = dom.by_id[eid][1]
        assert (int(attrs["data-allowed"]), int(attrs["data-denied"])) == (allowed, denied)
        assert ("denied" in classes[eid]) == bool(denied), eid
    # the side panel is built by the script: one item per edge, denied ones marked
    items = [a for t, a in dom.all if t == "li" and "edge-item" in a.get("class", "").split()]
    assert sorted(a["data-edge"] for a in items) == sorted(EXPECTED_EDGES)
    for a in items:
        assert ("denied" in a["class"].split()) == bool(EXPECTED_EDGES[a["data-edge"]][1])
    rules = [a for t, a in dom.all if t == "li" and "rule" in a.get("class", "").split()]
    assert {a.get("data-location") for a in rules} >= {"q.netp:15", "q.netp:17", "q.netp:40"}

    shot = tmp_path / "map.png"
    p = chromium(f"--screenshot={shot}", "--window-size=1200,800", page.as_uri())
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_cli_entry_point_writes_html(tmp_path: Path) -> None:
    out = tmp_path / "m.html"
    p = subprocess.run([sys.executable, "-m", "netc", "graph", "--input", str(ROOT / "examples" / "flows.jsonl"),
                        "--output", str(out), "--inventory", str(ROOT / "examples" / "lab.yaml")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stderr and out.read_text().startswith("<!DOCTYPE html>")
