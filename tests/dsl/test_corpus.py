"""The broken corpus: every file in tests/corpus/broken/ is a realistic mistake that `netc check` must
reject with the diagnostic its first line names, in every output format, without a traceback.

Header of a corpus file:
    # expect: E123                 the code the file must produce (line 1)
    # where: other-file.netp       optional: the diagnostic points into this file (relative to the
                                   corpus directory) instead of the file itself, e.g. for an import
                                   cycle or a bad line of a set file
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "broken"
FILES = sorted(CORPUS.glob("*.netp"))

EXPECT = re.compile(r"#\s*expect:\s*([EW]\d{3})\s*$")
WHERE = re.compile(r"#\s*where:\s*(\S+)\s*$")


def _header(path: Path) -> tuple[str, Path]:
    lines = path.read_text(encoding="utf-8").splitlines()
    m = EXPECT.match(lines[0]) if lines else None
    assert m, f"{path.name}: the first line must be `# expect: E123`"
    where = path
    for line in lines[1:3]:
        w = WHERE.match(line)
        if w:
            where = CORPUS / w.group(1)
            assert where.exists(), f"{path.name}: `# where:` names a missing file {w.group(1)}"
    return m.group(1), where


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _netc(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "netc", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 40, f"only {len(FILES)} broken files in {CORPUS}"


def test_every_corpus_file_has_a_header() -> None:
    for path in FILES:
        _header(path)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_broken_file_is_rejected(path: Path) -> None:
    code, where = _header(path)
    rel = _rel(path)
    # the three formats run side by side: each is a fresh interpreter
    procs = {fmt: _netc("check", "--format", fmt, rel) for fmt in ("text", "json", "sarif")}
    results = {fmt: _finish(p) for fmt, p in procs.items()}

    for fmt, (rc, out, err) in results.items():
        assert "Traceback" not in out + err, f"{fmt}: a traceback instead of a diagnostic:\n{out}{err}"
        assert rc == 1, f"{fmt}: exit code {rc}, expected 1\n{out}{err}"

    # text: `path:LINE:COL: error[E123]`, pointing into the right file
    rc, out, err = results["text"]
    text = out + err
    pattern = re.compile(rf"(?m)^{re.escape(_rel(where))}:(\d+):(\d+): error\[{code}\]")
    m = pattern.search(text)
    assert m, f"expected `{_rel(where)}:LINE:COL: error[{code}]` in:\n{text}"
    nlines = len(where.read_text(encoding="utf-8").splitlines())
    assert 1 <= int(m.group(1)) <= max(nlines, 1) and int(m.group(2)) >= 1

    # json: a list of diagnostics, one of them with the code
    rc, out, err = results["json"]
    diags = json.loads(out)
    assert isinstance(diags, list)
    hits = [d for d in diags if d["code"] == code]
    assert hits, f"json has no {code}: {[d['code'] for d in diags]}"
    assert hits[0]["severity"] == "error" and hits[0]["file"] == _rel(where)
    assert hits[0]["line"] >= 1 and hits[0]["col"] >= 1 and hits[0]["message"]

    # sarif: 2.1.0, with the code as a ruleId and a physical location
    rc, out, err = results["sarif"]
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert run["tool"]["driver"]["name"] == "netc"
    assert code in {r["id"] for r in run["tool"]["driver"]["rules"]}
    res = [r for r in run["results"] if r["ruleId"] == code]
    assert res and res[0]["level"] == "error"
    loc = res[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == _rel(where)
    assert loc["region"]["startLine"] >= 1


# ---------------------------------------------------------------------- warnings do not fail a check
WARNINGS = {
    "W302": 'let office = {192.0.2.10/24}\n',
    "W318": 'group nobody = app in {}\npolicy p for nobody { ingress default deny }\n',
    "W801": ('policy p for app == "web" {\n    ingress default deny\n'
             '    deny ingress from any\n    allow ingress tcp from 10.0.0.1 to port 443\n}\n'),
    "W802": ('policy p for app == "web" {\n    ingress default deny\n'
             '    allow ingress tcp from 10.0.0.1 to port 443\n    deny ingress tcp from 10.0.0.1 to port 443\n}\n'),
    "W804": 'policy p for app == "web" {\n    deny egress to 169.254.169.254\n}\n',
    "W805": 'policy p for app == "web" {\n    allow ingress icmp from fd00::/8\n}\n',
}


@pytest.mark.parametrize("code", sorted(WARNINGS))
def test_warning_exits_zero(code: str, tmp_path: Path) -> None:
    path = tmp_path / f"{code.lower()}.netp"
    path.write_text(WARNINGS[code])
    rc, out, err = _finish(_netc("check", str(path)))
    text = out + err
    assert "Traceback" not in text
    assert rc == 0, f"a warning must not fail the check:\n{text}"
    assert re.search(rf"(?m)^\S*{re.escape(path.name)}:\d+:\d+: warning\[{code}\]", text), text
    assert "error[" not in text


def test_host_bits_set_is_a_warning_in_every_format(tmp_path: Path) -> None:
    path = tmp_path / "host-bits.netp"
    path.write_text("let office = {192.0.2.10/24}\n")
    rc, out, _ = _finish(_netc("check", "--format", "json", str(path)))
    assert rc == 0
    diags = json.loads(out)
    assert [(d["code"], d["severity"]) for d in diags] == [("W302", "warning")]
    assert "192.0.2.0/24" in diags[0]["message"]
    rc, out, _ = _finish(_netc("check", "--format", "sarif", str(path)))
    assert rc == 0
    result = json.loads(out)["runs"][0]["results"][0]
    assert result["ruleId"] == "W302" and result["level"] == "warning"
