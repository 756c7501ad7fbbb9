"""No input, however broken, gets a traceback: the parser and checker always answer with diagnostics."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netc import api
from netc.diagnostics import render_json, render_sarif, render_text
from tests.netp_strategies import program

TOKENS = [
    "policy", "p", "for", "all", "{", "}", "(", ")", "allow", "deny", "audit", "ingress", "egress", "tcp",
    "udp", "icmp", "icmpv6", "sctp", "any", "from", "to", "port", "type", "code", "priority", "log",
    "default", "let", "group", "=", "==", "!=", "in", "not", "and", "or", "has", ",", "80", "80-90",
    "65536", "10.0.0.0/8", "10.0.0.1/8", "300.1.1.1", "fd00::/8", "::1", "except", "import",
    '"std/ports.netp"', '"missing.netp"', "service", "vip", "backends", "weight", "balance", "maglev",
    "limit", "1000/s", "burst", "per", "source", "observe", "events", "sample", "flows", "1/100", "test",
    '"t"', "expect", "->", "=>", "container", ":", "[", "]", "web", "corp", "\n", "#c\n", "'", "$", "é",
    "-", "/", ";", "affinity", "client-ip", "300s", "table", "16381", "addresses", '"feeds/x.txt"',
]


def _check_never_raises(text: str) -> None:
    res = api.check(text, name="fuzz.netp")
    for d in res.diagnostics:
        assert d.span.line >= 1 and d.span.col >= 1, d
        assert d.code[0] in "EW" and d.message
    render_text(res.diagnostics)
    render_json(res.diagnostics)
    render_sarif(res.diagnostics, "0")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup(text: str) -> None:
    _check_never_raises(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check_never_raises(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program(), st.data())
def test_mutated_programs(text: str, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        if not text:
            break
        i = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.integers(0, 2))
        if op == 0:
            text = text[:i] + text[i + 1:]
        elif op == 1:
            text = text[:i] + data.draw(st.sampled_from(TOKENS)) + text[i:]
        else:
            j = data.draw(st.integers(i, len(text)))
            text = text[:i] + text[j:]
    _check_never_raises(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program())
def test_generated_programs_check_and_evaluate(text: str) -> None:
    res = api.check(text, name="gen.netp")
    assert not res.errors, res.errors
