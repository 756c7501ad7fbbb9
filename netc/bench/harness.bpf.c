// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netc bench harness (DESIGN.md §7): BPF_PROG_TEST_RUN repeats a program on the same buffer, so a
 * program with connection tracking sees a "new flow" only once. This harness gives every repeat
 * a new TCP source port (from a per-CPU counter) and then tail-calls the program under test;
 * `netc bench datapath` measures the harness alone in the same run and subtracts it.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} netc_bench_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} netc_bench_port SEC(".maps");

/* Ethernet (14) + IPv4 without options (20): the TCP source port is at byte 34. */
#define NETC_BENCH_SPORT_OFF 34

SEC("tcx/egress") /* the same type and attach type as netc_to_container, or the tail call is refused */
int netc_bench_new_flow(struct __sk_buff *skb)
{
	__u32 zero = 0, *n = bpf_map_lookup_elem(&netc_bench_port, &zero);
	__u16 port;

	if (!n)
		return TC_ACT_SHOT;
	*n += 1;
	port = __builtin_bswap16((__u16)(1024 + (*n % 60000)));
	bpf_skb_store_bytes(skb, NETC_BENCH_SPORT_OFF, &port, sizeof(port), 0);
	bpf_tail_call(skb, &netc_bench_target, 0);
	return TC_ACT_OK; /* the harness alone (no program under test): what is subtracted */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
