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


@pytest.fixture
def make_lab(tmp_path, monkeypatch):
    """Labs from topology text (the `containers:` entries), each test with its own state directory
    and bpffs path; whatever a test loaded and every lab it made are removed afterwards."""
    import shutil
    import uuid

    from netc.runtime import lab as labmod
    from netc.runtime import loader

    tag = uuid.uuid4().hex[:6]
    bpffs = f"/sys/fs/bpf/netc-test-{tag}"
    monkeypatch.setenv("NETC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NETC_BPFFS", bpffs)
    made = []

    def make(containers: str):  # type: ignore[no-untyped-def]
        topo = tmp_path / f"lab{len(made)}.yaml"
        topo.write_text(f"name: t{tag}{len(made)}\ncontainers:\n{containers}")
        lb = labmod.up(str(topo))
        made.append(lb)
        return lb

    try:
        yield make
    finally:
        for lb in made:
            try:
                loader.unload(lb.name)
            except Exception:  # noqa: BLE001 - nothing loaded is fine here
                pass
            labmod.down(lb.name)
        shutil.rmtree(bpffs, ignore_errors=True)
