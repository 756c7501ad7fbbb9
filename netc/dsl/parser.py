"""Text → AST, with syntax errors turned into Diagnostics a person can act on.

    >>> from netc.source import SourceFile
    >>> module, diags = parse(SourceFile.from_text("a.netp", "let web = {80, 443}"))
    >>> module.decls[0].name.text, diags
    ('web', [])
"""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from netc.diagnostics import Diagnostic, Severity
from netc.dsl import ast as A
from netc.dsl.transformer import ToAst
from netc.source import SourceFile, Span

KEYWORDS = frozenset({
    "import", "let", "addresses", "from", "except", "group", "all", "has", "in", "not", "and", "or",
    "policy", "for", "priority", "default", "allow", "deny", "audit", "ingress", "egress", "tcp", "udp",
    "sctp", "icmp", "icmpv6", "any", "log", "type", "code", "to", "port", "service", "vip", "backends",
    "weight", "balance", "table", "affinity", "limit", "burst", "per", "observe", "events", "sample",
    "test", "container", "at", "expect", "dnat",
})

# How terminals read in messages.
_READABLE = {
    "NAME": "a name", "STRING": "a quoted string", "INT": "a number", "SIGNED_INT": "a number",
    "ADDRESS": "an address", "DURATION": "a duration like 300s", "LBRACE": "`{`", "RBRACE": "`}`",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "COMMA": "`,`", "COLON": "`:`",
    "SEMICOLON": "`;`", "EQUAL": "`=`", "MINUS": "`-`", "SLASH": "`/`", "$END": "the end of the file",
}


def _readable(term: str) -> str:
    if term in _READABLE:
        return _READABLE[term]
    if term.startswith("__ANON"):
        return "a symbol"
    return f"`{term.lower()}`"


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("netc.dsl").joinpath("grammar/netp.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                start=["start", "packet"], lexer_callbacks={"COMMENT": _collect_comment},
                maybe_placeholders=True)


_comments: list[Token] = []
# Tests set this to compare the fast reader with lark on the same input.
_FORCE_LARK = False


def _collect_comment(tok: Token) -> Token:
    _comments.append(tok)
    return tok


def parse(src: SourceFile) -> tuple[A.Module | None, list[Diagnostic]]:
    """Parse a whole .netp file. On a syntax error the module is None and one Diagnostic says why."""
    from netc.dsl.fastparse import fast_parse

    if not _FORCE_LARK:
        fast = fast_parse(src.path, src.text)
        if fast is not None:
            return fast, []
    _comments.clear()
    try:
        tree = _lark().parse(src.text, start="start")
        decls = ToAst(src.path).transform(tree)
    except UnexpectedInput as exc:
        return None, [_syntax_diagnostic(src, exc)]
    except VisitError as exc:  # a transformer bug must still not become a traceback for the user
        return None, [Diagnostic(Severity.ERROR, "E099", f"internal error while reading the file: {exc.orig_exc}",
                                 src.span(0, 0))]
    except RecursionError:
        return None, [Diagnostic(Severity.ERROR, "E098", "the file nests too deeply to be read",
                                 src.span(0, 0), "split the deeply nested selector into named groups")]
    comments = tuple((t.line or 0, t.column or 0, str(t)) for t in _comments)
    return A.Module(src.path, tuple(decls), comments), []


def parse_packet(text: str, path: str = "<packet>") -> tuple[A.PacketExpr | None, list[Diagnostic]]:
    """Parse a packet description such as `tcp 10.1.1.1:40000 -> web:443`."""
    src = SourceFile.from_text(path, text)
    try:
        tree = _lark().parse(text, start="packet")
        pkt = ToAst(path).transform(tree)
    except UnexpectedInput as exc:
        return None, [_syntax_diagnostic(src, exc)]
    return pkt, []


# ---------------------------------------------------------------------- friendly syntax errors
def _tok_span(src: SourceFile, tok: Token | None, fallback: int) -> Span:
    if tok is None or tok.line is None or tok.type == "$END":
        return src.span(fallback, fallback + 1)
    return Span(src.path, tok.line, tok.column or 1, tok.end_line or tok.line,
                tok.end_column or (tok.column or 1) + 1)


def _open_brace(src: SourceFile) -> Span | None:
    """The `{` that is never closed, found by a plain scan that skips strings and comments."""
    stack: list[int] = []
    i, text = 0, src.text
    while i < len(text):
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            stack.pop()
        i += 1
    return src.span(stack[-1], stack[-1] + 1) if stack else None


