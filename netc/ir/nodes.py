"""The Policy IR: normalized rules, services, limits, observe and test blocks.

No syntax is left here (names are resolved, sets are evaluated, groups are inlined into
selectors) and no kernel yet. The reference interpreter (eval.py), the planner and the
materializer all read this, and the artifact's manifest is this IR as JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from netc.ir.addrset import AddrSet, PortSet
from netc.source import Span


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    AUDIT = "audit"


class Direction(enum.Enum):
    INGRESS = "ingress"
    EGRESS = "egress"

    @property
    def abi(self) -> int:
        return 0 if self is Direction.INGRESS else 1


class Protocol(enum.Enum):
    TCP = 6
    UDP = 17
    SCTP = 132
    ICMP = 1
    ICMPV6 = 58

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)

    @property
    def is_icmp(self) -> bool:
        return self in (Protocol.ICMP, Protocol.ICMPV6)

    @staticmethod
    def from_name(name: str) -> Protocol | None:
        return None if name == "any" else Protocol[name.upper()]


PROTO_OTHER = 255  # any L4 protocol that is not one of Protocol


class SelKind(enum.Enum):
    ALL = "all"
    EQ = "=="
    NE = "!="
    IN = "in"
    NOT_IN = "not in"
    HAS = "has"
    NOT = "not"
    AND = "and"
    OR = "or"


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector with groups inlined. `key`/`values` for label tests, `children` otherwise."""

    kind: SelKind
    key: str = ""
    values: tuple[str, ...] = ()
    children: tuple[Selector, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        k = self.kind
        if k is SelKind.ALL:
            return True
        if k is SelKind.EQ:
            return labels.get(self.key) == self.values[0]
        if k is SelKind.NE:
            return labels.get(self.key) != self.values[0]
        if k is SelKind.IN:
            return self.key in labels and labels[self.key] in self.values
        if k is SelKind.NOT_IN:
            return labels.get(self.key) not in self.values
        if k is SelKind.HAS:
            return self.key in labels
        if k is SelKind.NOT:
            return not self.children[0].matches(labels)
        if k is SelKind.AND:
            return all(c.matches(labels) for c in self.children)
        return any(c.matches(labels) for c in self.children)

    def __str__(self) -> str:
        k = self.kind
        if k is SelKind.ALL:
            return "all"
        if k in (SelKind.EQ, SelKind.NE):
            return f'{self.key} {k.value} "{self.values[0]}"'
        if k in (SelKind.IN, SelKind.NOT_IN):
            vals = ", ".join(f'"{v}"' for v in self.values)
            return f"{self.key} {k.value} {{{vals}}}"
        if k is SelKind.HAS:
            return f"has({self.key})"
        if k is SelKind.NOT:
            return f"not ({self.children[0]})"
        return f" {k.value} ".join(f"({c})" if c.kind in (SelKind.AND, SelKind.OR) else str(c)
                                   for c in self.children)

    def to_json(self) -> Any:
        if self.kind in (SelKind.NOT, SelKind.AND, SelKind.OR):
            return [self.kind.value, [c.to_json() for c in self.children]]
        if self.kind is SelKind.ALL:
            return ["all"]
        return [self.kind.value, self.key, list(self.values)]

    @staticmethod
    def from_json(d: Any) -> Selector:
        kind = SelKind(d[0])
        if kind in (SelKind.NOT, SelKind.AND, SelKind.OR):
            return Selector(kind, children=tuple(Selector.from_json(c) for c in d[1]))
        if kind is SelKind.ALL:
            return Selector(kind)
        return Selector(kind, d[1], tuple(d[2]))


SELECT_ALL = Selector(SelKind.ALL)


@dataclass(frozen=True, slots=True)
class Peer:
    """The remote side a rule names: a union of addresses, selectors and identity classes."""

    any: bool = False
    addrs: AddrSet = AddrSet()
    selectors: tuple[Selector, ...] = ()
    world: bool = False
    host: bool = False

    def to_json(self) -> Any:
        return {"any": self.any, "addrs": self.addrs.to_json(),
                "selectors": [s.to_json() for s in self.selectors], "world": self.world, "host": self.host}

    @staticmethod
    def from_json(d: Any) -> Peer:
        return Peer(d["any"], AddrSet.from_json(d["addrs"]), tuple(Selector.from_json(s) for s in d["selectors"]),
                    d["world"], d["host"])


ANY_PEER = Peer(any=True)


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    policy: str
    action: Action
    direction: Direction
    protocol: Protocol | None       # None: any protocol
    peer: Peer
    ports: PortSet | None           # destination ports (tcp/udp/sctp); None: any
    icmp: PortSet | None            # `type << 8 | code` values (icmp/icmpv6); None: any
    priority: int
    log: bool
    span: Span
    text: str

    @property
    def location(self) -> str:
        return self.span.location

    def to_json(self) -> Any:
        return {"id": self.id, "policy": self.policy, "action": self.action.value,
                "direction": self.direction.value,
                "protocol": self.protocol.name.lower() if self.protocol else "any",
                "peer": self.peer.to_json(), "ports": self.ports.to_json() if self.ports else None,
                "icmp": self.icmp.to_json() if self.icmp else None, "priority": self.priority,
                "log": self.log, "span": self.span.to_json(), "text": self.text}

    @staticmethod
    def from_json(d: Any) -> Rule:
        return Rule(d["id"], d["policy"], Action(d["action"]), Direction(d["direction"]),
                    Protocol.from_name(d["protocol"]), Peer.from_json(d["peer"]),
                    PortSet.from_json(d["ports"]) if d["ports"] is not None else None,
                    PortSet.from_json(d["icmp"]) if d["icmp"] is not None else None,
                    d["priority"], d["log"], Span.from_json(d["span"]), d["text"])


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    selector: Selector
    priority: int
    defaults: dict[Direction, Action]   # explicit `DIR default allow|deny`
    isolates: frozenset[Direction]      # directions this policy declares (a default or a decisive rule)
    rules: tuple[Rule, ...]
    span: Span

    def to_json(self) -> Any:
        return {"name": self.name, "selector": self.selector.to_json(), "priority": self.priority,
                "defaults": {d.value: a.value for d, a in sorted(self.defaults.items(), key=lambda x: x[0].value)},
                "isolates": sorted(d.value for d in self.isolates), "rules": [r.to_json() for r in self.rules],
                "span": self.span.to_json()}

    @staticmethod
    def from_json(d: Any) -> Policy:
        return Policy(d["name"], Selector.from_json(d["selector"]), d["priority"],
                      {Direction(k): Action(v) for k, v in d["defaults"].items()},
                      frozenset(Direction(x) for x in d["isolates"]),
                      tuple(Rule.from_json(r) for r in d["rules"]), Span.from_json(d["span"]))


class Balance(enum.Enum):
    MAGLEV = "maglev"
    RANDOM = "random"
    ROUND_ROBIN = "round-robin"


@dataclass(frozen=True, slots=True)
class Vip:
    address: str
    port: int
    protocol: Protocol


@dataclass(frozen=True, slots=True)
class Backend:
    """Explicit address, or every container a selector matches; `port` None: the VIP's port."""

    address: str | None
    selector: Selector | None
    port: int | None
    weight: int


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    vips: tuple[Vip, ...]
    backends: tuple[Backend, ...]
    balance: Balance
    table_size: int
    affinity_s: int | None
    span: Span

    def to_json(self) -> Any:
        return {"name": self.name,
                "vips": [{"address": v.address, "port": v.port, "protocol": v.protocol.name.lower()}
                         for v in self.vips],
                "backends": [{"address": b.address, "selector": b.selector.to_json() if b.selector else None,
                              "port": b.port, "weight": b.weight} for b in self.backends],
                "balance": self.balance.value, "table_size": self.table_size, "affinity_s": self.affinity_s,
                "span": self.span.to_json()}

    @staticmethod
    def from_json(d: Any) -> Service:
        return Service(
            d["name"],
            tuple(Vip(v["address"], v["port"], Protocol[v["protocol"].upper()]) for v in d["vips"]),
            tuple(Backend(b["address"], Selector.from_json(b["selector"]) if b["selector"] else None,
                          b["port"], b["weight"]) for b in d["backends"]),
            Balance(d["balance"]), d["table_size"], d["affinity_s"], Span.from_json(d["span"]))


class LimitKey(enum.Enum):
    ENDPOINT = "endpoint"      # one bucket per selected container and direction
    SOURCE = "source"          # one bucket per source address
    DESTINATION = "destination"


@dataclass(frozen=True, slots=True)
class Limit:
    selector: Selector
    direction: Direction
    rate_per_s: float          # tokens (packets) per second
    burst: int                 # bucket depth in packets
    per: LimitKey
    span: Span

    def to_json(self) -> Any:
        return {"selector": self.selector.to_json(), "direction": self.direction.value,
                "rate_per_s": self.rate_per_s, "burst": self.burst, "per": self.per.value,
                "span": self.span.to_json()}

    @staticmethod
    def from_json(d: Any) -> Limit:
        return Limit(Selector.from_json(d["selector"]), Direction(d["direction"]), d["rate_per_s"], d["burst"],
                     LimitKey(d["per"]), Span.from_json(d["span"]))


class EventKind(enum.Enum):
    DENY = "deny"
    ALLOW = "allow"
    LOG = "log"
    AUDIT = "audit"
    NEW = "new"             # new connections (sampled)
    TRANSLATE = "translate"  # service translations


@dataclass(frozen=True, slots=True)
class Observe:
    selector: Selector
    events: frozenset[EventKind]
    sample_flows: tuple[int, int]   # (numerator, denominator) of new connections reported
    span: Span

    def to_json(self) -> Any:
        return {"selector": self.selector.to_json(), "events": sorted(e.value for e in self.events),
                "sample_flows": list(self.sample_flows), "span": self.span.to_json()}

    @staticmethod
    def from_json(d: Any) -> Observe:
        return Observe(Selector.from_json(d["selector"]), frozenset(EventKind(e) for e in d["events"]),
                       (d["sample_flows"][0], d["sample_flows"][1]), Span.from_json(d["span"]))


@dataclass(frozen=True, slots=True)
class TestContainer:
    name: str
    labels: tuple[tuple[str, str], ...]
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """A packet end in a test: an address, or the name of a container or group."""

    address: str | None
    name: str | None
    port: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class Expectation:
    verdict: str                 # "allow" | "deny" | "dnat"
    protocol: Protocol | None    # None: a packet of an L4 protocol netc has no name for
    src: EndpointRef
    dst: EndpointRef
    icmp_type: int | None
    icmp_code: int | None
    backend: EndpointRef | None
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class TestBlock:
    name: str
    containers: tuple[TestContainer, ...]
    expectations: tuple[Expectation, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Program:
    """The whole compiled unit: a root file and everything it imports."""

    policies: tuple[Policy, ...]
    services: tuple[Service, ...]
    limits: tuple[Limit, ...]
    observes: tuple[Observe, ...]
    tests: tuple[TestBlock, ...]
    groups: dict[str, Selector]
    sources: tuple[tuple[str, str], ...]          # (path, sha256) of every file read
    rules_by_id: dict[int, Rule] = field(default_factory=dict)

    @property
    def rules(self) -> list[Rule]:
        return [r for p in self.policies for r in p.rules]

    def to_json(self) -> Any:
        """The manifest's IR part: everything the runtime needs, nothing about tests."""
        return {"policies": [p.to_json() for p in self.policies],
                "services": [s.to_json() for s in self.services],
                "limits": [lim.to_json() for lim in self.limits],
                "observes": [o.to_json() for o in self.observes],
                "groups": {k: v.to_json() for k, v in sorted(self.groups.items())},
                "sources": [list(s) for s in self.sources]}

    @staticmethod
    def from_json(d: Any) -> Program:
        policies = tuple(Policy.from_json(p) for p in d["policies"])
        return Program(policies, tuple(Service.from_json(s) for s in d["services"]),
                       tuple(Limit.from_json(x) for x in d["limits"]),
                       tuple(Observe.from_json(o) for o in d["observes"]), (),
                       {k: Selector.from_json(v) for k, v in d["groups"].items()},
                       tuple((a, b) for a, b in d["sources"]),
                       {r.id: r for p in policies for r in p.rules})
