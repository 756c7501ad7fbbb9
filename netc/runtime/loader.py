"""`netc load`, `netc unload`, `netc sync` and `netc status`: compiled objects onto containers.

A load is a sequence of steps, each of which either completes or leaves the previous version
running:

1. materialize the manifest against the inventory (pure, no kernel);
2. open and load the object (the verifier; a rejection changes nothing);
3. fill every map completely, then pin maps and programs under v<N>_partial/ and publish them by
   renaming the directory to v<N>/ (a crash before the rename leaves only a _partial to sweep;
   bpffs refuses dots in names);
4. record version N as `loading` with its program ids;
5. for every container: replace the program of its pinned tcx links in one step
   (BPF_LINK_UPDATE), or create and pin a link for a new container. A packet sees the old
   version or the new one, each with complete maps — never no program, never a half-filled map;
6. commit: N becomes active, the previous version is retired and its pins removed.

If step 5 fails, every link already moved is moved back and new links are removed. If the
process dies (kill -9) anywhere, the next netc command holding the lock rolls an unfinished load
back from the pins and the database (recover()). A container that disappears during a load is
reported and skipped; the others are loaded.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from netc.errors import AttachError, LoadError, NetcError
from netc.ir.nodes import Program
from netc.runtime import addr4, inplace, links, slots
from netc.runtime.inventory import Container, Inventory
from netc.runtime.links import Hook
from netc.runtime.materialize import Contents, Ids, Materializer, materialize
from netc.runtime.slots import MapDelta
from netc.runtime.state import State, StateError, bpffs_root, exclusive

PROGRAM_FOR_HOOK = {Hook.INGRESS: "netc_from_container", Hook.EGRESS: "netc_to_container"}
MAPS = ("netc_endpoints", "netc_addrs", "netc_rules", "netc_wild")   # one set per version
# The service maps, also one set per version (filled by runtime/services.py; pinned with MAPS).
LB_MAPS = ("netc_services", "netc_backends", "netc_lb_table", "netc_lb_rr")
# IPv4 remote addresses: a multibit trie in two arrays (runtime/addr4.py), also one set per version
VERSION_MAPS = MAPS + addr4.ARRAY_MAPS + (slots.GEN_MAP,) + LB_MAPS
# Kept across versions (pinned under <target>/shared): counters keyed by stable rule ids, the event
# ring a `netc monitor` is reading, the loss/overflow statistics, connection tracking and the
# clients `affinity client-ip` keeps on their backends.
SHARED = ("netc_counters", "netc_events", "netc_stats", "netc_ct", "netc_ct4", "netc_ct_timeouts",
          "netc_ct_counters", "netc_affinity", "netc_ct_rev")
AFFINITY_UNUSED = 64   # netc_affinity's size while no service asks for affinity


def write_ct_timeouts(m: Any, overrides: dict[int, float] | None = None) -> None:
    """Fill netc_ct_timeouts (ns by state) from the defaults, or seconds given per state."""
    from netc.runtime import abi

    secs = {**abi.CT_TIMEOUT_DEFAULTS_S, **(overrides or {})}
    for state, s in secs.items():
        m.update(state.to_bytes(4, "little"), int(s * 1e9).to_bytes(8, "little"))
BPF_FS_MAGIC = 0xCAFE4A11
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


class PrivilegeError(NetcError):
    pass


# ---------------------------------------------------------------------- environment
def check_privileges() -> None:
    """Loading needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN: say so plainly."""
    try:
        with open("/proc/self/status") as fh:
            eff = next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        eff = 0
    has_bpf = bool(eff & (1 << CAP_BPF)) or bool(eff & (1 << CAP_SYS_ADMIN))
    if not has_bpf or not eff & (1 << CAP_NET_ADMIN):
        missing = [n for n, bit in (("CAP_BPF", CAP_BPF), ("CAP_NET_ADMIN", CAP_NET_ADMIN))
                   if not eff & (1 << bit) and not (n == "CAP_BPF" and eff & (1 << CAP_SYS_ADMIN))]
        raise PrivilegeError("loading programs into the kernel needs root, or the capabilities "
                             + " and ".join(missing) + "; run it with sudo (netc check, test, explain "
                             "and compile need no privileges)")


def _is_bpffs(path: str) -> bool:
    class _Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    st = _Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_bpffs(root: str | None = None) -> str:
    """Mount bpffs on /sys/fs/bpf when it is absent (these machines start without it)."""
    root = root or bpffs_root()
    mount_point = "/sys/fs/bpf"
    if root.startswith(mount_point) and not _is_bpffs(mount_point):
        os.makedirs(mount_point, exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", mount_point.encode(), b"bpf", 0, None) != 0:
            err = ctypes.get_errno()
            raise LoadError(f"cannot mount bpffs on {mount_point}: {os.strerror(err)}")
    os.makedirs(root, exist_ok=True)
    if not _is_bpffs(root):
        raise LoadError(f"{root} is not on a bpf filesystem; pins need bpffs (mount -t bpf bpf /sys/fs/bpf)")
    return root


# ---------------------------------------------------------------------- targets
@dataclass
class Target:
    """Where a policy runs: a set of containers whose host-side veths share a namespace."""

    name: str
    inventory: Inventory
    inventory_ref: str          # a file path, or lab:<name>
    node_netns: str | None

    def netns(self) -> Any:
        from netc.runtime.netns import in_netns

        return in_netns(self.node_netns) if self.node_netns else nullcontext()


def resolve_target(*, inventory: str | None = None, lab: str | None = None, name: str | None = None) -> Target:
    if lab is not None:
        from netc.runtime.lab import lab_by_name, latest_lab

        lb = latest_lab() if lab == "" else lab_by_name(lab)
        inv = Inventory.load(lb.inventory_path)
        return Target(name or lb.name, inv, f"lab:{lb.name}", inv.node_netns)
    if inventory is None:
        raise NetcError("say where to load: --inventory FILE or --lab NAME")
    inv = Inventory.load(inventory)
    tname = name or inv.node_netns or os.path.splitext(os.path.basename(inventory))[0]
    return Target(tname, inv, os.path.abspath(inventory), inv.node_netns)


def reload_inventory(ref: str) -> Inventory:
    if ref.startswith("lab:"):
        from netc.runtime.lab import lab_by_name

        return Inventory.load(lab_by_name(ref[4:]).inventory_path)
    return Inventory.load(ref)


def _current_ifindexes(target: Target) -> dict[str, int]:
    """Host-side interface name → ifindex, as the node namespace sees it now."""
    import socket

    with target.netns():   # if_nameindex asks the kernel of the calling thread's namespace
        return {name: idx for idx, name in socket.if_nameindex()}


def live_inventory(target: Target) -> tuple[Inventory, list[tuple[str, str]]]:
    """The inventory with ifindexes refreshed from the kernel; containers without their interface
    are left out and reported (a container that disappeared)."""
    names = _current_ifindexes(target)
    kept: list[Container] = []
    gone: list[tuple[str, str]] = []
    for c in target.inventory.containers:
        if c.interface is None:
            gone.append((c.name, "the inventory names no host-side interface"))
            continue
        idx = names.get(c.interface)
        if idx is None:
            gone.append((c.name, f"interface {c.interface} does not exist (the container is gone)"))
            continue
        kept.append(Container(c.name, c.addresses, c.labels, c.netns, c.interface, idx))
    return Inventory(kept, target.inventory.host_addresses, target.inventory.node_netns), gone


# ---------------------------------------------------------------------- fault injection (tests)
def _fault(stage: str) -> None:
    """NETC_FAULT=kill:<stage> kills this process at a stage of a load; the crash tests use it."""
    want = os.environ.get("NETC_FAULT", "")
    if want == f"kill:{stage}":
        os.kill(os.getpid(), signal.SIGKILL)
    if want == f"fail:{stage}":
        raise AttachError(f"injected failure at {stage}")


# ---------------------------------------------------------------------- the load
@dataclass
class LoadReport:
    target: str
    version: int
    previous: int | None
    mode: str
    attached: list[tuple[str, str]] = field(default_factory=list)      # (container, hook)
    skipped: list[tuple[str, str]] = field(default_factory=list)       # (container, why)
    detached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    entries: int = 0
    map_bytes: int = 0
    # a policy change in place (runtime/inplace.py): the running programs and maps were kept
    in_place: bool = False
    full_reason: str | None = None      # why a version of a loaded target was loaded in full
    written: dict[str, int] = field(default_factory=dict)    # entries staged per map (in place)
    deleted: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0                   # entries the change left alone
    written_lb: dict[str, int] = field(default_factory=dict)


def _paths(target: str) -> tuple[str, str]:
    base = os.path.join(bpffs_root(), _pin_name(target))
    return base, os.path.join(base, "links")


def _pin_name(text: str) -> str:
    """bpffs refuses names with a dot (EPERM); container names may have one: percent-encode."""
    return text.replace("%", "%25").replace(".", "%2e").replace("/", "%2f")


def _unpin_name(text: str) -> str:
    return text.replace("%2f", "/").replace("%2e", ".").replace("%25", "%")


def _link_pin(target: str, container: str, hook: Hook) -> str:
    return os.path.join(_paths(target)[1], f"{_pin_name(container)}@{hook.value}")


def _split_link_entry(entry: str) -> tuple[str, Hook]:
    name, _, hook = entry.rpartition("@")
    return _unpin_name(name), Hook(hook)


def _rm_pins(path: str) -> None:
    """Remove a pin directory (bpffs allows unlink and rmdir; shutil.rmtree does both)."""
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def map_sizes(contents: Contents, rules: int = 0, endpoints: int = 0, lb: Any = None,
              program: Program | None = None) -> dict[str, int]:
    """max_entries for each map: what the contents need plus headroom for inventory changes; a
    size the kernel cannot give is refused here, before loading, with the figure needed.
    With `lb` (services.LbContents) and `program`, the service maps are sized too."""
    out = {}
    trie = addr4.trie_of(contents)
    for name in MAPS:
        n = _entries(contents, name)
        out[name] = max(64, n + n // 4 + 64)
    out[addr4.ROOT_MAP] = addr4.ROOT_MAP_SLOTS
    out[addr4.NODES_MAP] = addr4.nodes_size(trie.chunks)
    # counters are allocated on first use; this bounds them (rule x endpoint x direction x action)
    out["netc_counters"] = min(1 << 20, max(65536, (rules + 4) * max(1, endpoints) * 2))
    if lb is not None and program is not None:
        from netc.codegen.planner import AFFINITY_ENTRIES, CT_ENTRIES, CT_REV_UNUSED
        from netc.runtime import services

        out["netc_backends"] = services.backends_size(lb, contents.ids)
        out["netc_lb_table"] = max(1, services.lb_table_slots(program))
        out["netc_affinity"] = AFFINITY_ENTRIES if any(s.affinity_s for s in program.services) else AFFINITY_UNUSED
        # a service connection's reverse entry lives as long as its forward one: the same size
        out["netc_ct_rev"] = CT_ENTRIES if program.services else CT_REV_UNUSED
        # entries, not sizes: the service hash holds one per VIP entry
        out["netc_services"] = max(1, sum(len(s.vips) for s in program.services))
    check_map_budget(contents, out)
    return out


# Bytes the kernel spends per entry beyond key and value (hash element / LPM node headers),
# rounded up: enough to say before loading whether a policy fits, not an exact account.
ENTRY_OVERHEAD = 64
MAX_ENTRIES = (1 << 31) - 1


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _entries(contents: Contents, name: str) -> int:
    """Entries a map of MAPS holds: netc_addrs holds no v4-mapped prefix (the arrays do)."""
    if name == "netc_addrs":
        return len(_lpm_addrs(contents))
    return len(contents.maps.get(name, {}))


def _lpm_addrs(contents: Contents) -> dict[bytes, bytes]:
    if contents.addr4 is not None:   # laid out already (a load): it kept them
        return contents.addr4.lpm  # type: ignore[no-any-return]
    return addr4.lpm_entries(contents.maps.get("netc_addrs", {}))


def check_map_budget(contents: Contents, sizes: dict[str, int]) -> None:
    """Refuse, before anything is loaded, a policy × inventory whose maps cannot be had: say how
    many entries and bytes it needs. (Never a "map full" at run time instead.)"""
    from netc.runtime import abi

    widths = {"netc_endpoints": 4 + abi.ENDPOINT_SLOTS.size,
              "netc_addrs": abi.ADDR_KEY.size + abi.ADDR_SLOTS.size,
              "netc_rules": abi.RULE_KEY.size + abi.VERDICT_SLOTS.size,
              "netc_wild": abi.WILD_KEY.size + abi.VERDICT_SLOTS.size}
    # maps whose memory the kernel allocates at creation, whatever they hold: counted by size
    prealloc = {addr4.ROOT_MAP: addr4.SLOT.size, addr4.NODES_MAP: addr4.SLOT.size,
                "netc_backends": abi.BACKEND.size, "netc_lb_table": 8, "netc_services":
                abi.SVC_KEY.size + abi.SERVICE.size + ENTRY_OVERHEAD, "netc_affinity":
                abi.AFFINITY_KEY.size + abi.AFFINITY.size + ENTRY_OVERHEAD}
    limit = int(float(os.environ.get("NETC_MAP_MEMORY_LIMIT", str(4 << 30))))
    need = 0
    for name, width in widths.items():
        n = sizes.get(name, 0)
        if n > MAX_ENTRIES:
            raise LoadError(f"map {name} would need {n:,} entries; a BPF map holds at most {MAX_ENTRIES:,}")
        need += _entries(contents, name) * (width + ENTRY_OVERHEAD)
    for name, width in prealloc.items():
        n = sizes.get(name, 0)
        if n > MAX_ENTRIES:
            raise LoadError(f"map {name} would need {n:,} entries; a BPF map holds at most {MAX_ENTRIES:,}")
        need += n * width
    if need > limit:
        counts = ", ".join([f"{name} {_entries(contents, name):,}" for name in widths]
                           + [f"{name} {sizes[name]:,}" for name in prealloc if name in sizes])
        raise LoadError(f"this policy on this inventory needs about {_size(need)} of kernel map memory "
                        f"({counts} entries), more than the limit of {_size(limit)} "
                        "(NETC_MAP_MEMORY_LIMIT); split the policy, or raise the limit if the node has the memory")


def _max_entries(fd: int) -> int:
    from netc.runtime.libbpf import map_info

    return int(map_info(fd).max_entries)


def _open_pinned_prog(path: str) -> int:
    from netc.runtime.libbpf import bpf_obj_get

    return bpf_obj_get(path)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A load holds millions of small acyclic objects at 100,000 rules (the manifest's IR, the map
    contents): the cyclic GC would walk them all again each time they grow by a quarter (~4 s of
    such a load) and find nothing to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(obj_bytes: bytes, source: str, target: Target, *, mode: str | None = None,
         wait_s: float = 30.0, conntrack_size: int | None = None, full: bool = False) -> LoadReport:
    """Load a compiled policy onto a target. A new version of the same shape as the running one is
    applied in place (runtime/inplace.py) unless `full` or a `conntrack_size` asks for new maps."""
    with _gc_paused():
        return _load(obj_bytes, source, target, mode=mode, wait_s=wait_s, conntrack_size=conntrack_size,
                     full=full)


def _load(obj_bytes: bytes, source: str, target: Target, *, mode: str | None,
          wait_s: float, conntrack_size: int | None, full: bool) -> LoadReport:
    from netc.api import read_manifest
    from netc.runtime import abi
    from netc.runtime.libbpf import BpfObject, bpf_obj_get, bpf_obj_pin

    check_privileges()
    ensure_bpffs()
    t0 = time.perf_counter()
    full = full or bool(conntrack_size)
    manifest = read_manifest(obj_bytes)
    program = Program.from_json(manifest["ir"])
    with exclusive(wait_s=wait_s), State() as st:
        recover(st, target.name)
        inv, gone = live_inventory(target)
        prev = st.active(target.name)
        version = st.next_version(target.name)
        want_mode = mode or os.environ.get("NETC_ATTACH") or None
        if want_mode is None:
            with target.netns():
                want_mode = "tcx" if links.tcx_supported() else "tc"
        row = st.target(target.name)
        if row is not None and row[3] != want_mode and prev is not None:
            raise LoadError(f"target {target.name} runs in {row[3]} mode; unload it before switching to {want_mode}")
        report = LoadReport(target.name, version, prev.version if prev else None, want_mode, skipped=gone)
        if prev is not None and not full:
            # same programs as the running version: rewrite only the entries that change
            try:
                inplace.load_in_place(st, obj_bytes, source, target, manifest, program, report)
            except inplace.NotInPlace as why:
                report.full_reason = str(why)
                report.version = version
                report.skipped = gone
            else:
                _retire_old(st, target.name)
                report.timings["total_s"] = time.perf_counter() - t0
                return report

        t = time.perf_counter()
        contents = materialize(program, inv)
        from netc.runtime import services

        # services: backends keep the ids the previous version gave them (affinity and conntrack
        # entries, shared between versions, hold ids); drained backends stay drained
        lb = services.compute(program, inv, services.drained_set(st, target.name), contents.ids,
                              carry=services.previous_backend_ids(prev.object) if prev else None)
        lb_maps = services.initial_maps(lb) if program.services else {}
        report.timings["materialize_s"] = time.perf_counter() - t
        report.entries = contents.entries() + sum(len(m) for m in lb_maps.values())

        obj_path = os.path.join(st.dir, "objects", f"{target.name}-v{version}.bpf.o")
        base, links_dir = _paths(target.name)
        vdir = os.path.join(base, f"v{version}")
        partial = vdir + "_partial"
        moved: list[tuple[str, Hook, str, bool]] = []   # (container, hook, pin, created)
        obj = None
        try:
            _write_atomically(obj_path, obj_bytes)
            _write_atomically(_snapshot_path(obj_path), json.dumps(inv.to_json()).encode())
            _rm_pins(partial)
            t = time.perf_counter()
            obj = BpfObject.open_mem(obj_bytes, "netc")
            sizes = map_sizes(contents, len(program.rules), len(inv.containers), lb=lb, program=program)
            shared_dir = os.path.join(base, "shared")
            reused = []
            replaced = []
            for name in SHARED:
                pin = os.path.join(shared_dir, name)
                if os.path.exists(pin):
                    fd = bpf_obj_get(pin)
                    try:
                        if name in ("netc_affinity", "netc_ct_rev") and _max_entries(fd) < sizes[name]:
                            replaced.append(name)   # made small while no service wanted it
                            continue
                        obj.reuse_map(name, fd)
                    finally:
                        os.close(fd)   # libbpf keeps its own duplicate
                    reused.append(name)
            if conntrack_size:
                for name in abi.CT_TABLES:   # one table per address family
                    sizes[name] = conntrack_size
                if program.services:
                    sizes["netc_ct_rev"] = conntrack_size
            for name, n in sizes.items():
                if name not in reused:
                    obj.set_max_entries(name, n)
            obj.load()
            _fault("after-verify")
            report.timings["verify_s"] = time.perf_counter() - t
            t = time.perf_counter()
            maps = obj.maps
            for name in MAPS:
                items = slots.encode_all(name, _lpm_addrs(contents) if name == "netc_addrs"
                                         else contents.maps.get(name, {}))
                if items:
                    maps[name].update_batch(items)
                m = maps[name]
                report.map_bytes += sizes[name] * (m.key_size + m.value_size)
            if addr4.ROOT_MAP not in maps:
                raise LoadError(f"{source}: the object has no {addr4.ROOT_MAP} map (compiled by an older netc); "
                                "compile it again")
            addr4.write(maps, contents)
            for name in addr4.ARRAY_MAPS:
                report.map_bytes += sizes[name] * maps[name].value_size   # an array stores no keys
            for name, lb_items in lb_maps.items():
                if name not in maps:
                    raise LoadError(f"{source}: the object has no {name} map (compiled by an older netc); "
                                    "compile it again")
                maps[name].update_batch(list(lb_items.items()))
                m = maps[name]
                report.map_bytes += sizes.get(name, len(lb_items)) * (m.key_size + m.value_size)
            if "netc_ct_timeouts" not in reused:
                write_ct_timeouts(maps["netc_ct_timeouts"])
            if "netc_ct" in reused and "netc_ct4" not in reused:
                _move_ipv4_connections(maps["netc_ct"], maps["netc_ct4"])
            os.makedirs(shared_dir, exist_ok=True)
            for name in SHARED:
                if name not in reused and name in maps:
                    if name in replaced:
                        os.unlink(os.path.join(shared_dir, name))
                    bpf_obj_pin(maps[name].fd, os.path.join(shared_dir, name))
            report.timings["fill_s"] = time.perf_counter() - t
            _fault("after-fill")
            os.makedirs(os.path.join(partial, "maps"))
            os.makedirs(os.path.join(partial, "progs"))
            for name in VERSION_MAPS:
                if name in maps:
                    bpf_obj_pin(maps[name].fd, os.path.join(partial, "maps", name))
            progs = obj.programs
            for pname, fd in progs.items():
                bpf_obj_pin(fd, os.path.join(partial, "progs", pname))
            _write_atomically(_ids_path(obj_path), json.dumps(contents.ids.to_json()).encode())
            inplace.save_contents(obj_path, contents, program)
            if program.services:
                services.write_baseline(obj_path, lb)
            os.rename(partial, vdir)
            _fault("after-pin")
            prog_ids = {p: links.prog_id(fd) for p, fd in progs.items()}
            with st.transaction() as db:
                db.execute("INSERT INTO targets(name, inventory, node_netns, mode) VALUES(?,?,?,?) "
                           "ON CONFLICT(name) DO UPDATE SET inventory=excluded.inventory, "
                           "node_netns=excluded.node_netns, mode=excluded.mode",
                           (target.name, target.inventory_ref, target.node_netns, want_mode))
                db.execute("INSERT INTO versions(target, version, state, source, source_sha256, object, "
                           "prog_ids, created_at) VALUES(?,?,?,?,?,?,?,?)",
                           (target.name, version, "loading", source, manifest["source_sha256"], obj_path,
                            json.dumps(prog_ids), time.time()))
            _fault("after-record")

            # ---- attach: move every link (a failure anywhere above or here puts everything back)
            t = time.perf_counter()
            os.makedirs(links_dir, exist_ok=True)
            with target.netns():
                for i, c in enumerate(inv.containers):
                    assert c.ifindex is not None and c.interface is not None
                    for hook in (Hook.INGRESS, Hook.EGRESS):
                        pfd = progs[PROGRAM_FOR_HOOK[hook]]
                        pin = _link_pin(target.name, c.name, hook)
                        try:
                            created = _attach_one(want_mode, pfd, c, hook, pin, bpf_obj_get, bpf_obj_pin)
                        except AttachError as exc:
                            if c.interface not in _current_ifindexes(target):
                                report.skipped.append((c.name, f"disappeared during the load ({exc})"))
                                break
                            raise
                        moved.append((c.name, hook, pin, created))
                        report.attached.append((c.name, hook.value))
                    if i == 0:
                        _fault("mid-attach")
                _fault("after-attach")
        except BaseException:
            _roll_back(st, target, moved, prev, want_mode)
            _rm_pins(partial)
            _rm_pins(vdir)
            if prev is None:
                _rm_pins(base)   # a first load that failed leaves nothing: no shared maps either
            with st.transaction() as db:
                db.execute("DELETE FROM versions WHERE target=? AND version=?", (target.name, version))
                if prev is None:
                    db.execute("DELETE FROM targets WHERE name=?", (target.name,))
            _remove_version_files(obj_path)
            if obj is not None:
                obj.close()
            raise
        try:
            report.timings["attach_s"] = time.perf_counter() - t

            # ---- commit
            attached = {c for c, _ in report.attached}
            with st.transaction() as db:
                for c in inv.containers:
                    if c.name not in attached:
                        continue
                    for hook in (Hook.INGRESS, Hook.EGRESS):
                        db.execute("INSERT OR REPLACE INTO attachments VALUES(?,?,?,?,?,?,?,?,?)",
                                   (target.name, c.name, hook.value, c.interface, c.ifindex, want_mode,
                                    _link_pin(target.name, c.name, hook) if want_mode == "tcx" else None,
                                    version, time.time()))
                db.execute("UPDATE versions SET state='retired' WHERE target=? AND state='active'",
                           (target.name,))
                db.execute("UPDATE versions SET state='active', load_seconds=? WHERE target=? AND version=?",
                           (time.perf_counter() - t0, target.name, version))
            _fault("after-commit")
        finally:
            obj.close()
    # outside the object: the old version's pins go, containers no longer in the inventory detach
    with exclusive(wait_s=wait_s), State() as st:
        for a in st.attachments(target.name):
            if a.container not in {c for c, _ in report.attached} and a.container not in {g for g, _ in gone}:
                _detach(st, target, a.container, Hook(a.hook), a.mode, a.ifindex, a.pin)
                if a.container not in report.detached:
                    report.detached.append(a.container)
        _retire_old(st, target.name)
    report.timings["total_s"] = time.perf_counter() - t0
    return report


def _move_ipv4_connections(ct: Any, ct4: Any) -> None:
    """A target an older netc loaded tracks IPv4 connections in netc_ct too: move them to netc_ct4,
    where this program looks them up, so they keep going across the upgrade. (One the old program
    creates between this and the attachment is forgotten, as after a flush.)"""
    from netc.runtime import abi

    for key, value in list(ct.items()):
        name, key4 = abi.ct_table(key)
        if name == "netc_ct4":
            ct4.update(key4, value)
            ct.delete(key)


def _write_atomically(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)


def _ids_path(obj_path: str) -> str:
    return obj_path[: -len(".bpf.o")] + ".ids.json"


def _snapshot_path(obj_path: str) -> str:
    """The inventory the version's maps were last written for: the baseline of the next sync."""
    return obj_path[: -len(".bpf.o")] + ".inventory.json"


