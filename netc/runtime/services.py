"""Load balancing at run time: the service maps' contents, their atomic updates, drain, and
`netc service list|show|drain|undrain` (docs/load-balancing.md, "Runtime" and "Operations").

One *VIP entry* per `vip` line of a service, numbered svc_id = 1, 2, ... over
`for s in program.services for v in s.vips` (stable for a given program). Entry k owns two
regions of `table_size` slots in netc_lb_table, starting at R_k = the sum of 2 * table_size over
the entries before it. The active region is the one its netc_services entry points at
(table_base); a new table is written into the other region, then the service entry is updated
once to point at it: a packet reads the old table or the new one, never a mix.

Backends are numbered per (VIP entry, backend name) in the version's Ids (`backends`), so an id
keeps meaning one backend while the version runs: connection-tracking and affinity entries hold
ids. The backends of an entry, in order, are exactly eval.service_backends() for the VIP's
family and port (sorted by name; drained ones left out), so the kernel picks the backend the
reference semantics picks.

The pure part (entries, ids, tables, contents) needs no kernel; the rest reads and writes the
pinned maps of a loaded target.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netc.errors import LoadError, NetcError
from netc.ir.eval import ServiceState, service_backends
from netc.ir.lb import maglev_table
from netc.ir.nodes import Balance, Program, Service, Vip
from netc.runtime import abi
from netc.runtime.inventory import Inventory
from netc.runtime.materialize import Ids

LB_MAPS = ("netc_services", "netc_backends", "netc_lb_table", "netc_lb_rr")   # one set per version
PROTOCOL_NAMES = {6: "tcp", 17: "udp"}


class ServiceError(NetcError):
    """An operator command named a service or backend the running version does not have."""


class NoServiceMaps(LoadError):
    """The running version was loaded by a netc that did not pin the service maps."""


# ---------------------------------------------------------------------- VIP entries and ids
@dataclass(frozen=True)
class VipEntry:
    svc_id: int
    service: Service
    vip: Vip
    base: int                     # first slot of region 0; region 1 follows it
    key: bytes                    # netc_svc_key
    shadowed_by: int = 0          # an earlier entry has the same (VIP, port, protocol): it wins

    @property
    def size(self) -> int:
        return self.service.table_size

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.vip.address).version

    @property
    def ident(self) -> str:
        """What names this entry across versions (svc_id is an index and may shift)."""
        return "\x1f".join((self.service.name, self.vip.address, str(self.vip.port),
                            str(self.vip.protocol.value)))

    def region_base(self, region: int) -> int:
        return self.base + region * self.size

    def service_value(self, table_base: int, table_len: int) -> bytes:
        affinity_ns = (self.service.affinity_s or 0) * 1_000_000_000
        return abi.service(self.svc_id, table_base, table_len, abi.BALANCES[self.service.balance.value],
                           affinity_ns)


def vip_entries(program: Program) -> list[VipEntry]:
    out: list[VipEntry] = []
    first: dict[bytes, int] = {}
    base = 0
    for s in program.services:
        for v in s.vips:
            svc_id = len(out) + 1
            key = abi.svc_key(v.address, v.port, v.protocol.value)
            out.append(VipEntry(svc_id, s, v, base, key, first.get(key, 0)))
            first.setdefault(key, svc_id)
            base += 2 * s.table_size
    return out


def lb_table_slots(program: Program) -> int:
    """Slots netc_lb_table needs: two regions per VIP entry (as the planner sizes it)."""
    return sum(2 * s.table_size for s in program.services for _ in s.vips)


def backend_key(entry: VipEntry, name: str) -> str:
    return entry.ident + "/" + name


# ---------------------------------------------------------------------- tables
def rr_sequence(weights: list[int]) -> list[int]:
    """Smooth weighted round-robin (nginx): indexes into `weights`, one full cycle of sum(weights)
    picks; each backend is picked `weight` times, spread out rather than in runs.

    >>> rr_sequence([5, 1, 1])
    [0, 0, 1, 0, 2, 0, 0]
    """
    total = sum(weights)
    current = [0] * len(weights)
    out: list[int] = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


@functools.lru_cache(maxsize=64)
def _maglev(names: tuple[str, ...], weights: tuple[int, ...], size: int) -> tuple[int, ...]:
    return tuple(maglev_table(list(names), list(weights), size))


@dataclass(frozen=True)
class Member:
    """One backend of one VIP entry, as the inventory and the drained set make it now."""

    name: str          # container name, or the address as the service names it
    id: int
    address: str
    port: int
    weight: int
    active: bool       # False: drained

    def value(self, svc_id: int) -> bytes:
        return abi.backend(self.address, self.port, self.active, svc_id)


@dataclass
class EntryState:
    entry: VipEntry
    members: tuple[Member, ...]      # every present backend, in eval order; drained ones inactive

    @property
    def active(self) -> list[Member]:
        return [m for m in self.members if m.active]

    def signature(self) -> list[list[Any]]:
        """What the table depends on: the active backends, their ids and weights, in order."""
        return [[m.name, m.id, m.weight] for m in self.active]

    def table(self) -> list[int]:
        """Backend ids, slot by slot (empty: no backend can take a connection)."""
        act = self.active
        if not act:
            return []
        weights = [m.weight for m in act]
        if self.entry.service.balance is Balance.ROUND_ROBIN:
            return [act[i].id for i in rr_sequence(weights)]
        idx = _maglev(tuple(m.name for m in act), tuple(weights), self.entry.size)
        return [act[i].id for i in idx]


@dataclass
class LbContents:
    """What the service maps must hold for an inventory and a drained set."""

    entries: list[EntryState]
    drained: dict[str, list[str]]

    def backend_values(self) -> dict[int, bytes]:
        return {m.id: m.value(es.entry.svc_id) for es in self.entries for m in es.members}

    def to_json(self) -> dict[str, Any]:
        return {"drained": self.drained,
                "entries": {str(es.entry.svc_id): es.signature() for es in self.entries},
                "backends": {str(i): v.hex() for i, v in self.backend_values().items()}}


@dataclass
class Baseline:
    """What the maps were last written with (the `.lb.json` next to the version's object)."""

    signatures: dict[int, list[list[Any]]]
    backends: dict[int, bytes]

    @staticmethod
    def from_json(d: dict[str, Any]) -> Baseline:
        return Baseline({int(k): v for k, v in d["entries"].items()},
                        {int(k): bytes.fromhex(v) for k, v in d["backends"].items()})


def compute(program: Program, inv: Inventory, drained: dict[str, set[str]], ids: Ids,
            carry: dict[str, int] | None = None) -> LbContents:
    """The service maps' contents. New backends get ids in `ids` (marking it dirty); with `carry`
    (the previous version's backend ids), a backend present in both keeps its id."""
    state = ServiceState({k: set(v) for k, v in drained.items()})
    entries = [e for e in vip_entries(program) if not e.shadowed_by]
    wanted: list[tuple[VipEntry, list[tuple[str, str, int, int]], set[str]]] = []
    for e in entries:
        present = service_backends(e.service, inv, e.family, e.vip.port)
        active = {b[0] for b in service_backends(e.service, inv, e.family, e.vip.port, state)}
        wanted.append((e, present, active))
    if carry:
        taken = set(ids.backends.values())
        for e, present, _ in wanted:
            for b in present:
                k = backend_key(e, b[0])
                old = carry.get(k)
                if k not in ids.backends and old is not None and old not in taken:
                    ids.backends[k] = old
                    taken.add(old)
                    ids.dirty = True
    out: list[EntryState] = []
    for e, present, active in wanted:
        members = tuple(Member(name, ids.backend(backend_key(e, name)), addr, port, weight, name in active)
                        for name, addr, port, weight in present)
        es = EntryState(e, members)
        if e.service.balance is Balance.ROUND_ROBIN:
            total = sum(m.weight for m in es.active)
            if total > e.size:
                raise LoadError(f"service {e.service.name} ({e.vip.address} port {e.vip.port}): round-robin over "
                                f"{len(es.active)} backend(s) whose weights add up to {total} needs {total} "
                                f"table slots; a service's table has {e.size}. Lower the weights")
        out.append(es)
    return LbContents(out, {k: sorted(v) for k, v in sorted(drained.items()) if v})


def initial_maps(lb: LbContents) -> dict[str, dict[bytes, bytes]]:
    """The service maps of a version being loaded: every table in region 0."""
    services: dict[bytes, bytes] = {}
    table: dict[bytes, bytes] = {}
    for es in lb.entries:
        e = es.entry
        ids = es.table()
        for i, bid in enumerate(ids):
            table[_u32(e.base + i)] = _u32(bid)
        services[e.key] = e.service_value(e.region_base(0), len(ids))
    backends = {_u32(i): v for i, v in lb.backend_values().items()}
    return {"netc_services": services, "netc_lb_table": table, "netc_backends": backends}


def backends_size(lb: LbContents, ids: Ids) -> int:
    """max_entries of netc_backends: every id handed out, and room for new backends to sync."""
    present = sum(len(es.members) for es in lb.entries)
    highest = max(ids.backends.values(), default=0)
    if not lb.entries:
        return 1
    return highest + 1 + max(64, present // 4)


def _u32(x: int) -> bytes:
    return x.to_bytes(4, "little")


_FLAGS = abi.BACKEND.size - 5     # offset of `flags` in struct netc_backend (then svc_id, 4 bytes)


def _active(value: bytes) -> bool:
    return bool(value[_FLAGS] & abi.BACKEND_ACTIVE)


def _inactive(value: bytes) -> bytes:
    return value[:_FLAGS] + bytes([value[_FLAGS] & ~abi.BACKEND_ACTIVE & 0xFF]) + value[_FLAGS + 1:]


# ---------------------------------------------------------------------- writing the live maps
def check_room(maps: dict[str, Any], ids: Ids) -> None:
    """A backend id beyond netc_backends' size is refused before any write."""
    highest = max(ids.backends.values(), default=0)
    have = maps["netc_backends"].max_entries
    if highest >= have:
        raise LoadError(f"this change needs backend id {highest:,} but netc_backends was sized for {have:,} "
                        "ids when the version loaded; run `netc load` again to resize (nothing was changed)")


def apply(maps: dict[str, Any], new: LbContents, old: Baseline | None, ids: Ids) -> dict[str, int]:
    """Bring the live service maps from `old` (None: unknown, rewrite everything) to `new`.

    Order: backends that take connections are written first (a table may point at them), then
    each affected entry's table goes into its inactive region and the service entry switches to
    it in one update; backends that no longer take connections are marked last."""
    written = {"netc_backends": 0, "netc_lb_table": 0, "netc_services": 0}
    old_vals = old.backends if old is not None else {}
    new_vals = new.backend_values()
    changed = {i: v for i, v in new_vals.items() if old_vals.get(i) != v}
    up = [(_u32(i), v) for i, v in changed.items() if _active(v)]
    maps["netc_backends"].update_batch(up)
    written["netc_backends"] += len(up)
    for es in new.entries:
        e = es.entry
        if old is not None and old.signatures.get(e.svc_id) == es.signature():
            continue
        cur = maps["netc_services"].lookup(e.key)
        region = 0
        if cur is not None and abi.SERVICE.unpack(cur)[1] == e.region_base(0):
            region = 1        # region 0 is live: write region 1
        base = e.region_base(region)
        table = es.table()
        maps["netc_lb_table"].update_batch([(_u32(base + i), _u32(b)) for i, b in enumerate(table)])
        maps["netc_services"].update(e.key, e.service_value(base, len(table)))   # the switch
        written["netc_lb_table"] += len(table)
        written["netc_services"] += 1
    down = [(_u32(i), v) for i, v in changed.items() if not _active(v)]
    # gone: ids the previous write had (or, not knowing it, every id handed out) that no backend has now
    candidates = set(old_vals) if old is not None else set(ids.backends.values())
    for i in sorted(candidates - set(new_vals)):
        raw = old_vals.get(i) or maps["netc_backends"].lookup(_u32(i))
        if raw is not None and _active(raw):
            down.append((_u32(i), _inactive(raw)))
    maps["netc_backends"].update_batch(down)
    written["netc_backends"] += len(down)
    return written


# ---------------------------------------------------------------------- version files, state
def baseline_path(obj_path: str) -> str:
    return obj_path[: -len(".bpf.o")] + ".lb.json"


def read_baseline(obj_path: str) -> Baseline | None:
    try:
        with open(baseline_path(obj_path)) as fh:
            return Baseline.from_json(json.load(fh))
    except (OSError, ValueError, KeyError):
        return None


def write_baseline(obj_path: str, lb: LbContents) -> None:
    from netc.runtime.loader import _write_atomically

    _write_atomically(baseline_path(obj_path), json.dumps(lb.to_json()).encode())


def forget_baseline(obj_path: str) -> None:
    """Before writing the live maps: should this process die midway, the next one rewrites all."""
    try:
        os.unlink(baseline_path(obj_path))
    except FileNotFoundError:
        pass


def drained_set(st: Any, target: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for service, backend in st.db.execute("SELECT service, backend FROM drained WHERE target=?", (target,)):
        out.setdefault(service, set()).add(backend)
    return out


def previous_backend_ids(obj_path: str) -> dict[str, int]:
    from netc.runtime.loader import _ids_path

    try:
        with open(_ids_path(obj_path)) as fh:
            return dict(json.load(fh).get("backends", {}))
    except (OSError, ValueError):
        return {}


@contextmanager
def pinned_lb_maps(target: str, version: int) -> Iterator[dict[str, Any]]:
    from netc.runtime.libbpf import Map
    from netc.runtime.loader import _paths

    base, _ = _paths(target)
    maps: dict[str, Any] = {}
    try:
        for n in LB_MAPS:
            path = os.path.join(base, f"v{version}", "maps", n)
            if not os.path.exists(path):
                raise NoServiceMaps(f"`{target}` v{version} has no {n} pinned (loaded by an older netc); "
                                    "load it again to balance its services")
            maps[n] = Map.from_pinned(path)
        yield maps
    finally:
        for m in maps.values():
            m.close()


def check_live(target: str, version: int, ids: Ids) -> None:
    """Before a sync writes anything: the service maps are pinned and have room for the ids."""
    with pinned_lb_maps(target, version) as maps:
        check_room(maps, ids)


def write_live(target: str, version: int, obj_path: str, new: LbContents, ids: Ids) -> dict[str, int]:
    """Apply `new` to a loaded version's maps (the caller holds the lock)."""
    from netc.runtime.loader import _ids_path, _write_atomically

    with pinned_lb_maps(target, version) as maps:
        check_room(maps, ids)
        if ids.dirty:   # ids first: the maps must never hold an id the saved ids do not know
            _write_atomically(_ids_path(obj_path), json.dumps(ids.to_json()).encode())
            ids.dirty = False
        old = read_baseline(obj_path)
        forget_baseline(obj_path)
        written = apply(maps, new, old, ids)
        write_baseline(obj_path, new)
    return written


# ---------------------------------------------------------------------- the running version
@dataclass
class Running:
    target: str
    version: int
    obj_path: str
    program: Program
    inventory: Inventory      # what the maps were last written for
    ids: Ids


def running(target: str, st: Any) -> Running:
    from netc.api import read_manifest
    from netc.runtime.loader import _ids_path, _snapshot_path

    active = st.active(target)
    if active is None:
        names = [t[0] for t in st.targets()]
        raise NetcError(f"nothing is loaded for `{target}`" + (f" (loaded: {', '.join(names)})" if names else ""))
    with open(active.object, "rb") as fh:
        program = Program.from_json(read_manifest(fh.read())["ir"])
    with open(_snapshot_path(active.object)) as fh:
        inv = Inventory.from_dict(json.load(fh))
    with open(_ids_path(active.object)) as fh:
        ids = Ids.from_json(json.load(fh))
    return Running(target, active.version, active.object, program, inv, ids)


def find_service(program: Program, name: str, target: str) -> Service:
    for s in program.services:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in program.services) or "none"
    raise ServiceError(f"`{target}` has no service `{name}` (its services: {known})")


def _all_backends(svc: Service, inv: Inventory) -> list[tuple[str, str, int, int]]:
    out: dict[str, tuple[str, str, int, int]] = {}
    for v in svc.vips:
        fam = ipaddress.ip_address(v.address).version
        for b in service_backends(svc, inv, fam, v.port):
            out.setdefault(b[0], b)
    return list(out.values())


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def resolve_backend(svc: Service, inv: Inventory, text: str, drained: set[str]) -> str | None:
    """The backend's name (a container's, or the address as the service writes it) for what an
    operator typed: a container name, an explicit backend address, or a backend container's address."""
    for name in drained:
        if name == text or _same_address(name, text):
            return name
    for name, _addr, _port, _w in _all_backends(svc, inv):
        if name == text or _same_address(name, text):
            return name
    c = inv.by_address(text)
    if c is not None and any(b[0] == c.name for b in _all_backends(svc, inv)):
        return c.name
    return None


@dataclass
class DrainReport:
    target: str
    service: str
    backend: str
    drained: bool            # the state now
    changed: bool            # False: it already was
    written: dict[str, int]


def set_drained(target: str, service: str, backend: str, drain: bool, *, wait_s: float = 30.0) -> DrainReport:
    """`netc service drain|undrain`: record the state, then rewrite that service's tables."""
    from netc.runtime.loader import check_privileges, ensure_bpffs
    from netc.runtime.state import State, exclusive

    check_privileges()
    ensure_bpffs()
    with exclusive(wait_s=wait_s), State() as st:
        run = running(target, st)
        svc = find_service(run.program, service, target)
        before = drained_set(st, target)
        mine = before.get(svc.name, set())
        name = resolve_backend(svc, run.inventory, backend, mine)
        if name is None:
            known = ", ".join(sorted({b[0] for b in _all_backends(svc, run.inventory)} | mine)) or "none"
            raise ServiceError(f"service `{svc.name}` of `{target}` has no backend `{backend}` "
                               f"(its backends: {known})")
        changed = (name in mine) != drain
        with st.transaction() as db:
            if drain:
                db.execute("INSERT OR REPLACE INTO drained(target, service, backend, at) VALUES(?,?,?,?)",
                           (target, svc.name, name, time.time()))
            else:
                db.execute("DELETE FROM drained WHERE target=? AND service=? AND backend=?",
                           (target, svc.name, name))
        new = compute(run.program, run.inventory, drained_set(st, target), run.ids)
        written = write_live(target, run.version, run.obj_path, new, run.ids)
    return DrainReport(target, svc.name, name, drain, changed, written)


# ---------------------------------------------------------------------- list and show
def _connections(target: str) -> dict[int, int]:
    """Live forward (client-side) translated connections per backend id."""
    from netc.runtime.observe import _shared_map

    timeouts: dict[int, int] = {}
    try:
        with _shared_map(target, "netc_ct_timeouts") as m:
            for s in range(1, abi.CT_TIMEOUTS):
                raw = m.lookup(s.to_bytes(4, "little"))
                if raw:
                    timeouts[s] = int.from_bytes(raw[:8], "little")
    except NetcError:
        pass
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    out: dict[int, int] = {}
    for table in abi.CT_TABLES:   # IPv6 connections in netc_ct, IPv4 ones in netc_ct4
        with _shared_map(target, table) as m:
            for _, value in m.items():
                f = abi.CT_ENTRY.unpack(value)
                last, state, nat, backend_id = f[1], f[3], f[9], f[10]
                if not nat & abi.NAT_DNAT:
                    continue     # not translated, or the reverse twin (NAT_REVERSE) of one
                limit = timeouts.get(state, abi.CT_TIMEOUT_DEFAULTS_S.get(state, 60) * 1_000_000_000)
                if now - last > limit:
                    continue     # expired: the datapath removes it at its next packet
                out[backend_id] = out.get(backend_id, 0) + 1
    return out


def _addr16_text(raw: bytes) -> str:
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def describe(target: str, only: str | None = None) -> dict[str, Any]:
    """Every service of the running version (or the one named), from the live maps:
    VIPs, balance, affinity, and each backend's address, weight, state and connections."""
    from netc.runtime.loader import check_privileges
    from netc.runtime.state import State

    check_privileges()
    with State() as st:
        run = running(target, st)
        drained = drained_set(st, target)
    if only is not None:
        find_service(run.program, only, target)
    if not run.program.services:
        return {"target": target, "version": run.version, "services": []}
    conns = _connections(target)
    services: list[dict[str, Any]] = []
    with pinned_lb_maps(target, run.version) as maps:
        by_entry: dict[str, list[tuple[str, int]]] = {}
        for k, bid in run.ids.backends.items():
            ident, _, name = k.partition("/")
            by_entry.setdefault(ident, []).append((name, bid))
        entries = vip_entries(run.program)
        for svc in run.program.services:
            if only is not None and svc.name != only:
                continue
            mine = drained.get(svc.name, set())
            vips = []
            for e in (x for x in entries if x.service is svc):
                weights = {b[0]: b[3] for b in service_backends(svc, run.inventory, e.family, e.vip.port)}
                cur = maps["netc_services"].lookup(e.key) if not e.shadowed_by else None
                table_base = table_len = None
                if cur is not None:
                    _, table_base, table_len, _, _ = abi.SERVICE.unpack(cur)
                backends = []
                for name, bid in sorted(by_entry.get(e.ident, [])):
                    raw = maps["netc_backends"].lookup(_u32(bid)) if bid < maps["netc_backends"].max_entries else None
                    if raw is None:
                        continue
                    addr, port, family, flags, _svc = abi.BACKEND.unpack(raw)
                    if not family:
                        continue      # an id never written in this version
                    if flags & abi.BACKEND_ACTIVE:
                        state = "active"
                    elif name in weights and name in mine:
                        state = "drained"
                    else:
                        state = "gone"
                    backends.append({"name": name, "id": bid, "address": _addr16_text(addr), "port": port,
                                     "weight": weights.get(name), "state": state,
                                     "connections": conns.get(bid, 0)})
                vips.append({"address": e.vip.address, "port": e.vip.port,
                             "protocol": PROTOCOL_NAMES.get(e.vip.protocol.value, e.vip.protocol.name.lower()),
                             "svc_id": e.svc_id,
                             "shadowed_by": e.shadowed_by or None,
                             "region": None if table_base is None else (table_base - e.base) // e.size,
                             "table_len": table_len,
                             "connections": sum(b["connections"] for b in backends),
                             "backends": backends})
            services.append({"name": svc.name, "balance": svc.balance.value, "table_size": svc.table_size,
                             "affinity_s": svc.affinity_s, "location": str(svc.span),
                             "drained": sorted(mine), "vips": vips})
    return {"target": target, "version": run.version, "services": services}


def live_state(target: str) -> ServiceState:
    """The drained set of a target, as the reference semantics takes it (`explain --live`)."""
    from netc.runtime.state import State

    with State() as st:
        return ServiceState(drained_set(st, target))
