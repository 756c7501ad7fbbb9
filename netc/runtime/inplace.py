"""Policy changes in place: a new version of the same shape rewrites only the entries it changes
(docs/runtime.md, "Policy changes in place").

When the new object's code, BTF and map definitions are those of the running version's (the
compiler's plan depends on which features a policy uses, never on its rules), `netc load` does not
load a second program: it materializes the new policy with the running version's ids, so unchanged
policy sets and atoms keep their ids and their entries, and applies the difference with the
running maps' two slots (runtime/slots.py): stage, flip the generation, settle. The result is
recorded as a new version over the same programs and maps (their pins move from v<N> to v<N+1>).

A marker file records an update in progress (a policy change or a `netc sync`). If the process
dies, the next netc command that takes the target's lock finishes it or takes it back, from
whether the generation had flipped: every entry is rewritten with both slots equal to the
contents that are live, and keys those contents do not have are deleted; neither changes what a
packet sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from typing import Any

from netc.codegen.artifact import elf_sections
from netc.errors import NetcError
from netc.ir.nodes import Program
from netc.runtime import addr4, slots
from netc.runtime.inventory import Inventory
from netc.runtime.materialize import Contents, Ids, Materializer

# sections that do not reach the kernel, or only name the source: they may differ
_IGNORED = (".netc.manifest", ".debug", ".rel.debug")


def same_shape(a: bytes, b: bytes) -> bool:
    """Whether two artifacts load as the same programs and maps: every section the kernel sees
    (code, relocations, BTF, map definitions) is byte for byte the same."""
    sa, sb = elf_sections(a), elf_sections(b)

    def kept(s: dict[str, bytes]) -> dict[str, bytes]:
        return {n: v for n, v in s.items() if not n.startswith(_IGNORED)}

    return kept(sa) == kept(sb)


def marker_path(state_dir: str, target: str) -> str:
    from netc.runtime.loader import _pin_name

    return os.path.join(state_dir, "objects", f"{_pin_name(target)}.pending.json")


def write_marker(state_dir: str, target: str, **fields: Any) -> None:
    from netc.runtime.loader import _write_atomically

    _write_atomically(marker_path(state_dir, target), json.dumps(fields).encode())


def clear_marker(state_dir: str, target: str) -> None:
    path = marker_path(state_dir, target)
    if os.path.exists(path):
        os.unlink(path)


def version_contents(obj_path: str, snapshot: str | None = None) -> tuple[Program, Ids, Inventory, Contents]:
    """A recorded version's program, ids, inventory and the map contents they give."""
    from netc.api import read_manifest
    from netc.runtime.loader import _ids_path, _snapshot_path

    with open(obj_path, "rb") as fh:
        program = Program.from_json(read_manifest(fh.read())["ir"])
    with open(_ids_path(obj_path)) as fh:
        ids = Ids.from_json(json.load(fh))
    snap = snapshot or _snapshot_path(obj_path)
    with open(snap) as fh:
        inv = Inventory.from_dict(json.load(fh), snap)
    return program, ids, inv, Materializer(program).run(inv, ids)


# ---------------------------------------------------------------------- what a version's maps hold
# Saved next to the version's files after every load, change in place and sync, so that the next
# change in place need not materialize the running version again (4 s at 100,000 rules). Valid
# only for the ids and inventory it was written with (their digest is in the header).
_CACHE_MAGIC = b"netc-maps/1\n"
_CACHE_HEAD = struct.Struct("<16sIII")   # map name, entries, key size, value size


def _cache_path(obj_path: str) -> str:
    return obj_path[: -len(".bpf.o")] + ".maps.bin"


def _cache_digest(obj_path: str) -> bytes:
    from netc.runtime.loader import _ids_path, _snapshot_path

    h = hashlib.sha256()
    for path in (_ids_path(obj_path), _snapshot_path(obj_path)):
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.digest()