def _remove_version_files(obj_path: str) -> None:
    from netc.runtime.services import baseline_path

    for path in (obj_path, _ids_path(obj_path), _snapshot_path(obj_path), baseline_path(obj_path),
                 inplace._cache_path(obj_path), _snapshot_path(obj_path) + ".next"):
        for p in (path, path + ".tmp"):
            if os.path.exists(p):
                os.unlink(p)


def _attach_one(mode: str, prog_fd: int, c: Container, hook: Hook, pin: str, obj_get: Any, obj_pin: Any) -> bool:
    """Point the container's hook at prog_fd; True when a new attachment was made."""
    assert c.ifindex is not None
    if mode == "tc":
        existed = links.tc_prog_id(c.ifindex, hook) is not None
        links.tc_attach(prog_fd, c.ifindex, hook, PROGRAM_FOR_HOOK[hook])
        return not existed
    if os.path.exists(pin):
        fd = obj_get(pin)
        try:
            if links.link_info(fd).ifindex == c.ifindex:
                links.link_update(fd, prog_fd)
                return False
        finally:
            os.close(fd)
        os.unlink(pin)   # the interface was re-created: its old link went with it
    fd = links.tcx_attach(prog_fd, c.ifindex, hook)
    try:
        obj_pin(fd, pin)
    finally:
        os.close(fd)
    return True


