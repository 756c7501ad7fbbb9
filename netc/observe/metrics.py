"""Prometheus metrics for netc: read fresh from the kernel and the state database at scrape time.

One custom collector does all the work when Prometheus scrapes: nothing runs in the background
and nothing is copied into client-library metric objects between scrapes, so a value is never
older than the scrape that reports it. Where a source fails (a target's maps vanished mid-unload,
the state database is locked), the scrape still succeeds with everything else and
`netc_scrape_errors_total{target,source}` counts the failure.

Sources (see docs/observability.md for every metric and label):
    netc.runtime.observe.read_counters(target)  per-rule packets and bytes, per container and direction
    netc.runtime.observe.read_stats(target)     events_lost, counters_full, malformed, lb_new, lb_rejected
    netc.runtime.loader.status()                targets, attachments, active versions
    $NETC_STATE_DIR/state.db                    load and sync durations, when the runtime records them
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from netc.errors import NetcError

log = logging.getLogger("netc.metrics")

RULE_LABELS = ["target", "container", "direction", "action", "rule_id", "rule", "location"]
DROP_LABELS = ["target", "container", "direction", "reason"]


class MetricsError(NetcError):
    pass


class Source(Protocol):
    """Where the collector reads from; the runtime in production, a fake in tests."""

    def status(self) -> list[dict[str, Any]]: ...
    def counters(self, target: str) -> list[Any]: ...
    def stats(self, target: str) -> dict[str, int]: ...
    def durations(self, target: str) -> dict[str, float]: ...


class RuntimeSource:
    """The live system: the runtime's observe module, its loader and its state database."""

    def status(self) -> list[dict[str, Any]]:
        from netc.runtime.loader import status

        return status()

    def counters(self, target: str) -> list[Any]:
        from netc.runtime.observe import read_counters  # type: ignore[import-not-found,unused-ignore]

        return list(read_counters(target))

    def stats(self, target: str) -> dict[str, int]:
        from netc.runtime.observe import read_stats  # type: ignore[import-not-found,unused-ignore]

        return dict(read_stats(target))

    def durations(self, target: str) -> dict[str, float]:
        from netc.runtime.state import state_dir

        return recorded_durations(os.path.join(state_dir(), "state.db"), target)


def recorded_durations(db_path: str, target: str) -> dict[str, float]:
    """The wall time of the active version's load and of the latest sync, where the state database
    records them: a REAL column `load_seconds` in `versions`, and a table `syncs` with columns
    `target`, `seconds` and `at` (or `rowid` order). Returns only what is recorded; the database is
    opened read-only and never created or migrated from here."""
    if not os.path.exists(db_path):
        return {}
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
    try:
        out: dict[str, float] = {}
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "versions" in tables:
            cols = {r[1] for r in db.execute("PRAGMA table_info(versions)")}
            if "load_seconds" in cols:
                row = db.execute("SELECT load_seconds FROM versions WHERE target=? AND state='active' "
                                 "ORDER BY version DESC LIMIT 1", (target,)).fetchone()
                if row and row[0] is not None:
                    out["load"] = float(row[0])
        if "syncs" in tables:
            cols = {r[1] for r in db.execute("PRAGMA table_info(syncs)")}
            if {"target", "seconds"} <= cols:
                order = "at" if "at" in cols else "rowid"
                row = db.execute(f"SELECT seconds FROM syncs WHERE target=? ORDER BY {order} DESC LIMIT 1",
                                 (target,)).fetchone()
                if row and row[0] is not None:
                    out["sync"] = float(row[0])
        return out
    finally:
        db.close()


def _get(row: Any, name: str, default: Any = "") -> Any:
    if isinstance(row, dict):
        return row.get(name, default)
    return getattr(row, name, default)


def drop_reason(rule_id: int) -> str | None:
    """Why a denied packet was dropped, from the id of what decided it."""
    from netc.runtime import abi

    if rule_id == abi.RULE_MALFORMED:
        return "malformed"
    if rule_id == abi.RULE_DEFAULT_DENY:
        return "default_deny"
    if rule_id >= abi.FIRST_RULE_ID:
        return "policy"
    return None