def _syntax_diagnostic(src: SourceFile, exc: UnexpectedInput) -> Diagnostic:
    pos = getattr(exc, "pos_in_stream", None) or 0
    if isinstance(exc, UnexpectedCharacters):
        at = exc.pos_in_stream or 0
        ch = src.text[at] if at < len(src.text) else "?"
        span = Span(src.path, exc.line, exc.column, exc.line, exc.column + 1)
        hint = None
        if ch == "'":
            hint = 'strings are written in double quotes: "web"'
        elif ch in "=<>!":
            hint = "label comparisons are `==`, `!=`, `in`, `not in` and `has(key)`"
        return Diagnostic(Severity.ERROR, "E001", f"unexpected character `{ch}`", span, hint)

    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        opened = _open_brace(src)
        end = src.span(max(0, len(src.text) - 1), len(src.text))
        if opened is not None:
            return Diagnostic(Severity.ERROR, "E002", "missing `}`: the block is never closed", opened,
                              "add `}` where the block should end")
        wanted = sorted(getattr(exc, "expected", set()))
        want = ", ".join(_readable(t) for t in wanted[:6])
        return Diagnostic(Severity.ERROR, "E003", f"the file ends too early; expected {want}", end)

    assert isinstance(exc, UnexpectedToken)
    tok: Token = exc.token
    expected = set(exc.expected)
    span = _tok_span(src, tok, pos)
    text = str(tok)
    prev = _previous_token(src, tok)

    # `allow ingress tcp corp`: a peer where `from`/`to` belongs.
    if ({"FROM", "TO"} & expected) and tok.type in {"NAME", "ADDRESS", "LBRACE", "LPAR"} and "PORT" in expected:
        return Diagnostic(Severity.ERROR, "E004", f"expected `from` or `to` before the peer `{text}`", span,
                          "ingress rules name their peer with `from`, egress rules with `to`, "
                          "e.g. `allow ingress tcp from corp to port 443`")
    # A stray or trailing comma.
    if prev == "," and tok.type in {"RBRACE", "RPAR", "COMMA", "$END"} | {"FROM", "TO", "PORT", "LOG"}:
        return Diagnostic(Severity.ERROR, "E005", "stray comma: nothing follows it", _prev_span(src, tok),
                          "remove the comma")
    if tok.type == "COMMA":
        return Diagnostic(Severity.ERROR, "E005", "unexpected comma", span,
                          "commas separate the items of a set, a peer list or a port list")
    # A keyword where a name belongs.
    if "NAME" in expected and text in KEYWORDS:
        return Diagnostic(Severity.ERROR, "E006", f"`{text}` is a keyword and cannot be used as a name", span,
                          f"choose another name, such as `{text}_set` or `my-{text}`")
    # `}` where a statement was still going.
    if tok.type == "RBRACE":
        want = ", ".join(sorted(_readable(t) for t in expected)[:6])
        return Diagnostic(Severity.ERROR, "E007", f"the statement is not finished before `}}`; expected {want}", span)
    # A brace opened at the start of a new top-level declaration: the previous block was not closed.
    if text in {"policy", "service", "test", "observe", "group", "let", "limit", "import"} and "RBRACE" in expected:
        opened = _open_brace(src)
        return Diagnostic(Severity.ERROR, "E002", f"missing `}}` before `{text}`", span,
                          "close the block before starting a new declaration",
                          notes=((("the block opened here", opened),) if opened else ()))
    if tok.type in ("INT", "SIGNED_INT") and "ADDRESS" in expected:
        return Diagnostic(Severity.ERROR, "E008", f"`{text}` is not an address", span,
                          "addresses are written like 10.0.0.1, 10.0.0.0/8 or fd00::1")
    want = ", ".join(sorted(_readable(t) for t in expected)[:8])
    hint = None
    if tok.type == "EQUAL":
        hint = "label comparisons are `==`, `!=`, `in`, `not in` and `has(key)`"
    return Diagnostic(Severity.ERROR, "E009", f"unexpected {_describe(tok)}; expected {want}", span, hint)


def _describe(tok: Token) -> str:
    kind = {"NAME": "name", "STRING": "string", "INT": "number", "SIGNED_INT": "number",
            "ADDRESS": "address"}.get(tok.type)
    return f"{kind} `{tok}`" if kind else f"`{tok}`"


def _previous_token(src: SourceFile, tok: Token) -> str:
    idx = (tok.start_pos or 0) - 1
    text = src.text
    while idx >= 0:
        ch = text[idx]
        if ch.isspace():
            idx -= 1
            continue
        # skip back over a comment on this line is not needed: comments run to the end of a line
        return ch
    return ""


def _prev_span(src: SourceFile, tok: Token) -> Span:
    idx = (tok.start_pos or 0) - 1
    while idx >= 0 and src.text[idx].isspace():
        idx -= 1
    return src.span(max(idx, 0), max(idx, 0) + 1)


