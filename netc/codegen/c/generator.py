"""The C backend: renders a ProgramPlan into libbpf-style BPF C with Jinja2.

Nothing from a `.netp` file reaches the C text unescaped. Every string a template emits goes
through one of the filters below: `c_comment` (free text, made safe inside a /* */ comment) or
`c_ident` / `c_type` (validated identifiers, rejected otherwise). Numbers go through `c_uint`.
Nothing is ever put into a C string literal. The environment uses StrictUndefined, so a template
that names a variable the generator did not provide fails loudly instead of emitting "".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

import netc
from netc.codegen.planner import MapSpec, ProgramPlan
from netc.errors import CompileError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DATAPATH_TEMPLATE = "datapath.c.j2"

# The maps the datapath template refers to by name; the plan must provide each of them.
REQUIRED_MAPS = ("netc_endpoints", "netc_addrs", "netc_addr4_root", "netc_addr4_nodes", "netc_rules", "netc_wild",
                 "netc_gen", "netc_counters", "netc_events", "netc_stats", "netc_ct", "netc_ct4", "netc_ct_timeouts",
                 "netc_ct_counters")
LB_MAPS = ("netc_services", "netc_backends", "netc_lb_table", "netc_lb_rr", "netc_affinity",
           "netc_lb_scratch", "netc_ct_rev")  # with services

MAP_TYPES = {
    "hash": "BPF_MAP_TYPE_HASH",
    "lru_hash": "BPF_MAP_TYPE_LRU_HASH",
    "percpu_hash": "BPF_MAP_TYPE_PERCPU_HASH",
    "lru_percpu_hash": "BPF_MAP_TYPE_LRU_PERCPU_HASH",
    "array": "BPF_MAP_TYPE_ARRAY",
    "percpu_array": "BPF_MAP_TYPE_PERCPU_ARRAY",
    "lpm_trie": "BPF_MAP_TYPE_LPM_TRIE",
    "prog_array": "BPF_MAP_TYPE_PROG_ARRAY",
    "ringbuf": "BPF_MAP_TYPE_RINGBUF",
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if inline int
    long register restrict return short signed sizeof static struct switch typedef union unsigned void
    volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert
    _Thread_local asm typeof
""".split())
_COMMENT_MAX = 200


def c_comment(value: object) -> str:
    """Make arbitrary text safe inside a C block comment, on one line.

    Newlines and other control characters become spaces, non-ASCII characters become
    `<U+XXXX>`, and `*/` / `/*` are broken up so the text can neither end the comment nor open a
    nested one. Long text is shortened.
    """
    out = []
    for ch in str(value):
        if " " <= ch <= "~":
            out.append(ch)
        elif ch in "\t\n\r\v\f":
            out.append(" ")
        else:
            out.append(f"<U+{ord(ch):04X}>")
    text = "".join(out)
    while "*/" in text or "/*" in text:
        text = text.replace("*/", "* /").replace("/*", "/ *")
    if len(text) > _COMMENT_MAX:
        text = text[: _COMMENT_MAX - 3] + "..."
    return text


def c_ident(value: object) -> str:
    """Return `value` if it is a C identifier (and not a keyword), else raise CompileError."""
    if not isinstance(value, str) or not _IDENT.match(value) or value in _C_KEYWORDS:
        raise CompileError(f"not a valid C identifier: {value!r}")
    return value


def c_type(value: object) -> str:
    """A C type name as the planner writes it: `ident` or `struct ident`."""
    if isinstance(value, str):
        parts = value.split(" ")
        if len(parts) == 1 and parts[0] not in _C_KEYWORDS and _IDENT.match(parts[0]):
            return value
        if len(parts) == 2 and parts[0] == "struct" and parts[1] not in _C_KEYWORDS and _IDENT.match(parts[1]):
            return value
    raise CompileError(f"not a valid C type name: {value!r}")


def c_uint(value: object) -> str:
    """A non-negative integer that fits in 32 bits, as C text."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise CompileError(f"not a 32-bit unsigned integer: {value!r}")
    return str(value)


def c_map_type(value: object) -> str:
    try:
        return MAP_TYPES[value]  # type: ignore[index]
    except (KeyError, TypeError):
        raise CompileError(f"unknown map type {value!r} (known: {', '.join(sorted(MAP_TYPES))})") from None


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(c_comment=c_comment, c_ident=c_ident, c_type=c_type, c_uint=c_uint,
                       c_map_type=c_map_type)
    return env


def _check_plan(plan: ProgramPlan) -> None:
    names = [m.name for m in plan.maps]
    required = REQUIRED_MAPS + (LB_MAPS if "services" in plan.features else ())
    missing = [n for n in required if n not in names]
    if missing:
        raise CompileError(f"program plan lacks map(s) the datapath needs: {', '.join(missing)}")
    if len(set(names)) != len(names):
        raise CompileError(f"program plan names a map twice: {names}")


def _map_context(spec: MapSpec) -> dict[str, Any]:
    return {"name": spec.name, "type": spec.type, "key": spec.key_struct, "value": spec.value_struct,
            "max_entries": spec.max_entries, "no_prealloc": spec.no_prealloc, "mmapable": spec.mmapable,
            "comment": spec.comment}


def generate_c(plan: ProgramPlan, manifest_summary: Mapping[str, Any]) -> str:
    """Render the datapath C for `plan`.

    `manifest_summary` describes where the program came from, for the banner only:
      sources   (required) list of .netp file names
      policies  (optional) list of policy names
      source_sha256 (optional) digest of the sources
    Anything in it is treated as untrusted text and only ever lands in comments.
    """
    _check_plan(plan)
    summary = {"policies": [], "source_sha256": "", **manifest_summary}
    template = environment().get_template(DATAPATH_TEMPLATE)
    return template.render(
        netc_version=netc.__version__,
        manifest=summary,
        maps=[_map_context(m) for m in plan.maps],
        features=list(plan.features),
        lb="services" in plan.features,   # service translation: only programs with services pay for it
        rule_count=plan.rule_count,
    )
