"""The fast reader and lark must build the same AST for every well-formed file."""

from __future__ import annotations

import glob
import os

import pytest
from hypothesis import HealthCheck, given, settings

import netc.dsl.parser as parser
from netc.dsl.fastparse import fast_parse
from netc.source import SourceFile
from tests.netp_strategies import program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _lark(path: str, text: str):  # type: ignore[no-untyped-def]
    parser._FORCE_LARK = True
    try:
        return parser.parse(SourceFile.from_text(path, text))
    finally:
        parser._FORCE_LARK = False


def _files() -> list[str]:
    pats = ["examples/*.netp", "netc/stdlib/std/*.netp", "tests/corpus/broken/*.netp"]
    return sorted(f for p in pats for f in glob.glob(os.path.join(ROOT, p)))


@pytest.mark.parametrize("path", _files(), ids=os.path.basename)
def test_same_ast_as_lark_on_files(path: str) -> None:
    text = open(path).read()
    module, diags = _lark(path, text)
    fast = fast_parse(path, text)
    if module is None:
        assert fast is None, "the fast reader accepted a file lark rejects"
    elif fast is not None:
        assert fast == module


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program())
def test_same_ast_as_lark_on_generated_programs(text: str) -> None:
    module, diags = _lark("gen.netp", text)
    assert module is not None, diags
    fast = fast_parse("gen.netp", text)
    assert fast is not None, "the fast reader gave up on a well-formed program"
    assert fast == module


def test_gives_up_on_syntax_errors_so_lark_reports_them() -> None:
    assert fast_parse("x", "policy p for all { allow ingress tcp corp }") is None
    assert fast_parse("x", "let x = {80,}") is None
    m, d = parser.parse(SourceFile.from_text("x.netp", "let x = {80,}"))
    assert m is None and d[0].code == "E005"


def test_reads_blocks_it_leaves_to_lark_in_place() -> None:
    text = 'group a = app == "a"\n\nservice s {\n  vip 10.0.0.1 port 80 tcp\n  backends a port 8080\n}\n' \
           'policy p for a {\n  allow ingress from a\n}\n'
    fast = fast_parse("x", text)
    module, _ = _lark("x", text)
    assert fast is not None and fast == module
