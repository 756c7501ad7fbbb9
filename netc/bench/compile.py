"""`netc bench compile`: wall time of check and compile at N rules, and the instruction count."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from netc import api
from netc.bench.generate import generate_policy


def run(n: int, seed: int = 1) -> dict[str, Any]:
    text = generate_policy(n, seed)
    with tempfile.TemporaryDirectory(prefix="netc-bench-") as tmp:
        path = os.path.join(tmp, f"bench-{n}.netp")
        with open(path, "w") as fh:
            fh.write(text)
        t0 = time.perf_counter()
        res = api.check(path)
        check_s = time.perf_counter() - t0
        if not res.ok:
            raise RuntimeError("the generated policy does not check: " + str(res.errors[:3]))
        t0 = time.perf_counter()
        out = api.compile(path)
        compile_s = time.perf_counter() - t0
    from netc.codegen.artifact import instruction_count

    return {"rules": len(out.program.rules), "check_s": round(check_s, 3), "compile_s": round(compile_s, 3),
            "insns": instruction_count(out.object)}
