"""The reference semantics, rule by rule of docs/semantics.md."""

from __future__ import annotations

import pytest

from netc import api
from netc.ir.eval import Packet, Reason, evaluate
from netc.runtime.inventory import Container, Inventory

INV = Inventory([
    Container("web-1", ("10.0.0.5", "fd00::5"), {"app": "web", "env": "prod"}),
    Container("api-1", ("10.0.0.6", "fd00::6"), {"app": "api", "env": "prod"}),
    Container("db-1", ("10.0.0.7",), {"app": "db"}),
], host_addresses=("10.0.0.1",))


def verdict(text: str, pkt: Packet):  # type: ignore[no-untyped-def]
    res = api.check(text, name="t.netp")
    assert res.ok, res.errors
    assert res.program is not None
    return evaluate(res.program, INV, pkt)


def tcp(src: str, dst: str, dport: int, sport: int = 40000) -> Packet:
    return Packet(6, src, dst, sport, dport)


def test_unisolated_direction_passes() -> None:
    v = verdict('policy p for app == "web" { allow ingress tcp from 10.1.0.0/16 to port 80 }',
                tcp("10.0.0.5", "8.8.8.8", 53))
    assert v.allowed and v.sides[0].reason is Reason.NOT_ISOLATED


def test_rule_only_isolation_defaults_to_deny() -> None:
    text = 'policy p for app == "web" { allow ingress tcp from 10.1.0.0/16 to port 80 }'
    assert verdict(text, tcp("10.1.2.3", "10.0.0.5", 80)).allowed
    v = verdict(text, tcp("10.1.2.3", "10.0.0.5", 81))
    assert not v.allowed and v.deciding.reason is Reason.DEFAULT_DENY


def test_default_allow_needs_every_isolating_policy() -> None:
    text = ('policy a for all { ingress default allow\n deny ingress from 10.9.0.0/16 }\n'
            'policy b for app == "web" { ingress default allow }')
    assert verdict(text, tcp("1.1.1.1", "10.0.0.5", 80)).allowed
    assert not verdict(text, tcp("10.9.1.1", "10.0.0.5", 80)).allowed
    text2 = text + '\npolicy c for app == "web" { allow ingress tcp from 2.2.2.2 }'
    v = verdict(text2, tcp("1.1.1.1", "10.0.0.5", 80))
    assert not v.allowed and v.deciding.reason is Reason.DEFAULT_DENY


def test_priority_then_deny_beats_allow() -> None:
    text = ('policy p for all {\n ingress default deny\n allow ingress from 10.0.0.0/8 priority 5\n'
            ' deny ingress from 10.1.0.0/16 priority 1\n deny ingress from 10.2.0.0/16 priority 5\n'
            ' allow ingress from 10.2.3.0/24 priority 5\n}')
    v = verdict(text, tcp("10.1.1.1", "10.0.0.5", 80))
    assert v.allowed and v.rule is not None and v.rule.priority == 5
    v = verdict(text, tcp("10.2.3.4", "10.0.0.5", 80))
    assert not v.allowed and v.rule is not None and v.rule.text.startswith("deny ingress from 10.2.0.0/16")


def test_except_holes_and_ipv6() -> None:
    text = ('let corp = {10.0.0.0/8 except {10.66.0.0/16, 10.67.0.0/16}, fd00::/8}\n'
            'policy p for app == "web" { ingress default deny\n allow ingress tcp from corp to port 443 }')
    assert verdict(text, tcp("10.1.1.1", "10.0.0.5", 443)).allowed
    assert not verdict(text, tcp("10.66.1.1", "10.0.0.5", 443)).allowed
    assert not verdict(text, tcp("10.67.255.255", "10.0.0.5", 443)).allowed
    assert verdict(text, tcp("fd00::99", "fd00::5", 443)).allowed
    assert not verdict(text, tcp("fe80::1", "fd00::5", 443)).allowed


def test_container_to_container_needs_both_ends() -> None:
    text = ('policy w for app == "web" { egress default deny\n allow egress to (app == "api") }\n'
            'policy a for app == "api" { ingress default deny\n allow ingress tcp from (app == "web") to port 8080 }')
    assert verdict(text, tcp("10.0.0.5", "10.0.0.6", 8080)).allowed
    v = verdict(text, tcp("10.0.0.5", "10.0.0.6", 9090))
    assert not v.allowed and v.deciding.endpoint.name == "api-1" and v.deciding.direction.value == "ingress"
    v = verdict(text, tcp("10.0.0.5", "10.0.0.7", 5432))
    assert not v.allowed and v.deciding.endpoint.name == "web-1"


