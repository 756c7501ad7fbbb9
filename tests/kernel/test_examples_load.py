"""Every example compiles with `netc compile` and the kernel's verifier accepts the object."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from netc import api
from netc.runtime.libbpf import BpfObject

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.netp")))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_compiles_and_loads(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.bpf.o"
    proc = subprocess.run([sys.executable, "-m", "netc", "compile", path, "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    manifest = api.read_manifest(data)
    assert manifest["ir"]["policies"] or manifest["ir"]["services"]
    with BpfObject.open_mem(data, "netc") as obj:
        obj.load()
        assert set(obj.programs) == {"netc_from_container", "netc_to_container"}
        assert obj.sections["netc_from_container"] == "tcx/ingress"
        assert obj.sections["netc_to_container"] == "tcx/egress"
        for name in ("netc_endpoints", "netc_addrs", "netc_rules", "netc_wild"):
            key_id, value_id = obj.btf_type_ids(name)
            assert key_id and value_id, f"{name} has no BTF types"


def test_compiling_twice_gives_identical_bytes() -> None:
    a = api.compile(EXAMPLES[0]).object
    b = api.compile(EXAMPLES[0]).object
    assert a == b


def test_instruction_count_does_not_grow_with_rules() -> None:
    from netc.bench.generate import generate_policy
    from netc.codegen.artifact import instruction_count

    small = api.compile(generate_policy(10), name="small.netp").object
    large = api.compile(generate_policy(5000), name="large.netp").object
    assert instruction_count(small) == instruction_count(large)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_expectations_hold_in_the_kernel(path: str) -> None:
    """`netc test --kernel`: every expectation of every example, under BPF_PROG_TEST_RUN, with the
    kernel agreeing with the reference semantics (this caught IPv4 addresses no set names falling
    through to an IPv6 prefix that covers the v4-mapped space)."""
    from netc.runtime.testrun import run_kernel_tests

    run = api.run_tests(path)
    verdicts = run_kernel_tests(path, run, None)
    assert run.results
    failed = [f"{r.expectation.span}: {r.expectation.text}: {verdicts.get(id(r), (False, 'not run'))[1]}"
              for r in run.results if not verdicts.get(id(r), (False, ""))[0]]
    assert not failed, "\n".join(failed)