def _roll_back(st: State, target: Target, moved: list[tuple[str, Hook, str, bool]], prev: Any, mode: str) -> None:
    """Put every moved link back on the previous version; remove links this load created."""
    from netc.runtime.libbpf import bpf_obj_get

    base, _ = _paths(target.name)
    prev_progs: dict[Hook, int] = {}
    try:
        if prev is not None:
            for hook in (Hook.INGRESS, Hook.EGRESS):
                path = os.path.join(base, f"v{prev.version}", "progs", PROGRAM_FOR_HOOK[hook])
                if os.path.exists(path):
                    prev_progs[hook] = bpf_obj_get(path)
        with target.netns():
            for container, hook, pin, created in reversed(moved):
                ifindex = next((c.ifindex for c in target.inventory.containers if c.name == container), None)
                if created or hook not in prev_progs:
                    _detach_raw(mode, pin, ifindex, hook)
                elif mode == "tcx":
                    fd = bpf_obj_get(pin)
                    try:
                        links.link_update(fd, prev_progs[hook])
                    finally:
                        os.close(fd)
                elif ifindex is not None:
                    links.tc_attach(prev_progs[hook], ifindex, hook, PROGRAM_FOR_HOOK[hook])
    finally:
        for fd in prev_progs.values():
            os.close(fd)


