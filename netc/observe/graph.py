"""A service map from observed flows: who talks to whom, what was allowed, what was denied, and why.

Input is what `netc monitor --json` prints, one JSON object a line. The output is a graph whose
nodes are containers (grouped into columns by their `app` label, or their first label), `world`
(addresses that are no container) and `host` (the node's own addresses), and whose edges carry
allowed and denied packet counts and bytes with the rules that decided them. Three renderings:

    render_dot(graph)   Graphviz text (no Graphviz needed to produce it)
    render_svg(graph)   a standalone SVG laid out here, without Graphviz
    render_html(graph)  a self-contained page: that SVG inline, a side panel of edges and rules,
                        a tooltip; no network fetches (no external scripts, styles or fonts)

Counting. A packet between two containers can be reported twice, at the sender's host-side veth
(its egress) and at the receiver's (its ingress). An edge counts it once: denied packets are the
sum of both sides (a packet denied at the sender never reaches the receiver), allowed packets are
max(allowed at egress - denied at ingress, allowed at ingress). Replies are folded onto the edge of
their connection: a TCP/UDP packet from a port below 32768 to a port in Linux's ephemeral range
(32768-60999) counts for the reverse edge.
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from netc.errors import NetcError

EPHEMERAL = range(32768, 61000)
OUTSIDE = "outside"


class GraphError(NetcError):
    pass


# ---------------------------------------------------------------------- reading flows
@dataclass
class FlowFile:
    flows: list[dict[str, Any]]
    problems: list[str]          # "flows.jsonl:7: not JSON (...)": lines that were skipped
    name: str


def read_flows(stream: IO[str], name: str = "-") -> FlowFile:
    flows: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{name}:{lineno}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{name}:{lineno}: not a JSON object")
            continue
        missing = [k for k in ("src", "dst", "verdict") if k not in obj]
        if missing:
            problems.append(f"{name}:{lineno}: not a flow: no {', '.join(missing)}")
            continue
        if obj["verdict"] not in ("allow", "deny"):
            problems.append(f"{name}:{lineno}: verdict {obj['verdict']!r} is neither allow nor deny")
            continue
        obj["_line"] = lineno
        flows.append(obj)
    return FlowFile(flows, problems, name)


# ---------------------------------------------------------------------- the graph
@dataclass
class Node:
    id: str
    name: str
    kind: str                    # container | world | host
    group: str
    labels: dict[str, str] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    x: float = 0.0
    y: float = 0.0
    col: int = 0


@dataclass
class RuleUse:
    kind: str                    # rule | default | audit
    id: int | None
    location: str
    text: str
    policy: str
    verdict: str
    at: str                      # "web-1 ingress": where it decided
    packets: int = 0

    def describe(self) -> str:
        what = f"{self.location} `{self.text}`" if self.kind != "default" else f"default: {self.text}"
        return f"{'audit' if self.kind == 'audit' else self.verdict} {what} ({self.at})"


@dataclass
class Edge:
    id: str
    src: str                     # node ids
    dst: str
    allowed: int = 0
    denied: int = 0
    allowed_bytes: int = 0
    denied_bytes: int = 0
    ports: dict[str, int] = field(default_factory=dict)      # "tcp/443" -> packets
    rules: dict[tuple[Any, ...], RuleUse] = field(default_factory=dict)
    # (reply, side, port) -> [allow packets, allow bytes, deny packets, deny bytes]
    tally: dict[tuple[bool, str, str], list[int]] = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        return "denied" if self.denied and not self.allowed else "mixed" if self.denied else "allowed"

    def finish(self) -> None:
        """Count each packet once although both ends may report it (see the module's docstring)."""
        self.allowed = self.denied = self.allowed_bytes = self.denied_bytes = 0
        self.ports = {}
        zero = [0, 0, 0, 0]
        for reply, port in sorted({(r, p) for r, _, p in self.tally}):
            eg = self.tally.get((reply, "egress", port), zero)
            ing = self.tally.get((reply, "ingress", port), zero)
            allowed, denied = max(eg[0] - ing[2], ing[0]), eg[2] + ing[2]
            self.allowed += allowed
            self.allowed_bytes += max(eg[1] - ing[3], ing[1])
            self.denied += denied
            self.denied_bytes += eg[3] + ing[3]
            self.ports[port] = self.ports.get(port, 0) + allowed + denied


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: dict[tuple[str, str], Edge]
    columns: list[tuple[str, list[str]]] = field(default_factory=list)   # (group, node ids), left to right
    flows: int = 0
    first: str | None = None
    last: str | None = None
    source: str = ""
    problems: list[str] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)  # group, x, y, w, h


