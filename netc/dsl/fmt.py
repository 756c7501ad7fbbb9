"""`netc fmt`: print a .netp file in one canonical layout, keeping every comment.

    >>> from netc.source import SourceFile
    >>> text, diags = format_source(SourceFile.from_text("a.netp", "let  web={80,443};group w=app==\\"web\\""))
    >>> print(text, end="")
    let web = {80, 443}
    <BLANKLINE>
    group w = app == "web"

The layout (every rule applies everywhere, so the output of `fmt` is a fixed point of `fmt`):

Declarations and statements
  - Top-level declarations stay in source order. Two declarations are separated by exactly one
    blank line, except that consecutive `import`s, consecutive `let`s and consecutive `group`s stay
    together; between those, one blank line is kept if the source had at least one.
  - Inside a block (`policy`, `service`, `observe`, `test`) statements stay in source order (also
    when the syntax tree files them in separate lists), one per line, indented four spaces. One
    blank line between two statements is kept if the source had at least one; there is never a
    blank line right after `{` or right before `}`.
  - A block opens with ` {` at the end of its header line and closes with `}` on a line of its own;
    an empty block is `name {` and `}` on two lines. Statements written on one line, or split
    across several, become one line each. Semicolons are dropped.
  - The one exception: a `let` whose set literal is written over several lines (its `{` and `}`
    on different lines) and is not empty is printed like a block, one item a line with a comma
    after every item but the last, so long sets stay readable and comments stay with their items.
    A set written on one line stays on one line, however long.

Inside a statement
  - One space between words and around `==`, `!=`, `=`, `->`, `=>`; `, ` between list items; no
    space inside brackets: `{80, 443, 8000-8999}`, `has(app)`, `(app == "web")`, `1000/s`.
  - `A except B` for one exception, `A except {B, C}` for several.
  - Strings in double quotes with `"`, `\\`, newline and tab escaped. Label keys are bare when
    they are a plain name that is not a keyword, quoted otherwise.
  - Selectors get the fewest parentheses that give back the same syntax tree: `not` binds tighter
    than `and`, `and` tighter than `or`; an `or` under an `and`, an `and`/`or` under a `not`, and an
    `or` inside an `or` (an `and` inside an `and`) written with parentheses keep them. Selectors
    used as peers, backends, limit or observe targets are always in `( … )` unless they are a
    plain group name (or `all`, for limit and observe targets).
  - Rules: action direction [protocol] [type T [code C]] [from PEERS] [to PEERS [port PORTS]]
    [priority N] [log]; a rule with ports but no destination peers is written `to port PORTS`.
  - Everything else keeps the grammar's own order: `vip A port P [proto]` (the protocol only if
    it was written), `backends T [port P] [weight W], …` (one line per `backends` statement),
    `balance NAME [table N]`, `affinity NAME DURATION`, `limit T DIR N/UNIT [burst N] [per NAME]`,
    `events a, b`, `sample NAME N/M`, `container NAME {k: "v"} [at A, B]`,
    `expect VERDICT PROTO SRC -> DST [type T [code C]] [=> EP]` with IPv6 endpoints that carry a
    port written `[fd00::1]:443`.

Comments (the text of each comment is kept, minus trailing whitespace)
  - A comment on a line of its own stays on a line of its own before the statement (or block
    header, or `}`) that follows it, at that statement's indentation; comments at the end of a
    block stay before its `}`, comments at the end of the file stay at the end.
  - A comment after code on the same line stays at the end of that statement's line, two spaces
    after it. If several statements shared the line, it follows the last of them.
  - A comment inside a statement that spans several lines (not after its last token) moves to a
    line of its own right before that statement.
  - Blank lines around comments follow the rules for statements: one is kept where the source had
    one, never right after `{` or before `}`.

The output ends with exactly one newline; a file without declarations or comments formats to "".
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netc.diagnostics import Diagnostic, Severity
from netc.dsl import ast as A
from netc.dsl.parser import KEYWORDS, parse
from netc.source import SourceFile, Span

__all__ = ["FormatError", "check_formatted", "format_module", "format_source"]

INDENT = "    "
_GROUPED = (A.ImportDecl, A.LetDecl, A.GroupDecl)  # consecutive ones are not separated by a blank line
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_.:/-]+|\S")
_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "icmpv6", "icmp", "any"})

Pos = tuple[int, int]  # (line, column), 1-based, as in Span


# ====================================================================== public entry points
def format_source(src: SourceFile) -> tuple[str | None, list[Diagnostic]]:
    """The canonical text of `src`, or None and the reasons when it cannot be formatted.

    The result is checked before it is returned: it must parse to the same syntax tree (positions
    aside) with the same comments, otherwise None and an internal-error diagnostic (E097) come back
    instead, so a formatter bug can never rewrite a file into something else.
    """
    module, diags = parse(src)
    if module is None:
        return None, diags
    try:
        text = format_module(module, src)
    except FormatError as exc:
        return None, [Diagnostic(Severity.ERROR, "E097", exc.message, exc.span, exc.hint)]
    again, _ = parse(SourceFile.from_text(src.path, text))
    if (again is None or _shape(again.decls) != _shape(module.decls)
            or sorted(c[2] for c in again.comments) != sorted(c[2].rstrip() for c in module.comments)):
        return None, [Diagnostic(Severity.ERROR, "E097",
                                 "internal error: `netc fmt` could not lay this file out without changing it",
                                 src.span(0, 0), "please report this file; it was left as it is")]
    return text, []


class FormatError(Exception):
    """The module cannot be printed without losing a statement the syntax tree does not keep."""

    def __init__(self, message: str, span: Span, hint: str | None = None):
        super().__init__(message)
        self.message, self.span, self.hint = message, span, hint


def check_formatted(src: SourceFile) -> bool:
    """True when `src` is already in canonical layout (False also when it does not parse)."""
    text, _ = format_source(src)
    return text is not None and text == src.text


def format_module(module: A.Module, src: SourceFile) -> str:
    """The canonical text of a parsed module; `src` is the text it was parsed from.

    Raises FormatError for a service with two `balance` (or `affinity`) statements: the tree keeps
    only the last one, so printing it would silently drop the other.
    """
    units = _Units(_Scanner(src.text, module.comments))
    units.module(module)
    units.attach_comments(module.comments)
    return _render(units.units, units.eof_comments, _BlankLines(src.text))


def _shape(node: Any) -> Any:
    """A node with every position removed, for comparing syntax trees."""
    if isinstance(node, Span):
        return None
    if isinstance(node, A.Ident):
        return node.text
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,) + tuple(_shape(getattr(node, f.name)) for f in dataclasses.fields(node)
                                              if f.name not in ("span", "from_span", "to_span"))
    if isinstance(node, tuple | list):
        return tuple(_shape(x) for x in node)
    if isinstance(node, enum.Enum):
        return node.value
    return node


# ====================================================================== text of constructs
def _quote(s: str) -> str:
    body = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


def _key(key: str) -> str:
    return key if _NAME.match(key) and key not in KEYWORDS else _quote(key)


def _port(p: A.PortItem) -> str:
    return str(p.lo) if p.lo == p.hi else f"{p.lo}-{p.hi}"


def _addr(a: A.AddrItem) -> str:
    if not a.excepts:
        return a.address
    if len(a.excepts) == 1:
        return f"{a.address} except {a.excepts[0].text}"
    return f"{a.address} except {{{', '.join(e.text for e in a.excepts)}}}"


def _set_item(item: A.SetItem) -> str:
    if isinstance(item, A.PortItem):
        return _port(item)
    if isinstance(item, A.AddrItem):
        return _addr(item)
    return item.name.text


def _set_literal(s: A.SetLiteral) -> str:
    return "{" + ", ".join(_set_item(i) for i in s.items) + "}"


def _set_expr(s: A.SetExpr) -> str:
    if isinstance(s, A.SetLiteral):
        return _set_literal(s)
    if isinstance(s, A.SetFile):
        return f"addresses from {_quote(s.path)}"
    return s.name.text


def _selector(s: A.Selector) -> str:
    if isinstance(s, A.SelOr):
        return " or ".join(_wrapped(c, (A.SelOr,)) for c in s.children)
    if isinstance(s, A.SelAnd):
        return " and ".join(_wrapped(c, (A.SelOr, A.SelAnd)) for c in s.children)
    if isinstance(s, A.SelNot):
        return "not " + _wrapped(s.child, (A.SelOr, A.SelAnd))
    if isinstance(s, A.SelAll):
        return "all"
    if isinstance(s, A.SelGroup):
        return s.name.text
    key = _key(s.key)
    if s.op is A.LabelOp.HAS:
        return f"has({key})"
    if s.op in (A.LabelOp.EQ, A.LabelOp.NE):
        return f"{key} {s.op.value} {_quote(s.values[0])}"
    return f"{key} {s.op.value} {{{', '.join(_quote(v) for v in s.values)}}}"


def _wrapped(s: A.Selector, needs_parens: tuple[type, ...]) -> str:
    text = _selector(s)
    return f"({text})" if isinstance(s, needs_parens) else text


def _target(s: A.Selector) -> str:
    """A limit or observe target: a group name, `all`, or a parenthesised selector."""
    return _selector(s) if isinstance(s, A.SelGroup | A.SelAll) else f"({_selector(s)})"


def _peer(p: A.Peer) -> str:
    if isinstance(p, A.PeerName):
        return p.name.text
    if isinstance(p, A.PeerAddr):
        return _addr(p.item)
    if isinstance(p, A.PeerSet):
        return _set_literal(p.literal)
    return f"({_selector(p.selector)})"


def _port_ref(p: A.PortRef) -> str:
    if isinstance(p, A.PortItem):
        return _port(p)
    if isinstance(p, A.PortName):
        return p.name.text
    return _set_literal(p)


def _icmp(m: A.IcmpMatch) -> str:
    return f"type {m.type}" + (f" code {m.code}" if m.code is not None else "")


def _rule(r: A.RuleDecl) -> str:
    parts = [r.action, r.direction]
    if r.protocol is not None:
        parts.append(r.protocol)
    if r.icmp is not None:
        parts.append(_icmp(r.icmp))
    if r.from_peers:
        parts.append("from " + ", ".join(_peer(p) for p in r.from_peers))
    ports = ", ".join(_port_ref(p) for p in r.ports)
    if r.to_peers:
        parts.append("to " + ", ".join(_peer(p) for p in r.to_peers))
        if r.ports:
            parts.append("port " + ports)
    elif r.ports:
        parts.append("to port " + ports)
    if r.priority is not None:
        parts.append(f"priority {r.priority}")
    if r.log:
        parts.append("log")
    return " ".join(parts)


def _backend(b: A.BackendDecl) -> str:
    if b.address is not None:
        text = b.address
    else:
        assert b.selector is not None
        text = b.selector.name.text if isinstance(b.selector, A.SelGroup) else f"({_selector(b.selector)})"
    if b.port is not None:
        text += f" port {b.port}"
    if b.weight is not None:
        text += f" weight {b.weight}"
    return text


def _limit(d: A.LimitDecl) -> str:
    text = f"limit {_target(d.target)} {d.direction} {d.rate}/{d.unit.text}"
    if d.burst is not None:
        text += f" burst {d.burst}"
    if d.per is not None:
        text += f" per {d.per.text}"
    return text


def _endpoint(e: A.Endpoint) -> str:
    if e.address is None:
        base = e.name or ""
    elif e.port is not None and ":" in e.address:
        return f"[{e.address}]:{e.port}"
    else:
        base = e.address
    return base if e.port is None else f"{base}:{e.port}"


def _expect(e: A.ExpectDecl) -> str:
    p = e.packet
    text = f"expect {e.verdict} {p.protocol} {_endpoint(p.src)} -> {_endpoint(p.dst)}"
    if p.icmp is not None:
        text += " " + _icmp(p.icmp)
    if e.backend is not None:
        text += f" => {_endpoint(e.backend)}"
    return text


def _container(c: A.ContainerDecl) -> str:
    labels = ", ".join(f"{_key(k)}: {_quote(v)}" for k, v in c.labels)
    text = f"container {c.name.text} {{{labels}}}"
    if c.addresses:
        text += " at " + ", ".join(a.text for a in c.addresses)
    return text


# ====================================================================== positions in the source
class _Scanner:
    """The source with comments blanked out, for finding the tokens the syntax tree does not keep
    (`{` of a block, the keyword of a `backends`/`events`/`balance`/`affinity` statement)."""

    def __init__(self, text: str, comments: tuple[tuple[int, int, str], ...]):
        self.starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        chars = list(text)
        for line, col, body in comments:
            off = self.offset((line, col))
            chars[off:off + len(body)] = " " * len(body)
        self.text = "".join(chars)

    def offset(self, pos: Pos) -> int:
        return self.starts[pos[0] - 1] + pos[1] - 1

    def pos(self, offset: int) -> Pos:
        idx = bisect.bisect_right(self.starts, offset) - 1
        return idx + 1, offset - self.starts[idx] + 1

    def prev_token(self, pos: Pos) -> tuple[Pos, str]:
        """The token that ends before `pos` (a word or a single symbol) and where it starts."""
        i = self.offset(pos) - 1
        while i >= 0 and self.text[i].isspace():
            i -= 1
        end = i + 1
        if i >= 0 and (self.text[i].isalnum() or self.text[i] in "_-"):
            while i > 0 and (self.text[i - 1].isalnum() or self.text[i - 1] in "_-"):
                i -= 1
        return self.pos(max(i, 0)), self.text[max(i, 0):end]

    def next_token(self, pos: Pos) -> tuple[Pos, str]:
        """The token that starts at or after `pos`, and where it ends."""
        m = _TOKEN.search(self.text, self.offset(pos))
        assert m is not None
        return self.pos(m.end()), m.group()

    def open_brace(self, pos: Pos) -> Pos:
        """The first `{` at or after `pos` outside strings."""
        i = self.offset(pos)
        while self.text[i] != "{":
            if self.text[i] == '"':
                i += 1
                while self.text[i] != '"':
                    i += 2 if self.text[i] == "\\" else 1
            i += 1
        return self.pos(i)


class _Kind(enum.Enum):
    STMT = 1
    OPEN = 2  # a block header, ending in `{`
    CLOSE = 3  # the `}` of a block


@dataclass
class _Unit:
    """One output line of code, and where it came from."""

    text: str
    depth: int
    kind: _Kind
    start: Pos
    end: Pos  # exclusive
    separate: bool = False  # a top-level declaration that needs a blank line before it
    leading: list[tuple[int, str]] = field(default_factory=list)  # (source line, text) of comments
    trailing: str | None = None


def _start(span: Span) -> Pos:
    return span.line, span.col


def _end(span: Span) -> Pos:
    return span.end_line, span.end_col


class _Units:
    """Turns a module into the list of lines of code it prints as, in source order."""

    def __init__(self, scan: _Scanner):
        self.scan = scan
        self.units: list[_Unit] = []
        self.eof_comments: list[tuple[int, str]] = []

    def module(self, module: A.Module) -> None:
        prev: A.Decl | None = None
        for decl in module.decls:
            first = len(self.units)
            self.decl(decl)
            if prev is not None:
                self.units[first].separate = not (isinstance(decl, _GROUPED) and type(decl) is type(prev))
            prev = decl

    def stmt(self, text: str, start: Pos, end: Pos, depth: int = 0) -> None:
        self.units.append(_Unit(text, depth, _Kind.STMT, start, end))

    def block(self, header: str, span: Span, brace: Pos, body: list[tuple[Pos, Pos, str]],
              separator: str = "") -> None:
        """`header {`, the body one item a line in source order, `}` (the last character of `span`)."""
        self.units.append(_Unit(header + " {", 0, _Kind.OPEN, _start(span), (brace[0], brace[1] + 1)))
        body = sorted(body)
        for i, (start, end, text) in enumerate(body):
            self.stmt(text + (separator if i + 1 < len(body) else ""), start, end, 1)
        self.units.append(_Unit("}", 0, _Kind.CLOSE, (span.end_line, span.end_col - 1), _end(span)))

    def decl(self, d: A.Decl) -> None:
        scan = self.scan
        if isinstance(d, A.ImportDecl):
            self.stmt(f"import {_quote(d.path)}", _start(d.span), _end(d.span))
        elif isinstance(d, A.LetDecl) and isinstance(d.value, A.SetLiteral) and d.value.items \
                and d.value.span.line != d.value.span.end_line:  # a set written over several lines
            body = [(_start(x.span), _end(x.span), _set_item(x)) for x in d.value.items]
            self.block(f"let {d.name.text} =", d.span, _start(d.value.span), body, ",")
        elif isinstance(d, A.LetDecl):
            self.stmt(f"let {d.name.text} = {_set_expr(d.value)}", _start(d.span), _end(d.span))
        elif isinstance(d, A.GroupDecl):
            self.stmt(f"group {d.name.text} = {_selector(d.selector)}", _start(d.span), _end(d.span))
        elif isinstance(d, A.LimitDecl):
            self.stmt(_limit(d), _start(d.span), _end(d.span))
        elif isinstance(d, A.PolicyDecl):
            header = f"policy {d.name.text} for {_selector(d.selector)}"
            if d.priority is not None:
                header += f" priority {d.priority}"
            body = [(_start(x.span), _end(x.span), f"{x.direction} default {x.action}") for x in d.defaults]
            body += [(_start(r.span), _end(r.span), _rule(r)) for r in d.rules]
            self.block(header, d.span, scan.open_brace(_end(d.selector.span)), body)
        elif isinstance(d, A.ServiceDecl):
            brace = scan.open_brace(_end(d.name.span))
            self.block(f"service {d.name.text}", d.span, brace, self.service_body(d, brace))
        elif isinstance(d, A.ObserveDecl):
            body = [(start, end, "events " + ", ".join(e.text for e in events))
                    for start, end, events in self.lists(d.events, lambda e: e.span)]
            body += [(_start(sp), _end(sp), f"sample {name.text} {n}/{m}") for name, n, m, sp in d.samples]
            self.block(f"observe {_target(d.target)}", d.span, scan.open_brace(_end(d.target.span)), body)
        else:
            body = [(_start(c.span), _end(c.span), _container(c)) for c in d.containers]
            body += [(_start(e.span), _end(e.span), _expect(e)) for e in d.expects]
            self.block(f"test {_quote(d.name)}", d.span, scan.open_brace(_start(d.span)), body)

    def service_body(self, d: A.ServiceDecl, brace: Pos) -> list[tuple[Pos, Pos, str]]:
        scan = self.scan
        words = re.findall(r"[A-Za-z0-9_-]+", scan.text[scan.offset(brace):scan.offset(_end(d.span))])
        for keyword, kept in (("balance", d.balance), ("affinity", d.affinity)):
            if words.count(keyword) > (kept is not None):
                raise FormatError(f"service `{d.name.text}` has more than one `{keyword}` statement; only the "
                                  "last one counts, and formatting would drop the others", d.name.span,
                                  f"keep a single `{keyword}` statement")
        body: list[tuple[Pos, Pos, str]] = []
        for v in d.vips:
            text = f"vip {v.address} port {v.port}"
            _, last = scan.prev_token(_end(v.span))
            if v.protocol != "tcp" or last in _PROTOCOLS:
                text += f" {v.protocol}"
            body.append((_start(v.span), _end(v.span), text))
        for start, end, backends in self.lists(d.backends, lambda b: b.span):
            body.append((start, end, "backends " + ", ".join(_backend(b) for b in backends)))
        if d.balance is not None:
            start, _ = scan.prev_token(_start(d.balance.span))
            end, text = _end(d.balance.span), f"balance {d.balance.text}"
            if d.table_size is not None:
                end, _ = scan.next_token(scan.next_token(end)[0])
                text += f" table {d.table_size}"
            body.append((start, end, text))
        if d.affinity is not None:
            name, duration = d.affinity
            start, _ = scan.prev_token(_start(name.span))
            end, _ = scan.next_token(_end(name.span))
            body.append((start, end, f"affinity {name.text} {duration}"))
        return body

    def lists(self, items: tuple[Any, ...], span: Callable[[Any], Span]) -> list[tuple[Pos, Pos, list[Any]]]:
        """Split the items of several `keyword a, b` statements that the tree keeps in one tuple
        back into statements: an item not preceded by a comma starts a new one."""
        out: list[tuple[Pos, Pos, list[Any]]] = []
        for item in items:
            sp = span(item)
            keyword, tok = self.scan.prev_token(_start(sp))
            if tok == "," and out:
                out[-1][2].append(item)
                out[-1] = (out[-1][0], _end(sp), out[-1][2])
            else:
                out.append((keyword, _end(sp), [item]))
        return out

    def attach_comments(self, comments: tuple[tuple[int, int, str], ...]) -> None:
        """Give each comment to exactly one unit (or to the end of the file)."""
        starts = [u.start for u in self.units]
        for line, col, text in sorted(comments):
            text = text.rstrip()
            i = bisect.bisect_right(starts, (line, col)) - 1
            before = self.units[i] if i >= 0 else None
            if before is not None and before.end > (line, col):  # inside a multi-line statement
                before.leading.append((before.start[0], text))
            elif before is not None and before.end[0] == line:  # after code on the same line
                before.trailing = text
            elif i + 1 < len(self.units):
                self.units[i + 1].leading.append((line, text))
            else:
                self.eof_comments.append((line, text))


# ====================================================================== output
class _BlankLines:
    """Whether the source has a blank line between two lines."""

    def __init__(self, text: str):
        self.count = [0]
        for line in text.split("\n"):
            self.count.append(self.count[-1] + (not line.strip()))

    def between(self, a: int, b: int) -> bool:
        """A blank line strictly between lines a and b (1-based)."""
        return b - a > 1 and self.count[b - 1] - self.count[a] > 0


@dataclass
class _Line:
    text: str
    first: int  # source lines it came from
    last: int
    kind: _Kind | None  # None for a comment on a line of its own
    separate: bool


def _render(units: list[_Unit], eof_comments: list[tuple[int, str]], blanks: _BlankLines) -> str:
    lines: list[_Line] = []
    for u in units:
        depth = u.depth + (1 if u.kind is _Kind.CLOSE else 0)  # comments before `}` are inside the block
        separate = u.separate
        for line, text in u.leading:
            lines.append(_Line(INDENT * depth + text, line, line, None, separate))
            separate = False
        code = INDENT * u.depth + u.text + (f"  {u.trailing}" if u.trailing is not None else "")
        lines.append(_Line(code, u.start[0], u.end[0], u.kind, separate))
    lines += [_Line(text, line, line, None, False) for line, text in eof_comments]

    out: list[str] = []
    for i, ln in enumerate(lines):
        if i > 0:
            prev = lines[i - 1]
            if ln.separate or (prev.kind is not _Kind.OPEN and ln.kind is not _Kind.CLOSE
                               and blanks.between(prev.last, ln.first)):
                out.append("")
        out.append(ln.text)
    return "".join(x + "\n" for x in out)
