"""`netc metrics`, `netc graph` and `netc trace drops` (see docs/observability.md)."""

from __future__ import annotations

import functools
import json
import sys
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
            click.echo(f"netc: error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            click.echo(f"netc: error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
    return wrapper


# ---------------------------------------------------------------------- netc metrics
@click.command()
@click.option("--listen", default="127.0.0.1:9464", show_default=True, metavar="ADDRESS:PORT",
              help="Where to serve /metrics ([::1]:9464 for IPv6, :9464 for every address).")
@click.option("--target", "targets", multiple=True, metavar="T",
              help="Only this target (repeatable); default: every target netc has loaded.")
@_guard
def metrics(listen: str, targets: tuple[str, ...]) -> None:
    """Serve Prometheus metrics: per-rule packets and bytes, drops by reason, lost events,
    attachments. Every value is read from the kernel when Prometheus scrapes; nothing runs in
    between. Needs root to read the maps.

    \b
      netc metrics --listen 127.0.0.1:9464
      curl -s 127.0.0.1:9464/metrics | grep netc_drops_total
    """
    import threading

    from netc.observe.metrics import serve

    server, _ = serve(listen, targets=targets)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    click.echo(f"serving netc metrics on http://{shown}:{port}/metrics "
               f"({', '.join(targets) if targets else 'every target'}); Ctrl-C stops", err=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


# ---------------------------------------------------------------------- netc graph
@click.command()
@click.option("--input", "input_", required=True, metavar="FLOWS",
              help="Flows as `netc monitor --json` prints them, one JSON object a line; `-` for stdin.")
@click.option("--output", "-o", default="-", show_default=True, metavar="FILE", help="Where to write; `-` for stdout.")
@click.option("--format", "fmt", type=click.Choice(["html", "dot", "svg"]), default=None,
              help="Default: from the output's extension (.html, .dot/.gv, .svg), else html.")
@click.option("--inventory", metavar="INV",
              help="An inventory (or a lab topology) for labels and the node's addresses (`host`).")
@_guard
def graph(input_: str, output: str, fmt: str | None, inventory: str | None) -> None:
    """Draw a service map of observed flows: containers grouped by label, edges with allowed and
    denied counts and bytes, denied edges red and dashed, the deciding rules on hover.

    \b
      netc monitor --json > flows.jsonl          (on the node, for a while)
      netc graph --input flows.jsonl --output map.html --inventory inventory.json
      netc graph --input flows.jsonl --format dot | dot -Tpng > map.png
    """
    from netc.observe.graph import build_graph, load_inventory, read_flows, render

    if fmt is None:
        ext = output.rsplit(".", 1)[-1].lower() if "." in output else ""
        fmt = {"dot": "dot", "gv": "dot", "svg": "svg"}.get(ext, "html")
    inv = load_inventory(inventory) if inventory else None
    if input_ == "-":
        flows = read_flows(sys.stdin, "<stdin>")
    else:
        with open(input_, encoding="utf-8") as fh:
            flows = read_flows(fh, input_)
    for p in flows.problems[:10]:
        click.echo(f"netc graph: warning: {p}", err=True)
    if len(flows.problems) > 10:
        click.echo(f"netc graph: warning: {len(flows.problems) - 10} more line(s) skipped", err=True)
    if not flows.flows:
        raise NetcError(f"{flows.name}: no flows to draw" + (f" ({len(flows.problems)} line(s) skipped)"
                                                              if flows.problems else ""))
    g = build_graph(flows, inv)
    text = render(g, fmt)
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"wrote {output} ({fmt}): {len(g.nodes)} node(s), {len(g.edges)} edge(s) "
                   f"from {g.flows} flow(s)", err=True)


# ---------------------------------------------------------------------- netc trace drops
@click.group()
def trace() -> None:
    """Kernel tracing for the containers netc manages (bcc; needs root)."""


@trace.command("drops")
@click.option("--target", metavar="T", help="A target netc has loaded (its inventory's containers).")
@click.option("--lab", metavar="L", help="A lab's containers (`netc lab up`), loaded or not.")
@click.option("--container", "containers", multiple=True, metavar="C", help="Only this container (repeatable).")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds (default: Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@_guard
def drops(target: str | None, lab: str | None, containers: tuple[str, ...], duration: float | None,
          as_json: bool) -> None:
    """Report packets the kernel dropped on the containers' interfaces, with the drop reason.

    Watches the skb:kfree_skb tracepoint for the host-side veths (in the node namespace) and
    everything in the containers' own namespaces. A drop by a tc/tcx program on a host-side veth
    where netc attaches (reason TC_INGRESS / TC_EGRESS) is a netc denial and is shown as
    "netc (tc) drop"; everything else is the kernel's own ("kernel drop").
    """
    from netc.observe.trace import DropTracer, format_drop, resolve_watch

    watch = resolve_watch(target=target, lab=lab, containers=containers)
    with DropTracer(watch) as tracer:
        click.echo(f"tracing kernel drops on {watch.describe()}; "
                   + (f"for {duration:g} s" if duration else "Ctrl-C stops"), err=True)
        for drop in tracer.drops(duration):
            click.echo(json.dumps(drop.to_json()) if as_json else format_drop(drop), nl=True)
            sys.stdout.flush()
        if tracer.lost:
            click.echo(f"netc trace: warning: {tracer.lost} drop report(s) lost (ring buffer full)", err=True)