def _slug(text: str) -> str:
    """An id fragment: letters, digits, `-` and `_` kept, anything else as _XX."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else f"_{ord(ch):02x}" for ch in text)


def group_of(name: str, labels: dict[str, str]) -> str:
    if "app" in labels:
        return f"app={labels['app']}"
    if labels:
        k = next(iter(labels))
        return f"{k}={labels[k]}"
    stem = re.sub(r"-\d+$", "", name)
    return stem or name


def _is_reply(flow: dict[str, Any]) -> bool:
    if flow.get("protocol") not in ("tcp", "udp", "sctp"):
        return False
    sport, dport = flow.get("sport"), flow.get("dport")
    return isinstance(sport, int) and isinstance(dport, int) and sport < EPHEMERAL.start and dport in EPHEMERAL


def build_graph(flowfile: FlowFile | Iterable[dict[str, Any]], inventory: Any = None) -> Graph:
    """Aggregate flows into nodes and edges. `inventory` (netc.runtime.inventory.Inventory) gives
    containers their labels and tells the node's addresses (`host`) from the world."""
    if isinstance(flowfile, FlowFile):
        flows, problems, source = flowfile.flows, list(flowfile.problems), flowfile.name
    else:
        flows, problems, source = list(flowfile), [], ""
    g = Graph({}, {}, problems=problems, source=source)

    def node_for(addr: str, name: str | None) -> Node:
        c = None
        if inventory is not None:
            c = inventory.by_name(name) if name else inventory.by_address(addr)
        if c is not None or name:
            cname = c.name if c is not None else str(name)
            labels = dict(c.labels) if c is not None else {}
            nid = "node-c-" + _slug(cname)
            n = g.nodes.get(nid)
            if n is None:
                n = g.nodes[nid] = Node(nid, cname, "container", group_of(cname, labels), labels)
        elif inventory is not None and inventory.is_host(addr):
            n = g.nodes.get("node-host") or g.nodes.setdefault("node-host", Node("node-host", "host", "host", OUTSIDE))
        else:
            n = g.nodes.get("node-world") or g.nodes.setdefault("node-world", Node("node-world", "world", "world", OUTSIDE))
        if addr:
            n.addresses.add(str(addr))
        return n

    for f in flows:
        g.flows += 1
        t = f.get("time")
        if isinstance(t, str):
            g.first = t if g.first is None or t < g.first else g.first
            g.last = t if g.last is None or t > g.last else g.last
        direction = f.get("direction")
        src_name, dst_name = f.get("src_name"), f.get("dst_name")
        # the observed container is the sender on egress, the receiver on ingress
        if direction == "egress" and not src_name:
            src_name = f.get("container")
        if direction == "ingress" and not dst_name:
            dst_name = f.get("container")
        a = node_for(str(f.get("src", "")), src_name)
        b = node_for(str(f.get("dst", "")), dst_name)
        reply = _is_reply(f)
        src, dst = (b, a) if reply else (a, b)
        e = g.edges.get((src.id, dst.id))
        if e is None:
            e = g.edges[(src.id, dst.id)] = Edge(f"edge-{src.id[5:]}--{dst.id[5:]}", src.id, dst.id)
        nbytes = int(f.get("bytes") or 0)
        side = direction if direction in ("egress", "ingress") else "egress"
        proto = str(f.get("protocol") or "ip")
        port = f.get("sport") if reply else f.get("dport")
        pkey = f"{proto}/{port}" if proto in ("tcp", "udp", "sctp") and port is not None else proto
        t4 = e.tally.setdefault((reply, side, pkey), [0, 0, 0, 0])
        if f["verdict"] == "allow":
            t4[0] += 1
            t4[1] += nbytes
        else:
            t4[2] += 1
            t4[3] += nbytes
        at = f"{f.get('container', '?')} {direction or '?'}"
        rule = f.get("rule")
        if isinstance(rule, dict):
            use = RuleUse("rule", rule.get("id"), str(rule.get("location", "")), str(rule.get("text", "")),
                          str(rule.get("policy", "")), f["verdict"], at)
        else:
            use = RuleUse("default", None, "(default)", str(f.get("default") or "no rule matched"), "",
                          f["verdict"], at)
        for u in (use, _audit(f, at)):
            if u is None:
                continue
            key = (u.kind, u.location, u.text, u.verdict, u.at)
            e.rules.setdefault(key, u).packets += 1

    # edges whose two ends got the same id (a container's own traffic through its veth) stay
    for e in g.edges.values():
        e.finish()
    layout(g)
    return g