def test_world_host_and_selectors() -> None:
    text = ('policy p for app == "db" { ingress default deny\n allow ingress from world to port 1\n'
            ' allow ingress from host to port 2\n allow ingress from (env == "prod") to port 3 }')
    assert verdict(text, tcp("8.8.8.8", "10.0.0.7", 1)).allowed
    assert not verdict(text, tcp("10.0.0.5", "10.0.0.7", 1)).allowed      # a container is not world
    assert verdict(text, tcp("10.0.0.1", "10.0.0.7", 2)).allowed          # host
    assert not verdict(text, tcp("10.0.0.1", "10.0.0.7", 1)).allowed      # host is not world
    assert verdict(text, tcp("10.0.0.6", "10.0.0.7", 3)).allowed
    assert not verdict(text, tcp("8.8.8.8", "10.0.0.7", 3)).allowed


def test_icmp_types_and_ndp() -> None:
    text = 'policy p for all { ingress default deny\n allow ingress icmp type echo-request }'
    assert verdict(text, Packet(1, "8.8.8.8", "10.0.0.5", icmp_type=8, icmp_code=0)).allowed
    assert not verdict(text, Packet(1, "8.8.8.8", "10.0.0.5", icmp_type=0, icmp_code=0)).allowed
    v = verdict(text, Packet(58, "fe80::1", "fd00::5", icmp_type=135, icmp_code=0))
    assert v.allowed and v.sides[0].reason is Reason.NDP


def test_fragments_carry_no_ports() -> None:
    text = 'policy p for all { ingress default deny\n allow ingress tcp to port 80\n allow ingress udp }'
    assert not verdict(text, Packet(6, "8.8.8.8", "10.0.0.5", 0, 0, fragment=True)).allowed
    assert verdict(text, Packet(17, "8.8.8.8", "10.0.0.5", 0, 0, fragment=True)).allowed


def test_unknown_protocol_matches_only_protocol_free_rules() -> None:
    text = 'policy p for all { ingress default deny\n allow ingress from 8.8.8.8 to port 80\n allow ingress from 9.9.9.9 }'
    assert not verdict(text, Packet(47, "8.8.8.8", "10.0.0.5")).allowed
    assert verdict(text, Packet(47, "9.9.9.9", "10.0.0.5")).allowed


def test_audit_and_log_change_nothing() -> None:
    text = 'policy p for all { audit ingress from 8.8.8.8\n allow ingress tcp from 8.8.8.8 log }'
    v = verdict(text, tcp("8.8.8.8", "10.0.0.5", 80))
    assert v.allowed and v.sides[0].audits and ("log" in [e[0].value for e in v.events])
    only_audit = 'policy p for all { audit ingress from 8.8.8.8 }'
    v = verdict(only_audit, tcp("1.1.1.1", "10.0.0.5", 80))
    assert v.allowed and v.sides[0].reason is Reason.NOT_ISOLATED


def test_service_translation_comes_before_policy() -> None:
    text = ('service s { vip 10.96.0.1 port 80 tcp\n backends (app == "api") port 8080 }\n'
            'policy a for app == "api" { ingress default deny\n allow ingress tcp to port 8080 }')
    v = verdict(text, tcp("10.0.0.5", "10.96.0.1", 80))
    assert v.allowed and v.translation is not None and v.translation.backend == "api-1"
    assert v.packet.dst == "10.0.0.6" and v.packet.dport == 8080
    empty = 'service s { vip 10.96.0.1 port 80 tcp\n backends (app == "nothing") }'
    v = verdict(empty, tcp("10.0.0.5", "10.96.0.1", 80))
    assert not v.allowed and "no backends" in v.note


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 2, 3)])
def test_maglev_spread_follows_weights(weights: tuple[int, ...]) -> None:
    from netc.ir.lb import maglev_table

    table = maglev_table(["a", "b", "c"], list(weights), 16381)
    counts = [table.count(i) for i in range(3)]
    total = sum(weights)
    for c, w in zip(counts, weights, strict=True):
        assert abs(c / len(table) - w / total) < 0.02
