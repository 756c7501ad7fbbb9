"""The `netc` command: thin click wrappers over netc.api (and, for runtime commands, netc.runtime).

Exit codes: 0 success (warnings allowed), 1 errors in the input or a failed test/expectation,
2 usage errors, 3 an environment problem (missing tool, kernel refused).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from netc import __version__, api
from netc.diagnostics import Diagnostic, render_json, render_sarif, render_text
from netc.errors import CompileError, DiagnosticsError, LoadError, NetcError, UsageError


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _print_diags(diags: list[Diagnostic], fmt: str = "text", stream: Any = None) -> None:
    if not diags:
        return
    out = stream or sys.stderr
    if fmt == "json":
        click.echo(render_json(diags), file=out)
    elif fmt == "sarif":
        click.echo(render_sarif(diags, __version__), file=out)
    else:
        click.echo(render_text(diags, colour=_colour() and out is sys.stdout), file=out)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn netc's errors into messages and exit codes; never show a traceback for bad input."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DiagnosticsError as exc:
            _print_diags(exc.diagnostics)
            sys.exit(1)
        except UsageError as exc:
            click.echo(f"netc: {exc}", err=True)
            sys.exit(2)
        except (CompileError, LoadError) as exc:
            click.echo(f"netc: error: {exc}", err=True)
            sys.exit(3 if not isinstance(exc, CompileError) else 1)
        except NetcError as exc:
            click.echo(f"netc: error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:   # the environment refused something: say what, not where in netc
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"netc: error: {exc.strerror or exc}{where}", err=True)
            sys.exit(3)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # a bug in netc: say so plainly; the traceback on request
            if os.environ.get("NETC_DEBUG"):
                raise
            click.echo(f"netc: internal error: {type(exc).__name__}: {exc}\n"
                       "  this is a bug in netc; run again with NETC_DEBUG=1 for the traceback", err=True)
            sys.exit(70)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netc")
def main() -> None:
    """netc: compile .netp network policies to eBPF and run them on containers.

    \b
    Offline (no root, no kernel):  check, compile, test, explain, fmt, bench compile
    """


# ---------------------------------------------------------------------- check
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              help="How diagnostics are printed (json and sarif go to stdout, for CI systems).")
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
              help="An inventory of containers, to also warn about selectors that match none.")
@_guard
def check(files: tuple[str, ...], fmt: str, inventory: str | None) -> None:
    """Parse, type-check and lint FILES; print diagnostics.

    Exit 0 when there are no errors (warnings allowed), 1 when a file has errors.
    """
    all_diags: list[Diagnostic] = []
    failed = False
    for f in files:
        if not os.path.isfile(f):
            raise UsageError(f"no such file: {f}")
        res = api.check(f, inventory=inventory)
        all_diags.extend(res.diagnostics)
        failed |= not res.ok
    if fmt == "text":
        _print_diags(all_diags, "text", sys.stdout)
        errors = sum(1 for d in all_diags if d.severity.value == "error")
        warnings = sum(1 for d in all_diags if d.severity.value == "warning")
        summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
        click.echo(summary, err=True)
    else:
        _print_diags(all_diags, fmt, sys.stdout)
    sys.exit(1 if failed else 0)


# ---------------------------------------------------------------------- compile
@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The BPF object to write (default FILE.bpf.o).")
@click.option("--emit-c", type=click.Path(dir_okay=False), help="Also write the generated C here.")
@_guard
def compile(file: str, output: str | None, emit_c: str | None) -> None:  # noqa: A001
    """Compile FILE to one BPF ELF object with its manifest embedded."""
    res = api.compile(file)
    _print_diags(res.diagnostics)
    out = output or (os.path.splitext(file)[0] + ".bpf.o")
    with open(out, "wb") as fh:
        fh.write(res.object)
    if emit_c:
        with open(emit_c, "w") as fh:
            fh.write(res.c_source)
    n = len(res.program.rules)
    click.echo(f"compiled {file}: {n} rule(s), {len(res.program.services)} service(s) -> {out} "
               f"({len(res.object)} bytes)", err=True)


# ---------------------------------------------------------------------- test
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
              help="Containers to test against, besides those the tests declare.")
@click.option("--kernel", is_flag=True, help="Also run every expectation in the kernel (BPF_PROG_TEST_RUN).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every result.")
@_guard
def test(files: tuple[str, ...], inventory: str | None, kernel: bool, as_json: bool) -> None:
    """Run the `test` blocks of FILES against the reference semantics.

    Each expectation is reported with its location; exit 1 when one fails.
    """
    from netc.ir.nodes import EndpointRef  # noqa: F401  (documents the result type)

    failed = 0
    total = 0
    report: list[dict[str, Any]] = []
    for f in files:
        run = api.run_tests(f, inventory=inventory)
        _print_diags([d for d in run.diagnostics if d.severity.value == "warning"]) if not as_json else None
        kernel_results: dict[int, tuple[bool, str]] = {}
        if kernel:
            from netc.runtime.testrun import run_kernel_tests

            kernel_results = run_kernel_tests(f, run, inventory)
        for r in run.results:
            total += 1
            ok = r.passed
            kmsg = ""
            if kernel:
                kok, kmsg = kernel_results.get(id(r), (False, "not run in the kernel"))
                ok = ok and kok
            failed += not ok
            loc = str(r.expectation.span)
            report.append({"file": f, "test": r.block, "location": loc, "expectation": r.expectation.text,
                           "passed": ok, "message": r.message, **({"kernel": kmsg} if kernel else {})})
            if not as_json:
                mark = click.style("PASS", fg="green") if ok else click.style("FAIL", fg="red", bold=True)
                click.echo(f"{mark} {loc}: {r.expectation.text}")
                if not ok:
                    click.echo(f"     {r.message}")
                    if kmsg:
                        click.echo(f"     kernel: {kmsg}")
    if as_json:
        click.echo(json.dumps({"passed": total - failed, "failed": failed, "results": report}, indent=2))
    else:
        click.echo(f"{total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


# ---------------------------------------------------------------------- explain
@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--packet", required=True, help='e.g. "tcp 10.1.1.1:40000 -> 10.0.0.5:443"; container names work too.')
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False), help="The containers (YAML or JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option("--brief", is_flag=True, help="One line: the verdict and the deciding rule's file:line.")
@click.option("--live", is_flag=True, help="Answer from the live maps of a loaded target, not from a file.")
@click.option("--target", help="With --live: the loaded target (default: the only one loaded).")
@click.option("--container", help="With --live: only this container's side of the packet.")
@_guard
def explain(file: str | None, packet: str, inventory: str | None, as_json: bool, brief: bool, live: bool,
            target: str | None, container: str | None) -> None:
    """Explain the verdict for one packet: the deciding rule and why the others did not decide."""
    if live:
        _explain_live(packet, target, container, as_json)
        return
    if file is None:
        raise UsageError("explain needs a FILE, or --live to answer from a loaded target's maps")
    from netc.ir.eval import match_failure, remote_class
    from netc.ir.nodes import Direction
    from netc.runtime.inventory import Inventory

    inv = Inventory.load(inventory) if inventory else Inventory()
    res = api.check(file, inventory=inv)
    if not res.ok:
        raise DiagnosticsError(res.errors)
    assert res.program is not None
    pkt = api.parse_packet(packet, inv, res.program)
    from netc.ir.eval import evaluate

    v = evaluate(res.program, inv, pkt)
    if as_json:
        click.echo(json.dumps(_verdict_json(v), indent=2))
        sys.exit(0)
    if brief:
        d = v.deciding
        if d is None:
            why = v.note
        elif d.rule is not None:
            why = f"{d.rule.location} `{d.rule.text}` ({d.endpoint.name} {d.direction.value})"
        else:
            why = f"{d.reason.value} ({d.endpoint.name} {d.direction.value})"
        t = v.translation
        via = ("" if t is None else f"{t.service} -> {t.backend}:{t.port}, " if t.backend is not None
               else f"{t.service} has no backends, ")
        click.echo(f"{via}{'allow' if v.allowed else 'deny'}: {why}")
        sys.exit(0)
    word = click.style("ALLOW", fg="green", bold=True) if v.allowed else click.style("DENY", fg="red", bold=True)
    click.echo(f"{word}  {v.original}")
    if v.translation is not None:
        t = v.translation
        if t.backend is None:
            click.echo(f"  service {t.service}: {t.vip}:{t.vip_port} has no backends, rejected")
        else:
            click.echo(f"  service {t.service}: {t.vip}:{t.vip_port} -> {t.backend} ({t.address}:{t.port}); "
                       f"policy sees {v.packet}")
    if v.note:
        click.echo(f"  {v.note}")
    for side in v.sides:
        verdict = "allows" if side.allowed else "denies"
        click.echo(f"  {side.endpoint.name} {side.direction.value} {verdict}: ", nl=False)
        if side.rule is not None:
            click.echo(f"{side.rule.location}  `{side.rule.text}`  (policy {side.rule.policy}, "
                       f"priority {side.rule.priority})")
        else:
            click.echo(side.reason.value)
        remote = v.packet.src if side.direction is Direction.INGRESS else v.packet.dst
        klass, rc = remote_class(inv, remote)
        for r in side.matched[1:]:
            why = ("lower priority" if r.priority < side.matched[0].priority else "deny beats allow at equal priority")
            click.echo(f"    also matched, did not decide ({why}): {r.location}  `{r.text}`")
        for pname in side.selecting:
            pol = next(p for p in res.program.policies if p.name == pname)
            for r in pol.rules:
                if r.direction is side.direction and r not in side.matched and r not in side.audits:
                    why = match_failure(r, v.packet, remote, klass, rc) or "did not match"
                    click.echo(f"    no match: {r.location}  `{r.text}`: {why}")
        for a in side.audits:
            click.echo(f"    audit: {a.location}  `{a.text}`")
    sys.exit(0)


def _only_target(target: str | None) -> str:
    from netc.runtime import loader

    if target:
        return target
    names = [t["target"] for t in loader.status()]
    if len(names) != 1:
        raise UsageError("say which target: --target NAME (loaded: " + (", ".join(names) or "none") + ")")
    return names[0]


def _explain_live(packet: str, target: str | None, container: str | None, as_json: bool) -> None:
    """The verdict the kernel's maps give right now, replayed over the maps read back from it."""
    from netc.ir.nodes import Direction
    from netc.runtime import abi
    from netc.runtime.loader import check_privileges
    from netc.runtime.observe import live_contents
    from netc.runtime.simulate import classify

    check_privileges()
    name = _only_target(target)
    tv, contents = live_contents(name)
    pkt = api.parse_packet(packet, tv.inventory, tv.program)
    from netc.ir.eval import translate
    from netc.runtime.services import live_state

    # a packet to a VIP is translated first (drained backends left out, as in the kernel's tables)
    original = pkt
    pkt, tr = translate(tv.program, tv.inventory, pkt, live_state(name))
    translation = None if tr is None else {"service": tr.service, "backend": tr.backend, "address": tr.address,
                                           "port": tr.port}
    if tr is not None and tr.backend is None:
        if as_json:
            click.echo(json.dumps({"target": name, "version": tv.version, "packet": str(original),
                                   "allowed": False, "translation": translation, "sides": []}, indent=2))
        else:
            click.echo(f"{click.style('REJECT', fg='red', bold=True)}  {original}   (live maps of {name} v{tv.version})")
            click.echo(f"  service {tr.service}: {tr.vip}:{tr.vip_port} has no backend that takes connections")
        return
    sides = []
    for addr, d in ((pkt.src, Direction.EGRESS), (pkt.dst, Direction.INGRESS)):
        c = tv.inventory.by_address(addr)
        if c is None or (container and c.name != container) or c.ifindex is None:
            continue
        sim = classify(contents, c.ifindex, abi.DIR_INGRESS if d is Direction.INGRESS else abi.DIR_EGRESS, pkt)
        loc, text, policy = tv.describe_rule(sim.rule_id)
        sides.append({"container": c.name, "direction": d.value, "allowed": sim.allowed, "rule_id": sim.rule_id,
                      "location": loc, "text": text, "policy": policy})
    if not sides:
        raise NetcError(f"neither end of `{packet}` is a container of `{name}`"
                        + (f" named {container}" if container else ""))
    allowed = all(s["allowed"] for s in sides)
    if as_json:
        click.echo(json.dumps({"target": name, "version": tv.version, "packet": str(original), "allowed": allowed,
                               "translation": translation, "sides": sides}, indent=2))
        return
    word = click.style("ALLOW", fg="green", bold=True) if allowed else click.style("DENY", fg="red", bold=True)
    click.echo(f"{word}  {original}   (live maps of {name} v{tv.version})")
    if tr is not None:
        balance = next(s.balance.value for s in tv.program.services if s.name == tr.service)
        how = (f"; {balance} picks one of {len(tr.candidates)} per connection, this is the first"
               if balance != "maglev" and len(tr.candidates) > 1 else "")
        click.echo(f"  service {tr.service}: {tr.vip}:{tr.vip_port} -> {tr.backend} ({tr.address}:{tr.port}); "
                   f"policy sees {pkt}{how}")
    for sd in sides:
        verdict = "allows" if sd["allowed"] else "denies"
        what = f"{sd['location']}  `{sd['text']}`  (policy {sd['policy']})" if sd["text"] else sd["location"]
        click.echo(f"  {sd['container']} {sd['direction']} {verdict}: {what}")


