"""The ctypes libbpf layer: maps, pinning, test runs, and choosing skb->ifindex for a test run."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netc.errors import LoadError
from netc.runtime import abi, slots
from netc.runtime.libbpf import BPF_NOEXIST, Map, bpf_obj_get, bpf_obj_pin, prog_test_run, skb_ctx

pytestmark = pytest.mark.kernel

FRAME = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="10.1.1.1", dst="10.0.0.5") / TCP(dport=80))


def ep_key(ifindex: int) -> bytes:
    return ifindex.to_bytes(4, "little")


def test_hash_map_update_lookup_delete_keys(datapath):
    m = datapath.maps["netc_endpoints"]
    value = slots.both("netc_endpoints", abi.endpoint(3, 9, (True, False), (True, False)))
    assert m.lookup(ep_key(10)) is None
    m.update(ep_key(10), value)
    m.update(ep_key(11), value)
    assert m.lookup(ep_key(10)) == value
    assert sorted(m.keys()) == sorted([ep_key(10), ep_key(11)])
    assert dict(m.items()) == {ep_key(10): value, ep_key(11): value}
    with pytest.raises(LoadError, match="map netc_endpoints: update: File exists"):
        m.update(ep_key(10), value, BPF_NOEXIST)
    assert m.delete(ep_key(10)) is True
    assert m.delete(ep_key(10)) is False
    assert list(m.keys()) == [ep_key(11)]


def test_wrong_sizes_are_refused_before_the_kernel_sees_them(datapath):
    m = datapath.maps["netc_endpoints"]
    with pytest.raises(ValueError, match="key is 3 bytes"):
        m.lookup(b"abc")
    with pytest.raises(ValueError, match="value is 1 bytes"):
        m.update(ep_key(1), b"x")


def test_lpm_lookup_finds_the_longest_prefix(datapath):
    m = datapath.maps["netc_addrs"]
    m.update(abi.addr_key(ipaddress.ip_network("10.0.0.0/8")), slots.both("netc_addrs", abi.ADDR_INFO.pack(1, 0)))
    m.update(abi.addr_key(ipaddress.ip_network("10.1.0.0/16")), slots.both("netc_addrs", abi.ADDR_INFO.pack(2, 0)))
    probe = abi.addr_key(ipaddress.ip_network("10.1.2.3/32"))
    assert abi.ADDR_INFO.unpack(slots.decode("netc_addrs", m.lookup(probe), 0)) == (2, abi.CLASS_WORLD)
    assert m.lookup(abi.addr_key(ipaddress.ip_network("11.0.0.1/32"))) is None
    assert len(list(m.keys())) == 2


@pytest.mark.parametrize("name", ["netc_endpoints", "netc_rules"])
def test_update_batch(datapath, name):
    m = datapath.maps[name]
    if name == "netc_endpoints":
        items = [(ep_key(i), abi.endpoint(i, i, (True, True), (False, False))) for i in range(100, 200)]
    else:  # an LPM trie (older kernels lack batch ops for it: update_batch then goes one by one)
        items = [(abi.rule_key(1, i, 0, 6, 443, 16), abi.verdict(abi.rank(0, False), 16, 1, 0))
                 for i in range(100)]
    items = slots.encode_all(name, dict(items))
    m.update_batch(items)
    assert sorted(m.keys()) == sorted(k for k, _ in items)
    for k, v in items[:5]:
        assert m.lookup(k) == v


def test_test_run_reports_return_value_duration_and_packet(datapath):
    fd = datapath.programs["netc_to_container"]
    res = prog_test_run(fd, FRAME, repeat=1000)
    assert res.retval == 0
    assert res.duration_ns > 0
    assert res.data_out == FRAME
    assert res.ctx_out is None


def test_test_run_context_round_trips(datapath):
    res = prog_test_run(datapath.programs["netc_to_container"], FRAME, ctx=skb_ctx(ifindex=1, mark=7))
    assert res.ctx_out is not None
    assert int.from_bytes(res.ctx_out[40:44], "little") == 1   # ifindex
    assert int.from_bytes(res.ctx_out[8:12], "little") == 7    # mark


@pytest.fixture
def bpffs(tmp_path):
    """A private bpffs instance (the machine's /sys/fs/bpf may not be mounted)."""
    path = tmp_path / "bpffs"
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        # a kernel test: under NETC_REQUIRE_KERNEL=1 a missing capability is a failure, not a skip
        from tests.conftest import require_kernel

        (pytest.fail if require_kernel() else pytest.skip)(f"cannot mount bpffs: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_pin_and_reopen_a_map(datapath, bpffs):
    m = datapath.maps["netc_endpoints"]
    m.update(ep_key(42), slots.both("netc_endpoints", abi.endpoint(1, 2, (True, True), (True, True))))
    path = str(bpffs / "netc_endpoints")
    bpf_obj_pin(m.fd, path)
    with Map.from_pinned(path) as again:
        assert again.fd != m.fd
        assert (again.name, again.key_size, again.value_size) == ("netc_endpoints", 4, abi.ENDPOINT_SLOTS.size)
        assert again.lookup(ep_key(42)) == m.lookup(ep_key(42))
    assert again.fd == -1


def test_pin_and_reopen_a_program(datapath, bpffs):
    path = str(bpffs / "prog")
    bpf_obj_pin(datapath.programs["netc_to_container"], path)
    fd = bpf_obj_get(path)
    try:
        assert prog_test_run(fd, FRAME).retval == 0
    finally:
        os.close(fd)
    with pytest.raises(LoadError, match="No such file"):
        bpf_obj_get(str(bpffs / "missing"))


NETNS_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys
    CLONE_NEWNET = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        sys.exit("unshare: " + str(ctypes.get_errno()))
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("add", ifname="netc-h0", kind="veth", peer="netc-c0")
        ifindex = ipr.link_lookup(ifname="netc-h0")[0]
    from netc.runtime import abi, slots
    from netc.runtime.libbpf import BpfObject, prog_test_run, skb_ctx
    artifact, frame = open(sys.argv[1], "rb").read(), bytes.fromhex(sys.argv[2])
    with BpfObject.open_mem(artifact, "netc") as obj:
        obj.load()
        obj.maps["netc_endpoints"].update(ifindex.to_bytes(4, "little"),
                                          slots.both("netc_endpoints", abi.endpoint(1, 1, (True, True), (True, True))))
        fd = obj.programs["netc_to_container"]
        on_veth = prog_test_run(fd, frame, ctx=skb_ctx(ifindex=ifindex))
        on_lo = prog_test_run(fd, frame)
    print(json.dumps({"ifindex": ifindex, "on_veth": on_veth.retval, "on_lo": on_lo.retval,
                      "ctx_ifindex": int.from_bytes(on_veth.ctx_out[40:44], "little")}))
""")


def test_the_context_puts_the_test_skb_on_a_real_veth(artifact, tmp_path):
    """skb->ifindex under test_run is the loopback's unless ctx_in names a device of the caller's
    network namespace; then it is that device's. Run in a fresh namespace with its own veth."""
    obj_path = tmp_path / "netc.o"
    obj_path.write_bytes(artifact)
    proc = subprocess.run([sys.executable, "-c", NETNS_SCRIPT, str(obj_path), FRAME.hex()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ctx_ifindex"] == out["ifindex"] > 1
    assert out["on_veth"] == 2   # the veth is a managed endpoint with default deny
    assert out["on_lo"] == 0     # the loopback is not