def _rule_order(u: RuleUse) -> tuple[Any, ...]:
    """Denials first, then rules before defaults, then the most used."""
    return (u.verdict != "deny", u.kind == "default", -u.packets, u.location, u.at)


def _audit(f: dict[str, Any], at: str) -> RuleUse | None:
    a = f.get("audit_rule")
    if not isinstance(a, dict):
        return None
    return RuleUse("audit", a.get("id"), str(a.get("location", "")), str(a.get("text", "")),
                   str(a.get("policy", "")), f["verdict"], at)


# ---------------------------------------------------------------------- layout
NODE_W, NODE_H = 136.0, 44.0
COL_W, ROW_H = 236.0, 62.0
GROUP_HEAD, GROUP_GAP = 30.0, 26.0
PAD_X, PAD_TOP, PAD_BOTTOM = 40.0, 78.0, 46.0
COL_PAD = 16.0


def _ranks(groups: list[str], links: dict[tuple[str, str], int]) -> dict[str, int]:
    """Longest-path layering of the group graph (after dropping the edges that close a cycle), so
    traffic flows left to right wherever it can."""
    score = dict.fromkeys(groups, 0)
    for (a, b), n in links.items():
        score[a] += n
        score[b] -= n
    order = sorted(groups, key=lambda k: (-score[k], k))
    succ: dict[str, list[str]] = {k: [] for k in groups}
    for (a, b) in sorted(links, key=lambda ab: -links[ab]):
        succ[a].append(b)
    kept: dict[str, list[str]] = {k: [] for k in groups}
    state: dict[str, int] = {}           # 1 on the DFS stack, 2 done

    def dfs(v: str) -> None:
        state[v] = 1
        for w in succ[v]:
            if state.get(w) == 1:
                continue                 # a back edge: it would close a cycle
            kept[v].append(w)
            if w not in state:
                dfs(w)
        state[v] = 2

    for v in order:
        if v not in state:
            dfs(v)
    rank = dict.fromkeys(groups, 0)
    indeg = dict.fromkeys(groups, 0)
    for v in groups:
        for w in kept[v]:
            indeg[w] += 1
    ready = [v for v in order if indeg[v] == 0]
    while ready:
        v = ready.pop(0)
        for w in kept[v]:
            rank[w] = max(rank[w], rank[v] + 1)
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return rank


def layout(g: Graph) -> None:
    """Groups in columns by longest-path layering (world and host in a column of their own on the
    left), nodes stacked in each group's box; every column centred vertically."""
    groups: dict[str, list[str]] = {}
    for n in sorted(g.nodes.values(), key=lambda n: (n.kind != "container", n.kind, n.name)):
        groups.setdefault(n.group, []).append(n.id)
    inner = [k for k in groups if k != OUTSIDE]
    links: dict[tuple[str, str], int] = {}
    for e in g.edges.values():
        gs, gd = g.nodes[e.src].group, g.nodes[e.dst].group
        if gs != gd and OUTSIDE not in (gs, gd):
            links[(gs, gd)] = links.get((gs, gd), 0) + e.allowed + e.denied + 1
    rank = _ranks(sorted(inner), links)
    shift = 1 if OUTSIDE in groups else 0
    ncols = (max(rank.values(), default=-1) + 1) + shift
    cols: list[list[tuple[str, list[str]]]] = [[] for _ in range(ncols)]
    if shift:
        cols[0].append((OUTSIDE, groups[OUTSIDE]))
    for k in sorted(inner, key=lambda k: (rank[k], k)):
        cols[rank[k] + shift].append((k, groups[k]))
    g.columns = [grp for col in cols for grp in col]

    def col_height(col: list[tuple[str, list[str]]]) -> float:
        return sum(GROUP_HEAD + len(ids) * ROW_H for _, ids in col) + GROUP_GAP * (len(col) - 1)

    col_of = {nid: i for i, col in enumerate(cols) for _, ids in col for nid in ids}
    above = below = 0.0        # room for the arcs of edges that skip columns
    for e in g.edges.values():
        span = col_of[e.dst] - col_of[e.src]
        if span > 1:
            above = max(above, 0.75 * (_arc(span) + NODE_H / 2) - ROW_H / 2 + 24)
        elif span < -1:
            below = max(below, 0.75 * (_arc(-span) + NODE_H / 2) - ROW_H / 2 + 24)
    tallest = max((col_height(c) for c in cols), default=ROW_H)
    top = PAD_TOP + above
    g.height = top + tallest + below + PAD_BOTTOM
    g.width = PAD_X * 2 + ncols * COL_W - (COL_W - NODE_W - 2 * COL_PAD)
    g.boxes = []
    for i, col in enumerate(cols):
        x = PAD_X + i * COL_W
        y = top + (tallest - col_height(col)) / 2
        for group, ids in col:
            h = GROUP_HEAD + len(ids) * ROW_H
            g.boxes.append((group, x, y, NODE_W + 2 * COL_PAD, h))
            for j, nid in enumerate(ids):
                n = g.nodes[nid]
                n.x = x + COL_PAD + NODE_W / 2
                n.y = y + GROUP_HEAD + j * ROW_H + ROW_H / 2 - 4
                n.col = i
            y += h + GROUP_GAP