def _verdict_json(v: Any) -> dict[str, Any]:
    return {
        "allowed": v.allowed,
        "packet": str(v.original),
        "policy_packet": str(v.packet),
        "translation": None if v.translation is None else {
            "service": v.translation.service, "backend": v.translation.backend,
            "address": v.translation.address, "port": v.translation.port},
        "note": v.note,
        "sides": [{"endpoint": s.endpoint.name, "direction": s.direction.value, "allowed": s.allowed,
                   "reason": s.reason.name.lower(),
                   "rule": None if s.rule is None else {"id": s.rule.id, "location": s.rule.location,
                                                         "text": s.rule.text, "policy": s.rule.policy},
                   "matched": [r.location for r in s.matched]} for s in v.sides],
    }


# ---------------------------------------------------------------------- fuzz
@main.command()
@click.option("--seed", type=int, default=1, show_default=True, help="Every case derives from this seed.")
@click.option("--policies", type=int, default=50, show_default=True, help="Random policies to generate.")
@click.option("--packets", type=int, default=200, show_default=True, help="Random packets per policy.")
@click.option("--sequences", type=int, default=0,
              help="Instead of single packets: this many conversations per policy (handshakes, replies, "
                   "closes, timeouts), compared with the connection-tracking model.")
@_guard
def fuzz(seed: int, policies: int, packets: int, sequences: int) -> None:
    """Compare the kernel with the reference semantics on random policies and packets (needs root).

    Prints every disagreement with the seed that reproduces it; exit 1 if there is one.
    """
    from netc.runtime.fuzz import run_fuzz, run_sequences

    report = run_sequences(seed, policies, sequences) if sequences else run_fuzz(seed, policies, packets)
    for d in report.disagreements[:20]:
        click.echo(f"DISAGREE seed {d.seed}: {d.container.name} {d.direction.value} {d.packet}: kernel "
                   f"{'allows' if d.kernel_allows else 'denies'}, reference "
                   f"{'allows' if d.reference_allows else 'denies'} ({d.reference_rule})")
        click.echo("  " + d.policy.replace("\n", "\n  ").rstrip())
    click.echo(f"{report.policies} policies, {report.packets} packets, "
               f"{len(report.disagreements)} disagreement(s) (seed {seed})")
    sys.exit(1 if report.disagreements else 0)


