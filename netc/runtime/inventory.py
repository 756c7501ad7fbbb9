"""The inventory: which containers exist (name, netns, host-side interface, addresses, labels).

Pure data and file reading; no kernel access. The format is documented in docs/inventory.md and
its JSON schema in docs/inventory.schema.json.

    >>> inv = Inventory.from_dict({"containers": [{"name": "web-1", "addresses": ["10.0.1.5"],
    ...                                            "labels": {"app": "web"}}]})
    >>> inv.by_address("10.0.1.5").name
    'web-1'
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from netc.errors import NetcError


class InventoryError(NetcError):
    pass


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    addresses: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    netns: str | None = None
    interface: str | None = None     # host-side veth
    ifindex: int | None = None       # of the host-side veth, in the node namespace

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "addresses": list(self.addresses), "labels": dict(self.labels)}
        for k in ("netns", "interface", "ifindex"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class Inventory:
    containers: list[Container] = field(default_factory=list)
    host_addresses: tuple[str, ...] = ()
    node_netns: str | None = None
    _by_addr: dict[str, Container] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        self._by_addr = {}
        for c in self.containers:
            for a in c.addresses:
                self._by_addr[str(ipaddress.ip_address(a))] = c

    def by_address(self, addr: str) -> Container | None:
        try:
            return self._by_addr.get(str(ipaddress.ip_address(addr)))
        except ValueError:
            return None

    def by_name(self, name: str) -> Container | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def is_host(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ipaddress.ip_address(h) == ip for h in self.host_addresses)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"containers": [c.to_json() for c in self.containers],
                             "host_addresses": list(self.host_addresses)}
        if self.node_netns:
            d["node_netns"] = self.node_netns
        return d

    @staticmethod
    def from_dict(data: Any, where: str = "inventory") -> Inventory:
        if not isinstance(data, dict):
            raise InventoryError(f"{where}: expected a mapping with `containers`")
        raw = data.get("containers", [])
        if not isinstance(raw, list):
            raise InventoryError(f"{where}: `containers` must be a list")
        containers: list[Container] = []
        seen: set[str] = set()
        owner: dict[str, str] = {}
        for i, c in enumerate(raw):
            at = f"{where}: containers[{i}]"
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
                raise InventoryError(f"{at}: every container needs a `name`")
            name = c["name"]
            if name in seen:
                raise InventoryError(f"{at}: container `{name}` appears twice")
            seen.add(name)
            addrs = c.get("addresses", [])
            if not isinstance(addrs, list):
                raise InventoryError(f"{at} ({name}): `addresses` must be a list")
            norm = []
            for a in addrs:
                try:
                    ip = str(ipaddress.ip_address(str(a)))
                except ValueError:
                    raise InventoryError(f"{at} ({name}): `{a}` is not an address") from None
                if ip in owner:
                    raise InventoryError(f"{at} ({name}): address {ip} also belongs to `{owner[ip]}`")
                owner[ip] = name
                norm.append(ip)
            labels = c.get("labels", {}) or {}
            if not isinstance(labels, dict):
                raise InventoryError(f"{at} ({name}): `labels` must be a mapping")
            ifindex = c.get("ifindex")
            containers.append(Container(name, tuple(norm), {str(k): str(v) for k, v in labels.items()},
                                        c.get("netns"), c.get("interface"),
                                        int(ifindex) if ifindex is not None else None))
        hosts = tuple(str(ipaddress.ip_address(str(h))) for h in data.get("host_addresses", []) or [])
        return Inventory(containers, hosts, data.get("node_netns"))

    @staticmethod
    def load(path: str) -> Inventory:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise InventoryError(f"cannot read inventory {path}: {exc.strerror}") from None
        try:
            if path.endswith(".json"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # yaml and json both raise their own error types
            raise InventoryError(f"{path}: not valid YAML/JSON: {exc}") from None
        return Inventory.from_dict(data or {}, path)
