"""The typed syntax tree of a .netp file. Every node carries the Span it came from."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from netc.source import Span


@dataclass(frozen=True, slots=True)
class Ident:
    text: str
    span: Span


# ------------------------------------------------------------------ sets
@dataclass(frozen=True, slots=True)
class PortItem:
    lo: int
    hi: int
    span: Span


@dataclass(frozen=True, slots=True)
class AddrItem:
    address: str
    excepts: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class SetRef:
    name: Ident
    span: Span


SetItem = PortItem | AddrItem | SetRef


@dataclass(frozen=True, slots=True)
class SetLiteral:
    items: tuple[SetItem, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class SetFile:
    path: str
    span: Span


SetExpr = SetLiteral | SetFile | SetRef


# ------------------------------------------------------------------ selectors
class LabelOp(enum.Enum):
    EQ = "=="
    NE = "!="
    IN = "in"
    NOT_IN = "not in"
    HAS = "has"


@dataclass(frozen=True, slots=True)
class SelAll:
    span: Span


@dataclass(frozen=True, slots=True)
class SelGroup:
    name: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class SelLabel:
    op: LabelOp
    key: str
    values: tuple[str, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class SelNot:
    child: Selector
    span: Span


@dataclass(frozen=True, slots=True)
class SelAnd:
    children: tuple[Selector, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class SelOr:
    children: tuple[Selector, ...]
    span: Span


Selector = SelAll | SelGroup | SelLabel | SelNot | SelAnd | SelOr


# ------------------------------------------------------------------ policies
@dataclass(frozen=True, slots=True)
class PeerName:
    name: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class PeerAddr:
    item: AddrItem
    span: Span


@dataclass(frozen=True, slots=True)
class PeerSet:
    literal: SetLiteral
    span: Span


@dataclass(frozen=True, slots=True)
class PeerSelector:
    selector: Selector
    span: Span


Peer = PeerName | PeerAddr | PeerSet | PeerSelector


@dataclass(frozen=True, slots=True)
class PortName:
    name: Ident
    span: Span


PortRef = PortItem | PortName | SetLiteral


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    type: int | str
    code: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class DefaultDecl:
    direction: str
    action: str
    span: Span


@dataclass(frozen=True, slots=True)
class RuleDecl:
    action: str
    direction: str
    protocol: str | None
    icmp: IcmpMatch | None
    from_peers: tuple[Peer, ...]
    to_peers: tuple[Peer, ...]
    ports: tuple[PortRef, ...]
    priority: int | None
    log: bool
    span: Span
    from_span: Span | None = None
    to_span: Span | None = None


@dataclass(frozen=True, slots=True)
class PolicyDecl:
    name: Ident
    selector: Selector
    priority: int | None
    defaults: tuple[DefaultDecl, ...]
    rules: tuple[RuleDecl, ...]
    span: Span


# ------------------------------------------------------------------ services, limits, observe
@dataclass(frozen=True, slots=True)
class VipDecl:
    address: str
    port: int
    protocol: str
    span: Span


@dataclass(frozen=True, slots=True)
class BackendDecl:
    address: str | None
    selector: Selector | None
    port: int | None
    weight: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class ServiceDecl:
    name: Ident
    vips: tuple[VipDecl, ...]
    backends: tuple[BackendDecl, ...]
    balance: Ident | None
    table_size: int | None
    affinity: tuple[Ident, str] | None
    span: Span
    repeated: tuple[Span, ...] = ()   # spans of `balance`/`affinity` lines given more than once


@dataclass(frozen=True, slots=True)
class LimitDecl:
    target: Selector
    direction: str
    rate: int
    unit: Ident
    burst: int | None
    per: Ident | None
    span: Span


@dataclass(frozen=True, slots=True)
class ObserveDecl:
    target: Selector
    events: tuple[Ident, ...]
    samples: tuple[tuple[Ident, int, int, Span], ...]
    span: Span


# ------------------------------------------------------------------ tests
@dataclass(frozen=True, slots=True)
class Endpoint:
    """`10.1.1.1:40000`, `[fd00::1]:443`, `web:443`, `web`: a packet's source or destination."""

    address: str | None
    name: str | None
    port: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class PacketExpr:
    protocol: str
    src: Endpoint
    dst: Endpoint
    icmp: IcmpMatch | None
    span: Span


@dataclass(frozen=True, slots=True)
class ContainerDecl:
    name: Ident
    labels: tuple[tuple[str, str], ...]
    addresses: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ExpectDecl:
    verdict: str
    packet: PacketExpr
    backend: Endpoint | None
    span: Span


@dataclass(frozen=True, slots=True)
class TestDecl:
    name: str
    containers: tuple[ContainerDecl, ...]
    expects: tuple[ExpectDecl, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ImportDecl:
    path: str
    span: Span


@dataclass(frozen=True, slots=True)
class LetDecl:
    name: Ident
    value: SetExpr
    span: Span


@dataclass(frozen=True, slots=True)
class GroupDecl:
    name: Ident
    selector: Selector
    span: Span


Decl = ImportDecl | LetDecl | GroupDecl | PolicyDecl | ServiceDecl | LimitDecl | ObserveDecl | TestDecl


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    decls: tuple[Decl, ...]
    comments: tuple[tuple[int, int, str], ...]  # (line, col, text) for `netc fmt`