def _detach_raw(mode: str, pin: str | None, ifindex: int | None, hook: Hook) -> None:
    from netc.runtime.libbpf import bpf_obj_get

    if mode == "tc":
        if ifindex is not None:
            links.tc_detach(ifindex, hook)
        return
    if pin and os.path.exists(pin):
        try:
            fd = bpf_obj_get(pin)
            try:
                links.link_detach(fd)
            finally:
                os.close(fd)
        except LoadError:
            pass
        os.unlink(pin)


def _detach(st: State, target: Target, container: str, hook: Hook, mode: str, ifindex: int, pin: str | None) -> None:
    with target.netns():
        _detach_raw(mode, pin, ifindex, hook)
    with st.transaction() as db:
        db.execute("DELETE FROM attachments WHERE target=? AND container=? AND hook=?",
                   (target.name, container, hook.value))


def _retire_old(st: State, target: str) -> None:
    base, _ = _paths(target)
    keep = {v.version for v in st.versions(target) if v.state == "active"}
    for v in st.versions(target):
        if v.version not in keep:
            _rm_pins(os.path.join(base, f"v{v.version}"))
    # keep the last five retired versions' rows and objects for `netc status` history
    retired = [v for v in st.versions(target) if v.state == "retired"]
    for v in retired[:-5]:
        with st.transaction() as db:
            db.execute("DELETE FROM versions WHERE target=? AND version=?", (target, v.version))
        _remove_version_files(v.object)