def save_contents(obj_path: str, contents: Contents, program: Program) -> None:
    """Record what the version's maps hold (call once its ids and inventory files are written),
    and its services (a change in place needs the same)."""
    from netc.runtime.loader import MAPS, _write_atomically

    services = _services_text([s.to_json() for s in program.services]).encode()
    parts = [_CACHE_MAGIC, _cache_digest(obj_path), len(services).to_bytes(4, "little"), services]
    for name in MAPS:
        m = contents.maps.get(name, {})
        first = next(iter(m.items()), (b"", b""))
        parts.append(_CACHE_HEAD.pack(name.encode(), len(m), len(first[0]), len(first[1])))
        parts.append(b"".join(m.keys()))
        parts.append(b"".join(m.values()))
    _write_atomically(_cache_path(obj_path), b"".join(parts))


def saved_contents(obj_path: str) -> dict[str, dict[bytes, bytes]] | None:
    """The version's recorded map contents, or None when there are none for its current files."""
    from netc.runtime.loader import MAPS

    try:
        with open(_cache_path(obj_path), "rb") as fh:
            data = fh.read()
        digest = _cache_digest(obj_path)
    except OSError:
        return None
    n = len(_CACHE_MAGIC)
    if data[:n] != _CACHE_MAGIC or data[n:n + 32] != digest:
        return None
    pos = n + 32
    pos += 4 + int.from_bytes(data[pos:pos + 4], "little")
    out: dict[str, dict[bytes, bytes]] = {}
    for name in MAPS:
        raw_name, count, ks, vs = _CACHE_HEAD.unpack_from(data, pos)
        if raw_name.rstrip(b"\0").decode() != name:
            return None
        pos += _CACHE_HEAD.size
        keys, pos = data[pos:pos + count * ks], pos + count * ks
        values, pos = data[pos:pos + count * vs], pos + count * vs
        out[name] = dict(zip([keys[i:i + ks] for i in range(0, count * ks, ks)],
                             [values[i:i + vs] for i in range(0, count * vs, vs)], strict=True)) if count else {}
    return out if pos == len(data) else None


def _services_text(services: list[dict[str, Any]]) -> str:
    """The services as a change in place compares them: what they do, not where they are written."""
    return json.dumps([{k: v for k, v in s.items() if k != "span"} for s in services], sort_keys=True)


def saved_services(obj_path: str) -> str | None:
    """The services JSON recorded with the version's map contents, if any."""
    try:
        with open(_cache_path(obj_path), "rb") as fh:
            head = fh.read(len(_CACHE_MAGIC) + 36)
            if not head.startswith(_CACHE_MAGIC) or len(head) < len(_CACHE_MAGIC) + 36:
                return None
            return fh.read(int.from_bytes(head[-4:], "little")).decode()
    except (OSError, UnicodeDecodeError):
        return None


def settle_all(maps: dict[str, Any], contents: Contents) -> None:
    """Both slots of every entry := `contents`, every other key deleted, and the IPv4 arrays' other
    root half := the live one. Changes no live answer when the live generation already answers as
    `contents` does."""
    from netc.runtime.loader import _lpm_addrs

    if addr4.ROOT_MAP in maps:
        addr4.copy_half(maps[addr4.ROOT_MAP], slots.read_generation(maps[slots.GEN_MAP]))
    for name in slots.WRITE_ORDER:
        want = _lpm_addrs(contents) if name == "netc_addrs" else contents.maps.get(name, {})
        have = list(maps[name].keys())
        maps[name].update_batch(slots.encode_all(name, want))
        for k in have:
            if k not in want:
                maps[name].delete(k)


