// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netc bench harness for programs that rewrite packets (DESIGN.md §7): BPF_PROG_TEST_RUN repeats
 * a program on the same buffer, so a translated packet would be seen already translated from
 * the second repeat on. This harness writes the original headers back before every repeat, then
 * tail-calls the program under test; `netc bench lb` measures the harness alone in the same run
 * and subtracts it.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* Ethernet (14) + IPv4 without options (20) + TCP without options (20): what translation rewrites. */
#define NETC_BENCH_HEADERS 54

struct netc_bench_frame {
	__u8 data[NETC_BENCH_HEADERS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2); /* 0: the ingress packet, 1: the egress packet */
	__type(key, __u32);
	__type(value, struct netc_bench_frame);
} netc_bench_frames SEC(".maps");

/* One program array per attach type: a tail call must stay within one. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} netc_bench_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} netc_bench_egress SEC(".maps");

static __always_inline int netc_bench_restore(struct __sk_buff *skb, __u32 slot)
{
	struct netc_bench_frame *f = bpf_map_lookup_elem(&netc_bench_frames, &slot);

	if (!f || bpf_skb_store_bytes(skb, 0, f->data, NETC_BENCH_HEADERS, 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int netc_bench_restore_ingress(struct __sk_buff *skb)
{
	if (netc_bench_restore(skb, 0))
		return TC_ACT_SHOT;
	bpf_tail_call(skb, &netc_bench_ingress, 0);
	return TC_ACT_OK; /* the harness alone: what is subtracted */
}

SEC("tcx/egress")
int netc_bench_restore_egress(struct __sk_buff *skb)
{
	if (netc_bench_restore(skb, 1))
		return TC_ACT_SHOT;
	bpf_tail_call(skb, &netc_bench_egress, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