# ---------------------------------------------------------------------- runtime
def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--lab", "lab", default=None, help="Load onto a lab made by `netc lab up` (its name).")(fn)
    fn = click.option("--inventory", type=click.Path(exists=True, dir_okay=False),
                      help="Load onto the containers of an inventory file (YAML or JSON).")(fn)
    return fn


@main.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@_target_options
@click.option("--name", help="The target's name (default: the lab's name, or the inventory's node namespace).")
@click.option("--attach", type=click.Choice(["tcx", "tc"]), default=None,
              help="Force the attachment mode (default: tcx where the kernel has it, else tc clsact).")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
              help="Seconds to wait for another netc command that holds the lock.")
@click.option("--json", "as_json", is_flag=True, help="Print the load report as JSON.")
@click.option("--conntrack-size", type=int, default=None,
              help="Entries of each connection-tracking table, IPv4 and IPv6 (first load of a target; "
                   "default 262144).")
@_guard
def load(artifact: str, lab: str | None, inventory: str | None, name: str | None, attach: str | None,
         wait_s: float, as_json: bool, conntrack_size: int | None) -> None:
    """Load ARTIFACT (a .bpf.o, or a .netp compiled on the way) onto every container of a target.

    Loading a new version replaces the running one atomically on every container: each link moves
    to the new program in one step, after its maps are complete. Any failure leaves the previous
    version running.
    """
    from netc.runtime import loader

    if (lab is None) == (inventory is None):
        raise UsageError("give exactly one of --lab NAME or --inventory FILE")
    loader.check_privileges()
    if artifact.endswith(".netp"):
        res = api.compile(artifact)
        _print_diags(res.diagnostics)
        obj = res.object
    else:
        with open(artifact, "rb") as fh:
            obj = fh.read()
    target = loader.resolve_target(inventory=inventory, lab=lab, name=name)
    report = loader.load(obj, os.path.abspath(artifact), target, mode=attach, wait_s=wait_s,
                         conntrack_size=conntrack_size)
    if as_json:
        click.echo(json.dumps(report.__dict__, default=str, indent=2))
        return
    prev = f" (replacing v{report.previous})" if report.previous else ""
    click.echo(f"loaded {artifact} as {report.target} v{report.version}{prev}: "
               f"{len({c for c, _ in report.attached})} container(s), {report.mode}, "
               f"{report.entries} map entries, {report.timings['total_s'] * 1000:.0f} ms")
    for c, why in report.skipped:
        click.echo(f"  skipped {c}: {why}", err=True)
    for c in report.detached:
        click.echo(f"  detached {c}: no longer in the inventory")