def recover(st: Any, target: str) -> list[str]:
    """Finish or take back an update in place that a dead process left (the caller holds the lock)."""
    from netc.runtime import loader

    path = marker_path(st.dir, target)
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        m = json.load(fh)
    base, _ = loader._paths(target)
    notes: list[str] = []
    if m["kind"] == "sync":
        vdir = os.path.join(base, f"v{m['version']}")
        active = st.active(target)
        if active is None or not os.path.isdir(vdir):
            clear_marker(st.dir, target)
            return ["dropped the record of an interrupted sync whose version is gone"]
        snapshot = loader._snapshot_path(active.object)
        with loader._pinned_maps(target, m["version"]) as maps:
            flipped = slots.read_generation(maps[slots.GEN_MAP]) != m["gen"]
            if flipped and os.path.exists(snapshot + ".next"):
                os.replace(snapshot + ".next", snapshot)
            _, _, _, contents = version_contents(active.object)
            settle_all(maps, contents)
        if os.path.exists(snapshot + ".next"):
            os.unlink(snapshot + ".next")
        clear_marker(st.dir, target)
        return [f"{'finished' if flipped else 'took back'} an interrupted sync of v{m['version']}"]

    old, new = m["from"], m["to"]
    pins = os.path.join(base, f"v{new}") if os.path.isdir(os.path.join(base, f"v{new}")) else \
        os.path.join(base, f"v{old}")
    pinned_as = int(os.path.basename(pins)[1:])
    with loader._pinned_maps(target, pinned_as) as maps:
        flipped = slots.read_generation(maps[slots.GEN_MAP]) != m["gen"]
        if flipped:
            _, _, _, contents = version_contents(m["object"])
        else:
            prev = next(v for v in st.versions(target) if v.version == old)
            _, _, _, contents = version_contents(prev.object)
        settle_all(maps, contents)
    if flipped:
        active = st.active(target)
        if active is not None and active.version == old:
            record(st, target, old, new, m["object"], m["source"], m["source_sha256"], m["prog_ids"])
        if pinned_as == old:
            os.rename(os.path.join(base, f"v{old}"), os.path.join(base, f"v{new}"))
        notes.append(f"finished the interrupted in-place update v{old} -> v{new}")
    else:
        loader._remove_version_files(m["object"])
        notes.append(f"took back the interrupted in-place update v{old} -> v{new}")
    clear_marker(st.dir, target)
    return notes


def record(st: Any, target: str, old: int, new: int, obj_path: str, source: str, sha: str, prog_ids: str) -> None:
    """Version `new` is active and runs `old`'s programs; `old` is retired; links are `new`'s."""
    with st.transaction() as db:
        db.execute("INSERT INTO versions(target, version, state, source, source_sha256, object, prog_ids, "
                   "created_at) VALUES(?,?,?,?,?,?,?,?)",
                   (target, new, "active", source, sha, obj_path, prog_ids, time.time()))
        db.execute("UPDATE versions SET state='retired' WHERE target=? AND version=?", (target, old))
        db.execute("UPDATE attachments SET version=? WHERE target=? AND version=?", (new, target, old))


def _copy(src: str, dst: str) -> None:
    if os.path.exists(src):
        shutil.copyfile(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)


class NotInPlace(NetcError):
    """This change needs a full load (the reason is the message)."""