# ---------------------------------------------------------------------- crash recovery
def recover(st: State, target: str) -> list[str]:
    """Roll back a load that died (its version is still `loading` and nobody holds the lock), and
    finish or take back an update in place that died (runtime/inplace.py)."""
    from netc.runtime.libbpf import bpf_obj_get

    notes: list[str] = inplace.recover(st, target)
    base, links_dir = _paths(target)
    if os.path.isdir(base):
        for entry in os.listdir(base):
            if entry.endswith("_partial"):
                _rm_pins(os.path.join(base, entry))
                notes.append(f"removed the unpublished pins {entry}")
    recorded = {v.object for v in st.versions(target)}
    objects_dir = os.path.join(st.dir, "objects")
    prefix = f"{target}-v"
    for entry in os.listdir(objects_dir) if os.path.isdir(objects_dir) else ():
        if entry.startswith(prefix) and entry.endswith(".bpf.o") and \
                os.path.join(objects_dir, entry) not in recorded:
            _remove_version_files(os.path.join(objects_dir, entry))
            notes.append(f"removed the artifact of an unrecorded load {entry}")
    loading = [v for v in st.versions(target) if v.state == "loading"]
    if not loading and os.path.isdir(base):
        known = {f"v{v.version}" for v in st.versions(target)}
        for entry in os.listdir(base):
            if entry.startswith("v") and not entry.endswith("_partial") and entry not in known:
                _rm_pins(os.path.join(base, entry))
                notes.append(f"removed pins of an unrecorded version {entry}")
    if not loading:
        return notes
    row = st.target(target)
    mode = row[3] if row else "tcx"
    prev = st.active(target)
    inv_ref = row[1] if row else ""
    node_netns = row[2] if row else None
    try:
        inv = reload_inventory(inv_ref) if inv_ref else Inventory()
    except NetcError:
        inv = Inventory()
    tgt = Target(target, inv, inv_ref, node_netns)
    for v in loading:
        dead = set(json.loads(v.prog_ids).values())
        prev_progs: dict[Hook, int] = {}
        try:
            if prev is not None:
                for hook in (Hook.INGRESS, Hook.EGRESS):
                    path = os.path.join(base, f"v{prev.version}", "progs", PROGRAM_FOR_HOOK[hook])
                    if os.path.exists(path):
                        prev_progs[hook] = bpf_obj_get(path)
            ctx = tgt.netns() if node_netns and _netns_present(node_netns) else nullcontext()
            with ctx:
                if mode == "tcx" and os.path.isdir(links_dir):
                    for entry in sorted(os.listdir(links_dir)):
                        pin = os.path.join(links_dir, entry)
                        _, hook = _split_link_entry(entry)
                        fd = bpf_obj_get(pin)
                        try:
                            info = links.link_info(fd)
                            if info.prog_id not in dead:
                                continue
                            if hook in prev_progs and prev is not None and _had_attachment(st, target, entry):
                                links.link_update(fd, prev_progs[hook])
                                notes.append(f"moved {entry} back to v{prev.version}")
                            else:
                                links.link_detach(fd)
                                os.unlink(pin)
                                notes.append(f"removed {entry}, created by the interrupted v{v.version}")
                        finally:
                            os.close(fd)
                elif mode == "tc":
                    for c in inv.containers:
                        for hook in (Hook.INGRESS, Hook.EGRESS):
                            if c.ifindex is None:
                                continue
                            pid = links.tc_prog_id(c.ifindex, hook)
                            if pid in dead:
                                if hook in prev_progs:
                                    links.tc_attach(prev_progs[hook], c.ifindex, hook, PROGRAM_FOR_HOOK[hook])
                                else:
                                    links.tc_detach(c.ifindex, hook)
        finally:
            for fd in prev_progs.values():
                os.close(fd)
        _rm_pins(os.path.join(base, f"v{v.version}"))
        _remove_version_files(v.object)
        with st.transaction() as db:
            db.execute("UPDATE versions SET state='interrupted' WHERE target=? AND version=?", (target, v.version))
            if prev is None:
                db.execute("DELETE FROM attachments WHERE target=?", (target,))
        notes.append(f"rolled back the interrupted load of v{v.version}")
    return notes


