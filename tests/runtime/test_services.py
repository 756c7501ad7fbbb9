"""The service maps' contents and their updates (runtime/services.py), without a kernel: the maps
are dicts here, with the kernel map's update/lookup semantics."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from netc import api
from netc.errors import LoadError
from netc.ir.eval import Packet, ServiceState, translate
from netc.ir.lb import flow_hash
from netc.ir.nodes import Program
from netc.runtime import abi
from netc.runtime import services as S
from netc.runtime.inventory import Container, Inventory
from netc.runtime.materialize import Ids

POLICY = """
group api = app == "api"
group dns = app == "dns"

service api-svc {
    vip 10.96.0.20 port 80 tcp
    vip fd00:96::20 port 80 tcp
    backends api port 8080 weight 3, 10.0.5.10 port 8080
    balance maglev table 31
    affinity client-ip 300s
}

service dns-svc {
    vip 10.96.0.53 port 53 udp
    backends dns port 5353 weight 2, 10.0.9.9 weight 1
    balance round-robin
}

service shadow {
    vip 10.96.0.20 port 81 tcp
    backends 10.0.7.7
}
"""


def program(text: str = POLICY) -> Program:
    res = api.check(text, name="svc.netp")
    assert res.ok, res.errors
    assert res.program is not None
    return res.program


def c(name: str, n: int, app: str = "api") -> Container:
    return Container(name, (f"10.77.0.{n}", f"fd00:77::{n:x}"), {"app": app}, ifindex=100 + n)


INV = Inventory([c("api-1", 11), c("api-2", 12), c("dns-1", 21, "dns"), c("web-1", 30, "web")])


class FakeMap:
    """A kernel map as the runtime sees it: update, batch update, lookup; array or hash."""

    def __init__(self, name: str, max_entries: int, array: bool, journal: list[tuple[str, bytes]] | None = None):
        self.name = name
        self.max_entries = max_entries
        self.array = array
        self.data: dict[bytes, bytes] = {}
        self.log: list[bytes] = []   # keys in write order
        self.journal = journal if journal is not None else []   # (map, key) of every map, in write order

    def update(self, key: bytes, value: bytes) -> None:
        if self.array:
            assert int.from_bytes(key, "little") < self.max_entries, "index beyond the array"
        self.data[key] = value
        self.log.append(key)
        self.journal.append((self.name, key))

    def update_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        for k, v in items:
            self.update(k, v)

    def lookup(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def fake_maps(p: Program, lb: S.LbContents, ids: Ids) -> dict[str, FakeMap]:
    journal: list[tuple[str, bytes]] = []
    maps = {"netc_services": FakeMap("netc_services", len(S.vip_entries(p)), False, journal),
            "netc_backends": FakeMap("netc_backends", S.backends_size(lb, ids), True, journal),
            "netc_lb_table": FakeMap("netc_lb_table", S.lb_table_slots(p), True, journal)}
    for name, items in S.initial_maps(lb).items():
        maps[name].update_batch(list(items.items()))
    return maps


def service_entry(maps: dict[str, FakeMap], e: S.VipEntry) -> tuple[int, int, int, int, int]:
    raw = maps["netc_services"].lookup(e.key)
    assert raw is not None
    return abi.SERVICE.unpack(raw)   # type: ignore[return-value]


def table_in_kernel(maps: dict[str, FakeMap], e: S.VipEntry) -> list[int]:
    _, base, length, _, _ = service_entry(maps, e)
    return [int.from_bytes(maps["netc_lb_table"].data[(base + i).to_bytes(4, "little")], "little")
            for i in range(length)]


def backend(maps: dict[str, FakeMap], bid: int) -> tuple[str, int, bool, int]:
    raw = maps["netc_backends"].data[bid.to_bytes(4, "little")]
    addr, port, _family, flags, svc_id = abi.BACKEND.unpack(raw)
    return S._addr16_text(addr), port, bool(flags & abi.BACKEND_ACTIVE), svc_id


# ---------------------------------------------------------------------- layout
def test_vip_entries_number_services_and_lay_out_two_regions_each() -> None:
    p = program()
    es = S.vip_entries(p)
    assert [(e.svc_id, e.service.name, e.vip.address) for e in es] == [
        (1, "api-svc", "10.96.0.20"), (2, "api-svc", "fd00:96::20"), (3, "dns-svc", "10.96.0.53"),
        (4, "shadow", "10.96.0.20")]
    assert [e.base for e in es] == [0, 62, 124, 124 + 2 * 16381]
    assert S.lb_table_slots(p) == 62 + 62 + 2 * 16381 + 2 * 16381
    # the same VIP, port and protocol twice is E411, so no entry of a checked program is shadowed
    assert [e.shadowed_by for e in es] == [0, 0, 0, 0]


def test_initial_load_writes_region_0_and_one_service_entry_per_vip() -> None:
    p = program()
    ids = Ids()
    lb = S.compute(p, INV, {}, ids)
    maps = fake_maps(p, lb, ids)
    es = S.vip_entries(p)
    assert set(maps["netc_services"].data) == {e.key for e in es}
    svc_id, base, length, balance, affinity = service_entry(maps, es[0])
    assert (svc_id, base, length, balance, affinity) == (1, 0, 31, abi.BALANCE_MAGLEV, 300 * 10**9)
    assert service_entry(maps, es[1])[1:3] == (62, 31)
    # round-robin: a sequence of sum(weights) slots; dns-1 weight 2, 10.0.9.9 weight 1
    _, base, length, balance, affinity = service_entry(maps, es[2])
    assert (base, length, balance, affinity) == (124, 3, abi.BALANCE_ROUND_ROBIN, 0)
    names = {bid: n for n, bid in ((k.rpartition("/")[2], v) for k, v in ids.backends.items())}
    seq = [names[b] for b in table_in_kernel(maps, es[2])]
    assert Counter(seq) == {"dns-1": 2, "10.0.9.9": 1} and seq[0] == "dns-1"
    # region 1 is untouched, and no slot outside the regions
    assert all(int.from_bytes(k, "little") < S.lb_table_slots(p) for k in maps["netc_lb_table"].data)
    assert not any(31 <= int.from_bytes(k, "little") < 62 for k in maps["netc_lb_table"].data)


def test_backends_carry_address_port_family_and_their_service() -> None:
    p = program()
    ids = Ids()
    maps = fake_maps(p, S.compute(p, INV, {}, ids), ids)
    got = {k.split("\x1f")[1] + "/" + k.rpartition("/")[2]: backend(maps, v) for k, v in ids.backends.items()}
    assert got["10.96.0.20/api-1"] == ("10.77.0.11", 8080, True, 1)
    assert got["fd00:96::20/api-1"] == ("fd00:77::b", 8080, True, 2)
    assert got["10.96.0.20/10.0.5.10"] == ("10.0.5.10", 8080, True, 1)
    assert got["10.96.0.53/10.0.9.9"] == ("10.0.9.9", 53, True, 3)   # no port: the VIP's
    assert "fd00:96::20/10.0.5.10" not in got                            # an IPv4 backend of an IPv6 VIP
    assert 0 not in ids.backends.values()


def test_the_kernel_table_picks_the_backend_the_reference_picks() -> None:
    p = program()
    ids = Ids()
    drained = {"api-svc": {"api-2"}}
    maps = fake_maps(p, S.compute(p, INV, drained, ids), ids)
    names = {v: k.rpartition("/")[2] for k, v in ids.backends.items()}
    rng = random.Random(5)
    for _ in range(300):
        v6 = rng.random() < 0.5
        client = rng.choice(INV.containers)        # translation happens at a container's veth
        src = client.addresses[1 if v6 else 0]
        dst = "fd00:96::20" if v6 else "10.96.0.20"
        pkt = Packet(6, src, dst, rng.randint(1024, 65535), 80)
        _, tr = translate(p, INV, pkt, ServiceState(drained))
        assert tr is not None and tr.backend is not None
        e = S.vip_entries(p)[1 if v6 else 0]
        table = table_in_kernel(maps, e)
        slot = flow_hash(abi.addr16(src), abi.addr16(dst), pkt.sport, 80, 6) % len(table)
        assert names[table[slot]] == tr.backend != "api-2"


# ---------------------------------------------------------------------- round-robin
def test_smooth_weighted_round_robin() -> None:
    assert S.rr_sequence([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]   # nginx's example
    seq = S.rr_sequence([3, 2, 1])
    assert len(seq) == 6 and Counter(seq) == {0: 3, 1: 2, 2: 1}
    assert all(a != b for a, b in zip(seq, seq[1:], strict=False) if a != 0)   # spread, not runs
    assert S.rr_sequence([1]) == [0] and S.rr_sequence([]) == []


def test_round_robin_weights_beyond_the_table_are_refused() -> None:
    p = program("""
        service s { vip 10.96.0.9 port 80 tcp
                    backends 10.0.0.1 weight 1000, 10.0.0.2 weight 1000
                    balance round-robin }""")
    many = Inventory([Container(f"b{i}", (f"10.0.1.{i}",), {"app": "b"}) for i in range(20)])
    p2 = program('service s { vip 10.96.0.9 port 80 tcp\n backends (app == "b") weight 1000\n balance round-robin }')
    S.compute(p, INV, {}, Ids())                       # 2000 slots: fits
    with pytest.raises(LoadError, match=r"round-robin .* weights add up to 20000 .* table has 16381"):
        S.compute(p2, many, {}, Ids())


# ---------------------------------------------------------------------- ids
def test_ids_are_stable_and_never_reused_within_a_version() -> None:
    p = program()
    ids = Ids()
    S.compute(p, INV, {}, ids)
    first = dict(ids.backends)
    fewer = Inventory([x for x in INV.containers if x.name != "api-1"] + [c("api-3", 13)])
    S.compute(p, fewer, {}, ids)
    for k, v in first.items():
        assert ids.backends[k] == v                     # nothing renumbered, api-1's id kept aside
    new = {k: v for k, v in ids.backends.items() if k not in first}
    assert {k.rpartition("/")[2] for k in new} == {"api-3"}
    assert not set(new.values()) & set(first.values())
    S.compute(p, INV, {}, ids)                          # api-1 comes back: its old id
    assert {k: ids.backends[k] for k in first} == first


def test_a_new_version_keeps_the_ids_of_backends_still_present() -> None:
    p = program()
    old = Ids()
    S.compute(p, INV, {}, old)
    fewer = Inventory([x for x in INV.containers if x.name != "api-1"])
    ids = Ids()
    S.compute(p, fewer, {}, ids, carry=old.backends)
    for k, v in ids.backends.items():
        assert old.backends[k] == v
    assert not any(k.endswith("/api-1") for k in ids.backends)


# ---------------------------------------------------------------------- updates
def test_a_change_writes_the_inactive_region_then_switches_and_touches_only_affected_services() -> None:
    p = program()
    ids = Ids()
    lb0 = S.compute(p, INV, {}, ids)
    maps = fake_maps(p, lb0, ids)
    base0 = S.Baseline.from_json(lb0.to_json())
    es = S.vip_entries(p)
    for m in maps.values():
        m.log.clear()
    journal = maps["netc_services"].journal
    journal.clear()
    api1_v4 = ids.backends[S.backend_key(es[0], "api-1")]
    api1_v6 = ids.backends[S.backend_key(es[1], "api-1")]

    # drain api-1: both api-svc entries switch to region 1; dns-svc is not rewritten
    lb1 = S.compute(p, INV, {"api-svc": {"api-1"}}, ids)
    written = S.apply(maps, lb1, base0, ids)
    assert written["netc_services"] == 2 and written["netc_lb_table"] == 62
    assert service_entry(maps, es[0])[1:3] == (31, 31) and service_entry(maps, es[1])[1:3] == (62 + 31, 31)
    assert service_entry(maps, es[2])[1] == 124
    assert api1_v4 not in table_in_kernel(maps, es[0])
    assert backend(maps, api1_v4)[2] is False
    # each entry's table is written before its service entry switches; drained flags after both
    assert maps["netc_services"].log == [es[0].key, es[1].key]
    first_switch = journal.index(("netc_services", es[0].key))
    second_switch = journal.index(("netc_services", es[1].key))
    assert {k for m, k in journal[:first_switch]} == {(31 + i).to_bytes(4, "little") for i in range(31)}
    assert {m for m, k in journal[first_switch + 1:second_switch]} == {"netc_lb_table"}
    assert journal[second_switch + 1:] == [("netc_backends", api1_v4.to_bytes(4, "little")),
                                           ("netc_backends", api1_v6.to_bytes(4, "little"))]
    assert all(31 <= int.from_bytes(k, "little") < 62 or 93 <= int.from_bytes(k, "little") < 124
               for k in maps["netc_lb_table"].log)

    # undrain: back to region 0
    lb2 = S.compute(p, INV, {}, ids)
    S.apply(maps, lb2, S.Baseline.from_json(lb1.to_json()), ids)
    assert service_entry(maps, es[0])[1] == 0 and backend(maps, api1_v4)[2] is True
    assert sorted(set(table_in_kernel(maps, es[0]))) == sorted(set(lb0.entries[0].table()))

    # nothing changed: nothing written
    for m in maps.values():
        m.log.clear()
    assert sum(S.apply(maps, lb2, S.Baseline.from_json(lb2.to_json()), ids).values()) == 0
    assert not any(m.log for m in maps.values())


def test_a_gone_container_leaves_the_tables_and_its_backend_is_marked_inactive() -> None:
    p = program()
    ids = Ids()
    lb0 = S.compute(p, INV, {}, ids)
    maps = fake_maps(p, lb0, ids)
    es = S.vip_entries(p)
    api2 = ids.backends[S.backend_key(es[0], "api-2")]
    fewer = Inventory([x for x in INV.containers if x.name != "api-2"])
    lb1 = S.compute(p, fewer, {}, ids)
    S.apply(maps, lb1, S.Baseline.from_json(lb0.to_json()), ids)
    assert api2 not in table_in_kernel(maps, es[0])
    assert backend(maps, api2) == ("10.77.0.12", 8080, False, 1)   # address kept for the connections left
    # the last backend of a service goes: table_len 0 (the datapath refuses the connection)
    none = Inventory([x for x in INV.containers if x.name != "dns-1"])
    p2 = program('service d { vip 10.96.0.53 port 53 udp\n backends (app == "dns") }')
    ids2 = Ids()
    lb_a = S.compute(p2, INV, {}, ids2)
    maps2 = fake_maps(p2, lb_a, ids2)
    S.apply(maps2, S.compute(p2, none, {}, ids2), S.Baseline.from_json(lb_a.to_json()), ids2)
    e = S.vip_entries(p2)[0]
    assert service_entry(maps2, e)[2] == 0
    assert backend(maps2, 1)[2] is False


def test_without_a_baseline_everything_is_rewritten_through_the_inactive_region() -> None:
    p = program()
    ids = Ids()
    lb0 = S.compute(p, INV, {}, ids)
    maps = fake_maps(p, lb0, ids)
    es = S.vip_entries(p)
    fewer = Inventory([x for x in INV.containers if x.name != "api-2"])
    S.apply(maps, S.compute(p, fewer, {}, ids), None, ids)
    assert [service_entry(maps, e)[1] for e in es[:3]] == [31, 93, 124 + 16381]
    api2 = ids.backends[S.backend_key(es[0], "api-2")]
    assert backend(maps, api2)[2] is False   # found active in the map, marked inactive


def test_backend_ids_fit_the_sized_map_and_a_full_map_is_refused() -> None:
    p = program()
    ids = Ids()
    lb = S.compute(p, INV, {}, ids)
    size = S.backends_size(lb, ids)
    assert size > max(ids.backends.values()) + 50
    maps = {"netc_backends": FakeMap("netc_backends", max(ids.backends.values()) + 1, True)}
    S.check_room(maps, ids)
    ids.backend("x/new")
    with pytest.raises(LoadError, match="run `netc load` again"):
        S.check_room(maps, ids)
    assert S.backends_size(S.compute(program("group a = app == \"a\""), INV, {}, Ids()), Ids()) == 1


def test_map_sizes_and_budget_count_the_service_maps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from netc.runtime.loader import map_sizes
    from netc.runtime.materialize import materialize

    p = program()
    contents = materialize(p, INV)
    lb = S.compute(p, INV, {}, contents.ids)
    sizes = map_sizes(contents, 0, 4, lb=lb, program=p)
    assert sizes["netc_backends"] > max(contents.ids.backends.values())
    assert sizes["netc_lb_table"] == S.lb_table_slots(p)
    assert sizes["netc_affinity"] == 65536   # api-svc keeps clients
    monkeypatch.setenv("NETC_MAP_MEMORY_LIMIT", "100000")   # the two 16381-slot regions alone exceed it
    with pytest.raises(LoadError, match="netc_lb_table"):
        map_sizes(contents, 0, 4, lb=lb, program=p)


# ---------------------------------------------------------------------- operator input
def test_backends_are_named_by_container_name_or_address() -> None:
    p = program()
    svc = p.services[0]
    assert S.resolve_backend(svc, INV, "api-1", set()) == "api-1"
    assert S.resolve_backend(svc, INV, "10.77.0.12", set()) == "api-2"       # a backend container's address
    assert S.resolve_backend(svc, INV, "fd00:77::c", set()) == "api-2"
    assert S.resolve_backend(svc, INV, "10.0.5.10", set()) == "10.0.5.10"    # an explicit backend
    assert S.resolve_backend(svc, INV, "web-1", set()) is None               # not a backend of it
    assert S.resolve_backend(svc, INV, "nope", set()) is None
    assert S.resolve_backend(svc, INV, "api-9", {"api-9"}) == "api-9"        # drained, since gone
