"""The Python API that CI scripts embed. Functions return typed results; nothing prints.

    >>> from netc import api
    >>> r = api.check('let web = {80, 443}')
    >>> r.ok, r.errors
    (True, [])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from netc import __version__
from netc.diagnostics import Diagnostic, Reporter, Severity
from netc.errors import DiagnosticsError, NetcError
from netc.ir.eval import Packet, ServiceState, Verdict, evaluate
from netc.ir.nodes import Program, Protocol
from netc.ir.pipeline import FrontEndResult, front_end, load_source
from netc.ir.testing import ExpectationResult
from netc.ir.testing import run_tests as _run_tests
from netc.runtime.inventory import Inventory

MANIFEST_FORMAT = "netc-manifest/1"


@dataclass
class CheckResult:
    program: Program | None
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.program is not None and not self.errors

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]


def _inventory(inv: Inventory | str | None) -> Inventory | None:
    if inv is None or isinstance(inv, Inventory):
        return inv
    return Inventory.load(inv)


def check(path_or_text: str, *, inventory: Inventory | str | None = None, name: str | None = None) -> CheckResult:
    """Parse, resolve, type-check and lint a .netp file (a path, or the text itself)."""
    src, path = load_source(path_or_text, name=name)
    res: FrontEndResult = front_end(src, path)
    diags = list(res.diagnostics)
    inv = _inventory(inventory)
    if res.program is not None and inv is not None:
        diags.extend(lint_inventory(res.program, inv))
    return CheckResult(res.program, diags)


def lint_inventory(program: Program, inv: Inventory) -> list[Diagnostic]:
    """Warnings that need the inventory: selectors that match no container."""
    rep = Reporter()
    for p in program.policies:
        if not any(p.selector.matches(c.labels) for c in inv.containers):
            rep.warning("W803", f"policy `{p.name}` selects no container of the inventory", p.span,
                        f"its selector is `{p.selector}`")
        for r in p.rules:
            for s in r.peer.selectors:
                if not any(s.matches(c.labels) for c in inv.containers):
                    rep.warning("W803", f"peer selector `{s}` matches no container of the inventory", r.span)
    for svc in program.services:
        for b in svc.backends:
            if b.selector is not None and not any(b.selector.matches(c.labels) for c in inv.containers):
                rep.warning("W803", f"backends of service `{svc.name}` match no container of the inventory",
                            svc.span)
    return rep.diagnostics


def _require(path_or_text: str, name: str | None = None) -> CheckResult:
    res = check(path_or_text, name=name)
    if not res.ok:
        raise DiagnosticsError(res.errors)
    return res


# ---------------------------------------------------------------------- compile
@dataclass
class CompileResult:
    object: bytes
    c_source: str
    manifest: dict[str, Any]
    program: Program
    diagnostics: list[Diagnostic] = field(default_factory=list)


def manifest_for(program: Program, plan_json: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for path, sha in program.sources:
        digest.update(f"{path}\0{sha}\n".encode())
    return {
        "format": MANIFEST_FORMAT,
        "netc_version": __version__,
        "source_sha256": digest.hexdigest(),
        "programs": {
            "netc_from_container": {"section": "tcx/ingress", "direction": "egress"},
            "netc_to_container": {"section": "tcx/egress", "direction": "ingress"},
        },
        "plan": plan_json,
        "ir": program.to_json(),
    }


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def compile(path_or_text: str, *, name: str | None = None) -> CompileResult:  # noqa: A001 - the API's verb
    """Compile to a BPF ELF object with the manifest embedded. Raises DiagnosticsError or CompileError."""
    from netc.codegen.artifact import embed_manifest
    from netc.codegen.c.generator import generate_c
    from netc.codegen.planner import plan
    from netc.codegen.toolchain import compile_c

    res = _require(path_or_text, name)
    assert res.program is not None
    program_plan = plan(res.program)
    manifest = manifest_for(res.program, program_plan.to_json())
    c_text = generate_c(program_plan, {"sources": [p for p, _ in res.program.sources],
                                       "source_sha256": manifest["source_sha256"]})
    obj = compile_c(c_text)
    return CompileResult(embed_manifest(obj, encode_manifest(manifest)), c_text, manifest, res.program,
                         res.diagnostics)


def read_manifest(obj: bytes) -> dict[str, Any]:
    from netc.codegen.artifact import read_manifest as _read

    try:
        data = json.loads(_read(obj))
    except ValueError as exc:
        raise NetcError(f"the artifact's manifest is not valid JSON: {exc}") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise NetcError(f"unknown manifest format {data.get('format')!r}; this netc reads {MANIFEST_FORMAT}")
    return dict(data)


# ---------------------------------------------------------------------- explain and test
def parse_packet(text: str, inventory: Inventory | None = None, program: Program | None = None) -> Packet:
    """`tcp 10.1.1.1:40000 -> web-1:443`, `icmp a -> b type echo-request`; names are containers."""
    from netc.dsl.parser import parse_packet as _parse
    from netc.ir.passes.check_types import ICMP_TYPES, ICMPV6_TYPES

    pkt, diags = _parse(text)
    if pkt is None:
        raise DiagnosticsError(diags)
    proto = Protocol.from_name(pkt.protocol)
    if proto is None:
        raise NetcError("a packet has one protocol: tcp, udp, sctp, icmp or icmpv6")

    def addr(ep: Any, other: Any) -> str:
        if ep.address is not None:
            import ipaddress

            return str(ipaddress.ip_address(ep.address))
        c = inventory.by_name(ep.name) if inventory else None
        if c is None:
            raise NetcError(f"`{ep.name}` is not a container of the inventory")
        want = 6 if (other.address and ":" in other.address) or proto is Protocol.ICMPV6 else 4
        for a in c.addresses:
            if (":" in a) == (want == 6):
                return str(a)
        raise NetcError(f"container `{ep.name}` has no IPv{want} address")

    src, dst = addr(pkt.src, pkt.dst), addr(pkt.dst, pkt.src)
    if proto.is_icmp:
        table = ICMPV6_TYPES if proto is Protocol.ICMPV6 else ICMP_TYPES
        itype: int = 8 if proto is Protocol.ICMP else 128
        code = 0
        if pkt.icmp is not None:
            if isinstance(pkt.icmp.type, str):
                if pkt.icmp.type not in table:
                    raise NetcError(f"unknown {proto.name.lower()} type `{pkt.icmp.type}`")
                itype = table[pkt.icmp.type]
            else:
                itype = pkt.icmp.type
            code = pkt.icmp.code or 0
        return Packet(proto.value, src, dst, 0, 0, itype, code)
    return Packet(proto.value, src, dst, pkt.src.port or 49152, pkt.dst.port or 0)


def explain(path_or_text: str, packet: str | Packet, *, inventory: Inventory | str | None = None,
            state: ServiceState | None = None) -> Verdict:
    """The verdict for one packet, with the deciding rule and every rule that matched."""
    res = _require(path_or_text)
    assert res.program is not None
    inv = _inventory(inventory) or Inventory()
    pkt = packet if isinstance(packet, Packet) else parse_packet(packet, inv, res.program)
    return evaluate(res.program, inv, pkt, state)


@dataclass
class TestRun:
    results: list[ExpectationResult]
    diagnostics: list[Diagnostic]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.passed]


def run_tests(path_or_text: str, *, inventory: Inventory | str | None = None) -> TestRun:
    """Run the file's `test` blocks against the reference semantics."""
    res = _require(path_or_text)
    assert res.program is not None
    return TestRun(_run_tests(res.program, _inventory(inventory)), res.diagnostics)