@main.command()
@click.argument("target")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True)
@_guard
def unload(target: str, wait_s: float) -> None:
    """Detach TARGET from every container and remove its pins and records."""
    from netc.runtime import loader

    loader.check_privileges()
    for line in loader.unload(target, wait_s=wait_s):
        click.echo(line)


@main.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True)
@_guard
def sync(target: str, as_json: bool) -> None:
    """Bring TARGET's maps in step with its inventory (containers added, removed, relabelled).

    Only the entries that change are written; no recompile, no reload.
    """
    from netc.runtime import loader

    loader.check_privileges()
    rep = loader.Deployment(target).sync()
    if as_json:
        click.echo(json.dumps(rep.__dict__, default=str, indent=2))
        return
    writes = sum(rep.written.values())
    deletes = sum(rep.deleted.values())
    click.echo(f"synced {target} v{rep.version}: {writes} entries written, {deletes} deleted, "
               f"{len(rep.attached)} attached, {len(rep.detached)} detached, {rep.seconds * 1000:.1f} ms")
    for c, why in rep.skipped:
        click.echo(f"  skipped {c}: {why}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guard
def status(as_json: bool) -> None:
    """What is attached where, which version, since when (read from the pins and the state)."""
    import datetime

    from netc.runtime import loader

    targets = loader.status()
    if as_json:
        click.echo(json.dumps(targets, indent=2))
        return
    if not targets:
        click.echo("nothing loaded")
        return
    from rich.table import Table

    from netc.console import console as make_console

    console = make_console()
    for t in targets:
        when = datetime.datetime.fromtimestamp(t["loaded_at"]).strftime("%Y-%m-%d %H:%M:%S") \
            if t["loaded_at"] else "-"
        console.print(f"[bold]{t['target']}[/bold]  v{t['active_version']}  {t['source']}  "
                      f"loaded {when}  ({t['mode']}, inventory {t['inventory']})")
        table = Table(show_edge=False)
        for col in ("container", "hook", "interface", "runs", "since", "problem"):
            table.add_column(col)
        for a in t["attachments"]:
            since = datetime.datetime.fromtimestamp(a["since"]).strftime("%H:%M:%S")
            runs = f"v{a['running_version']}" if a["running_version"] else "?"
            table.add_row(a["container"], a["hook"], a["interface"], runs, since, a["problem"] or "")
        console.print(table)
        odd = [v for v in t["versions"] if v["state"] == "interrupted"]
        for v in odd:
            console.print(f"  v{v['version']} was interrupted and rolled back")
        if t.get("busy"):
            console.print(f"  [yellow]{t['busy']}[/yellow]")


@main.command()
@click.argument("target", required=False)
@click.option("--container", help="Only this container's counters.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guard
def stats(target: str | None, container: str | None, as_json: bool) -> None:
    """Packets and bytes per rule, container and direction (defaults included), most hits first.

    Rules of the running version that never decided a packet are listed at the end.
    """
    from netc.runtime.loader import check_privileges
    from netc.runtime.observe import read_counters, read_stats, unmatched_rules

    check_privileges()
    name = _only_target(target)
    rows = read_counters(name)
    never = unmatched_rules(name, rows)
    if container:
        rows = [r for r in rows if r.container == container]
    st = read_stats(name)
    if as_json:
        click.echo(json.dumps({"target": name, "counters": [r.__dict__ for r in rows], "stats": st,
                               "never_matched": [{"id": r.id, "location": r.location, "text": r.text}
                                                 for r in never]}, indent=2))
        return
    from rich.table import Table

    from netc.console import console as make_console

    table = Table(show_edge=False)
    for col in ("packets", "bytes", "action", "container", "dir", "rule"):
        table.add_column(col, justify="right" if col in ("packets", "bytes") else "left")
    for r in rows:
        rule = f"{r.location}  {r.text}" if r.text else r.location
        table.add_row(str(r.packets), str(r.bytes), r.action, r.container, r.direction, rule)
    console = make_console()
    console.print(table)
    if never:
        console.print(f"never matched ({len(never)}):")
        for r in never:
            console.print(f"  {r.location}  {r.text}")
    console.print(f"events lost {st['events_lost']}, counters full {st['counters_full']}, "
                  f"malformed packets dropped {st['malformed']}")
    if st["lb_new"] or st["lb_rejected"]:
        console.print(f"service connections given a backend {st['lb_new']}, "
                      f"refused for want of one (lb rejected) {st['lb_rejected']}")


@main.command()
@click.argument("target", required=False)
@click.option("--container", help="Only events of this container.")
@click.option("--verdict", type=click.Choice(["allow", "deny"]), help="Only events with this verdict.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until Ctrl-C).")
@_guard
def monitor(target: str | None, container: str | None, verdict: str | None, as_json: bool,
            duration: float | None) -> None:
    """Stream flow events: denials, log and audit rules, sampled new connections.

    Each names the container, the packet and the rule that decided it (file:line) or the default.
    """
    from netc.runtime.loader import check_privileges
    from netc.runtime.observe import stream_events

    check_privileges()
    name = _only_target(target)
    for ev in stream_events(name, duration_s=duration):
        if container and ev["container"] != container:
            continue
        if verdict and ev["verdict"] != verdict:
            continue
        if as_json:
            click.echo(json.dumps(ev), nl=True)
            sys.stdout.flush()
            continue
        who = ev["rule"]["location"] + " `" + ev["rule"]["text"] + "`" if ev["rule"] else ev["default"]
        src = ev["src_name"] or ev["src"]
        dst = ev["dst_name"] or ev["dst"]
        click.echo(f"{ev['time'][11:23]} {ev['kind']:<5} {ev['verdict']:<5} {ev['container']} {ev['direction']} "
                   f"{ev['protocol']} {src}:{ev['sport']} -> {dst}:{ev['dport']}  {who}")
        sys.stdout.flush()


@main.group()
def conntrack() -> None:
    """The connection-tracking table of a loaded target (needs root)."""


@conntrack.command("list")
@click.argument("target", required=False)
@click.option("--container", help="Only this container's connections.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def conntrack_list(target: str | None, container: str | None, as_json: bool) -> None:
    """Tracked connections: tuple, state, age, the rule that allowed the first packet."""
    from netc.runtime import conntrack as ct
    from netc.runtime.loader import check_privileges

    check_privileges()
    name = _only_target(target)
    rows = ct.entries(name, container)
    totals = ct.summary(name)
    if as_json:
        click.echo(json.dumps({"target": name, "entries": [r.to_json() for r in rows], "totals": totals},
                              indent=2))
        return
    for r in rows:
        first = (f"{r.a}:{r.port_a} -> {r.b}:{r.port_b}" if r.initiator == "a"
                 else f"{r.b}:{r.port_b} -> {r.a}:{r.port_a}")
        if r.translated:
            first += f" => {r.translated}"   # a service connection: the VIP, then its backend
        click.echo(f"{r.container:<12} {r.protocol:<6} {first:<48} {r.state:<12} age {r.age_s:>8.1f}s "
                   f"idle {r.idle_s:>7.1f}s  {r.packets} pkts  {r.rule}")
    click.echo(f"{totals['live']} live; made {totals['created']}, removed {totals['removed']}, "
               f"flushed {totals['flushed']}, evicted {totals['evicted']}")


@conntrack.command("flush")
@click.argument("target", required=False)
@click.option("--container", help="Only this container's connections.")
@_guard
def conntrack_flush(target: str | None, container: str | None) -> None:
    """Forget tracked connections: their next packets are judged by the policy again."""
    from netc.runtime import conntrack as ct
    from netc.runtime.loader import check_privileges

    check_privileges()
    name = _only_target(target)
    click.echo(f"flushed {ct.flush(name, container)} connection(s) of {name}"
               + (f" ({container})" if container else ""))


@main.command("maps")
@click.argument("target")
@click.argument("map_name", required=False)
@click.option("--limit", type=int, default=50, show_default=True, help="Entries to print per map.")
@_guard
def maps_cmd(target: str, map_name: str | None, limit: int) -> None:
    """Print the decoded entries of TARGET's live maps (all four, or MAP_NAME), for debugging."""
    from netc.api import read_manifest
    from netc.runtime import loader
    from netc.runtime.maps import TypedMap
    from netc.runtime.state import State

    loader.check_privileges()
    with State() as st:
        active = st.active(target)
        if active is None:
            raise NetcError(f"nothing is loaded for `{target}`")
        with open(active.object, "rb") as fh:
            specs = {m["name"]: m for m in read_manifest(fh.read())["plan"]["maps"]}
    with loader._pinned_maps(target, active.version) as live:
        for name, raw in live.items():
            if map_name and name != map_name:
                continue
            typed = TypedMap(raw, specs[name])
            entries = list(typed.items())
            click.echo(f"{name}: {len(entries)} entries")
            for k, v in entries[:limit]:
                click.echo(f"  {json.dumps(k)} -> {json.dumps(v)}")


# ---------------------------------------------------------------------- fmt
@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file is not formatted.")
@_guard
def fmt(files: tuple[str, ...], check_only: bool) -> None:
    """Rewrite FILES in the one canonical layout (comments kept)."""
    from netc.diagnostics import register_source
    from netc.dsl.fmt import format_source
    from netc.source import SourceFile

    unformatted = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            src = SourceFile.from_text(f, fh.read())
        register_source(src)
        out, diags = format_source(src)
        if out is None:
            raise DiagnosticsError(diags)
        if out != src.text:
            unformatted += 1
            if check_only:
                click.echo(f"would reformat {f}")
            else:
                with open(f, "w", encoding="utf-8") as fh:
                    fh.write(out)
                click.echo(f"reformatted {f}")
    if check_only and unformatted:
        sys.exit(1)


# ---------------------------------------------------------------------- bench
@main.group()
def bench() -> None:
    """Measure netc: every figure comes from a command, not from a timed test."""


def _print_figures(result: dict[str, Any], as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one `name value` line each."""
    if as_json:
        click.echo(json.dumps(result))
        return
    width = max(len(k) for k in result) + 2
    for k, v in result.items():
        click.echo(f"{k:<{width}} {v}")


@bench.command("compile")
@click.option("--rules", "n", type=int, default=10000, show_default=True, help="Number of rules to generate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--seed", type=int, default=1, show_default=True)
@_guard
def bench_compile(n: int, as_json: bool, seed: int) -> None:
    """Wall time of check and compile for a generated policy of N rules, and its instruction count."""
    from netc.bench.compile import run

    result = run(n, seed)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"rules      {result['rules']}")
        click.echo(f"check_s    {result['check_s']:.3f}")
        click.echo(f"compile_s  {result['compile_s']:.3f}")
        click.echo(f"insns      {result['insns']}  (both programs; the same at any rule count)")

main.add_command(__import__("netc.runtime.lab_cli", fromlist=["lab"]).lab)  # `netc lab`: netc/runtime/lab_cli.py

@bench.command("compare")
@click.option("--rules", "n", type=int, default=10000, show_default=True)
@click.option("--packets", type=int, default=50_000, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (figures in ns per packet).")
@_guard
def bench_compare(n: int, packets: int, rounds: int, as_json: bool) -> None:
    """CPU time per packet of netc, nftables (concatenated verdict maps) and iptables (linear chain)
    enforcing one generated policy of N rules on a lab it makes and removes, side by side from one
    run (the method and its limits: docs/performance.md). Needs root."""
    from netc.bench.compare import format_text
    from netc.bench.compare import run as run_compare
    from netc.runtime.loader import check_privileges

    check_privileges()
    result = run_compare(n, packets, rounds)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(format_text(result))


@bench.command("datapath")
@click.option("--rules", "n", type=int, default=10000, show_default=True)
@click.option("--repeat", type=int, default=100_000, show_default=True)
@click.option("--rounds", type=int, default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (figures in ns).")
@_guard
def bench_datapath(n: int, repeat: int, rounds: int, as_json: bool) -> None:
    """Per-packet cost at N rules: empty program, established, first allowed/denied/default packet.

    BPF_PROG_TEST_RUN medians of rounds; every repeat of "first allowed" is a new flow (a harness
    rotates the source port; its own cost is subtracted). Needs root.
    """
    from netc.bench.datapath import run_datapath
    from netc.runtime.loader import check_privileges

    check_privileges()
    result = run_datapath(n, repeat, rounds)
    _print_figures(result, as_json)


@bench.command("events")
@click.option("--repeat", type=int, default=100_000, show_default=True, help="Repeats per round.")
@click.option("--rounds", type=int, default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_guard
def bench_events(repeat: int, rounds: int, as_json: bool) -> None:
    """Per-packet cost of a flood of denied packets with deny events on and off (BPF_PROG_TEST_RUN
    medians, an empty program measured in the same run). Needs root."""
    from netc.bench.datapath import run_events
    from netc.runtime.loader import check_privileges

    check_privileges()
    result = run_events(repeat, rounds)
    _print_figures(result, as_json)


@bench.command("lb")
@click.option("--repeat", type=int, default=100_000, show_default=True, help="Repeats per round.")
@click.option("--rounds", type=int, default=7, show_default=True)
@click.option("--flows", type=int, default=100_000, show_default=True,
              help="Simulated flows for the spread and disruption figures.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (empty_ns, translated_ns, reply_ns, "
              "spread_max_min, moved_fraction, ...).")
@_guard
def bench_lb(repeat: int, rounds: int, flows: int, as_json: bool) -> None:
    """Load balancing: per-packet cost of a translated packet and of a reply, and Maglev's spread
    and disruption on 10 equal backends.

    Per packet: BPF_PROG_TEST_RUN medians of rounds next to an empty program in the same run; a
    harness writes the original headers back before every repeat (its own cost is subtracted).
    Spread: max/min flows per backend over FLOWS random flows; moved: the share of flows whose
    backend changes when one of the 10 goes (Maglev's ideal is 1/10). Needs root.
    """
    from netc.bench.lb import run_lb
    from netc.runtime.loader import check_privileges

    check_privileges()
    _print_figures(run_lb(repeat, rounds, flows), as_json)


@bench.command("load")
@click.option("--rules", "n", type=int, default=10000, show_default=True)
@click.option("--containers", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_guard
def bench_load(n: int, containers: int, as_json: bool) -> None:
    """Wall time to materialize and load N rules onto C lab containers, and to add one container.

    Needs root: it makes a lab, loads, measures, and removes everything it made.
    """
    from netc.bench.load import run as run_load
    from netc.runtime.loader import check_privileges

    check_privileges()
    result = run_load(n, containers)
    _print_figures(result, as_json)


def run() -> None:  # console entry for `python -m netc`
    main()
main.add_command(__import__("netc.observe.cli", fromlist=["metrics"]).metrics)  # `netc metrics`: netc/observe/cli.py
main.add_command(__import__("netc.observe.cli", fromlist=["graph"]).graph)  # `netc graph`: netc/observe/cli.py
main.add_command(__import__("netc.observe.cli", fromlist=["trace"]).trace)  # `netc trace drops`: netc/observe/cli.py
main.add_command(__import__("netc.export.cli", fromlist=["export"]).export)  # `netc export`: netc/export/cli.py
main.add_command(__import__("netc.runtime.service_cli", fromlist=["service"]).service)  # `netc service`: netc/runtime/service_cli.py
