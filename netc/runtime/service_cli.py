"""`netc service list|show|drain|undrain`: the services of a loaded target (runtime/services.py)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The CLI's own error handling (netc/cli.py), looked up when the command runs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from netc.cli import _guard as cli_guard

        return cli_guard(fn)(*args, **kwargs)
    return wrapper


def _target(target: str | None) -> str:
    from netc.cli import _only_target

    return _only_target(target)


_TARGET_HELP = "The loaded target (default: the only one loaded)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def service() -> None:
    """The services (load balancing) of a loaded target: backends, drain. Needs root.

    \b
      netc service list
      netc service show api-svc --json
      netc service drain api-svc api-1      # no new connections to api-1; existing ones finish
      netc service undrain api-svc api-1
    """


def _vip_text(v: dict[str, Any]) -> str:
    """`10.96.0.20:80/tcp`, `[fd00:96::20]:80/tcp`, escaped for rich (which reads [...] as markup)."""
    from rich.markup import escape

    addr = f"[{v['address']}]" if ":" in v["address"] else v["address"]
    return escape(f"{addr}:{v['port']}/{v['protocol']}")


def _backend_counts(svc: dict[str, Any]) -> str:
    states: dict[str, set[str]] = {"active": set(), "drained": set(), "gone": set()}
    for v in svc["vips"]:
        for b in v["backends"]:
            states[b["state"]].add(b["name"])
    return ", ".join(f"{len(names)} {state}" for state, names in states.items())


@service.command("list")
@click.option("--target", help=_TARGET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the shape of `show --json`, every service).")
@_guard
def list_cmd(target: str | None, as_json: bool) -> None:
    """Every service of the running version: VIPs, balance, affinity, backends by state, connections."""
    from netc.runtime.services import describe

    doc = describe(_target(target))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if not doc["services"]:
        click.echo(f"{doc['target']} v{doc['version']} has no services")
        return
    from rich.markup import escape
    from rich.table import Table

    from netc.console import console

    table = Table(show_edge=False)
    for col in ("service", "vips", "balance", "affinity", "backends", "connections"):
        table.add_column(col, justify="right" if col == "connections" else "left")
    for s in doc["services"]:
        table.add_row(escape(s["name"]), ", ".join(_vip_text(v) for v in s["vips"]), s["balance"],
                      f"{s['affinity_s']}s" if s["affinity_s"] else "-", _backend_counts(s),
                      str(sum(v["connections"] for v in s["vips"])))
    console().print(table)


@service.command("show")
@click.argument("name")
@click.option("--target", help=_TARGET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guard
def show_cmd(name: str, target: str | None, as_json: bool) -> None:
    """One service: each VIP's active table, and every backend's address, port, weight, state
    (active, drained, gone) and live connections (read from the kernel's maps)."""
    from netc.runtime.services import describe

    doc = describe(_target(target), name)
    if as_json:
        click.echo(json.dumps({"target": doc["target"], "version": doc["version"], **doc["services"][0]},
                              indent=2))
        return
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table

    from netc.console import console

    s = doc["services"][0]
    con = console()
    extra = f", table {s['table_size']}" if s["balance"] != "round-robin" else ""
    affinity = f", affinity client-ip {s['affinity_s']}s" if s["affinity_s"] else ""
    con.print(f"[bold]{escape(s['name'])}[/bold]  {s['balance']}{extra}{affinity}  "
                  + escape(f"({doc['target']} v{doc['version']}, {s['location']})"))
    for v in s["vips"]:
        if v["shadowed_by"]:
            con.print(f"  {_vip_text(v)}  not used: an earlier service has the same VIP, port and protocol")
            continue
        if v["table_len"] is None:
            state = "no service entry in the kernel"
        elif v["table_len"] == 0:
            state = "no backend can take a connection: new connections are refused"
        else:
            state = f"{v['table_len']} slots in region {v['region']}"
        con.print(f"  {_vip_text(v)}  (service id {v['svc_id']}: {state})")
        table = Table(show_edge=False, pad_edge=False)
        for col in ("backend", "address", "port", "weight", "state", "connections"):
            table.add_column(col, justify="right" if col in ("port", "weight", "connections") else "left")
        for b in v["backends"]:
            colour = {"active": "green", "drained": "yellow", "gone": "red"}[b["state"]]
            table.add_row(escape(b["name"]), b["address"], str(b["port"]), "-" if b["weight"] is None else str(b["weight"]),
                          f"[{colour}]{b['state']}[/{colour}]", str(b["connections"]))
        if v["backends"]:
            con.print(Padding(table, (0, 0, 0, 4), expand=False))
        else:
            con.print("    no backends")


def _drain(name: str, backend: str, target: str | None, wait_s: float, drain: bool) -> None:
    from netc.runtime.services import set_drained

    rep = set_drained(_target(target), name, backend, drain, wait_s=wait_s)
    word = "drained" if drain else "undrained"
    if not rep.changed:
        click.echo(f"{rep.backend} of {rep.service} was already {'drained' if drain else 'taking connections'}; "
                   f"tables checked ({sum(rep.written.values())} entries written)")
        return
    what = ("takes no new connections; its existing connections continue until they end" if drain
            else "takes new connections again")
    click.echo(f"{word} {rep.backend} of {rep.service} on {rep.target}: it {what} "
               f"({rep.written.get('netc_services', 0)} table(s) switched)")


def _drain_arguments(fn: Callable[..., Any]) -> Callable[..., Any]:
    """NAME BACKEND [--target T] [--wait S]: what drain and undrain both take."""
    for deco in reversed((click.argument("name"), click.argument("backend"),
                          click.option("--target", help=_TARGET_HELP),
                          click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
                                       help="Seconds to wait for another netc command that holds the lock."))):
        fn = deco(fn)
    return fn


@service.command("drain")
@_drain_arguments
@_guard
def drain_cmd(name: str, backend: str, target: str | None, wait_s: float) -> None:
    """Stop new connections of service NAME to BACKEND (a container name or an address); its
    established connections keep it until they end. Remembered across loads and syncs, until
    `netc service undrain` (or `netc unload`)."""
    _drain(name, backend, target, wait_s, True)


@service.command("undrain")
@_drain_arguments
@_guard
def undrain_cmd(name: str, backend: str, target: str | None, wait_s: float) -> None:
    """Let BACKEND (a container name or an address) take new connections of service NAME again."""
    _drain(name, backend, target, wait_s, False)
