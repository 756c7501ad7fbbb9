"""clang as netc drives it: found, deterministic, and explicit when it fails. No kernel needed."""

from __future__ import annotations

import os

import pytest

from netc.codegen import toolchain
from netc.codegen.c.generator import generate_c
from netc.codegen.planner import ProgramPlan, policy_maps
from netc.codegen.toolchain import compile_c, find_clang
from netc.errors import CompileError

C_TEXT = generate_c(ProgramPlan(policy_maps(), 1, ("ipv4",)), {"sources": ["a.netp"]})


def test_find_clang_finds_a_versioned_clang():
    assert os.access(find_clang(), os.X_OK)


def test_netc_clang_overrides(monkeypatch):
    monkeypatch.setenv("NETC_CLANG", "clang-16")
    assert find_clang().endswith("clang-16")
    monkeypatch.setenv("NETC_CLANG", "no-such-clang-anywhere")
    with pytest.raises(CompileError, match="NETC_CLANG"):
        find_clang()


def test_missing_clang_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delenv("NETC_CLANG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompileError, match="apt-get install clang-16"):
        find_clang()


def test_output_is_an_elf_bpf_object():
    obj = compile_c(C_TEXT)
    assert obj[:4] == b"\x7fELF"
    assert int.from_bytes(obj[18:20], "little") == 247  # EM_BPF


def test_compiling_twice_gives_identical_bytes():
    assert compile_c(C_TEXT) == compile_c(C_TEXT)


def test_no_build_paths_leak_into_the_object():
    obj = compile_c(C_TEXT)
    assert b"/tmp" not in obj
    assert b"netc-cc-" not in obj
    assert str(toolchain.INCLUDE_DIR).encode() not in obj


def test_clang_errors_quote_the_generated_line():
    bad = "int ok;\nint broken = ;\n"
    with pytest.raises(CompileError) as info:
        compile_c(bad)
    text = str(info.value)
    assert "netc.bpf.c:2:" in text
    assert "int broken = ;" in text


def test_clang_errors_name_the_rule_that_generated_the_line():
    bad = "int ok;\n/* rule */\nint broken = ;\n"
    with pytest.raises(CompileError, match=r"rule web\.netp:12 allow ingress tcp"):
        compile_c(bad, rule_lines={2: "web.netp:12 allow ingress tcp"})
