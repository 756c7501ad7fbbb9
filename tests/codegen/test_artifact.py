"""The artifact format: the manifest rides in an ELF section that loaders ignore. No kernel needed."""

from __future__ import annotations

import functools
import json

import pytest

from netc.codegen.artifact import (
    MANIFEST_SECTION,
    elf_sections,
    embed_manifest,
    instruction_count,
    program_instructions,
    read_manifest,
)
from netc.codegen.c.generator import generate_c
from netc.codegen.planner import ProgramPlan, policy_maps
from netc.codegen.toolchain import compile_c
from netc.errors import LoadError

MANIFEST = json.dumps({"format": 1, "name": "t", "rules": ["a", "b"]}, sort_keys=True).encode()


@functools.cache
def plain_object() -> bytes:
    return compile_c(generate_c(ProgramPlan(policy_maps(), 2, ("ipv4",)), {"sources": ["t.netp"]}))


def test_round_trip():
    art = embed_manifest(plain_object(), MANIFEST)
    assert read_manifest(art) == MANIFEST


def test_embedding_is_deterministic():
    assert embed_manifest(plain_object(), MANIFEST) == embed_manifest(plain_object(), MANIFEST)


def test_embedding_keeps_every_other_section():
    before = elf_sections(plain_object())
    after = elf_sections(embed_manifest(plain_object(), MANIFEST))
    assert set(after) == set(before) | {MANIFEST_SECTION}
    for name in ("tcx/ingress", "tcx/egress", ".maps", ".BTF", "license"):
        assert after[name] == before[name]


def test_embedding_again_replaces_the_manifest():
    art = embed_manifest(embed_manifest(plain_object(), b"old"), b"new")
    assert read_manifest(art) == b"new"


def test_the_section_is_not_loaded():
    import struct

    art = embed_manifest(plain_object(), MANIFEST)
    shoff, = struct.unpack_from("<Q", art, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", art, 0x3C)
    strtab_off, = struct.unpack_from("<Q", art, shoff + shstrndx * 64 + 24)
    for i in range(shnum):
        name_off, sh_type, sh_flags = struct.unpack_from("<IIQ", art, shoff + i * 64)
        name = art[strtab_off + name_off:].split(b"\0", 1)[0]
        if name == MANIFEST_SECTION.encode():
            assert sh_flags & 0x1 == 0  # not SHF_WRITE
            assert sh_flags & 0x2 == 0  # not SHF_ALLOC
            break
    else:
        pytest.fail("no manifest section")


@pytest.mark.parametrize("blob", [b"", b"hello", b"\x7fELF\x01\x01" + b"\0" * 58])
def test_not_an_elf_object(blob):
    with pytest.raises(LoadError, match="not a netc artifact"):
        read_manifest(blob)


def test_a_plain_object_has_no_manifest():
    with pytest.raises(LoadError, match="not a netc artifact: .*no .netc.manifest"):
        read_manifest(plain_object())


def test_a_truncated_object_is_refused():
    art = embed_manifest(plain_object(), MANIFEST)
    with pytest.raises(LoadError, match="not a netc artifact"):
        read_manifest(art[: len(art) // 2])


def test_instruction_count_reads_the_code_sections():
    counts = program_instructions(plain_object())
    assert set(counts) >= {"tcx/ingress", "tcx/egress"}
    assert counts["tcx/ingress"] > 100 and counts["tcx/egress"] > 100
    assert instruction_count(plain_object()) == sum(counts.values())
    assert instruction_count(embed_manifest(plain_object(), MANIFEST)) == instruction_count(plain_object())
