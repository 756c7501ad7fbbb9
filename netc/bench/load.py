"""`netc bench load`: wall time to materialize and load N rules onto C containers of a lab, to
apply one container added (the map writes and the links of an inventory change), and to apply a
rule added to the running policy (in place: the entries it changes, runtime/inplace.py).

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


def change_one_rule(text: str) -> tuple[str, str]:
    """The policy with one rule more, at the end of its last policy (appended: no rule moves, so
    no other rule's tie-breaking order changes), for an address no rule names yet, so that it
    decides somewhere."""
    rule = "allow ingress tcp from 198.18.7.0/24 to port 8443"
    end = text.rindex("\n}\n")
    return text[:end] + f"\n    {rule}" + text[end:], rule


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
            text, changed_line = change_one_rule(generate_policy(rules, seed))
            changed = api.compile(text, name=f"bench-{rules}.netp")
            target = loader.resolve_target(lab=lab.name)   # the lab has one container more now
            change = loader.load(changed.object, f"bench-{rules}-changed.netp", target)
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
                "change_rule": changed_line,
                "change_rule_in_place": change.in_place,
                "change_rule_s": round(change.timings["total_s"], 3),
                "change_rule_materialize_s": round(change.timings.get("materialize_s", 0.0), 3),
                "change_rule_written": sum(change.written.values()),
                "change_rule_deleted": sum(change.deleted.values()),
                "change_rule_unchanged": change.unchanged,
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
