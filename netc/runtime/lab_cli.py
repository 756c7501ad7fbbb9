"""`netc lab ...`: create and use labs of namespace containers (see docs/lab.md)."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from netc.errors import NetcError


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """netc's errors become a one-line message and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NetcError as exc:
            click.echo(f"netc lab: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Containers made of network namespaces, for demos and tests.

    \b
    A lab has one node namespace (standing in for the host) and one namespace per container,
    joined to the node by a veth pair; netc attaches to the node-side veths. Needs root.
    State lives in $NETC_STATE_DIR/labs (default /var/lib/netc/labs).

    \b
      netc lab up examples/lab.yaml
      netc lab probe demo-1a2b client-1 web-1 80
      netc lab down --all
    """


@lab.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole lab record as JSON.")
@_guard
def up(file: str, as_json: bool) -> None:
    """Create the lab that topology FILE describes.

    Prints the lab's name and the path of its inventory on stdout (one per line), and a summary
    of its containers on stderr. The name is the topology's `name` (or the file's stem) plus
    four random hex digits, so several labs from one file coexist.
    """
    from netc.runtime import lab as labs

    t0 = time.perf_counter()
    made = labs.up(file)
    elapsed = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps(made.to_json(), indent=2))
        return
    click.echo(made.name)
    click.echo(made.inventory_path)
    click.echo(f"lab {made.name} is up: {len(made.containers)} container(s) in {elapsed:.2f} s", err=True)
    for c in made.containers:
        labels = ",".join(f"{k}={v}" for k, v in c.labels.items()) or "-"
        serve = " ".join(f"{p}:{n}" for p, n in c.serve) or "-"
        click.echo(f"  {c.name:<14} {' '.join(c.addresses):<28} {c.interface:<10} {labels:<24} {serve}", err=True)


@lab.command()
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Remove every recorded lab.")
@_guard
def down(name: str | None, everything: bool) -> None:
    """Remove lab NAME (the most recent lab when NAME is omitted).

    Stops its servers, deletes its veths and namespaces, and removes its state files.
    """
    from netc.runtime import lab as labs

    if everything:
        if name:
            raise click.UsageError("give a lab NAME or --all, not both")
        removed = labs.down_all()
        for n in removed:
            click.echo(f"removed {n}")
        if not removed:
            click.echo("no labs to remove")
        return
    gone = labs.down(name)
    click.echo(f"removed {gone.name}")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_guard
def status(as_json: bool) -> None:
    """List the labs with their containers, whether their namespaces exist and their servers run."""
    from netc.runtime import lab as labs

    report = labs.status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo("no labs")
        return
    for entry in report:
        node = "present" if entry["node_netns_present"] else "MISSING"
        click.echo(f"{entry['name']}  {entry['state']}  node {entry['node_netns']} ({node})")
        click.echo(f"  inventory {entry['inventory_path']}")
        for c in entry["containers"]:
            ns = "ns ok" if c["netns_present"] else "ns MISSING"
            if c["server_alive"] is None:
                srv = "no servers"
            else:
                srv = f"server {c['server_pid']} " + ("alive" if c["server_alive"] else "DEAD")
            serve = " ".join(c["serve"])
            click.echo(f"  {c['name']:<14} {' '.join(c['addresses']):<28} {c['interface']:<10} "
                       f"{ns:<10} {srv} {serve}".rstrip())


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("container")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@_guard
def exec_(name: str, container: str, cmd: tuple[str, ...]) -> None:
    """Run CMD in CONTAINER's network namespace of lab NAME; exits with CMD's status.

    Only the network namespace changes (bpffs and /sys stay visible):

    \b
      netc lab exec demo-1a2b client-1 -- curl -s http://10.77.0.10/
    """
    from netc.runtime import lab as labs

    sys.exit(labs.exec(name, container, list(cmd)))


@lab.command()
@click.argument("lab_name", metavar="LAB")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--udp", is_flag=True, help="Send one UDP datagram and wait for the reply (default: TCP connect).")
@click.option("--ipv6", is_flag=True, help="Use TO's IPv6 address when TO is a container (default IPv4).")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait.")
@_guard
def probe(lab_name: str, source: str, target: str, port: int, udp: bool, ipv6: bool, timeout: float) -> None:
    """Try to reach TO:PORT from container FROM of lab LAB.

    TO is a container name or an address. Prints `connected`, `refused` or `timed out`;
    exits 0 when connected and 1 otherwise.
    """
    from netc.runtime import lab as labs

    result = labs.probe(lab_name, source, target, port, udp=udp, timeout=timeout, ipv6=ipv6)
    click.echo(result)
    sys.exit(0 if result == labs.CONNECTED else 1)


@lab.command()
@click.argument("name", required=False)
@_guard
def inventory(name: str | None) -> None:
    """Print the path of lab NAME's inventory file (the most recent lab when NAME is omitted)."""
    from netc.runtime import lab as labs

    found = labs.lab_by_name(name) if name else labs.latest_lab()
    click.echo(found.inventory_path)
