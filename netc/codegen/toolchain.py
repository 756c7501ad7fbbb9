"""C → BPF ELF with clang, deterministically.

Same C in, same bytes out: the source is always compiled under one fixed name (`netc.bpf.c`),
from inside its temporary directory, with that directory mapped to `/netc` in the debug info,
so nothing about the machine or the moment of the build leaks into the object.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from netc.errors import CompileError

INCLUDE_DIR = Path(__file__).resolve().parent.parent / "stdlib" / "include"
SOURCE_NAME = "netc.bpf.c"
OUTPUT_NAME = "netc.bpf.o"
_VERSIONS = range(16, 21)
_APT_HINT = "install it with: apt-get install clang-16 llvm-16 libbpf-dev (or set {env})"


def _find_tool(env: str, stem: str) -> str:
    override = os.environ.get(env)
    if override:
        path = shutil.which(override)
        if path is None:
            raise CompileError(f"{env}={override!r} does not name an executable")
        return path
    for name in [f"{stem}-{v}" for v in _VERSIONS] + [stem]:
        path = shutil.which(name)
        if path is not None:
            return path
    tried = ", ".join([f"{stem}-{v}" for v in _VERSIONS] + [stem])
    raise CompileError(f"no {stem} found on PATH (tried {tried}); " + _APT_HINT.format(env=env))


def find_clang() -> str:
    """Path of the clang to use: $NETC_CLANG, else clang-16 … clang-20, else clang."""
    return _find_tool("NETC_CLANG", "clang")


def find_objcopy() -> str:
    """Path of llvm-objcopy: $NETC_OBJCOPY, else llvm-objcopy-16 … -20, else llvm-objcopy."""
    return _find_tool("NETC_OBJCOPY", "llvm-objcopy")


def _multiarch_include() -> str:
    """Where Debian keeps <asm/...> for the uapi headers (e.g. /usr/include/x86_64-linux-gnu)."""
    try:
        out = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True, timeout=10)
        triple = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        triple = ""
    return f"/usr/include/{triple or 'x86_64-linux-gnu'}"


def clang_command(clang: str, tmpdir: str) -> list[str]:
    return [
        clang, "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
        f"-I{INCLUDE_DIR}", f"-I{_multiarch_include()}",
        # determinism: no build directory in DWARF/BTF, no absolute include paths
        f"-fdebug-prefix-map={tmpdir}=/netc", f"-ffile-prefix-map={tmpdir}=/netc",
        f"-fdebug-prefix-map={INCLUDE_DIR}=/netc/include",
        f"-ffile-prefix-map={INCLUDE_DIR}=/netc/include",
        "-fdebug-compilation-dir=/netc",
        "-Wall", "-Wno-unused-function",
        "-c", SOURCE_NAME, "-o", OUTPUT_NAME,
    ]


_DIAG = re.compile(rf"^{re.escape(SOURCE_NAME)}:(\d+):(\d+): (?:fatal )?error: (.*)$", re.M)
_ANY_ERROR = re.compile(r"^.*\berror: .*$", re.M)


def _explain_failure(stderr: str, c_text: str, rule_lines: dict[int, str] | None) -> str:
    match = _DIAG.search(stderr)
    if match is None:
        other = _ANY_ERROR.search(stderr)
        first = other.group(0) if other else (stderr.strip().splitlines() or ["(no output)"])[0]
        return f"clang failed to compile the generated C: {first}"
    line, col, message = int(match.group(1)), int(match.group(2)), match.group(3)
    lines = c_text.splitlines()
    text = f"clang failed to compile the generated C: {SOURCE_NAME}:{line}:{col}: error: {message}"
    if 1 <= line <= len(lines):
        text += f"\n  {line} | {lines[line - 1]}"
    if rule_lines:
        rule = rule_lines.get(line)
        if rule is None:
            # the nearest rule block that starts above the failing line
            above = [n for n in rule_lines if n <= line]
            rule = rule_lines[max(above)] if above else None
        if rule is not None:
            text += f"\n  while generating code for rule {rule}"
    return text


def compile_c(c_text: str, *, rule_lines: dict[int, str] | None = None) -> bytes:
    """Compile BPF C text to an ELF object (with BTF) and return its bytes.

    `rule_lines` maps generated C line numbers to the .netp rule that produced them, so a
    compile failure can name the rule.
    """
    clang = find_clang()
    with tempfile.TemporaryDirectory(prefix="netc-cc-") as tmpdir:
        Path(tmpdir, SOURCE_NAME).write_text(c_text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH",)}
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(clang_command(clang, tmpdir), cwd=tmpdir, capture_output=True,
                                  text=True, env=env, timeout=300)
        except OSError as e:
            raise CompileError(f"could not run {clang}: {e}") from e
        except subprocess.TimeoutExpired as e:
            raise CompileError(f"{clang} took longer than {e.timeout} s") from e
        if proc.returncode != 0:
            raise CompileError(_explain_failure(proc.stderr, c_text, rule_lines))
        return Path(tmpdir, OUTPUT_NAME).read_bytes()
