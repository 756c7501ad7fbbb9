"""Attachment primitives on a veth in a scratch network namespace: tcx, XDP and tc clsact."""

from __future__ import annotations

import os
import uuid

import pytest
from pyroute2 import IPRoute

from netc.runtime import links
from netc.runtime.links import Hook
from netc.runtime.netns import create_netns, delete_netns, in_netns

pytestmark = pytest.mark.kernel


@pytest.fixture
def veth():  # type: ignore[no-untyped-def]
    name = f"netc-links-{uuid.uuid4().hex[:6]}"
    create_netns(name)
    try:
        with in_netns(name):
            with IPRoute() as ipr:
                ipr.link("add", ifname="la", kind="veth", peer="lb")
                idx = ipr.link_lookup(ifname="la")[0]
            yield idx
    finally:
        delete_netns(name)


def test_tcx_link_swaps_program_in_place(veth: int) -> None:
    first, second = links._probe_prog(3, 0), links._probe_prog(3, 2)
    try:
        link = links.tcx_attach(first, veth, Hook.EGRESS)
        info = links.link_info(link)
        assert info.ifindex == veth and info.attach_type == links.BPF_TCX_EGRESS
        assert info.prog_id == links.prog_id(first)
        links.link_update(link, second)
        after = links.link_info(link)
        assert after.link_id == info.link_id and after.prog_id == links.prog_id(second)
        links.link_detach(link)
        os.close(link)
    finally:
        os.close(first)
        os.close(second)


def test_xdp_link(veth: int) -> None:
    prog = links._probe_prog(6, 2)   # XDP_PASS
    try:
        link = links.xdp_attach(prog, veth)
        assert links.link_info(link).prog_id == links.prog_id(prog)
        os.close(link)
    finally:
        os.close(prog)


def test_tc_fallback_replaces_and_removes_its_filter(veth: int) -> None:
    first, second = links._probe_prog(3, 0), links._probe_prog(3, 2)
    try:
        links.tc_attach(first, veth, Hook.INGRESS, "netc_from_container")
        assert links.tc_prog_id(veth, Hook.INGRESS) == links.prog_id(first)
        links.tc_attach(second, veth, Hook.INGRESS, "netc_from_container")
        assert links.tc_prog_id(veth, Hook.INGRESS) == links.prog_id(second)
        links.tc_detach(veth, Hook.INGRESS)
        assert links.tc_prog_id(veth, Hook.INGRESS) is None
    finally:
        os.close(first)
        os.close(second)


def test_tcx_is_supported_on_this_kernel() -> None:
    assert links.tcx_supported()
