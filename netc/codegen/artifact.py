"""The artifact: one BPF ELF object carrying its manifest in a `.netc.manifest` section.

The section is non-allocated and read-only, so the kernel never sees it and libbpf skips it
(libbpf/bpftool still open the object for its programs and maps). Embedding goes through
llvm-objcopy; reading is a small pure-Python ELF64 parser, so `netc` can inspect an artifact on
a machine without LLVM.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

from netc.codegen.toolchain import find_objcopy
from netc.errors import CompileError, LoadError

MANIFEST_SECTION = ".netc.manifest"

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # ELF64 file header
_SHDR = struct.Struct("<IIQQQQIIQQ")  # ELF64 section header
_SHT_NOBITS = 8
_SHN_XINDEX = 0xFFFF
_SHF_EXECINSTR = 0x4
_BPF_INSN_SIZE = 8


def embed_manifest(obj: bytes, manifest: bytes) -> bytes:
    """Return `obj` with `manifest` added as the `.netc.manifest` section (replacing any old one)."""
    objcopy = find_objcopy()
    existing = MANIFEST_SECTION in elf_sections(obj, strict=False)
    with tempfile.TemporaryDirectory(prefix="netc-objcopy-") as tmpdir:
        src, out, data = (Path(tmpdir, n) for n in ("in.o", "out.o", "manifest"))
        src.write_bytes(obj)
        data.write_bytes(manifest)
        cmd = [objcopy]
        if existing:
            cmd += ["--remove-section", MANIFEST_SECTION]
        cmd += ["--add-section", f"{MANIFEST_SECTION}={data.name}",
                "--set-section-flags", f"{MANIFEST_SECTION}=noload,readonly", src.name, out.name]
        try:
            proc = subprocess.run(cmd, cwd=tmpdir, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            raise CompileError(f"could not run {objcopy}: {e}") from e
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
            raise CompileError(f"{objcopy} failed to embed the manifest: {first}")
        return out.read_bytes()


def _not_artifact(why: str) -> LoadError:
    return LoadError(f"not a netc artifact: {why}")


def elf_sections(obj: bytes, *, strict: bool = True) -> dict[str, bytes]:
    """Section name → contents of a little-endian ELF64 object (SHT_NOBITS sections are empty).

    Raises LoadError("not a netc artifact: ...") on anything that is not such an object, unless
    strict is False, in which case it returns {} instead.
    """
    try:
        return {name: data for name, _, data in _elf_sections(obj)}
    except LoadError:
        if strict:
            raise
        return {}


def program_instructions(obj: bytes) -> dict[str, int]:
    """Code section name (e.g. tcx/ingress, .text) → BPF instructions in it, read from the ELF.

    .text holds the BPF-to-BPF subprograms; libbpf appends the ones a program calls to it.
    """
    return {name: len(data) // _BPF_INSN_SIZE for name, flags, data in _elf_sections(obj)
            if flags & _SHF_EXECINSTR and data}


def instruction_count(obj: bytes) -> int:
    """Instructions in all code sections of the object (every program plus shared subprograms)."""
    return sum(program_instructions(obj).values())


def _elf_sections(obj: bytes) -> list[tuple[str, int, bytes]]:
    """(name, sh_flags, contents) of every section but the null one."""
    if len(obj) < _EHDR.size or obj[:4] != b"\x7fELF":
        raise _not_artifact("not an ELF file")
    if obj[4] != 2 or obj[5] != 1:
        raise _not_artifact("not a little-endian 64-bit ELF file")
    (_, _, _, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx) = _EHDR.unpack_from(obj, 0)
    if shoff == 0:
        raise _not_artifact("ELF file has no section headers")
    if shentsize != _SHDR.size:
        raise _not_artifact(f"unexpected ELF section header size {shentsize}")

    def header(i: int) -> tuple[int, ...]:
        at = shoff + i * _SHDR.size
        if at + _SHDR.size > len(obj):
            raise _not_artifact("section header table lies outside the file")
        return _SHDR.unpack_from(obj, at)

    first = header(0)
    if shnum == 0:  # extended numbering: the real count is in section 0
        shnum = first[5]
    if shstrndx == _SHN_XINDEX:
        shstrndx = first[6]
    if shnum > len(obj) // _SHDR.size or shstrndx >= shnum:
        raise _not_artifact("corrupt ELF section header table")
    headers = [header(i) for i in range(shnum)]

    def contents(h: tuple[int, ...]) -> bytes:
        sh_type, offset, size = h[1], h[4], h[5]
        if sh_type == _SHT_NOBITS:
            return b""
        if offset + size > len(obj):
            raise _not_artifact("a section lies outside the file")
        return obj[offset:offset + size]

    strtab = contents(headers[shstrndx])
    sections = []
    for h in headers[1:]:
        start = h[0]
        end = strtab.find(b"\0", start)
        if start >= len(strtab) or end < 0:
            raise _not_artifact("corrupt section name table")
        sections.append((strtab[start:end].decode("utf-8", "replace"), h[2], contents(h)))
    return sections


def read_manifest(obj: bytes) -> bytes:
    """The bytes embedded by embed_manifest; LoadError("not a netc artifact: ...") if absent."""
    sections = elf_sections(obj)
    if MANIFEST_SECTION not in sections:
        raise _not_artifact(f"ELF object has no {MANIFEST_SECTION} section")
    return sections[MANIFEST_SECTION]
