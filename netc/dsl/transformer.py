"""Parse tree → AST. Runs after parse() so every node's `meta` carries positions."""

from __future__ import annotations

from typing import Any

from lark import Token, Transformer, v_args
from lark.tree import Meta

from netc.dsl import ast as A
from netc.source import Span


def _unquote(tok: str) -> str:
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"'}.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class ToAst(Transformer[Token, Any]):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    # ---------------------------------------------------------------- helpers
    def _span(self, meta: Meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.path, 1, 1, 1, 1)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.path, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)

    def _ident(self, tok: Token) -> A.Ident:
        return A.Ident(str(tok), self._tspan(tok))

    # ---------------------------------------------------------------- top level
    def start(self, items: list[Any]) -> list[Any]:
        return [i for i in items if not isinstance(i, Token)]

    @v_args(meta=True)
    def import_decl(self, meta: Meta, c: list[Any]) -> A.ImportDecl:
        return A.ImportDecl(_unquote(c[0]), self._span(meta))

    # ---------------------------------------------------------------- sets
    @v_args(meta=True)
    def let_decl(self, meta: Meta, c: list[Any]) -> A.LetDecl:
        return A.LetDecl(self._ident(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def set_file(self, meta: Meta, c: list[Any]) -> A.SetFile:
        return A.SetFile(_unquote(c[0]), self._span(meta))

    @v_args(meta=True)
    def set_alias(self, meta: Meta, c: list[Any]) -> A.SetRef:
        return A.SetRef(self._ident(c[0]), self._span(meta))

    @v_args(meta=True)
    def set_ref(self, meta: Meta, c: list[Any]) -> A.SetRef:
        return A.SetRef(self._ident(c[0]), self._span(meta))

    @v_args(meta=True)
    def set_literal(self, meta: Meta, c: list[Any]) -> A.SetLiteral:
        return A.SetLiteral(tuple(x for x in c if x is not None), self._span(meta))

    @v_args(meta=True)
    def addr_item(self, meta: Meta, c: list[Any]) -> A.AddrItem:
        excepts: tuple[A.Ident, ...] = tuple(c[1]) if len(c) > 1 else ()
        return A.AddrItem(str(c[0]), excepts, self._span(meta))

    def except_one(self, c: list[Token]) -> list[A.Ident]:
        return [self._ident(c[0])]

    def except_many(self, c: list[Token]) -> list[A.Ident]:
        return [self._ident(t) for t in c]

    @v_args(meta=True)
    def port_single(self, meta: Meta, c: list[Token]) -> A.PortItem:
        return A.PortItem(int(c[0]), int(c[0]), self._span(meta))

    @v_args(meta=True)
    def port_range(self, meta: Meta, c: list[Token]) -> A.PortItem:
        return A.PortItem(int(c[0]), int(c[1]), self._span(meta))

    # ---------------------------------------------------------------- selectors
    @v_args(meta=True)
    def group_decl(self, meta: Meta, c: list[Any]) -> A.GroupDecl:
        return A.GroupDecl(self._ident(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def sel_or(self, meta: Meta, c: list[Any]) -> A.Selector:
        return c[0] if len(c) == 1 else A.SelOr(tuple(c), self._span(meta))

    @v_args(meta=True)
    def sel_and(self, meta: Meta, c: list[Any]) -> A.Selector:
        return c[0] if len(c) == 1 else A.SelAnd(tuple(c), self._span(meta))

    @v_args(meta=True)
    def sel_not(self, meta: Meta, c: list[Any]) -> A.SelNot:
        return A.SelNot(c[0], self._span(meta))

    def label_key(self, c: list[Token]) -> str:
        tok = c[0]
        return _unquote(tok) if tok.type == "STRING" else str(tok)

    def string_set(self, c: list[Any]) -> tuple[str, ...]:
        return tuple(_unquote(t) for t in c if t is not None)

    @v_args(meta=True)
    def sel_eq(self, meta: Meta, c: list[Any]) -> A.SelLabel:
        return A.SelLabel(A.LabelOp.EQ, c[0], (_unquote(c[1]),), self._span(meta))

    @v_args(meta=True)
    def sel_ne(self, meta: Meta, c: list[Any]) -> A.SelLabel:
        return A.SelLabel(A.LabelOp.NE, c[0], (_unquote(c[1]),), self._span(meta))

    @v_args(meta=True)
    def sel_in(self, meta: Meta, c: list[Any]) -> A.SelLabel:
        return A.SelLabel(A.LabelOp.IN, c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def sel_not_in(self, meta: Meta, c: list[Any]) -> A.SelLabel:
        return A.SelLabel(A.LabelOp.NOT_IN, c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def sel_has(self, meta: Meta, c: list[Any]) -> A.SelLabel:
        return A.SelLabel(A.LabelOp.HAS, c[0], (), self._span(meta))

    @v_args(meta=True)
    def sel_all(self, meta: Meta, c: list[Any]) -> A.SelAll:
        return A.SelAll(self._span(meta))

    @v_args(meta=True)
    def sel_group(self, meta: Meta, c: list[Token]) -> A.SelGroup:
        return A.SelGroup(self._ident(c[0]), self._span(meta))

    # ---------------------------------------------------------------- policies
    @v_args(meta=True)
    def policy_decl(self, meta: Meta, c: list[Any]) -> A.PolicyDecl:
        name, selector, rest = c[0], c[1], c[2:]
        priority = None
        if rest and isinstance(rest[0], int):
            priority = rest.pop(0)
        defaults = tuple(x for x in rest if isinstance(x, A.DefaultDecl))
        rules = tuple(x for x in rest if isinstance(x, A.RuleDecl))
        return A.PolicyDecl(self._ident(name), selector, priority, defaults, rules, self._span(meta))

    def priority(self, c: list[Token]) -> int:
        return int(c[0])

    def action(self, c: list[Token]) -> str:
        return str(c[0])

    def direction(self, c: list[Token]) -> str:
        return str(c[0])

    def protocol(self, c: list[Token]) -> str:
        return str(c[0])

    def log_flag(self, c: list[Token]) -> bool:
        return True

    def expect_verdict(self, c: list[Token]) -> str:
        return str(c[0])

    @v_args(meta=True)
    def default_decl(self, meta: Meta, c: list[Any]) -> A.DefaultDecl:
        return A.DefaultDecl(c[0], str(c[-1]), self._span(meta))

    @v_args(meta=True)
    def icmp_match(self, meta: Meta, c: list[Any]) -> A.IcmpMatch:
        tok = c[0]
        value: int | str = int(tok) if tok.type == "INT" else str(tok)
        code = int(c[1]) if len(c) > 1 and c[1] is not None else None
        return A.IcmpMatch(value, code, self._span(meta))

    @v_args(meta=True)
    def rule_decl(self, meta: Meta, c: list[Any]) -> A.RuleDecl:
        action, direction = c[0], c[1]
        protocol = icmp = None
        from_peers: tuple[A.Peer, ...] = ()
        to_peers: tuple[A.Peer, ...] = ()
        ports: tuple[A.PortRef, ...] = ()
        priority, log = None, False
        from_span = to_span = None
        for x in c[2:]:
            if isinstance(x, str):
                protocol = x
            elif isinstance(x, A.IcmpMatch):
                icmp = x
            elif isinstance(x, tuple) and x and x[0] == "from":
                from_peers, from_span = x[1], x[2]
            elif isinstance(x, tuple) and x and x[0] == "to":
                to_peers, ports, to_span = x[1], x[2], x[3]
            elif isinstance(x, bool):
                log = x
            elif isinstance(x, int):
                priority = x
        return A.RuleDecl(action, direction, protocol, icmp, from_peers, to_peers, ports, priority, log,
                          self._span(meta), from_span, to_span)

    @v_args(meta=True)
    def from_clause(self, meta: Meta, c: list[Any]) -> tuple[Any, ...]:
        return ("from", tuple(c), self._span(meta))

    @v_args(meta=True)
    def to_clause(self, meta: Meta, c: list[Any]) -> tuple[Any, ...]:
        ports: tuple[A.PortRef, ...] = ()
        peers = []
        for x in c:
            if isinstance(x, tuple) and x and x[0] == "port":
                ports = x[1]
            else:
                peers.append(x)
        return ("to", tuple(peers), ports, self._span(meta))

    def port_clause(self, c: list[Any]) -> tuple[Any, ...]:
        return ("port", tuple(c))

    @v_args(meta=True)
    def port_name(self, meta: Meta, c: list[Token]) -> A.PortName:
        return A.PortName(self._ident(c[0]), self._span(meta))

    def port_set(self, c: list[Any]) -> A.SetLiteral:
        return c[0]  # type: ignore[no-any-return]

    @v_args(meta=True)
    def peer_name(self, meta: Meta, c: list[Token]) -> A.PeerName:
        return A.PeerName(self._ident(c[0]), self._span(meta))

    @v_args(meta=True)
    def peer_addr(self, meta: Meta, c: list[Any]) -> A.PeerAddr:
        return A.PeerAddr(c[0], self._span(meta))

    @v_args(meta=True)
    def peer_set(self, meta: Meta, c: list[Any]) -> A.PeerSet:
        return A.PeerSet(c[0], self._span(meta))

    @v_args(meta=True)
    def peer_selector(self, meta: Meta, c: list[Any]) -> A.PeerSelector:
        return A.PeerSelector(c[0], self._span(meta))

    # ---------------------------------------------------------------- services
    @v_args(meta=True)
    def service_decl(self, meta: Meta, c: list[Any]) -> A.ServiceDecl:
        vips = tuple(x for x in c[1:] if isinstance(x, A.VipDecl))
        backends: list[A.BackendDecl] = []
        balance = table = affinity = None
        repeated: list[Span] = []
        for x in c[1:]:
            if isinstance(x, list):
                backends.extend(x)
            elif isinstance(x, tuple) and x[0] == "balance":
                if balance is not None:
                    repeated.append(x[1].span)
                balance, table = x[1], x[2]
            elif isinstance(x, tuple) and x[0] == "affinity":
                if affinity is not None:
                    repeated.append(x[1].span)
                affinity = (x[1], x[2])
        return A.ServiceDecl(self._ident(c[0]), vips, tuple(backends), balance, table, affinity,
                             self._span(meta), tuple(repeated))

    @v_args(meta=True)
    def vip_decl(self, meta: Meta, c: list[Any]) -> A.VipDecl:
        proto = c[2] if len(c) > 2 and c[2] is not None else "tcp"
        return A.VipDecl(str(c[0]), int(c[1]), proto, self._span(meta))

    def backends_decl(self, c: list[A.BackendDecl]) -> list[A.BackendDecl]:
        return list(c)

    @v_args(meta=True)
    def backend(self, meta: Meta, c: list[Any]) -> A.BackendDecl:
        (kind, value), port, weight = c[0], None, None
        for x in c[1:]:
            if isinstance(x, tuple) and x[0] == "port":
                port = x[1]
            elif isinstance(x, tuple) and x[0] == "weight":
                weight = x[1]
        if kind == "addr":
            return A.BackendDecl(value, None, port, weight, self._span(meta))
        return A.BackendDecl(None, value, port, weight, self._span(meta))

    def backend_port(self, c: list[Token]) -> tuple[str, int]:
        return ("port", int(c[0]))

    def backend_weight(self, c: list[Token]) -> tuple[str, int]:
        return ("weight", int(c[0]))

    def backend_addr(self, c: list[Token]) -> tuple[str, Any]:
        return ("addr", str(c[0]))

    @v_args(meta=True)
    def backend_group(self, meta: Meta, c: list[Token]) -> tuple[str, Any]:
        return ("sel", A.SelGroup(self._ident(c[0]), self._span(meta)))

    def backend_selector(self, c: list[Any]) -> tuple[str, Any]:
        return ("sel", c[0])

    def balance_decl(self, c: list[Any]) -> tuple[Any, ...]:
        return ("balance", self._ident(c[0]), int(c[1]) if len(c) > 1 and c[1] is not None else None)

    def affinity_decl(self, c: list[Token]) -> tuple[Any, ...]:
        return ("affinity", self._ident(c[0]), str(c[1]))

    # ---------------------------------------------------------------- limits, observe
    @v_args(meta=True)
    def limit_group(self, meta: Meta, c: list[Token]) -> A.SelGroup:
        return A.SelGroup(self._ident(c[0]), self._span(meta))

    def limit_selector(self, c: list[Any]) -> A.Selector:
        return c[0]  # type: ignore[no-any-return]

    @v_args(meta=True)
    def limit_all(self, meta: Meta, c: list[Any]) -> A.SelAll:
        return A.SelAll(self._span(meta))

    def rate(self, c: list[Token]) -> tuple[int, A.Ident]:
        return int(c[0]), self._ident(c[1])

    @v_args(meta=True)
    def limit_decl(self, meta: Meta, c: list[Any]) -> A.LimitDecl:
        target, direction, (rate, unit) = c[0], c[1], c[2]
        burst = per = None
        for x in c[3:]:
            if isinstance(x, int):
                burst = x
            elif isinstance(x, A.Ident):
                per = x
        return A.LimitDecl(target, direction, rate, unit, burst, per, self._span(meta))

    def limit_burst(self, c: list[Token]) -> int:
        return int(c[0])

    def limit_per(self, c: list[Token]) -> A.Ident:
        return self._ident(c[0])

    @v_args(meta=True)
    def observe_decl(self, meta: Meta, c: list[Any]) -> A.ObserveDecl:
        events: list[A.Ident] = []
        samples = []
        for x in c[1:]:
            if isinstance(x, list):
                events.extend(x)
            elif isinstance(x, tuple):
                samples.append(x)
        return A.ObserveDecl(c[0], tuple(events), tuple(samples), self._span(meta))

    def events_decl(self, c: list[Token]) -> list[A.Ident]:
        return [self._ident(t) for t in c]

    @v_args(meta=True)
    def sample_decl(self, meta: Meta, c: list[Token]) -> tuple[Any, ...]:
        return (self._ident(c[0]), int(c[1]), int(c[2]), self._span(meta))

    # ---------------------------------------------------------------- tests
    @v_args(meta=True)
    def test_decl(self, meta: Meta, c: list[Any]) -> A.TestDecl:
        containers = tuple(x for x in c[1:] if isinstance(x, A.ContainerDecl))
        expects = tuple(x for x in c[1:] if isinstance(x, A.ExpectDecl))
        return A.TestDecl(_unquote(c[0]), containers, expects, self._span(meta))

    @v_args(meta=True)
    def container_decl(self, meta: Meta, c: list[Any]) -> A.ContainerDecl:
        addrs = tuple(self._ident(t) for t in c[2:] if t is not None)
        return A.ContainerDecl(self._ident(c[0]), c[1], addrs, self._span(meta))

    def labels(self, c: list[Any]) -> tuple[tuple[str, str], ...]:
        return tuple(x for x in c if x is not None)

    def label(self, c: list[Any]) -> tuple[str, str]:
        return (c[0], _unquote(c[1]))

    @v_args(meta=True)
    def expect_decl(self, meta: Meta, c: list[Any]) -> A.ExpectDecl:
        backend = c[2] if len(c) > 2 else None
        return A.ExpectDecl(c[0], c[1], backend, self._span(meta))

    @v_args(meta=True)
    def packet(self, meta: Meta, c: list[Any]) -> A.PacketExpr:
        icmp = c[3] if len(c) > 3 else None
        return A.PacketExpr(c[0], c[1], c[2], icmp, self._span(meta))

    @v_args(meta=True)
    def endpoint_addr(self, meta: Meta, c: list[Any]) -> A.Endpoint:
        port = int(c[1]) if len(c) > 1 and c[1] is not None else None
        return A.Endpoint(str(c[0]), None, port, self._span(meta))

    @v_args(meta=True)
    def endpoint_addr6(self, meta: Meta, c: list[Any]) -> A.Endpoint:
        return A.Endpoint(str(c[0]), None, int(c[1]), self._span(meta))

    @v_args(meta=True)
    def endpoint_name(self, meta: Meta, c: list[Any]) -> A.Endpoint:
        port = int(c[1]) if len(c) > 1 and c[1] is not None else None
        return A.Endpoint(None, str(c[0]), port, self._span(meta))