def _had_attachment(st: State, target: str, entry: str) -> bool:
    container, hook = _split_link_entry(entry)
    return any(a.container == container and a.hook == hook.value for a in st.attachments(target))


def _netns_present(name: str) -> bool:
    from netc.runtime.netns import netns_exists

    return netns_exists(name)


# ---------------------------------------------------------------------- unload and status
def unload(target: str, *, wait_s: float = 30.0) -> list[str]:
    """Detach every link and remove every pin, row and object of a target, whatever state it is in."""
    check_privileges()
    ensure_bpffs()
    done: list[str] = []
    with exclusive(wait_s=wait_s), State() as st:
        row = st.target(target)
        base, links_dir = _paths(target)
        if row is None and not os.path.isdir(base):
            raise NetcError(f"nothing is loaded for `{target}`; `netc status` lists what is")
        mode = row[3] if row else "tcx"
        node_netns = row[2] if row else None
        ctx: Any = nullcontext()
        if node_netns and _netns_present(node_netns):
            from netc.runtime.netns import in_netns

            ctx = in_netns(node_netns)
        with ctx:
            if os.path.isdir(links_dir):
                for entry in sorted(os.listdir(links_dir)):
                    _detach_raw("tcx", os.path.join(links_dir, entry), None, _split_link_entry(entry)[1])
                    done.append(f"detached {entry}")
            if mode == "tc":
                for a in st.attachments(target):
                    links.tc_detach(a.ifindex, Hook(a.hook))
                    done.append(f"removed the tc filter of {a.container}.{a.hook}")
        _rm_pins(base)
        inplace.clear_marker(st.dir, target)
        objects = [v.object for v in st.versions(target)]
        with st.transaction() as db:
            for table, col in (("attachments", "target"), ("versions", "target"), ("syncs", "target"),
                               ("drained", "target"), ("targets", "name")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (target,))
        for path in objects:
            _remove_version_files(path)
        done.append(f"removed {base} and the records of `{target}`")
    return done


