"""`netc fmt`: idempotent, meaning-preserving, comment-preserving."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netc.dsl import ast as A
from netc.dsl.fmt import check_formatted, format_module, format_source
from netc.dsl.parser import parse
from netc.source import SourceFile, Span

ROOT = Path(__file__).resolve().parents[2]
SPAN_FIELDS = {"span", "from_span", "to_span"}


# ---------------------------------------------------------------------- helpers
def strip_spans(node: Any) -> Any:
    """A syntax tree as nested tuples with every position left out."""
    if isinstance(node, Span):
        return None
    if isinstance(node, A.Ident):
        return ("Ident", node.text)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,) + tuple(
            (f.name, strip_spans(getattr(node, f.name))) for f in dataclasses.fields(node) if f.name not in SPAN_FIELDS)
    if isinstance(node, tuple | list):
        return tuple(strip_spans(x) for x in node)
    if isinstance(node, enum.Enum):
        return node.value
    return node


def parse_text(text: str) -> A.Module:
    module, diags = parse(SourceFile.from_text("t.netp", text))
    assert module is not None, f"does not parse: {diags}\n{text}"
    return module


def fmt(text: str) -> str:
    out, diags = format_source(SourceFile.from_text("t.netp", text))
    assert out is not None, f"fmt failed: {diags}\n{text}"
    return out


def check_properties(text: str) -> str:
    """fmt is idempotent, keeps the tree and keeps every comment exactly once; returns fmt(text)."""
    before = parse_text(text)
    once = fmt(text)
    assert fmt(once) == once, f"not idempotent:\n{once}\n---\n{fmt(once)}"
    after = parse_text(once)
    assert strip_spans(after.decls) == strip_spans(before.decls)
    assert sorted(c[2] for c in after.comments) == sorted(c[2].rstrip() for c in before.comments)
    assert once.endswith("\n") and not once.endswith("\n\n") or once == ""
    assert all(line == line.rstrip() for line in once.split("\n")), "trailing whitespace"
    assert check_formatted(SourceFile.from_text("t.netp", once))
    return once


# ---------------------------------------------------------------------- a sample with every construct
RICH = r'''# netc example: every construct, and comments in awkward places
# second header line

import "std/ports.netp"   # well-known ports
import "std/groups.netp";

# ---- sets
let web_ports = { 80,443 , 8000 - 8999 }   # single, range
let corp      = {10.0.0.0/8, 172.16.0.0/12 except 172.16.99.0/24, fd00::/8 except {fd00::1/128, fd00::2/128}}

let blocked   = addresses from "feeds/block\"list\\.txt"
let alias = corp ; let empty = {}
let mixed = {web_ports, 10.1.2.3, 22}
let partners = {   # one item a line
    203.0.113.0/24,     # acme
    198.51.100.0/24 ,   # globex


    # the v6 side
    2001:db8::/32 except {2001:db8:bad::/48,
                          2001:db8:dead::/48}   # not these
    # the end of the set
}

group web = app == "web"
group api = app == "api" and env in {"prod", "staging"} and not has(canary)
group odd = ("app.kubernetes.io/name" != "x" or tier not in {"a", "b"}) and not (a or b)
group nested = (web or api) or (web and (api and odd))
group neg = not not "all" == "x" and "not" in {}
policy web-ingress for web {
    ingress default deny                      # isolation per direction
    allow ingress tcp from corp to port web_ports

    # a comment of its own inside a block
    allow ingress from api, (app == "x" or app == "y"), {10.0.0.0/8, 10.1.0.0/16 except 10.1.1.0/24} priority -5 log
    deny  ingress from 10.9.9.9 log ; egress default allow
    allow egress udp to 10.96.0.10 port 53, {5353, 1000-2000}, dns
    allow ingress icmp type echo-request from any
    audit ingress icmpv6 type 128 code 0 from fd00::/8 except fd00::5
    allow ingress port 80
    allow   egress   sctp
        # inside a statement that spans lines
        to 10.0.0.1   # after a line that does not end the statement
        port 9000 priority 3  # end of the split statement
    # last words of the block
}
policy empty for all {
}
policy lockdown for all priority 100 { deny egress to 169.254.169.254 }  # one-liner
policy sel for (not a and b) or c { # after the brace
}

service api-svc {                             # load balancing
    vip 10.96.0.20 port 80 tcp
    vip fd00::20 port 443
    vip 10.96.0.21 port 53 udp
    backends api port 8080 weight 3, 10.0.0.5 port 80 weight 1,
             (app == "api" and env == "canary") weight 1   # canary
    backends 10.0.0.6
    balance maglev table 65537                # maglev | random | round-robin
    affinity client-ip 300s
}
service bare {}

limit web ingress 1000/s burst 200 per source # token bucket
limit all egress 10/m
limit (app == "db" or app == "cache") ingress 5/s per destination

observe web { events deny, log; sample flows 1/100 }
observe (tier == "edge") {
    events drop
    events allow   # second events statement
}

test "corp reaches web, the \"internet\" does not" {
    container web {app: "web", "app.kubernetes.io/name": "w"} at 10.1.1.10, fd00::10
    container client {} at 10.1.1.1
    container lonely {role: "x"}
    expect allow tcp 10.1.1.1:40000 -> web:443
    expect deny  tcp 8.8.8.8 -> web:443   # the internet
    expect dnat  tcp web -> 10.96.0.20:80 => api:8080
    expect allow tcp [fd00::1]:443 -> [fd00::10]:8443
    expect allow icmp client -> web type 8 code 0
    expect deny udp fd00::1 -> 10.0.0.1:53 => 10.0.0.2
}

# trailing comment at the end of the file
# and another'''


RICH_FORMATTED = r'''# netc example: every construct, and comments in awkward places
# second header line

import "std/ports.netp"  # well-known ports
import "std/groups.netp"

# ---- sets
let web_ports = {80, 443, 8000-8999}  # single, range
let corp = {10.0.0.0/8, 172.16.0.0/12 except 172.16.99.0/24, fd00::/8 except {fd00::1/128, fd00::2/128}}

let blocked = addresses from "feeds/block\"list\\.txt"
let alias = corp
let empty = {}
let mixed = {web_ports, 10.1.2.3, 22}
let partners = {  # one item a line
    203.0.113.0/24,  # acme
    198.51.100.0/24,  # globex

    # the v6 side
    2001:db8::/32 except {2001:db8:bad::/48, 2001:db8:dead::/48}  # not these
    # the end of the set
}

group web = app == "web"
group api = app == "api" and env in {"prod", "staging"} and not has(canary)
group odd = ("app.kubernetes.io/name" != "x" or tier not in {"a", "b"}) and not (a or b)
group nested = (web or api) or web and (api and odd)
group neg = not not "all" == "x" and "not" in {}

policy web-ingress for web {
    ingress default deny  # isolation per direction
    allow ingress tcp from corp to port web_ports

    # a comment of its own inside a block
    allow ingress from api, (app == "x" or app == "y"), {10.0.0.0/8, 10.1.0.0/16 except 10.1.1.0/24} priority -5 log
    deny ingress from 10.9.9.9 log
    egress default allow
    allow egress udp to 10.96.0.10 port 53, {5353, 1000-2000}, dns
    allow ingress icmp type echo-request from any
    audit ingress icmpv6 type 128 code 0 from fd00::/8 except fd00::5
    allow ingress to port 80
    # inside a statement that spans lines
    # after a line that does not end the statement
    allow egress sctp to 10.0.0.1 port 9000 priority 3  # end of the split statement
    # last words of the block
}

policy empty for all {
}

policy lockdown for all priority 100 {
    deny egress to 169.254.169.254
}  # one-liner

policy sel for not a and b or c {  # after the brace
}

service api-svc {  # load balancing
    vip 10.96.0.20 port 80 tcp
    vip fd00::20 port 443
    vip 10.96.0.21 port 53 udp
    backends api port 8080 weight 3, 10.0.0.5 port 80 weight 1, (app == "api" and env == "canary") weight 1  # canary
    backends 10.0.0.6
    balance maglev table 65537  # maglev | random | round-robin
    affinity client-ip 300s
}

service bare {
}

limit web ingress 1000/s burst 200 per source  # token bucket

limit all egress 10/m

limit (app == "db" or app == "cache") ingress 5/s per destination

observe web {
    events deny, log
    sample flows 1/100
}

observe (tier == "edge") {
    events drop
    events allow  # second events statement
}

test "corp reaches web, the \"internet\" does not" {
    container web {app: "web", "app.kubernetes.io/name": "w"} at 10.1.1.10, fd00::10
    container client {} at 10.1.1.1
    container lonely {role: "x"}
    expect allow tcp 10.1.1.1:40000 -> web:443
    expect deny tcp 8.8.8.8 -> web:443  # the internet
    expect dnat tcp web -> 10.96.0.20:80 => api:8080
    expect allow tcp [fd00::1]:443 -> [fd00::10]:8443
    expect allow icmp client -> web type 8 code 0
    expect deny udp fd00::1 -> 10.0.0.1:53 => 10.0.0.2
}

# trailing comment at the end of the file
# and another
'''


def test_rich_sample_layout() -> None:
    assert fmt(RICH) == RICH_FORMATTED


def test_rich_sample_properties() -> None:
    check_properties(RICH)
    assert check_formatted(SourceFile.from_text("t.netp", RICH_FORMATTED))
    assert not check_formatted(SourceFile.from_text("t.netp", RICH))


def test_rich_sample_comments_survive_exactly_once() -> None:
    # No string in RICH holds a `#`, so every `#` starts a comment.
    wanted = Counter(m.group().rstrip() for m in re.finditer(r"#.*", RICH))
    out = fmt(RICH)
    assert Counter(m.group() for m in re.finditer(r"#.*", out)) == wanted
    assert Counter(c[2] for c in parse_text(out).comments) == wanted
    assert len(wanted) == 27 and all(n == 1 for n in wanted.values())


def test_format_module_matches_format_source() -> None:
    src = SourceFile.from_text("t.netp", RICH)
    module, _ = parse(src)
    assert module is not None
    assert format_module(module, src) == RICH_FORMATTED


# ---------------------------------------------------------------------- small layout rules
@pytest.mark.parametrize(("source", "expected"), [
    ("", ""),
    ("\n\n  \n", ""),
    ("# only a comment", "# only a comment\n"),
    ("# a\n\n\n\n# b   \n\n", "# a\n\n# b\n"),
    ("let a = {1}\nlet b = {2}\n\n\n\nlet c = {3}\ngroup g = all\n", "let a = {1}\nlet b = {2}\n\nlet c = {3}\n\ngroup g = all\n"),
    ("import \"a\"\nimport \"b\"\nlet x = {}\n", "import \"a\"\nimport \"b\"\n\nlet x = {}\n"),
    ("limit a ingress 1/s\nlimit b ingress 1/s", "limit a ingress 1/s\n\nlimit b ingress 1/s\n"),
    ("let a = {1}\n# about b\nlet b = {2}", "let a = {1}\n# about b\nlet b = {2}\n"),
    ("let a = {1}\n# about g\ngroup g = all", "let a = {1}\n\n# about g\ngroup g = all\n"),
    ("# header\n\nlet a = {1}", "# header\n\nlet a = {1}\n"),
    ("policy p for all {}", "policy p for all {\n}\n"),
    ("policy p for all {\n\n  allow ingress\n\n\n  allow egress\n\n}", "policy p for all {\n    allow ingress\n\n    allow egress\n}\n"),
    ("policy p for all {\n\n  # c\n\n}", "policy p for all {\n    # c\n}\n"),
    ("policy p for all { ; ; }", "policy p for all {\n}\n"),
    ("policy p for all { allow ingress port 1 ; allow egress to a port 2 ; allow ingress to port 3 }",
     "policy p for all {\n    allow ingress to port 1\n    allow egress to a port 2\n    allow ingress to port 3\n}\n"),
    ("policy p # c\n for all { }", "# c\npolicy p for all {\n}\n"),
    ("let a = {1}; let b = {2} # c", "let a = {1}\nlet b = {2}  # c\n"),
    ("group g = ((a))", "group g = a\n"),
    ("group g = not (a and b) or c and (d or e)", "group g = not (a and b) or c and (d or e)\n"),
    ("group g = (a and b) and c", "group g = (a and b) and c\n"),
    ("group g = a and (b and c)", "group g = a and (b and c)\n"),
    ("group g = (not a) and b", "group g = not a and b\n"),
    ("group g = not (not a)", "group g = not not a\n"),
    ("group g = app == \"a\\\\b\\\"c\"", "group g = app == \"a\\\\b\\\"c\"\n"),
    ("group g = \"app\" == \"x\" and \"in\" == \"y\"", "group g = app == \"x\" and \"in\" == \"y\"\n"),
    ("let a = {1.2.3.4 except {5.6.7.8}}", "let a = {1.2.3.4 except 5.6.7.8}\n"),
    ("let a = {80 - 80}", "let a = {80}\n"),
    ("limit (all) ingress 1/s", "limit all ingress 1/s\n"),
    ("limit (web) ingress 1/s", "limit web ingress 1/s\n"),
    ("service s { backends (web), (all) }", "service s {\n    backends web, (all)\n}\n"),
    ("policy p for all { allow ingress from (web) }", "policy p for all {\n    allow ingress from (web)\n}\n"),
    ("test \"t\" { expect allow tcp fd00::1 : 443 -> [fd00::2] : 80 }",
     "test \"t\" {\n    expect allow tcp [fd00::1]:443 -> [fd00::2]:80\n}\n"),
    ("test \"{x}\" { }", "test \"{x}\" {\n}\n"),
    ("observe all { sample flows 1 / 10 }", "observe all {\n    sample flows 1/10\n}\n"),
    ("let s = {\n1, 2-3, a}", "let s = {\n    1,\n    2-3,\n    a\n}\n"),
    ("let s = {1, 2,\n 3}", "let s = {\n    1,\n    2,\n    3\n}\n"),
    ("let s = {1 # c\n}", "let s = {\n    1  # c\n}\n"),
    ("let s = {\n}", "let s = {}\n"),
    ("let s = {\n# c\n}", "# c\nlet s = {}\n"),
    ("let s = {1.2.3.4 except {\n5.6.7.8, 9.9.9.9}}", "let s = {\n    1.2.3.4 except {5.6.7.8, 9.9.9.9}\n}\n"),
    ("policy p for all { allow ingress from {1.2.3.4,\n 5.6.7.8} }",
     "policy p for all {\n    allow ingress from {1.2.3.4, 5.6.7.8}\n}\n"),
])
def test_layout(source: str, expected: str) -> None:
    assert fmt(source) == expected
    check_properties(source)


def test_crlf_source() -> None:
    assert fmt("let a = {1}\r\n# c\r\n\r\nlet b = {2}\r\n") == "let a = {1}\n# c\n\nlet b = {2}\n"


def test_syntax_error_returns_none_and_diagnostics() -> None:
    src = SourceFile.from_text("bad.netp", "policy p for all {\n  allow ingress\n")
    text, diags = format_source(src)
    assert text is None and diags and diags[0].code == "E002"
    assert not check_formatted(src)


def test_duplicate_balance_is_refused_not_dropped() -> None:
    src = SourceFile.from_text("s.netp", "service s {\n  balance maglev\n  balance random\n}\n")
    text, diags = format_source(src)
    assert text is None and diags[0].code == "E097" and "balance" in diags[0].message


# ---------------------------------------------------------------------- files in the repository
def _repo_files() -> list[Path]:
    return sorted([*ROOT.glob("examples/**/*.netp"), *ROOT.glob("netc/stdlib/std/**/*.netp")])


def test_repository_files_format_idempotently() -> None:
    files = _repo_files()
    assert files, "no .netp files under examples/ or netc/stdlib/std/"
    for path in files:
        text = path.read_text()
        if parse(SourceFile.from_text(str(path), text))[0] is None:
            continue  # a deliberately broken example is not fmt's business
        check_properties(text)


# ---------------------------------------------------------------------- random programs
NAMES = ["web", "api", "db", "corp", "front-end", "x_1", "any", "world", "host", "z9"]
KEYS = ["app", "env", "tier", "app.kubernetes.io/name", "all", "not", "k-8"]
_counter = iter(range(10**9))


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


strings = st.text(alphabet='ab "\\#{}.-', max_size=6)
names = st.sampled_from(NAMES)
ports = st.integers(0, 65535)
v4 = st.tuples(*[st.integers(0, 255)] * 4, st.one_of(st.none(), st.integers(0, 32))).map(
    lambda t: ".".join(map(str, t[:4])) + ("" if t[4] is None else f"/{t[4]}"))
v6 = st.sampled_from(["fd00::1", "fd00::/8", "::1", "2001:db8::5/128", "fe80::1:2"])
addrs = st.one_of(v4, v6)


@st.composite
def key(draw: st.DrawFn) -> list[str]:
    k = draw(st.sampled_from(KEYS))
    return [k] if re.fullmatch(r"[a-z][a-z0-9-]*", k) and k not in ("all", "not") and draw(st.booleans()) else [_q(k)]


@st.composite
def string_set(draw: st.DrawFn) -> list[str]:
    return ["{", *_commas([[_q(s)] for s in draw(st.lists(strings, max_size=3))]), "}"]


@st.composite
def atom(draw: st.DrawFn) -> tuple[str, list[str]]:
    kind = draw(st.sampled_from(["eq", "ne", "in", "notin", "has", "all", "group"]))
    if kind == "all":
        return "atom", ["all"]
    if kind == "group":
        return "atom", [draw(names)]
    if kind == "has":
        return "atom", ["has", "(", *draw(key()), ")"]
    if kind in ("eq", "ne"):
        return "atom", [*draw(key()), "==" if kind == "eq" else "!=", _q(draw(strings))]
    return "atom", [*draw(key()), *(["in"] if kind == "in" else ["not", "in"]), *draw(string_set())]


def _combine(children: st.SearchStrategy[tuple[str, list[str]]]) -> st.SearchStrategy[tuple[str, list[str]]]:
    @st.composite
    def go(draw: st.DrawFn) -> tuple[str, list[str]]:
        op = draw(st.sampled_from(["and", "or", "not", "paren"]))
        if op == "paren":
            _, toks = draw(children)
            return "atom", ["(", *toks, ")"]
        if op == "not":
            kind, toks = draw(children)
            return "not", ["not", *(toks if kind in ("atom", "not") else ["(", *toks, ")"])]
        parts = draw(st.lists(children, min_size=2, max_size=3))
        out: list[str] = []
        for kind, toks in parts:
            ok = kind in ("atom", "not") or (kind == op) or (op == "or" and kind == "and")
            out += [op] if out else []
            out += toks if ok else ["(", *toks, ")"]
        return op, out
    return go()


selectors = st.recursive(atom(), _combine, max_leaves=6).map(lambda t: t[1])


@st.composite
def addr_item(draw: st.DrawFn) -> list[str]:
    a = draw(addrs)
    ex = draw(st.lists(addrs, max_size=3))
    if not ex:
        return [a]
    if len(ex) == 1 and draw(st.booleans()):
        return [a, "except", ex[0]]
    return [a, "except", "{", *sum(([e, ","] for e in ex), [])[:-1], "}"]


@st.composite
def set_literal(draw: st.DrawFn, allow_addr: bool = True) -> list[str]:
    port_item = st.one_of(ports.map(lambda p: [str(p)]), st.tuples(ports, ports).map(lambda t: [str(t[0]), "-", str(t[1])]))
    item = st.one_of(port_item, names.map(lambda n: [n]), *([addr_item()] if allow_addr else []))
    items = draw(st.lists(item, max_size=4))
    return ["{", *sum((i + [","] for i in items), [])[:-1], "}"]


def _commas(parts: list[list[str]]) -> list[str]:
    return sum((p + [","] for p in parts), [])[:-1]


@st.composite
def peer(draw: st.DrawFn) -> list[str]:
    return draw(st.one_of(names.map(lambda n: [n]), addr_item(), set_literal(),
                          selectors.map(lambda s: ["(", *s, ")"])))


@st.composite
def rule(draw: st.DrawFn) -> list[str]:
    toks = [draw(st.sampled_from(["allow", "deny", "audit"])), draw(st.sampled_from(["ingress", "egress"]))]
    if draw(st.booleans()):
        toks.append(draw(st.sampled_from(["tcp", "udp", "sctp", "icmp", "icmpv6", "any"])))
    if draw(st.booleans()):
        toks += ["type", draw(st.one_of(ports.map(str), st.sampled_from(["echo-request", "unreachable"])))]
        if draw(st.booleans()):
            toks += ["code", str(draw(st.integers(0, 255)))]
    if draw(st.booleans()):
        toks += ["from", *_commas(draw(st.lists(peer(), min_size=1, max_size=3)))]
    port_refs = st.lists(st.one_of(ports.map(lambda p: [str(p)]), names.map(lambda n: [n]),
                                   set_literal(allow_addr=False)), min_size=1, max_size=3)
    to = draw(st.sampled_from(["none", "peers", "peers+ports", "to port", "port"]))
    if to.startswith("peers"):
        toks += ["to", *_commas(draw(st.lists(peer(), min_size=1, max_size=3)))]
        if to == "peers+ports":
            toks += ["port", *_commas(draw(port_refs))]
    elif to != "none":
        toks += (["to"] if to == "to port" else []) + ["port", *_commas(draw(port_refs))]
    if draw(st.booleans()):
        toks += ["priority", str(draw(st.integers(-1000, 1000)))]
    if draw(st.booleans()):
        toks.append("log")
    return toks


@st.composite
def policy(draw: st.DrawFn) -> list[list[str]]:
    head = ["policy", draw(names), "for", *draw(selectors)]
    if draw(st.booleans()):
        head += ["priority", str(draw(st.integers(-50, 50)))]
    default = st.tuples(st.sampled_from(["ingress", "egress"]), st.sampled_from(["allow", "deny"])).map(
        lambda t: [t[0], "default", t[1]])
    body = draw(st.lists(st.one_of(rule(), default), max_size=4))
    return [head + ["{"], *body, ["}"]]


@st.composite
def service(draw: st.DrawFn) -> list[list[str]]:
    body: list[list[str]] = []
    for _ in range(draw(st.integers(0, 2))):
        body.append(["vip", draw(addrs.filter(lambda a: "/" not in a)), "port", str(draw(ports)),
                     *draw(st.sampled_from([[], ["tcp"], ["udp"], ["sctp"]]))])
    backend = st.tuples(st.one_of(v4.filter(lambda a: "/" not in a).map(lambda a: [a]), names.map(lambda n: [n]),
                                  selectors.map(lambda s: ["(", *s, ")"])),
                        st.one_of(st.none(), ports), st.one_of(st.none(), st.integers(0, 100))).map(
        lambda t: t[0] + ([] if t[1] is None else ["port", str(t[1])]) + ([] if t[2] is None else ["weight", str(t[2])]))
    for _ in range(draw(st.integers(0, 2))):
        body.append(["backends", *_commas(draw(st.lists(backend, min_size=1, max_size=3)))])
    if draw(st.booleans()):
        body.append(["balance", draw(st.sampled_from(["maglev", "random", "round-robin"])),
                     *draw(st.sampled_from([[], ["table", "65537"]]))])
    if draw(st.booleans()):
        body.append(["affinity", "client-ip", draw(st.sampled_from(["300s", "5m", "10ms", "1h"]))])
    body = draw(st.permutations(body))
    return [["service", draw(names), "{"], *body, ["}"]]


@st.composite
def target(draw: st.DrawFn) -> list[str]:
    return draw(st.one_of(names.map(lambda n: [n]), st.just(["all"]), selectors.map(lambda s: ["(", *s, ")"])))


@st.composite
def limit(draw: st.DrawFn) -> list[list[str]]:
    toks = ["limit", *draw(target()), draw(st.sampled_from(["ingress", "egress"])), str(draw(ports)), "/",
            draw(st.sampled_from(["s", "m"]))]
    if draw(st.booleans()):
        toks += ["burst", str(draw(ports))]
    if draw(st.booleans()):
        toks += ["per", draw(st.sampled_from(["source", "destination"]))]
    return [toks]


@st.composite
def observe(draw: st.DrawFn) -> list[list[str]]:
    events = st.lists(st.sampled_from(["deny", "log", "allow", "drop"]), min_size=1, max_size=3).map(
        lambda es: ["events", *_commas([[e] for e in es])])
    sample = st.tuples(ports, ports).map(lambda t: ["sample", "flows", str(t[0]), "/", str(t[1])])
    body = draw(st.lists(st.one_of(events, sample), max_size=4))
    return [["observe", *draw(target()), "{"], *body, ["}"]]


@st.composite
def endpoint(draw: st.DrawFn) -> list[str]:
    port = [] if draw(st.booleans()) else [":", str(draw(ports))]
    kind = draw(st.sampled_from(["v4", "v6", "v6b", "name"]))
    if kind == "v4":
        return [draw(v4.filter(lambda a: "/" not in a)), *port]
    if kind == "v6b":
        return ["[", "fd00::1", "]", ":", str(draw(ports))]
    if kind == "v6":
        return ["fd00::2", *port]
    return [draw(names), *port]


@st.composite
def netp_test_block(draw: st.DrawFn) -> list[list[str]]:
    body: list[list[str]] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            labels = draw(st.lists(st.tuples(key(), strings), max_size=3))
            toks = ["container", draw(names), "{", *_commas([[*k, ":", _q(v)] for k, v in labels]), "}"]
            at = draw(st.lists(addrs.filter(lambda a: "/" not in a), max_size=2))
            body.append(toks + (["at", *_commas([[a] for a in at])] if at else []))
        else:
            toks = ["expect", draw(st.sampled_from(["allow", "deny", "dnat"])),
                    draw(st.sampled_from(["tcp", "udp", "icmp"])), *draw(endpoint()), "->", *draw(endpoint())]
            if draw(st.booleans()):
                toks += ["type", "8"]
            if draw(st.booleans()):
                toks += ["=>", *draw(endpoint())]
            body.append(toks)
    return [["test", _q(draw(strings)), "{"], *body, ["}"]]


@st.composite
def simple_decl(draw: st.DrawFn) -> list[list[str]]:
    kind = draw(st.sampled_from(["import", "let", "file", "alias", "group"]))
    if kind == "import":
        return [["import", _q(draw(strings))]]
    if kind == "group":
        return [["group", draw(names), "=", *draw(selectors)]]
    value = {"let": set_literal(), "file": strings.map(lambda s: ["addresses", "from", _q(s)]),
             "alias": names.map(lambda n: [n])}[kind]
    return [["let", draw(names), "=", *draw(value)]]


decls = st.one_of(simple_decl(), simple_decl(), policy(), service(), limit(), observe(), netp_test_block())


@st.composite
def program(draw: st.DrawFn) -> str:
    """Random declarations, their tokens joined by random spacing, newlines, `;` and comments."""
    def sep() -> str:
        choice = draw(st.sampled_from(["sp", "sp", "sp", "nl", "blank", "comment", "tab"]))
        if choice == "comment":
            return f"  # c{next(_counter)} {draw(strings)}\n"
        return {"sp": " ", "nl": "\n", "blank": "\n\n\n", "tab": "\t"}[choice]

    out: list[str] = []
    for decl in draw(st.lists(decls, max_size=5)):
        for stmt in decl:
            for tok in stmt:
                out += [tok, sep()]
            if draw(st.integers(0, 4)) == 0:
                out += [";", sep()]
    if draw(st.booleans()):
        out.append(f"# c{next(_counter)} at the end")
    return "".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program())
def test_random_programs(text: str) -> None:
    module, diags = parse(SourceFile.from_text("t.netp", text))
    assert module is not None, f"generator produced an unparsable program: {diags}\n{text}"
    check_properties(text)
    numbered = re.findall(r"# c\d+", text)
    out = fmt(text)
    for c in numbered:
        assert len(re.findall(re.escape(c) + r"\b", out)) == 1, c