def load_in_place(st: Any, obj_bytes: bytes, source: str, target: Any, manifest: dict[str, Any],
                  program: Program, report: Any) -> None:
    """Apply `program` to the running version's maps, or raise NotInPlace before changing anything.
    The caller holds the lock and fills `report` (loader.LoadReport)."""
    from netc.runtime import loader, services

    prev = st.active(target.name)
    with open(prev.object, "rb") as fh:
        prev_obj = fh.read()
    if not same_shape(prev_obj, obj_bytes):
        raise NotInPlace("its programs differ from the running ones (features added or removed)")
    base, _ = loader._paths(target.name)
    wanted = {m["name"] for m in manifest["plan"]["maps"]}
    for name in loader.SHARED:
        if name in wanted and not os.path.exists(os.path.join(base, "shared", name)):
            raise NotInPlace(f"the shared map {name} is not there yet (the target was loaded by an older netc)")
    from netc.api import read_manifest

    # the services of the running version: recorded with its map contents, else from its manifest
    services_json = _services_text([s.to_json() for s in program.services])
    prev_services = saved_services(prev.object)
    if prev_services is None:
        prev_services = _services_text(read_manifest(prev_obj)["ir"]["services"])
    if prev_services != services_json:
        raise NotInPlace("its services differ")
    t = time.perf_counter()
    saved = saved_contents(prev.object)
    if saved is not None:
        old = Contents(maps=saved)
        with open(loader._ids_path(prev.object)) as fh:
            ids = Ids.from_json(json.load(fh))
    else:
        _, ids, _, old = version_contents(prev.object)
    inv, gone = loader.live_inventory(target)
    report.skipped = gone
    new = Materializer(program).run(inv, ids)
    lb = None
    if program.services:
        lb = services.compute(program, inv, services.drained_set(st, target.name), ids,
                              carry=services.previous_backend_ids(prev.object))
    report.timings["materialize_s"] = time.perf_counter() - t
    report.entries = new.entries()
    version = st.next_version(target.name)
    report.version = version
    obj_path = os.path.join(st.dir, "objects", f"{target.name}-v{version}.bpf.o")
    t = time.perf_counter()
    with loader._pinned_maps(target.name, prev.version) as maps:
        live = slots.read_generation(maps[slots.GEN_MAP])
        deltas = {name: loader._delta(old, new, name, live) for name in loader.MAPS}
        if addr4.ROOT_MAP not in maps:
            raise NotInPlace("the running version has no IPv4 arrays (loaded by an older netc)")
        layout = addr4.Layout.read(maps[addr4.ROOT_MAP], maps[addr4.NODES_MAP], old.maps.get("netc_addrs", {}),
                                   live)
        upd = layout.plan_change(old.maps.get("netc_addrs", {}), new.maps.get("netc_addrs", {}))
        if upd.short:
            raise NotInPlace(f"{addr4.NODES_MAP} needs {upd.need:,} new chunks, more than it has free")
        for name, d in deltas.items():
            need = loader._entries(new, name) + len(d.delete)
            if need > maps[name].max_entries:
                raise NotInPlace(f"{name} needs {need:,} entries, more than the {maps[name].max_entries:,} "
                                 "it was made with")
        report.timings["diff_s"] = time.perf_counter() - t
        loader._write_atomically(obj_path, obj_bytes)
        loader._write_atomically(loader._ids_path(obj_path), json.dumps(ids.to_json()).encode())
        loader._write_atomically(loader._snapshot_path(obj_path), json.dumps(inv.to_json()).encode())
        save_contents(obj_path, new, program)
        _copy(services.baseline_path(prev.object), services.baseline_path(obj_path))
        write_marker(st.dir, target.name, kind="policy", **{"from": prev.version}, to=version, gen=live,
                     object=obj_path, source=source, source_sha256=manifest["source_sha256"],
                     prog_ids=prev.prog_ids)
        t = time.perf_counter()
        try:
            nodes, roots = layout.apply(upd)   # new chunks, and their root slots in the inactive half
            maps[addr4.NODES_MAP].update_batch(nodes)
            maps[addr4.ROOT_MAP].update_batch(addr4.in_half(roots, 1 - live))
            slots.stage(maps, deltas)
            loader._fault("in-place-staged")
        except BaseException:
            settle_all(maps, old)   # take it back: no live answer has changed yet
            clear_marker(st.dir, target.name)
            loader._remove_version_files(obj_path)
            raise
        slots.flip(maps, live)
        report.timings["stage_flip_s"] = time.perf_counter() - t
        loader._fault("in-place-flipped")
        record(st, target.name, prev.version, version, obj_path, source, manifest["source_sha256"],
               prev.prog_ids)
        os.rename(os.path.join(base, f"v{prev.version}"), os.path.join(base, f"v{version}"))
        if lb is not None:
            report.written_lb = services.write_live(target.name, version, obj_path, lb, ids)
        report.attached = [(c, h) for c in loader.attach_new(st, target, inv, version, report.mode)
                           for h in ("ingress", "egress")]
        t = time.perf_counter()
        maps[addr4.ROOT_MAP].update_batch(addr4.in_half(roots, live))
        slots.settle(maps, deltas)
        report.timings["settle_s"] = time.perf_counter() - t
    clear_marker(st.dir, target.name)
    report.detached = loader.detach_absent(st, target, inv, gone)
    report.in_place = True
    report.written = {name: len(d.stage) for name, d in deltas.items()}
    report.written[addr4.NODES_MAP] = len(nodes)
    report.written[addr4.ROOT_MAP] = len(roots)
    report.deleted = {name: len(d.delete) for name, d in deltas.items()}
    report.unchanged = sum(loader._entries(old, n) for n in loader.MAPS) - sum(
        d.changed + len(d.delete) for d in deltas.values())