@dataclass(eq=False)
class NetcCollector(Collector):
    """Reads every value when collect() is called (once per scrape)."""

    source: Source = field(default_factory=RuntimeSource)
    targets: tuple[str, ...] = ()            # empty: every target the state database knows
    _errors: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _failed(self, target: str, what: str, exc: BaseException) -> None:
        with self._lock:
            self._errors[(target, what)] = self._errors.get((target, what), 0) + 1
        log.warning("scrape: reading %s of %s failed: %s: %s", what, target or "netc", type(exc).__name__, exc)

    def _read(self, target: str, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # a scrape never fails because one source did
            self._failed(target, what, exc)
            return None

    def describe(self) -> Iterable[Metric]:
        # registering must not read the kernel: an empty description tells the registry so
        return []

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily("netc_rule_packets", "Packets decided by a rule (or a default), "
                                      "per container and direction of its host-side veth", labels=RULE_LABELS)
        nbytes = CounterMetricFamily("netc_rule_bytes", "Bytes of the packets decided by a rule (or a default)",
                                     labels=RULE_LABELS)
        drops = CounterMetricFamily("netc_drops", "Packets netc dropped, by reason: policy (a deny rule), "
                                    "default_deny (isolated, no rule matched), malformed (bad headers)",
                                    labels=DROP_LABELS)
        lost = CounterMetricFamily("netc_events_lost", "Flow events that did not fit in the event ring",
                                   labels=["target"])
        full = CounterMetricFamily("netc_counters_full", "Packets not counted because netc_counters was full",
                                   labels=["target"])
        lb = CounterMetricFamily("netc_lb_connections", "Service connections at clients' veths, by outcome: "
                                 "translated (given a backend) or rejected (no backend could take it)",
                                 labels=["target", "outcome"])
        attachments = GaugeMetricFamily("netc_attachments", "Programs attached (container x hook) by mode",
                                        labels=["target", "mode"])
        version = GaugeMetricFamily("netc_active_version", "The version of the policy running on a target",
                                    labels=["target"])
        loaded = GaugeMetricFamily("netc_loaded_timestamp_seconds", "When the active version was loaded "
                                   "(Unix time)", labels=["target"])
        load_s = GaugeMetricFamily("netc_load_duration_seconds", "Wall time of the load that made the "
                                   "active version (only where the runtime records it)", labels=["target"])
        sync_s = GaugeMetricFamily("netc_sync_duration_seconds", "Wall time of the latest `netc sync` "
                                   "(only where the runtime records it)", labels=["target"])

        status = self._read("", "status", self.source.status)
        if status is None:
            status = [{"target": t} for t in self.targets]
        elif self.targets:
            known = {s.get("target") for s in status}
            status = [s for s in status if s.get("target") in self.targets] + \
                     [{"target": t} for t in self.targets if t not in known]
        for st in status:
            target = str(st.get("target", ""))
            modes: dict[str, int] = {}
            for a in st.get("attachments") or []:
                modes[str(a.get("mode", ""))] = modes.get(str(a.get("mode", "")), 0) + 1
            for mode, n in sorted(modes.items()):
                attachments.add_metric([target, mode], n)
            if st.get("active_version") is not None:
                version.add_metric([target], float(st["active_version"]))
            if st.get("loaded_at") is not None:
                loaded.add_metric([target], float(st["loaded_at"]))

            rows = self._read(target, "counters", self.source.counters, target)
            malformed_rows = False
            drop_totals: dict[tuple[str, str, str], float] = {}
            per_rule: dict[tuple[str, ...], list[float]] = {}
            for r in rows or []:
                labels = (target, str(_get(r, "container")), str(_get(r, "direction")), str(_get(r, "action")),
                          str(_get(r, "rule_id")), str(_get(r, "text")), str(_get(r, "location")))
                acc = per_rule.setdefault(labels, [0.0, 0.0])   # one series per label set, always
                acc[0] += float(_get(r, "packets", 0))
                acc[1] += float(_get(r, "bytes", 0))
                if _get(r, "action") == "deny":
                    reason = drop_reason(int(_get(r, "rule_id", 0)))
                    if reason is None:
                        continue
                    malformed_rows |= reason == "malformed"
                    key = (str(_get(r, "container")), str(_get(r, "direction")), reason)
                    drop_totals[key] = drop_totals.get(key, 0.0) + float(_get(r, "packets", 0))
            for labels, (n_packets, n_bytes) in per_rule.items():
                packets.add_metric(list(labels), n_packets)
                nbytes.add_metric(list(labels), n_bytes)
            stats = self._read(target, "stats", self.source.stats, target)
            if stats is not None:
                lost.add_metric([target], float(stats.get("events_lost", 0)))
                full.add_metric([target], float(stats.get("counters_full", 0)))
                if "lb_new" in stats:
                    lb.add_metric([target, "translated"], float(stats["lb_new"]))
                    lb.add_metric([target, "rejected"], float(stats.get("lb_rejected", 0)))
                if not malformed_rows and "malformed" in stats:
                    # the datapath counts malformed packets per target only: no container, no direction
                    drop_totals[("", "", "malformed")] = float(stats["malformed"])
            for (container, direction, reason), n in sorted(drop_totals.items()):
                drops.add_metric([target, container, direction, reason], n)

            durations = self._read(target, "durations", self.source.durations, target)
            if durations:
                if "load" in durations:
                    load_s.add_metric([target], durations["load"])
                if "sync" in durations:
                    sync_s.add_metric([target], durations["sync"])

        errors = CounterMetricFamily("netc_scrape_errors", "Failures reading a source during a scrape "
                                     "(the scrape itself still succeeds)", labels=["target", "source"])
        with self._lock:
            for (target, what), n in sorted(self._errors.items()):
                errors.add_metric([target, what], n)
        yield from (packets, nbytes, drops, lost, full, lb, attachments, version, loaded, load_s, sync_s, errors)


def registry(source: Source | None = None, targets: Iterable[str] = ()) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NetcCollector(source or RuntimeSource(), tuple(targets)))
    return reg


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464`, `:9464` (every address) → (address, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsError(f"--listen {listen!r}: give ADDRESS:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def serve(listen: str, source: Source | None = None, targets: Iterable[str] = ()) -> tuple[Any, threading.Thread]:
    """Start the HTTP server in a daemon thread; returns (server, thread). `server.server_port` is
    the port actually bound (give port 0 for an ephemeral one); `server.shutdown()` stops it."""
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    try:
        return start_http_server(port, addr=host, registry=registry(source, targets))
    except OSError as exc:
        raise MetricsError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
