"""Fixtures for tests that load the datapath into the kernel (each module here sets pytestmark = kernel)."""

from __future__ import annotations

import json

import pytest

from netc.codegen.artifact import embed_manifest
from netc.codegen.c.generator import generate_c
from netc.codegen.planner import ProgramPlan, policy_maps
from netc.codegen.toolchain import compile_c

MANIFEST = json.dumps({"format": "test", "sources": ["kernel-tests.netp"]}).encode()


@pytest.fixture(scope="session")
def artifact() -> bytes:
    """The datapath as `netc compile` ships it: compiled, with a manifest section."""
    plan = ProgramPlan(policy_maps(), 0, ("ipv4", "ipv6", "policy"))
    c_text = generate_c(plan, {"sources": ["kernel-tests.netp"]})
    return embed_manifest(compile_c(c_text), MANIFEST)


@pytest.fixture
def datapath(artifact: bytes):
    """A freshly loaded copy of the datapath with empty maps."""
    from netc.runtime.libbpf import BpfObject

    with BpfObject.open_mem(artifact, "netc") as obj:
        obj.load()
        yield obj
