"""Every example in examples/ checks clean and passes its own tests, through the real CLI.

A test also proves the tests can fail: one flipped expectation must make `netc test` exit 1 and
name the failing expectation's file:line:col.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.netp"))
REQUIRED = {"quickstart.netp", "three-tier.netp", "zero-trust.netp", "egress-cidr.netp", "every-construct.netp"}


def _netc(*args: str, cwd: Path = ROOT) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "netc", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_examples_exist() -> None:
    assert REQUIRED <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_starts_with_a_comment(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name} must say what it shows on line 1"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_checks_clean(path: Path) -> None:
    rc, out = _netc("check", str(path.relative_to(ROOT)))
    assert "Traceback" not in out
    assert rc == 0, out
    assert "error[" not in out, out
    assert "0 error(s)" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_tests_pass(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    rc, out = _netc("test", rel)
    assert "Traceback" not in out
    assert rc == 0, out
    results = re.findall(r"(?m)^(PASS|FAIL) ", out)
    assert results and set(results) == {"PASS"}, out
    m = re.search(r"(\d+) passed, (\d+) failed", out)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) == len(results)
    # meaningful tests: something allowed and something denied
    text = path.read_text(encoding="utf-8")
    assert re.search(r"(?m)^\s*expect allow ", text) and re.search(r"(?m)^\s*expect deny ", text)


def test_a_wrong_expectation_fails_with_its_location(tmp_path: Path) -> None:
    src = ROOT / "examples" / "three-tier.netp"
    dst = tmp_path / "three-tier.netp"
    shutil.copy(src, dst)
    lines = dst.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(r"\s*expect allow ", line):
            lines[i] = line.replace("expect allow", "expect deny ", 1)
            col = line.index("expect") + 1
            lineno = i + 1
            break
    else:  # pragma: no cover - the example always has one
        pytest.fail("no `expect allow` in three-tier.netp")
    dst.write_text("".join(lines), encoding="utf-8")

    rc, out = _netc("test", "three-tier.netp", cwd=tmp_path)
    assert "Traceback" not in out
    assert rc == 1, out
    assert re.search(rf"(?m)^FAIL three-tier\.netp:{lineno}:{col}: expect deny", out), out
    assert len(re.findall(r"(?m)^FAIL ", out)) == 1, out
    assert re.search(r"\b1 failed", out), out


def test_examples_that_read_set_files_work_from_another_directory(tmp_path: Path) -> None:
    """Set file paths are relative to the .netp file, not to the working directory."""
    rc, out = _netc("test", str(ROOT / "examples" / "egress-cidr.netp"), cwd=tmp_path)
    assert rc == 0, out


# ---------------------------------------------------------------------- the docs' examples
def _netp_blocks(text: str) -> list[str]:
    return re.findall(r"```netp\n(.*?)```", text, re.S)


def _check_text(text: str, tmp_path: Path, name: str) -> list[tuple[str, str]]:
    from netc import api

    (tmp_path / "feeds").mkdir(exist_ok=True)
    (tmp_path / "feeds" / "blocklist.txt").write_text("198.51.100.66\n2001:db8:bad::/48\n")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    res = api.check(str(path))
    return [(d.severity.value, d.code) for d in res.diagnostics]


def test_language_doc_examples_check_clean_and_pass(tmp_path: Path) -> None:
    from netc import api

    blocks = _netp_blocks((ROOT / "docs" / "language.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    for i, block in enumerate(blocks):
        diags = _check_text(block, tmp_path, f"block{i}.netp")
        assert diags == [], f"docs/language.md block {i}: {diags}\n{block}"
        run = api.run_tests(str(tmp_path / f"block{i}.netp"))
        assert run.passed, f"docs/language.md block {i}: {[r.message for r in run.failures]}"


def test_diagnostics_doc_examples_produce_their_code(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    sections = re.split(r"(?m)^### ", text)[1:]
    checked = 0
    for section in sections:
        code = section.split()[0]
        blocks = _netp_blocks(section)
        if not blocks:
            continue
        diags = _check_text(blocks[0], tmp_path, f"{code}.netp")
        severity = "error" if code.startswith("E") else "warning"
        assert (severity, code) in diags, f"docs/diagnostics.md {code}: got {diags}\n{blocks[0]}"
        if severity == "warning":
            assert not any(s == "error" for s, _ in diags), f"{code}: {diags}"
        checked += 1
    assert checked >= 55


def test_every_diagnostic_code_is_documented() -> None:
    codes: set[str] = set()
    for source in (ROOT / "netc").rglob("*.py"):
        codes |= set(re.findall(r"\"([EW]\d{3})\"", source.read_text(encoding="utf-8")))
    documented = set(re.findall(r"(?m)^### ([EW]\d{3}) ", (ROOT / "docs" / "diagnostics.md").read_text()))
    assert codes, "no diagnostic codes found in netc/"
    assert codes <= documented, f"undocumented in docs/diagnostics.md: {sorted(codes - documented)}"
