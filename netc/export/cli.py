"""`netc export nftables|iptables FILE --inventory INV [-o OUT]`: the policy for the kernel's own firewalls.

Registered in netc/cli.py with one `main.add_command` line. Every error is one message on
stderr and exit status 1, never a traceback (diagnostics of the .netp file as `netc check`
prints them).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from netc.errors import NetcError


class _Fail(Exception):
    pass


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _Fail:
            sys.exit(1)
        except NetcError as exc:
            click.echo(f"netc export: error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"netc export: error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
    return wrapper


def _write(path: str, text: str) -> None:
    """Write atomically (a temporary file, then a rename); errors name `path`."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise NetcError(f"cannot write {path}: {exc.strerror or exc}") from None


def iptables_paths(output: str) -> tuple[str, str]:
    """`-o rules` → rules.v4, rules.v6;  `-o rules.v4` → rules.v4, rules.v6 (iptables-persistent's names)."""
    base = output[:-3] if output.endswith(".v4") else output
    return f"{base}.v4", f"{base}.v6"


@click.command("export")
@click.argument("fmt", metavar="nftables|iptables", type=click.Choice(["nftables", "iptables"]))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--inventory", type=click.Path(dir_okay=False), help="The containers (YAML or JSON, docs/inventory.md).")
@click.option("--lab", "lab_name", help="Use the inventory of a lab made by `netc lab up` (its name).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here instead of stdout. iptables: OUT.v4 and OUT.v6 (iptables-restore, ip6tables-restore).")
@_guard
def export(fmt: str, file: str, inventory: str | None, lab_name: str | None, output: str | None) -> None:
    """The policy of FILE as an nftables table or iptables chains, for the containers of an inventory.

    \b
    Enforced where netc enforces, on the containers' host-side veths in the node's namespace:
      netc export nftables policy.netp --lab demo-1a2b -o netc.nft && nft -f netc.nft
      netc export iptables policy.netp --inventory inv.yaml -o rules   # rules.v4, rules.v6
    Differences from netc's own semantics are listed in docs/export.md.
    """
    from netc import api
    from netc.diagnostics import render_text
    from netc.export import combined, export_iptables
    from netc.export.model import chains
    from netc.runtime.inventory import Inventory

    if (inventory is None) == (lab_name is None):
        raise NetcError("give exactly one of --inventory FILE or --lab NAME")
    if not os.path.isfile(file):
        raise NetcError(f"no such file: {file}")
    if lab_name is not None:
        from netc.runtime.lab import lab_by_name

        inv = Inventory.load(lab_by_name(lab_name).inventory_path)
    else:
        assert inventory is not None
        if not os.path.isfile(inventory):
            raise NetcError(f"no such inventory: {inventory}")
        inv = Inventory.load(inventory)
    res = api.check(file, inventory=inv)
    if res.diagnostics:
        click.echo(render_text(res.diagnostics), err=True)
    if not res.ok or res.program is None:
        raise _Fail()
    program = res.program

    chs = chains(program, inv)
    if program.services:
        click.echo(f"netc export: note: {len(program.services)} service(s) not exported: the firewall does "
                   "no load balancing, so traffic to a VIP is not translated (docs/export.md)", err=True)
    if program.limits:
        click.echo(f"netc export: note: {len(program.limits)} rate limit(s) not exported", err=True)
    summary = (f"{len(chs)} chain(s), {sum(len(c.rules) for c in chs)} rule(s) for "
               f"{len(inv.containers)} container(s)")
    if fmt == "nftables":
        from netc.export.nftables import plan, render

        plans = plan(program, inv)
        maps = [m for p in plans for m in p.maps()]
        text = render(program, inv, plans)
        if output is None:
            click.echo(text, nl=False)
            return
        _write(output, text)
        click.echo(f"exported {file} to {output}: {summary} in {len(maps)} verdict map(s) of "
                   f"{sum(len(m.elements) for m in maps)} element(s); load with `nft -f {output}` "
                   "in the node's network namespace", err=True)
        return
    parts = export_iptables(program, inv)
    if output is None:
        click.echo(combined(parts), nl=False)
        return
    v4, v6 = iptables_paths(output)
    _write(v4, parts["iptables"])
    _write(v6, parts["ip6tables"])
    click.echo(f"exported {file} to {v4} and {v6}: {summary}; load with `iptables-restore {v4}` and "
               f"`ip6tables-restore {v6}` in the node's network namespace", err=True)
