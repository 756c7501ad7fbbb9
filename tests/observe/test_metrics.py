"""`netc metrics`: the collector reads its sources at scrape time; a scrape over HTTP parses as
Prometheus text with the documented names, labels and values; a failing source never fails the
scrape."""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netc.observe import metrics
from netc.runtime import abi


@dataclass
class Row:  # the shape of netc.runtime.observe.CounterRow
    rule_id: int
    location: str
    text: str
    policy: str
    container: str
    direction: str
    action: str
    packets: int
    bytes: int


class FakeSource:
    def __init__(self) -> None:
        self.calls = 0
        self.packets = 5
        self.fail: set[str] = set()

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail:
            raise RuntimeError(f"{what} exploded")

    def status(self) -> list[dict[str, Any]]:
        self._maybe_fail("status")
        atts = [{"container": c, "hook": h, "mode": "tcx"} for c in ("web-1", "db-1") for h in ("ingress", "egress")]
        return [{"target": "demo", "active_version": 3, "loaded_at": 1_790_000_000.5, "attachments": atts},
                {"target": "other", "active_version": 1, "loaded_at": 1_790_000_100.0,
                 "attachments": [{"container": "x", "hook": "ingress", "mode": "tc"}]}]

    def counters(self, target: str) -> list[Row]:
        self._maybe_fail("counters")
        self.calls += 1
        if target != "demo":
            return []
        return [
            Row(16, "q.netp:15", "allow ingress tcp from any to port 80, 443", "web-ingress", "web-1", "ingress",
                "allow", self.packets, self.packets * 60),
            Row(17, "q.netp:17", 'deny ingress from 203.0.113.66 log', "web-ingress", "web-1", "ingress", "deny", 4, 240),
            Row(abi.RULE_DEFAULT_DENY, "(default: isolated, no rule matched)", "default deny", "", "db-1", "ingress",
                "deny", 2, 148),
            Row(abi.RULE_DEFAULT_ALLOW, "(default: not isolated)", "default allow", "", "web-1", "egress",
                "allow", 9, 900),
        ]

    def stats(self, target: str) -> dict[str, int]:
        self._maybe_fail("stats")
        return {"events_lost": 7 if target == "demo" else 0, "counters_full": 1, "malformed": 3}

    def durations(self, target: str) -> dict[str, float]:
        self._maybe_fail("durations")
        return {"load": 0.25, "sync": 0.045} if target == "demo" else {}


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def server(source: FakeSource) -> Iterator[str]:
    httpd, thread = metrics.serve("127.0.0.1:0", source)
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/metrics"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def value(fams: dict[str, Any], family: str, **labels: str) -> float:
    hits = [v for name, lab, v in fams[family] if all(lab.get(k) == x for k, x in labels.items())
            and not name.endswith("_created")]
    assert len(hits) == 1, f"{family}{labels}: {fams[family]}"
    return hits[0]


def test_scrape_has_every_metric_with_its_labels(server: str) -> None:
    fams = scrape(server)
    # counters: the family name drops `_total`, the samples carry it
    assert fams["netc_rule_packets"][0][0] == "netc_rule_packets_total"
    labels = fams["netc_rule_packets"][0][1]
    assert set(labels) == {"target", "container", "direction", "action", "rule_id", "rule", "location"}
    assert value(fams, "netc_rule_packets", target="demo", rule_id="16", container="web-1") == 5
    assert value(fams, "netc_rule_bytes", target="demo", rule_id="16", container="web-1") == 300
    assert value(fams, "netc_rule_packets", rule_id="17")  == 4
    row = [lab for _, lab, _ in fams["netc_rule_packets"] if lab["rule_id"] == "17"][0]
    assert row == {"target": "demo", "container": "web-1", "direction": "ingress", "action": "deny",
                   "rule_id": "17", "rule": "deny ingress from 203.0.113.66 log", "location": "q.netp:17"}
    # drops by reason: a deny rule, the default deny, and the per-target malformed count
    assert value(fams, "netc_drops", target="demo", container="web-1", direction="ingress", reason="policy") == 4
    assert value(fams, "netc_drops", target="demo", container="db-1", reason="default_deny") == 2
    assert value(fams, "netc_drops", target="demo", reason="malformed") == 3
    assert not [lab for _, lab, _ in fams["netc_drops"] if lab["reason"] not in ("policy", "default_deny", "malformed")]
    assert value(fams, "netc_events_lost", target="demo") == 7
    assert value(fams, "netc_counters_full", target="demo") == 1
    assert value(fams, "netc_attachments", target="demo", mode="tcx") == 4
    assert value(fams, "netc_attachments", target="other", mode="tc") == 1
    assert value(fams, "netc_active_version", target="demo") == 3
    assert value(fams, "netc_loaded_timestamp_seconds", target="demo") == 1_790_000_000.5
    assert value(fams, "netc_load_duration_seconds", target="demo") == 0.25
    assert value(fams, "netc_sync_duration_seconds", target="demo") == 0.045
    assert fams["netc_scrape_errors"] == []
    for fam in ("netc_rule_packets", "netc_rule_bytes", "netc_drops", "netc_events_lost", "netc_counters_full"):
        assert all(name == fam + "_total" for name, _, _ in fams[fam]), fam


