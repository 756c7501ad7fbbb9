"""Lab topology files and the inventory schema: no root needed (the lab itself is tests/kernel/test_lab.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netc.runtime.inventory import Inventory
from netc.runtime.lab import TopologyError, load_topology, parse_container_spec
from tests.schema_check import load_schema, validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "docs" / "inventory.schema.json")


def test_the_example_lab_matches_the_quickstart_groups() -> None:
    topo = load_topology(ROOT / "examples" / "lab.yaml")
    apps = {c.labels.get("app") for c in topo.containers}
    assert {"web", "api", "db", "client"} <= apps
    servers = [c for c in topo.containers if c.serve]
    assert len(servers) >= 3
    web = next(c for c in topo.containers if c.labels.get("app") == "web")
    assert ("tcp", 80) in web.serve and ("tcp", 443) in web.serve


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "topo.yaml"
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize(("text", "message"), [
    ("containers: [{name: a}, {name: b, addresses: [10.0.0.5/24]}]",
     "containers[1] (b): `10.0.0.5/24`: give the address without a prefix length"),
    ("containers: [{name: a}, {name: a}]", "containers[1] (a): the name `a` is used twice"),
    ("containers: [{name: Web}]", "containers[0] (Web): container names are lower-case"),
    ("containers: [{name: -a}]", "containers[0] (-a): container names"),
    ("containers: [{labels: {}}]", "containers[0]: every container needs a `name`"),
    ("containers: [{name: a, serve: [http:80]}]", "`http:80` is not a server"),
    ("containers: [{name: a, serve: [tcp:0]}]", "`tcp:0` is not a server"),
    ("containers: [{name: a, serve: [tcp:80, tcp:80]}]", "listed twice in `serve`"),
    ("containers: [{name: a, lables: {app: x}}]", "unknown key `lables`"),
    ("contaners: []", "unknown key `contaners`"),
    ("containers: [{name: a, addresses: [not-an-ip]}]", "`not-an-ip` is not an IPv4 or IPv6 address"),
    ("containers: [{name: a, addresses: [127.0.0.1]}]", "127.0.0.1 cannot be a container address"),
    ("containers: [{name: a, addresses: [10.77.0.1]}]", "10.77.0.1 is the lab node's own address"),
    ("containers: [{name: a, addresses: ['fd00:77::1']}]", "fd00:77::1 is the lab node's own address"),
    ("containers: [{name: a, addresses: [10.0.0.1]}, {name: b, addresses: [10.0.0.1]}]",
     "containers[1] (b): address 10.0.0.1 also belongs to `a`"),
    ("containers: [{name: a, labels: [app]}]", "`labels` must be a mapping"),
    ("containers: [{name: a, labels: {app: null}}]", "label `app` needs a string value"),
    ("name: Demo!\ncontainers: []", "lab names are lower-case"),
    ("containers: {a: 1}", "`containers` must be a list"),
    ("containers: [{name: a,]", "topo.yaml:1:"),
])
def test_bad_topologies_are_reported_with_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert str(err.value).startswith(path)
    assert message in str(err.value)


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology"):
        load_topology(tmp_path / "nope.yaml")


def test_labels_and_addresses_are_normalised(tmp_path: Path) -> None:
    topo = load_topology(_write(tmp_path, "containers: [{name: a, labels: {n: 3, ok: true}, "
                                          "addresses: ['FD00::0:5', 10.0.0.5]}]"))
    c = topo.containers[0]
    assert c.labels == {"n": "3", "ok": "true"}
    assert c.addresses == ("fd00::5", "10.0.0.5")
    assert topo.name is None and topo.path == str(tmp_path / "topo.yaml")


def test_a_single_spec_is_validated_like_a_topology_entry() -> None:
    spec = parse_container_spec({"name": "web-2", "labels": {"app": "web"}, "serve": ["tcp:80", "udp:53"]})
    assert spec.serve == (("tcp", 80), ("udp", 53)) and spec.addresses is None
    with pytest.raises(TopologyError, match="unknown key `port`"):
        parse_container_spec({"name": "x", "port": 80})


EXAMPLE_INVENTORY = {
    "containers": [
        {"name": "web-1", "addresses": ["10.77.0.10", "fd00:77::10"], "labels": {"app": "web"},
         "netns": "netc-demo-f178-web-1", "interface": "ncf1780", "ifindex": 2},
        {"name": "ext", "addresses": ["192.0.2.7"]},
    ],
    "host_addresses": ["10.77.0.1", "fd00:77::1"],
    "node_netns": "netc-demo-f178-node",
}


def test_the_schema_accepts_what_inventory_py_writes() -> None:
    assert validate(SCHEMA, EXAMPLE_INVENTORY) == []
    inv = Inventory.from_dict(EXAMPLE_INVENTORY)
    assert validate(SCHEMA, inv.to_json()) == []
    assert Inventory.from_dict(inv.to_json()).to_json() == inv.to_json()


@pytest.mark.parametrize("bad", [
    {"containers": [{"addresses": ["10.0.0.1"]}]},                       # no name
    {"containers": [{"name": "a", "addresses": ["10.0.0.1/32"]}]},       # a prefix
    {"containers": [{"name": "a", "adresses": ["10.0.0.1"]}]},           # a typo
    {"containers": [{"name": "a", "ifindex": 0}]},
    {"containers": [{"name": "a", "interface": "a-very-long-veth-name"}]},
    {"containers": [{"name": "a", "labels": {"app": ["x"]}}]},
    {"containers": [], "host_addresses": ["host"]},
    {"containers": "web-1"},
])
def test_the_schema_rejects_what_inventory_py_would_misread(bad: dict) -> None:
    assert validate(SCHEMA, bad) != []
