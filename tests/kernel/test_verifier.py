"""The compiled artifact loads through libbpf and the kernel verifier accepts both programs."""

from __future__ import annotations

import pytest

from netc.codegen.artifact import read_manifest
from netc.codegen.toolchain import compile_c
from netc.errors import LoadError, VerifierError
from netc.runtime import abi
from netc.runtime.libbpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS, BpfObject, map_info

pytestmark = pytest.mark.kernel

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_F_NO_PREALLOC = 1


def test_both_programs_load(datapath):
    progs = datapath.programs
    assert set(progs) == {"netc_from_container", "netc_to_container"}
    assert all(fd > 0 for fd in progs.values())
    assert datapath.attach_type("netc_from_container") == BPF_TCX_INGRESS
    assert datapath.attach_type("netc_to_container") == BPF_TCX_EGRESS


def test_the_artifact_still_carries_its_manifest(artifact, datapath):
    assert read_manifest(artifact).startswith(b"{")


BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_LRU_HASH = 9


def test_the_maps_exist_with_btf(datapath):
    maps = datapath.maps
    expected = {
        "netc_endpoints": (BPF_MAP_TYPE_HASH, 4, abi.ENDPOINT_SLOTS.size),
        "netc_addrs": (BPF_MAP_TYPE_LPM_TRIE, abi.ADDR_KEY.size, abi.ADDR_SLOTS.size),
        "netc_addr4_root": (BPF_MAP_TYPE_ARRAY, 4, 8),
        "netc_addr4_nodes": (BPF_MAP_TYPE_ARRAY, 4, 8),
        "netc_rules": (BPF_MAP_TYPE_LPM_TRIE, abi.RULE_KEY.size, abi.VERDICT_SLOTS.size),
        "netc_wild": (BPF_MAP_TYPE_LPM_TRIE, abi.WILD_KEY.size, abi.VERDICT_SLOTS.size),
        "netc_gen": (BPF_MAP_TYPE_ARRAY, 4, 4),
        "netc_counters": (BPF_MAP_TYPE_PERCPU_HASH, abi.COUNTER_KEY.size, abi.COUNTER.size),
        "netc_events": (BPF_MAP_TYPE_RINGBUF, 0, 0),
        "netc_stats": (BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
        "netc_ct": (BPF_MAP_TYPE_LRU_HASH, abi.CT_KEY.size, abi.CT_ENTRY.size),
        "netc_ct4": (BPF_MAP_TYPE_LRU_HASH, abi.CT4_KEY.size, abi.CT_ENTRY.size),
        "netc_ct_timeouts": (BPF_MAP_TYPE_ARRAY, 4, 8),
        "netc_ct_counters": (BPF_MAP_TYPE_PERCPU_ARRAY, 4, abi.COUNTER.size),
    }
    assert set(maps) == set(expected)
    for name, (map_type, key_size, value_size) in expected.items():
        info = map_info(maps[name].fd)  # what the kernel says, not what libbpf planned
        assert (info.type, info.key_size, info.value_size) == (map_type, key_size, value_size), name
        if map_type == BPF_MAP_TYPE_RINGBUF:
            continue   # a ring has no key or value type
        assert info.btf_id != 0 and info.btf_key_type_id != 0 and info.btf_value_type_id != 0, name
        if map_type == BPF_MAP_TYPE_LPM_TRIE:
            assert info.map_flags & BPF_F_NO_PREALLOC, name


def test_max_entries_can_be_set_before_load(artifact):
    with BpfObject.open_mem(artifact, "netc") as obj:
        obj.set_max_entries("netc_rules", 300_000)
        obj.load()
        assert map_info(obj.maps["netc_rules"].fd).max_entries == 300_000
        with pytest.raises(LoadError, match="before load"):
            obj.set_max_entries("netc_rules", 1)


def test_instruction_count_is_reported(datapath):
    for name in datapath.programs:
        assert 100 < datapath.insn_count(name) < 4096


def test_verifier_stats_are_available(artifact):
    with BpfObject.open_mem(artifact, "netc") as obj:
        obj.load(log_level=4)
        for name in obj.programs:
            assert "processed" in obj.verifier_log(name)


BAD_PROGRAM = """\
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tcx/ingress")
int reads_without_bounds_check(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;

	return data[20]; /* no check against data_end */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
"""


def test_a_rejected_program_raises_verifier_error_with_the_log():
    obj_bytes = compile_c(BAD_PROGRAM)
    with BpfObject.open_mem(obj_bytes, "bad") as obj:
        with pytest.raises(VerifierError) as info:
            obj.load()
    err = info.value
    assert "program reads_without_bounds_check" in str(err)
    assert "invalid access to packet" in err.log
    assert "verifier log" in str(err)


def test_a_map_the_kernel_refuses_names_the_map(artifact):
    with BpfObject.open_mem(artifact, "netc") as obj:
        obj.set_max_entries("netc_endpoints", 0)
        with pytest.raises(LoadError, match="map netc_endpoints") as info:
            obj.load()
        assert not isinstance(info.value, VerifierError)


def test_an_unknown_section_is_refused_at_open():
    text = BAD_PROGRAM.replace('SEC("tcx/ingress")', 'SEC("not_a_hook")').replace("data[20]", "0")
    with pytest.raises(LoadError, match="section 'not_a_hook'"):
        BpfObject.open_mem(compile_c(text), "odd")


def test_garbage_is_refused_at_open():
    with pytest.raises(LoadError, match="cannot open BPF object"):
        BpfObject.open_mem(b"\x7fELF" + b"\0" * 100, "garbage")