def status() -> list[dict[str, Any]]:
    """Every target: its versions, its attachments, and what the kernel actually runs."""
    from netc.runtime.libbpf import bpf_obj_get

    out: list[dict[str, Any]] = []
    if not os.path.exists(os.path.join(_state_dir(), "state.db")):
        return out
    busy = None
    try:
        # a load that died leaves half its links moved: put them back before reporting, unless a
        # load is running right now (then say so instead of guessing)
        with exclusive(wait_s=0), State() as st:
            for name, *_ in st.targets():
                recover(st, name)
    except StateError as exc:
        busy = str(exc)
    with State() as st:
        for name, inv_ref, node_netns, mode in st.targets():
            versions = st.versions(name)
            prog_version = {pid: v.version for v in versions for pid in json.loads(v.prog_ids).values()}
            active = st.active(name)
            atts = []
            for a in st.attachments(name):
                running = None
                problem = None
                if a.pin and os.path.exists(a.pin):
                    try:
                        fd = bpf_obj_get(a.pin)
                        try:
                            running = prog_version.get(links.link_info(fd).prog_id)
                        finally:
                            os.close(fd)
                    except (LoadError, OSError) as exc:
                        problem = str(exc)
                elif a.mode == "tcx":
                    problem = "its pinned link is missing"
                elif a.mode == "tc":
                    try:
                        ctx: Any = nullcontext()
                        if node_netns and _netns_present(node_netns):
                            from netc.runtime.netns import in_netns

                            ctx = in_netns(node_netns)
                        with ctx:
                            running = prog_version.get(links.tc_prog_id(a.ifindex, Hook(a.hook)) or -1)
                    except NetcError as exc:
                        problem = str(exc)
                atts.append({"container": a.container, "hook": a.hook, "interface": a.interface,
                             "ifindex": a.ifindex, "mode": a.mode, "version": a.version,
                             "running_version": running, "since": a.attached_at, "problem": problem})
            out.append({
                "target": name, "inventory": inv_ref, "node_netns": node_netns, "mode": mode,
                "busy": busy,
                "active_version": active.version if active else None,
                "source": active.source if active else None,
                "source_sha256": active.source_sha256 if active else None,
                "loaded_at": active.created_at if active else None,
                "versions": [{"version": v.version, "state": v.state, "source": v.source,
                              "created_at": v.created_at} for v in versions],
                "attachments": atts,
            })
    return out


def _state_dir() -> str:
    from netc.runtime.state import state_dir

    return state_dir()


# ---------------------------------------------------------------------- inventory changes
@dataclass
class SyncReport:
    target: str
    version: int
    written: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    attached: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _delta(old: Contents, new: Contents, name: str, live: int) -> MapDelta:
    """A map's change. The verdict tables change by whole (policy set, atom) groups, which an
    incremental run lists; the small maps compare entry by entry."""
    if new.changes is not None and name in new.changes:
        added, gone = new.changes[name]
        return slots.diff_groups(name, added, gone, live)
    if name == "netc_addrs":   # IPv4 remotes are in the arrays, not in the LPM trie
        return slots.diff(name, _lpm_addrs(old), _lpm_addrs(new), live)
    return slots.diff(name, old.maps.get(name, {}), new.maps.get(name, {}), live)


def attach_new(st: State, target: Target, inv: Inventory, version: int, mode: str) -> list[str]:
    """Attach the running version's programs to the containers not attached yet; record them."""
    from netc.runtime.libbpf import bpf_obj_get, bpf_obj_pin

    base, _ = _paths(target.name)
    attached_before = {a.container for a in st.attachments(target.name)}
    attached: list[str] = []
    with target.netns():
        for c in inv.containers:
            if c.name in attached_before:
                continue
            for hook in (Hook.INGRESS, Hook.EGRESS):
                pfd = bpf_obj_get(os.path.join(base, f"v{version}", "progs", PROGRAM_FOR_HOOK[hook]))
                try:
                    _attach_one(mode, pfd, c, hook, _link_pin(target.name, c.name, hook), bpf_obj_get, bpf_obj_pin)
                finally:
                    os.close(pfd)
            attached.append(c.name)
    with st.transaction() as db:
        for c in inv.containers:
            if c.name in attached:
                for hook in (Hook.INGRESS, Hook.EGRESS):
                    db.execute("INSERT OR REPLACE INTO attachments VALUES(?,?,?,?,?,?,?,?,?)",
                               (target.name, c.name, hook.value, c.interface, c.ifindex, mode,
                                _link_pin(target.name, c.name, hook) if mode == "tcx" else None, version,
                                time.time()))
    return attached


def detach_absent(st: State, target: Target, inv: Inventory, gone: list[tuple[str, str]]) -> list[str]:
    """Detach the containers that are neither in the inventory nor merely unreachable now."""
    present = {c.name for c in inv.containers} | {g for g, _ in gone}
    detached: list[str] = []
    for a in st.attachments(target.name):
        if a.container not in present:
            _detach(st, target, a.container, Hook(a.hook), a.mode, a.ifindex, a.pin)
            if a.container not in detached:
                detached.append(a.container)
    return detached


@contextmanager
def _pinned_maps(target: str, version: int) -> Iterator[dict[str, Any]]:
    from netc.runtime.libbpf import Map

    base, _ = _paths(target)
    maps = {n: Map.from_pinned(os.path.join(base, f"v{version}", "maps", n)) for n in MAPS + (slots.GEN_MAP,)}
    for n in addr4.ARRAY_MAPS:
        path = os.path.join(base, f"v{version}", "maps", n)
        if os.path.exists(path):   # a version from before IPv4 remotes moved to arrays has none
            maps[n] = Map.from_pinned(path)
    try:
        yield maps
    finally:
        for m in maps.values():
            m.close()