def test_values_are_read_at_scrape_time(server: str, source: FakeSource) -> None:
    assert value(scrape(server), "netc_rule_packets", rule_id="16") == 5
    source.packets = 11
    assert value(scrape(server), "netc_rule_packets", rule_id="16") == 11
    assert source.calls == 4   # two targets, two scrapes: read on demand, never in the background


@pytest.mark.parametrize("broken", ["counters", "stats", "status", "durations"])
def test_a_failing_source_still_gives_a_scrape(server: str, source: FakeSource, broken: str) -> None:
    source.fail.add(broken)
    fams = scrape(server)
    errors = {(lab["target"], lab["source"]): v for _, lab, v in fams["netc_scrape_errors"]}
    assert errors and all(src == broken for _, src in errors), errors
    if broken != "counters" and broken != "status":
        assert value(fams, "netc_rule_packets", rule_id="16") == 5
    if broken != "stats":
        assert [v for _, lab, v in fams["netc_events_lost"] if lab["target"] == "demo"] in ([7], [])
    # the error counter is a counter: it grows with each failing scrape
    again = {(lab["target"], lab["source"]): v for _, lab, v in scrape(server)["netc_scrape_errors"]}
    assert all(again[k] == errors[k] + 1 for k in errors)


def test_only_the_targets_asked_for(source: FakeSource) -> None:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry(source, ["other"])).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["target"] for s in fams["netc_attachments"].samples} == {"other"}
    assert fams["netc_rule_packets"].samples == []


def test_durations_from_the_state_database(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert metrics.recorded_durations(str(db), "demo") == {}           # no database: nothing, nothing made
    assert not db.exists()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE versions (target TEXT, version INTEGER, state TEXT, created_at REAL)")
    con.execute("INSERT INTO versions VALUES ('demo', 1, 'active', 0)")
    con.commit()
    assert metrics.recorded_durations(str(db), "demo") == {}           # today's schema records none
    con.execute("ALTER TABLE versions ADD COLUMN load_seconds REAL")
    con.execute("UPDATE versions SET load_seconds = 0.4")
    con.execute("CREATE TABLE syncs (target TEXT, seconds REAL, at REAL)")
    con.executemany("INSERT INTO syncs VALUES (?, ?, ?)", [("demo", 0.5, 1.0), ("demo", 0.03, 2.0)])
    con.commit()
    con.close()
    assert metrics.recorded_durations(str(db), "demo") == {"load": 0.4, "sync": 0.03}


@pytest.mark.parametrize(("listen", "want"), [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)),
                                              (":9464", ("0.0.0.0", 9464))])
def test_listen_addresses(listen: str, want: tuple[str, int]) -> None:
    assert metrics.parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["9464", "localhost:http", "1.2.3.4:70000"])
def test_bad_listen_addresses_say_what_to_write(listen: str) -> None:
    with pytest.raises(metrics.MetricsError, match="ADDRESS:PORT"):
        metrics.parse_listen(listen)


def test_the_command_reports_a_port_in_use(source: FakeSource) -> None:
    from click.testing import CliRunner

    from netc.observe.cli import metrics as command

    httpd, thread = metrics.serve("127.0.0.1:0", source)
    try:
        r = CliRunner().invoke(command, ["--listen", f"127.0.0.1:{httpd.server_port}"])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert r.exit_code == 1
    assert "cannot listen on 127.0.0.1:" in r.output and "Traceback" not in r.output