def _arc(span: int) -> float:
    """How far an edge that skips columns bends away from the row (control-point offset)."""
    return 40.0 + 26.0 * span


# ---------------------------------------------------------------------- text helpers
def human_bytes(n: int) -> str:
    step = 1000.0
    v = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if v < step or unit == "GB":
            return f"{int(v)} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= step
    return f"{n} B"


def edge_label(e: Edge) -> str:
    parts = []
    if e.allowed:
        parts.append(f"✓{e.allowed}")
    if e.denied:
        parts.append(f"✗{e.denied}")
    return " ".join(parts) + f" · {human_bytes(e.allowed_bytes + e.denied_bytes)}"


def node_title(g: Graph, n: Node) -> str:
    lines = [f"{n.name} ({n.kind})"]
    if n.labels:
        lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in n.labels.items()))
    if n.addresses:
        shown = sorted(n.addresses, key=_addr_key)
        lines.append("addresses: " + ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else ""))
    return "\n".join(lines)


def _addr_key(a: str) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(a)
        return (ip.version, int(ip), a)
    except ValueError:
        return (9, 0, a)


def edge_title(g: Graph, e: Edge) -> str:
    s, d = g.nodes[e.src].name, g.nodes[e.dst].name
    lines = [f"{s} → {d}  ({', '.join(f'{p} ×{n}' for p, n in sorted(e.ports.items()))})",
             f"allowed: {e.allowed} packet(s), {human_bytes(e.allowed_bytes)}",
             f"denied:  {e.denied} packet(s), {human_bytes(e.denied_bytes)}"]
    for u in sorted(e.rules.values(), key=_rule_order):
        lines.append(f"  {u.describe()} ×{u.packets}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- DOT
def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(g: Graph) -> str:
    out = ["digraph netc {",
           "  rankdir=LR;",
           '  graph [fontname="Helvetica", label=' + _dq(f"netc service map: {g.flows} flow(s)") + ", labelloc=t];",
           '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5", fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    for i, (group, ids) in enumerate(g.columns):
        indent = "    "
        if group != OUTSIDE:
            out.append(f"  subgraph {_dq(f'cluster_{i}')} {{")
            out.append(f"    label={_dq(group)}; style=rounded; color=\"#b8c4d6\";")
        else:
            indent = "  "
        for nid in ids:
            n = g.nodes[nid]
            attrs = [f"label={_dq(n.name)}", f"tooltip={_dq(node_title(g, n))}"]
            if n.kind == "world":
                attrs += ["shape=ellipse", 'fillcolor="#f3f3f3"', 'color="#888888"']
            elif n.kind == "host":
                attrs += ['fillcolor="#fff4e0"', 'color="#b07d2b"']
            out.append(f"{indent}{_dq(nid)} [{', '.join(attrs)}];")
        if group != OUTSIDE:
            out.append("  }")
    for e in g.edges.values():
        attrs = [f"id={_dq(e.id)}", f"label={_dq(edge_label(e))}", f"tooltip={_dq(edge_title(g, e))}"]
        if e.denied:
            attrs += ['color="#d62728"', "style=dashed", 'fontcolor="#d62728"']
        else:
            attrs += ['color="#2e7d32"']
        out.append(f"  {_dq(e.src)} -> {_dq(e.dst)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- SVG
ALLOW_COLOR, DENY_COLOR = "#2e7d32", "#d62728"

SVG_STYLE = """
.netc-map text { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; }
.netc-map .group rect { fill: #f6f8fb; stroke: #d3dbe7; }
.netc-map .group text { font-size: 13px; fill: #4b5b73; font-weight: bold; }
.netc-map .node rect, .netc-map .node ellipse { stroke-width: 1.5; }
.netc-map .node text { font-size: 13px; fill: #1d2a3a; }
.netc-map .node text.sub { font-size: 10px; fill: #5c6b80; }
.netc-map .edge path { fill: none; stroke-width: 2; }
.netc-map .edge text { font-size: 11px; paint-order: stroke; stroke: #ffffff; stroke-width: 4px; }
.netc-map .edge:hover path, .netc-map .edge.highlight path { stroke-width: 4; }
.netc-map .node:hover rect, .netc-map .node:hover ellipse { stroke-width: 3; }
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _edge_geometry(g: Graph, e: Edge) -> tuple[str, float, float]:
    """The path of an edge and where its label goes."""
    s, d = g.nodes[e.src], g.nodes[e.dst]
    if s.id == d.id:   # a loop on the node's right side
        x, y = s.x + NODE_W / 2, s.y
        return (f"M {x:.1f} {y - 8:.1f} C {x + 60:.1f} {y - 40:.1f} {x + 60:.1f} {y + 40:.1f} {x:.1f} {y + 8:.1f}",
                x + 48, y + 4)
    reverse = (d.id, s.id) in g.edges
    bend = 16.0 if reverse else 0.0    # two directions between one pair: bend both apart
    if s.col == d.col:                 # same column: arc on the right of the column
        x0, x1 = s.x + NODE_W / 2, d.x + NODE_W / 2
        y0, y1 = s.y, d.y
        out = 50 + abs(y1 - y0) * 0.25 + bend
        p = (f"M {x0:.1f} {y0:.1f} C {x0 + out:.1f} {y0:.1f} {x1 + out:.1f} {y1:.1f} {x1 + 6:.1f} {y1:.1f}")
        return p, x0 + out * 0.75, (y0 + y1) / 2
    sign = 1 if d.col > s.col else -1
    span = abs(d.col - s.col)
    x0, y0 = s.x + sign * NODE_W / 2, s.y
    x1, y1 = d.x - sign * (NODE_W / 2 + 6), d.y
    if span > 1:
        # skip the columns between: forward edges arc over the row, backward edges under it
        # leaving from the side (clear of the nodes above or below in its own column), arriving on top
        x0, y0 = s.x + sign * NODE_W / 2, s.y
        x1, y1 = d.x, d.y - sign * (NODE_H / 2 + 6)
        peak = (min(s.y, d.y) - NODE_H / 2 - _arc(span)) if sign > 0 else \
            (max(s.y, d.y) + NODE_H / 2 + _arc(span))
        c1 = (x0 + sign * 60, peak - sign * bend)
        c2 = (x1 - (x1 - x0) * 0.12, peak - sign * bend)
    else:
        dx = (x1 - x0) * 0.45
        c1 = (x0 + dx, y0 - bend * sign)
        c2 = (x1 - dx, y1 - bend * sign)
    p = f"M {x0:.1f} {y0:.1f} C {c1[0]:.1f} {c1[1]:.1f} {c2[0]:.1f} {c2[1]:.1f} {x1:.1f} {y1:.1f}"
    # the cubic's midpoint (t = 0.5)
    mx = 0.125 * x0 + 0.375 * c1[0] + 0.375 * c2[0] + 0.125 * x1
    my = 0.125 * y0 + 0.375 * c1[1] + 0.375 * c2[1] + 0.125 * y1
    return p, mx, my - 6


def render_svg(g: Graph, *, standalone: bool = True) -> str:
    w, h = max(g.width, 420.0), max(g.height, 200.0)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [f'<svg{ns} class="netc-map" id="netc-map" width="{w:.0f}" height="{h:.0f}" '
           f'viewBox="0 0 {w:.0f} {h:.0f}" role="img" aria-label="netc service map">',
           f"<style>{SVG_STYLE}</style>",
           "<defs>"
           f'<marker id="arrow-allowed" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{ALLOW_COLOR}"/></marker>'
           f'<marker id="arrow-denied" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{DENY_COLOR}"/></marker>'
           "</defs>",
           f'<rect x="0" y="0" width="{w:.0f}" height="{h:.0f}" fill="#ffffff"/>']
    out.append('<g class="groups">')
    for group, x, y, bw, bh in g.boxes:
        out.append(f'<g class="group" data-group="{_esc(group)}">'
                   f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" rx="10"/>'
                   f'<text x="{x + 10:.1f}" y="{y + 19:.1f}">{_esc(group)}</text></g>')
    out.append("</g>")
    # edges under nodes
    out.append('<g class="edges">')
    for e in g.edges.values():
        path, lx, ly = _edge_geometry(g, e)
        denied = e.denied > 0
        color = DENY_COLOR if denied else ALLOW_COLOR
        dash = ' stroke-dasharray="7 5"' if denied else ""
        cls = f"edge {e.status}" + (" denied" if e.status == "mixed" else "")
        out.append(
            f'<g class="{cls}" id="{_esc(e.id)}" data-src="{_esc(g.nodes[e.src].name)}" '
            f'data-dst="{_esc(g.nodes[e.dst].name)}" data-allowed="{e.allowed}" data-denied="{e.denied}" '
            f'data-allowed-bytes="{e.allowed_bytes}" data-denied-bytes="{e.denied_bytes}">'
            f"<title>{_esc(edge_title(g, e))}</title>"
            f'<path d="{path}" stroke="{color}"{dash} marker-end="url(#arrow-{"denied" if denied else "allowed"})"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" fill="{color}">{_esc(edge_label(e))}</text>'
            "</g>")
    out.append("</g>")
    out.append('<g class="nodes">')
    for n in g.nodes.values():
        sub = ", ".join(sorted(n.addresses, key=_addr_key)[:1]) if n.kind == "container" else \
            f"{len(n.addresses)} address(es)"
        fill, stroke = {"container": ("#eef3fb", "#4a6fa5"), "host": ("#fff4e0", "#b07d2b"),
                        "world": ("#f3f3f3", "#888888")}[n.kind]
        x0, y0 = n.x - NODE_W / 2, n.y - NODE_H / 2
        if n.kind == "world":
            shape = (f'<ellipse cx="{n.x:.1f}" cy="{n.y:.1f}" rx="{NODE_W / 2:.1f}" ry="{NODE_H / 2:.1f}" '
                     f'fill="{fill}" stroke="{stroke}"/>')
        else:
            shape = (f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{NODE_W:.1f}" height="{NODE_H:.1f}" rx="8" '
                     f'fill="{fill}" stroke="{stroke}"/>')
        out.append(
            f'<g class="node {n.kind}" id="{_esc(n.id)}" data-name="{_esc(n.name)}" data-kind="{n.kind}" '
            f'data-group="{_esc(n.group)}">'
            f"<title>{_esc(node_title(g, n))}</title>{shape}"
            f'<text x="{n.x:.1f}" y="{n.y - 3:.1f}" text-anchor="middle">{_esc(n.name)}</text>'
            f'<text class="sub" x="{n.x:.1f}" y="{n.y + 13:.1f}" text-anchor="middle">{_esc(sub)}</text></g>')
    out.append("</g>")
    allowed = sum(e.allowed for e in g.edges.values())
    denied = sum(e.denied for e in g.edges.values())
    out.append(f'<text x="{PAD_X:.0f}" y="28" font-size="16" font-weight="bold" fill="#1d2a3a">netc service map</text>'
               f'<text x="{PAD_X:.0f}" y="48" font-size="12" fill="#5c6b80">'
               f"{len(g.nodes)} node(s), {len(g.edges)} edge(s); {allowed} allowed, {denied} denied packet(s)"
               f"{_esc(_period(g))}</text>")
    # a legend, bottom right
    lx, ly = w - 230, h - 22
    out.append(f'<g class="legend"><line x1="{lx:.0f}" y1="{ly:.0f}" x2="{lx + 30:.0f}" y2="{ly:.0f}" '
               f'stroke="{ALLOW_COLOR}" stroke-width="2"/><text x="{lx + 36:.0f}" y="{ly + 4:.0f}" font-size="11">'
               f'allowed</text><line x1="{lx + 100:.0f}" y1="{ly:.0f}" x2="{lx + 130:.0f}" y2="{ly:.0f}" '
               f'stroke="{DENY_COLOR}" stroke-width="2" stroke-dasharray="7 5"/>'
               f'<text x="{lx + 136:.0f}" y="{ly + 4:.0f}" font-size="11">denied</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _period(g: Graph) -> str:
    if g.first and g.last:
        return f" from {g.first} to {g.last}" if g.first != g.last else f" at {g.first}"
    return ""


# ---------------------------------------------------------------------- HTML
def graph_data(g: Graph) -> dict[str, Any]:
    """What the page's script reads: plain JSON, the same numbers as the SVG."""
    return {
        "source": g.source, "flows": g.flows, "first": g.first, "last": g.last, "problems": g.problems[:50],
        "nodes": [{"id": n.id, "name": n.name, "kind": n.kind, "group": n.group, "labels": n.labels,
                   "addresses": sorted(n.addresses, key=_addr_key)} for n in g.nodes.values()],
        "edges": [{"id": e.id, "src": g.nodes[e.src].name, "dst": g.nodes[e.dst].name, "status": e.status,
                   "allowed": e.allowed, "denied": e.denied, "allowed_bytes": e.allowed_bytes,
                   "denied_bytes": e.denied_bytes, "ports": dict(sorted(e.ports.items())),
                   "rules": [{"kind": u.kind, "id": u.id, "location": u.location, "text": u.text,
                              "policy": u.policy, "verdict": u.verdict, "at": u.at, "packets": u.packets}
                             for u in sorted(e.rules.values(), key=_rule_order)]}
                  for e in sorted(g.edges.values(), key=lambda e: (-e.denied, -e.allowed, e.id))],
    }


PAGE_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1d2a3a; background: #ffffff;
       display: flex; height: 100vh; overflow: hidden; }
#map { flex: 1; overflow: auto; padding: 0; }
#map svg { max-width: 100%; height: auto; }
#panel { width: 360px; border-left: 1px solid #d3dbe7; overflow: auto; padding: 12px 14px; background: #fbfcfe; }
#panel h2 { font-size: 15px; margin: 4px 0 8px; }
#panel .summary { font-size: 12px; color: #5c6b80; margin-bottom: 10px; }
#panel label { font-size: 12px; }
#edges { list-style: none; padding: 0; margin: 8px 0; }
.edge-item { border: 1px solid #d3dbe7; border-left: 5px solid #2e7d32; border-radius: 6px; padding: 6px 8px;
             margin-bottom: 8px; background: #ffffff; cursor: pointer; font-size: 12px; }
.edge-item.denied { border-left: 5px dashed #d62728; }
.edge-item.highlight { background: #eef3fb; }
.edge-item .pair { font-weight: bold; font-size: 13px; }
.edge-item .counts { margin: 2px 0 4px; }
.edge-item .deny { color: #d62728; } .edge-item .allow { color: #2e7d32; }
.edge-item ul { margin: 2px 0 0 0; padding-left: 16px; }
.edge-item code { font-size: 11px; background: #f1f3f7; padding: 0 3px; border-radius: 3px; }
body.only-denied .edge.allowed, body.only-denied .edge-item.allowed { display: none; }
#tip { position: fixed; pointer-events: none; background: #1d2a3a; color: #ffffff; font-size: 12px;
       padding: 6px 8px; border-radius: 4px; white-space: pre; display: none; max-width: 560px; z-index: 10; }
"""

PAGE_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("netc-graph-data").textContent);
  var list = document.getElementById("edges");
  var tip = document.getElementById("tip");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function bytes(n) {
    var u = ["B", "kB", "MB", "GB"], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return i ? n.toFixed(1) + " " + u[i] : n + " B";
  }
  function highlight(id, on) {
    var g = document.getElementById(id);
    if (g) g.classList.toggle("highlight", on);
    var li = list.querySelector('[data-edge="' + id + '"]');
    if (li) li.classList.toggle("highlight", on);
  }
  data.edges.forEach(function (e) {
    var li = el("li", "edge-item " + e.status + (e.denied ? " denied" : ""));
    li.dataset.edge = e.id;
    li.dataset.allowed = e.allowed;
    li.dataset.denied = e.denied;
    li.appendChild(el("div", "pair", e.src + " \u2192 " + e.dst));
    var c = el("div", "counts");
    c.appendChild(el("span", "allow", "\u2713 " + e.allowed + " allowed (" + bytes(e.allowed_bytes) + ")"));
    c.appendChild(document.createTextNode("  "));
    c.appendChild(el("span", "deny", "\u2717 " + e.denied + " denied (" + bytes(e.denied_bytes) + ")"));
    li.appendChild(c);
    li.appendChild(el("div", "ports", Object.keys(e.ports).map(function (p) {
      return p + " \u00d7" + e.ports[p]; }).join(", ")));
    var ul = el("ul");
    e.rules.forEach(function (r) {
      var item = el("li", "rule " + r.kind + " " + r.verdict);
      item.dataset.location = r.location;
      item.appendChild(el("span", r.verdict === "deny" ? "deny" : "allow",
        r.kind === "audit" ? "audit " : r.verdict + " "));
      if (r.kind === "default") {
        item.appendChild(document.createTextNode("default: " + r.text));
      } else {
        item.appendChild(el("code", null, r.location));
        item.appendChild(document.createTextNode(" " + r.text));
      }
      item.appendChild(document.createTextNode(" (" + r.at + ") \u00d7" + r.packets));
      ul.appendChild(item);
    });
    li.appendChild(ul);
    li.addEventListener("mouseenter", function () { highlight(e.id, true); });
    li.addEventListener("mouseleave", function () { highlight(e.id, false); });
    li.addEventListener("click", function () {
      var g = document.getElementById(e.id);
      if (g && g.scrollIntoView) g.scrollIntoView({block: "center", inline: "center"});
    });
    list.appendChild(li);
  });
  document.querySelectorAll(".netc-map .edge, .netc-map .node").forEach(function (g) {
    var title = g.querySelector("title");
    var text = title ? title.textContent : "";
    g.addEventListener("mousemove", function (ev) {
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 420) + "px";
      tip.style.top = (ev.clientY + 14) + "px";
    });
    g.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    if (g.classList.contains("edge")) {
      g.addEventListener("mouseenter", function () { highlight(g.id, true); });
      g.addEventListener("mouseleave", function () { highlight(g.id, false); });
    }
  });
  document.getElementById("only-denied").addEventListener("change", function (ev) {
    document.body.classList.toggle("only-denied", ev.target.checked);
  });
  document.body.dataset.ready = "true";
})();
"""


def render_html(g: Graph, title: str = "netc service map") -> str:
    data = json.dumps(graph_data(g), sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    allowed = sum(e.allowed for e in g.edges.values())
    denied = sum(e.denied for e in g.edges.values())
    problems = "".join(f"<li>{_esc(p)}</li>" for p in g.problems[:20])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{_esc(title)}</title>
<style>{PAGE_STYLE}</style>
</head>
<body>
<div id="map">
{render_svg(g, standalone=False)}</div>
<aside id="panel">
<h2>Edges and deciding rules</h2>
<div class="summary">{g.flows} flow(s){_esc(_period(g))} from {_esc(g.source or "input")}:
{len(g.nodes)} node(s), {len(g.edges)} edge(s), {allowed} allowed and {denied} denied packet(s).
Hover an edge for its rules; denied edges are red and dashed.</div>
<label><input type="checkbox" id="only-denied"> only edges with denied traffic</label>
<ul id="edges"></ul>
{f'<details><summary>{len(g.problems)} line(s) skipped</summary><ul>{problems}</ul></details>' if g.problems else ''}
</aside>
<div id="tip"></div>
<script type="application/json" id="netc-graph-data">{data}</script>
<script>{PAGE_SCRIPT}</script>
</body>
</html>
"""


def render(g: Graph, fmt: str) -> str:
    if fmt == "dot":
        return render_dot(g)
    if fmt == "svg":
        return render_svg(g)
    if fmt == "html":
        return render_html(g)
    raise GraphError(f"unknown format {fmt!r}: html, dot or svg")


def load_inventory(path: str) -> Any:
    """An inventory file, or a `netc lab` topology (its containers with the lab's default addresses
    and the node's addresses as `host`), so `--inventory examples/lab.yaml` works too."""
    from netc.runtime import lab
    from netc.runtime.inventory import Container, Inventory

    try:
        topo = lab.load_topology(path)
    except NetcError:
        try:
            return Inventory.load(path)
        except NetcError as exc:
            raise GraphError(f"--inventory {path}: {exc}") from None
    containers = []
    for i, spec in enumerate(topo.containers):
        addrs = spec.addresses if spec.addresses is not None else lab._default_addresses(i)
        containers.append(Container(spec.name, tuple(addrs), dict(spec.labels)))
    return Inventory(containers, tuple(lab.HOST_ADDRESSES))