class Deployment:
    """The running version of a target, kept in memory so inventory changes apply in milliseconds:
    the materialization is repeated against the new inventory with the same ids, and only the
    entries that differ are written (new entries first, then changed, deletions last)."""

    def __init__(self, target: str):
        with _gc_paused():
            self._init(target)

    def _init(self, target: str) -> None:
        from netc.api import read_manifest

        with State() as st:
            row = st.target(target)
            active = st.active(target)
            if row is None or active is None:
                raise NetcError(f"nothing is loaded for `{target}`")
            self.target = Target(target, reload_inventory(row[1]), row[1], row[2])
            self.mode = row[3]
            self.version = active.version
            self.object_path = active.object
            with open(active.object, "rb") as fh:
                self.object = fh.read()
            with open(_ids_path(active.object)) as fh:
                self.ids = Ids.from_json(json.load(fh))
            # the baseline is what the maps hold: the inventory they were last written for
            with open(_snapshot_path(active.object)) as fh:
                written_for = Inventory.from_dict(json.load(fh), _snapshot_path(active.object))
        self.program = Program.from_json(read_manifest(self.object)["ir"])
        self.materializer = Materializer(self.program)
        self.contents = self.materializer.run(written_for, self.ids)
        self.addr4: addr4.Layout | None = None   # read from the kernel at the first sync (mapped)

    def _check_room(self, maps: dict[str, Any], new: Contents, deltas: dict[str, MapDelta]) -> None:
        """An inventory change that would overflow a loaded map is refused before any write
        (removed keys stay until the new entries are live: both count)."""
        for name in MAPS:
            need = _entries(new, name) + len(deltas[name].delete)
            have = maps[name].max_entries
            if need > have:
                raise LoadError(f"this inventory change needs {need:,} entries in {name}, which was sized "
                                f"for {have:,} when v{self.version} loaded; run `netc load` again to "
                                "resize (nothing was changed)")

    def _addr4_plan(self, maps: dict[str, Any], new: Contents, live: int) -> addr4.Update:
        """What the IPv4 arrays need for `new`; refused before any write when they lack room."""
        if self.addr4 is None:
            self.addr4 = addr4.Layout.read(maps[addr4.ROOT_MAP], maps[addr4.NODES_MAP],
                                           self.contents.maps.get("netc_addrs", {}), live)
        upd = self.addr4.plan_change(self.contents.maps.get("netc_addrs", {}), new.maps.get("netc_addrs", {}))
        if upd.short:
            raise LoadError(f"this inventory change needs {upd.need:,} new chunks in {addr4.NODES_MAP}, which "
                            f"has {len(self.addr4.free) + len(self.addr4.retired):,} free since v{self.version} "
                            "loaded; run `netc load` again to resize (nothing was changed)")
        return upd

    def sync(self, inventory: Inventory | None = None, *, wait_s: float = 30.0) -> SyncReport:
        with _gc_paused():
            return self._sync(inventory, wait_s=wait_s)

    def _sync(self, inventory: Inventory | None, *, wait_s: float) -> SyncReport:
        t0 = time.perf_counter()
        with exclusive(wait_s=wait_s), State() as st:
            recovered = inplace.recover(st, self.target.name)
            active = st.active(self.target.name)
            if recovered or active is None or active.version != self.version:
                self.__init__(self.target.name)   # type: ignore[misc]  # another process changed it
            if inventory is not None:
                self.target.inventory = inventory
            else:
                self.target.inventory = reload_inventory(self.target.inventory_ref)
            inv, gone = live_inventory(self.target)
            new = self.materializer.run(inv, self.ids, previous=self.contents)
            report = SyncReport(self.target.name, self.version, skipped=gone)
            lb = None
            if self.program.services:
                from netc.runtime import services

                # under the lock: a `netc service drain` running now is not undone
                lb = services.compute(self.program, inv, services.drained_set(st, self.target.name), self.ids)
                try:
                    services.check_live(self.target.name, self.version, self.ids)
                except services.NoServiceMaps:
                    lb = None   # a version from before services were balanced: its policy still syncs
            snapshot = _snapshot_path(self.object_path)
            with _pinned_maps(self.target.name, self.version) as maps:
                if addr4.ROOT_MAP not in maps:
                    raise LoadError(f"v{self.version} of {self.target.name} was loaded by an older netc; "
                                    "run `netc load` again (nothing was changed)")
                # every changed entry gets the new answer in its inactive slot (IPv4 remotes: new
                # chunks, and the root slots over them in the inactive half), then one write of the
                # generation makes them all live at once (runtime/slots.py)
                live = slots.read_generation(maps[slots.GEN_MAP])
                deltas = {name: _delta(self.contents, new, name, live) for name in MAPS}
                self._check_room(maps, new, deltas)
                upd = self._addr4_plan(maps, new, live)
                # what a recovery needs to finish or take back this sync: the ids any new entry
                # holds, the inventory it is for, the generation before it
                if self.ids.dirty:
                    _write_atomically(_ids_path(self.object_path), json.dumps(self.ids.to_json()).encode())
                    self.ids.dirty = False
                _write_atomically(snapshot + ".next", json.dumps(inv.to_json()).encode())
                inplace.write_marker(st.dir, self.target.name, kind="sync", version=self.version, gen=live)
                assert self.addr4 is not None
                try:
                    nodes, roots = self.addr4.apply(upd)
                    maps[addr4.NODES_MAP].update_batch(nodes)
                    maps[addr4.ROOT_MAP].update_batch(addr4.in_half(roots, 1 - live))
                    slots.stage(maps, deltas)
                except BaseException:
                    self.addr4 = None   # read back from the kernel next time
                    raise
                _fault("sync-staged")
                slots.flip(maps, live)
                os.replace(snapshot + ".next", snapshot)
                _fault("sync-flipped")
                report.written[addr4.NODES_MAP] = len(nodes)
                report.written[addr4.ROOT_MAP] = len(roots)
                for name, d in deltas.items():
                    report.written[name] = len(d.stage)
                report.attached = attach_new(st, self.target, inv, self.version, self.mode)
                # services: new backends are enforced (above) before a table sends them traffic, and
                # a gone backend leaves the tables before its entries are deleted (below)
                if lb is not None:
                    report.written.update(services.write_live(self.target.name, self.version, self.object_path,
                                                              lb, self.ids))
                # then both slots of what changed become the new value, and removed keys go
                maps[addr4.ROOT_MAP].update_batch(addr4.in_half(roots, live))
                slots.settle(maps, deltas)
                for name, d in deltas.items():
                    report.deleted[name] = len(d.delete)
            inplace.clear_marker(st.dir, self.target.name)
            inplace.save_contents(self.object_path, new, self.program)
            report.detached = detach_absent(st, self.target, inv, gone)
        self.contents = new
        report.seconds = time.perf_counter() - t0
        with State() as st:
            st.record_sync(self.target.name, report.seconds)
        return report
