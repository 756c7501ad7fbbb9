/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * netc datapath ABI: the map keys and values shared by the generated BPF programs and the
 * runtime (netc/runtime/abi.py mirrors these layouts with struct formats; change both together).
 *
 * Classification is a fixed number of lookups whatever the rule count (DESIGN.md §6):
 *   netc_endpoints  hash      ifindex                         -> endpoint (policy set, isolation)
 *   netc_addrs      lpm_trie  remote address (not v4-mapped)  -> atom id and identity class
 *   netc_addr4_root array     IPv4 remote's top 16 bits       -> leaf (atom, class) or child chunk
 *   netc_addr4_nodes array    chunk * 16 + next 4 bits        -> leaf or child chunk
 *     (IPv4 remotes: a multibit trie, strides 16-4-4-4-4, leaf-pushed: runtime/addr4.py)
 *   netc_rules      lpm_trie  (pset, atom, dir, proto, port)  -> winning verdict of atom-specific rules
 *   netc_wild       lpm_trie  (pset, dir, class, proto, port) -> winning verdict of wildcard-peer rules
 * The two verdicts are combined by rank (priority, then deny over allow); no match -> the default.
 */
#ifndef NETC_ABI_H
#define NETC_ABI_H

#include <linux/types.h>

#define NETC_DIR_INGRESS 0 /* traffic to the container (host veth egress)    */
#define NETC_DIR_EGRESS  1 /* traffic from the container (host veth ingress) */
#define NETC_DIR_FRAG    0x80 /* or-ed into `dir` of rule lookups for a non-first fragment:
                                * only rules without ports or ICMP types have entries there */

#define NETC_CLASS_WORLD     0
#define NETC_CLASS_HOST      1
#define NETC_CLASS_CONTAINER 2

#define NETC_PROTO_OTHER 255 /* any L4 protocol netc has no rules of its own for */

#define NETC_ACTION_ALLOW 1
#define NETC_ACTION_DENY  2

#define NETC_VERDICT_LOG 0x1

/* Rule ids below this are reserved for the defaults (see netc/ir/nodes.py: DEFAULT_*). */
#define NETC_RULE_DEFAULT_ALLOW      1 /* direction not isolated        */
#define NETC_RULE_DEFAULT_DENY       2 /* isolated, nothing matched     */
#define NETC_RULE_DEFAULT_ISO_ALLOW  3 /* isolated with `default allow` */
#define NETC_RULE_MALFORMED          4 /* truncated or malformed header */

/* What an endpoint reports on the event ring (from the `observe` blocks selecting it). */
#define NETC_OBSERVE_DENY  0x1 /* every denied packet */
#define NETC_OBSERVE_ALLOW 0x2 /* every allowed packet (expensive; for debugging) */
#define NETC_OBSERVE_NEW   0x4 /* new connections (TCP SYN), sampled */
#define NETC_OBSERVE_TRANSLATE 0x8 /* connections a service gave a backend (at the client) */
/* `log` rules and `audit` rules always report, whatever the endpoint's flags. */

/* The policy-derived half of an endpoint. Entries of netc_endpoints, netc_addrs, netc_rules and
 * netc_wild carry two slots; a packet reads the generation once (netc_gen) and uses slot[gen] of
 * every entry it finds. A policy change writes only the entries it affects, in their inactive
 * slot, then flips the generation with one write (docs/runtime.md, "Policy changes"). */
struct netc_endpoint_policy {
	__u32 pset;           /* policy set id: endpoints selected by the same policies share it */
	__u8 isolated[2];     /* per direction: some selecting policy declares it */
	__u8 default_deny[2]; /* per direction: nothing matched -> deny */
	__u8 audited[2];      /* per direction: some selecting policy has audit rules for it */
	__u8 observe;         /* NETC_OBSERVE_* */
	__u8 pad;
	__u32 sample;         /* NETC_OBSERVE_NEW reports when bpf_get_prandom_u32() < sample */
};

