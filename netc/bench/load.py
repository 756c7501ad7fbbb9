"""`netc bench load`: wall time to materialize and load N rules onto C containers of a lab, and to
apply one container added (the map writes and the links of an inventory change).

It runs in a private state directory and bpffs path, on a lab it makes and removes itself.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

import yaml

from netc import api
from netc.bench.generate import generate_policy

APPS = ("web", "api", "db")


def run(rules: int, containers: int, seed: int = 1) -> dict[str, Any]:
    from netc.runtime import lab as labmod
    from netc.runtime import loader

    tag = uuid.uuid4().hex[:6]
    saved = {k: os.environ.get(k) for k in ("NETC_STATE_DIR", "NETC_BPFFS")}
    with tempfile.TemporaryDirectory(prefix="netc-bench-load-") as tmp:
        os.environ["NETC_STATE_DIR"] = tmp
        os.environ["NETC_BPFFS"] = f"/sys/fs/bpf/netc-bench-{tag}"
        topo = {"name": f"bench{tag}", "containers": [
            {"name": f"c{i}", "labels": {"app": APPS[i % 3]}} for i in range(containers)]}
        topo_path = os.path.join(tmp, "topology.yaml")
        with open(topo_path, "w") as fh:
            yaml.safe_dump(topo, fh)
        lab = labmod.up(topo_path)
        try:
            t = time.perf_counter()
            compiled = api.compile(generate_policy(rules, seed), name=f"bench-{rules}.netp")
            compile_s = time.perf_counter() - t
            target = loader.resolve_target(lab=lab.name)
            report = loader.load(compiled.object, f"bench-{rules}.netp", target)
            dep = loader.Deployment(target.name)
            t = time.perf_counter()
            labmod.add_container(lab.name, {"name": f"c{containers}", "labels": {"app": "web"}})
            lab_s = time.perf_counter() - t
            sync = dep.sync()
            n_rules = len(compiled.program.rules)
            result = {
                "rules": n_rules,
                "containers": containers,
                "compile_s": round(compile_s, 3),
                "load_s": round(report.timings["total_s"], 3),
                "materialize_s": round(report.timings["materialize_s"], 3),
                "verify_s": round(report.timings["verify_s"], 3),
                "fill_s": round(report.timings["fill_s"], 3),
                "attach_s": round(report.timings["attach_s"], 3),
                "map_entries": report.entries,
                "map_bytes": report.map_bytes,
                "map_bytes_per_rule": round(report.map_bytes / max(1, n_rules), 1),
                "add_container_ms": round(sync.seconds * 1000, 2),
                "add_container_writes": sum(sync.written.values()),
                "lab_add_container_ms": round(lab_s * 1000, 1),
            }
        finally:
            try:
                loader.unload(lab.name)
            finally:
                labmod.down(lab.name)
                import shutil

                shutil.rmtree(os.environ["NETC_BPFFS"], ignore_errors=True)
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    return result
