"""The kernel agrees with the reference semantics on random policies and packets (zero disagreements)."""

from __future__ import annotations

import pytest

from netc.runtime.fuzz import run_fuzz

pytestmark = pytest.mark.kernel


def test_kernel_agrees_with_reference_on_random_policies() -> None:
    report = run_fuzz(seed=2026, policies=200, packets=200)
    assert report.policies == 200 and report.packets == 200 * 200
    shown = "\n".join(f"seed {d.seed}: {d.container.name} {d.direction.value} {d.packet}: kernel "
                      f"{'allows' if d.kernel_allows else 'denies'}, reference "
                      f"{'allows' if d.reference_allows else 'denies'} ({d.reference_rule})\n{d.policy}"
                      for d in report.disagreements[:3])
    assert not report.disagreements, shown


def test_kernel_agrees_with_the_conntrack_model_on_packet_sequences() -> None:
    """Handshakes, replies, closes, resets, strays and timeouts, over 200 random policies."""
    from netc.runtime.fuzz import run_sequences

    report = run_sequences(seed=2027, policies=200, conversations=6)
    assert report.policies == 200 and report.packets > 5000
    shown = "\n".join(f"seed {d.seed}: {d.container.name} {d.direction.value} {d.packet}: kernel "
                      f"{'allows' if d.kernel_allows else 'denies'}, model "
                      f"{'allows' if d.reference_allows else 'denies'}\n{d.policy}"
                      for d in report.disagreements[:3])
    assert not report.disagreements, shown


def test_kernel_agrees_with_reference_on_services() -> None:
    """Clients' packets to random services' VIPs (Maglev, weights, both families, selectors and
    addresses as backends, services with no eligible backend): same backend, same verdict."""
    from netc.runtime.fuzz import run_service_fuzz

    policies, packets, disagreements = run_service_fuzz(seed=2028, policies=200, packets=50)
    assert policies == 200 and packets == 200 * 50
    shown = "\n".join(f"seed {d.seed}: {d.container.name} {d.packet}: {d.what}\n{d.policy}"
                      for d in disagreements[:3])
    assert not disagreements, shown