struct netc_endpoint {
	__u32 endpoint_id;
	__u8 tracked;         /* either slot isolates a direction: track this endpoint's connections */
	__u8 pad[3];
	struct netc_endpoint_policy slot[2];
};

struct netc_addr_key {
	__u32 prefixlen;
	__u8 addr[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d (prefixlen + 96) */
};

struct netc_addr_slot {
	__u32 atom;
	__u32 klass; /* NETC_CLASS_* */
};

struct netc_addr_info {
	struct netc_addr_slot slot[2]; /* slot[gen]; a zeroed slot is atom 0, the world: as a miss */
};

struct netc_rule_key {
	__u32 prefixlen; /* 80 + significant bits of port */
	__u32 pset;
	__u32 atom;
	__u8 dir;
	__u8 proto;
	__be16 port; /* destination port, or (icmp type << 8 | code) */
};

struct netc_wild_key {
	__u32 prefixlen; /* 64 + significant bits of port */
	__u32 pset;
	__u8 dir;
	__u8 klass;
	__u8 proto;
	__u8 pad;
	__be16 port;
	__u16 pad2; /* explicit tail padding: keys are compared bytewise, so it must be zero */
};

/* Connection tracking (per endpoint: each side of a container-to-container flow keeps its own
 * view, so both sides' policies judge a new connection). The tuple is normalized: `a` is the
 * lower (address, port) end, so a packet and its reply find the same entry with one lookup. */
struct netc_ct_key {
	__u32 ifindex;  /* the endpoint's host-side veth */
	__u8 proto;     /* IP protocol number (ICMP echo: 1 or 58, with the identifier as both ports) */
	__u8 family;
	__u16 pad;
	__u8 a[16];     /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	__u8 b[16];
	__u16 port_a;   /* host order */
	__u16 port_b;
};

/* IPv4 connections are tracked apart, in netc_ct4, under this 20-byte form of the same key
 * (family 4, addresses as their last 4 bytes): the kernel hashes and compares the whole key on
 * every lookup, and 44 bytes cost twice what 20 do. IPv6 connections stay in netc_ct. */
struct netc_ct4_key {
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
	__be32 a;
	__be32 b;
	__u16 port_a;   /* host order */
	__u16 port_b;
};

#define NETC_CT_SYN_SENT    1
#define NETC_CT_SYN_RECV    2
#define NETC_CT_ESTABLISHED 3
#define NETC_CT_FIN_WAIT    4 /* one side has sent FIN */
#define NETC_CT_CLOSING     5 /* both sides have */
#define NETC_CT_UDP         6
#define NETC_CT_ICMP        7
#define NETC_CT_OTHER       8

#define NETC_CT_FIN_A 0x1
#define NETC_CT_FIN_B 0x2

struct netc_ct_entry {
	__u64 created_ns;
	__u64 last_ns;
	__u32 rule_id;  /* the rule (or default) that allowed the first packet */
	__u8 state;     /* NETC_CT_* */
	__u8 orig_a;    /* 1: the first packet went from a to b */
	__u8 dir;       /* the first packet's direction, as the endpoint sees it */
	__u8 flags;     /* NETC_CT_FIN_* */
	__u64 packets;
	__u64 bytes;
	/* Service translation (load balancing). A connection to a VIP has two entries: the forward
	 * one, in the connection table of its family and keyed by the tuple the client sent (client,
	 * VIP), holds the state and the backend; the reverse one (nat = NETC_NAT_REVERSE), in
	 * netc_ct_rev and keyed by the translated tuple, says how to restore a reply. netc_ct_rev is
	 * looked up only when the connection tables have no entry: other packets never pay for it. */
	__u8 nat;          /* NETC_NAT_*; 0: not translated */
	__u8 nat_pad[3];
	__u32 backend_id;  /* index in netc_backends (forward and reverse entries) */
	__u16 nat_port;    /* forward: the backend's port; reverse: the VIP's port */
	__u16 nat_port2;   /* reverse: the client's port */
	__u32 nat_pad2;
	__u8 nat_addr[16]; /* forward: the backend's address; reverse: the VIP */
	__u8 nat_addr2[16];/* reverse: the client's address */
};

#define NETC_NAT_DNAT    0x1 /* forward entry: rewrite the destination to (nat_addr, nat_port) */
#define NETC_NAT_SNAT    0x2 /* forward entry, hairpin (the client is the backend): the source
			      * becomes the VIP, or the client would receive its own address */
#define NETC_NAT_REVERSE 0x4 /* reverse entry: a reply's source becomes (nat_addr, nat_port), its
			      * destination (nat_addr2, nat_port2) */

/* Timeouts in ns, by state; slot NETC_CT_* of netc_ct_timeouts (an array the runtime fills). */
#define NETC_CT_TIMEOUTS 9

/* Counters of packets the tracker decided (rule_id in struct netc_counter_key). */
#define NETC_RULE_ESTABLISHED 5 /* part of a tracked connection (or its reply) */
#define NETC_RULE_RELATED     6 /* an ICMP error about a tracked connection */

/* Per-CPU counters: packets and bytes per rule, endpoint and direction (defaults included). */
struct netc_counter_key {
	__u32 rule_id;     /* a rule id, or NETC_RULE_DEFAULT_* */
	__u32 endpoint_id;
	__u8 dir;          /* NETC_DIR_INGRESS or NETC_DIR_EGRESS */
	__u8 action;       /* NETC_ACTION_* taken */
	__u16 pad;
};

struct netc_counter {
	__u64 packets;
	__u64 bytes;
};

/* Packets that connection tracking passed (NETC_RULE_ESTABLISHED, NETC_RULE_RELATED) are the
 * bulk of the traffic: they count in netc_ct_counters, a per-CPU array whose lookup the verifier
 * inlines, one slot per (endpoint, rule, direction), action allow. Endpoints whose id is past the
 * array count in netc_counters like every other rule. */
#define NETC_CT_COUNTER_ENDPOINTS 1024
#define NETC_CT_COUNTER_SLOTS     (NETC_CT_COUNTER_ENDPOINTS * 4)
#define NETC_CT_COUNTER_SLOT(endpoint_id, rule_id, dir) \
	(((endpoint_id) * 2 + ((rule_id) - NETC_RULE_ESTABLISHED)) * 2 + (dir))

/* Slots of netc_stats, a per-CPU array of __u64. */
#define NETC_STAT_EVENTS_LOST   0 /* an event did not fit in the ring */
#define NETC_STAT_COUNTERS_FULL 1 /* a counter could not be created: netc_counters is full */
#define NETC_STAT_MALFORMED     2 /* dropped as malformed */
#define NETC_STAT_CT_CREATED    3 /* connection-tracking entries made */
#define NETC_STAT_CT_REMOVED    4 /* ... removed by the datapath (RST, expiry) */
#define NETC_STATS              8

/* Event kinds on the netc_events ring. */
#define NETC_EVENT_DENY  1
#define NETC_EVENT_ALLOW 2
#define NETC_EVENT_LOG   3
#define NETC_EVENT_AUDIT 4
#define NETC_EVENT_NEW   5
#define NETC_EVENT_TRANSLATE 6 /* daddr/dport: the backend the connection was given */

struct netc_event {
	__u64 ts_ns;       /* bpf_ktime_get_ns() */
	__u32 endpoint_id;
	__u32 rule_id;     /* the deciding rule, or NETC_RULE_DEFAULT_* */
	__u32 audit_rule;  /* an audit rule that matched, or 0 */
	__u32 len;         /* skb->len */
	__u8 dir;
	__u8 action;       /* NETC_ACTION_* taken */
	__u8 kind;         /* NETC_EVENT_* */
	__u8 proto;        /* IP protocol number as on the wire */
	__u8 family;       /* 4 or 6 */
	__u8 pad[3];
	__u8 saddr[16];    /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	__u8 daddr[16];
	__u16 sport;       /* host order; ICMP: 0 */
	__u16 dport;       /* host order; ICMP: type << 8 | code */
	__u32 pad2;
};

struct netc_verdict {
	/* higher wins: (priority + NETC_PRIO_BIAS) << 33 | is_deny << 32 | (0xffffffff - rule order);
	 * the order makes the deciding rule exact when two rules tie on priority and action */
	__u64 rank;
	__u32 rule_id;
	__u8 action;   /* NETC_ACTION_*, or 0: no decisive rule, only an audit rule matched here */
	__u8 flags;    /* NETC_VERDICT_* */
	__u16 pad;
	__u32 audit_rule; /* the best audit rule matching here too, or 0 */
	__u32 pad2;
};

/* The value of netc_rules and netc_wild: slot[gen]; a zeroed slot decides nothing, as a miss. */
struct netc_verdicts {
	struct netc_verdict slot[2];
};

#define NETC_PRIO_BIAS (1u << 20) /* priorities are -2^20 .. 2^20-1 */

/*
 * Services: east-west load balancing at the client's host-side veth (docs/load-balancing.md).
 *   netc_services  hash   (VIP, port, protocol)        -> service entry (one per `vip` line)
 *   netc_backends  array  backend id                   -> address, port, active flag
 *   netc_lb_table  array  slot                         -> backend id; each service owns two
 *                  regions of `table_size` slots: the runtime writes the inactive one, then
 *                  switches `table_base` with one update of the service entry (atomic)
 *   netc_lb_rr     array  service id                   -> round-robin position
 *   netc_affinity  lru    (service id, client address) -> backend id, last use
 *   netc_ct_rev    lru    translated tuple (struct netc_ct_key) -> reverse entry of a connection
 * Backend id 0 and service id 0 are never used.
 */
#define NETC_BALANCE_MAGLEV      1 /* slot = flow hash % table_len (Maglev table) */
#define NETC_BALANCE_RANDOM      2 /* slot = random % table_len (same weighted table) */
#define NETC_BALANCE_ROUND_ROBIN 3 /* slot = position++ % table_len (weighted sequence) */

#define NETC_BACKEND_ACTIVE 0x1 /* may take new connections (not drained, container present) */

struct netc_svc_key {
	__u8 addr[16]; /* the VIP: IPv6, or IPv4 as ::ffff:a.b.c.d */
	__u16 port;    /* host order */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct netc_service {
	__u32 svc_id;
	__u32 table_base;  /* first slot of the active table in netc_lb_table */
	__u32 table_len;   /* slots in use; 0: no backend can take a connection (reject) */
	__u8 balance;      /* NETC_BALANCE_* */
	__u8 pad[3];
	__u64 affinity_ns; /* `affinity client-ip`: keep a client on its backend this long; 0: off */
};

struct netc_backend {
	__u8 addr[16];  /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	__u16 port;     /* host order */
	__u8 family;    /* 4 or 6 */
	__u8 flags;     /* NETC_BACKEND_* */
	__u32 svc_id;
};

struct netc_affinity_key {
	__u32 svc_id;
	__u8 addr[16]; /* the client */
};

struct netc_affinity {
	__u64 last_ns;
	__u32 backend_id;
	__u32 pad;
};

/* How the datapath rewrites one packet of a service connection (per-CPU scratch, netc_lb_scratch):
 * each field whose old and new values differ. Not shared with user space. */
struct netc_nat {
	__u8 saddr_old[16]; /* addresses first: 8-byte aligned, compared and copied as words */
	__u8 saddr_new[16];
	__u8 daddr_old[16];
	__u8 daddr_new[16];
	__u16 sport_old, sport_new, dport_old, dport_new; /* host order */
	__u32 backend_id;
	__u32 l4_off;
	__u8 op;          /* NETC_NAT_DNAT (| NETC_NAT_SNAT) or NETC_NAT_REVERSE; 0: no translation */
	__u8 proto;
	__u8 family;
	__u8 pad8;
	__u32 pad;
};

#define NETC_STAT_LB_REJECTED 5 /* packets to a service with no active backend, answered with ICMP */
#define NETC_STAT_LB_NEW      6 /* connections given a backend */

#endif /* NETC_ABI_H */
