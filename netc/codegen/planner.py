"""The planner: decides the shape of the datapath program and lays out its maps.

Policy is data, code is shape: the plan depends on which features a file uses, never on how many
rules it has. Map sizes here are defaults; the loader sizes each map from the materialized
contents (policy × inventory) before it creates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from netc.runtime import abi


@dataclass(frozen=True, slots=True)
class MapSpec:
    name: str
    type: str            # "hash" | "lpm_trie" | "percpu_array" | "array" | ...
    key_struct: str      # C type of the key, from netc/abi.h (or "__u32")
    value_struct: str    # C type of the value
    key_size: int
    value_size: int
    max_entries: int
    no_prealloc: bool = False
    mmapable: bool = False   # BPF_F_MMAPABLE: the runtime fills it through a memory mapping
    comment: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "key_struct": self.key_struct,
                "value_struct": self.value_struct, "key_size": self.key_size,
                "value_size": self.value_size, "max_entries": self.max_entries,
                "no_prealloc": self.no_prealloc, "mmapable": self.mmapable, "comment": self.comment}


@dataclass(frozen=True, slots=True)
class ProgramPlan:
    """Everything the C backend needs. Deterministic for a given IR."""

    maps: tuple[MapSpec, ...]
    rule_count: int
    features: tuple[str, ...]   # sorted feature names, e.g. ("icmp", "ipv6", "log")

    def to_json(self) -> dict[str, object]:
        return {"maps": [m.to_json() for m in self.maps], "rule_count": self.rule_count,
                "features": list(self.features)}


def policy_maps() -> tuple[MapSpec, ...]:
    return (
        MapSpec("netc_endpoints", "hash", "__u32", "struct netc_endpoint", 4, abi.ENDPOINT_SLOTS.size, 4096,
                comment="ifindex of a host-side veth -> its endpoint"),
        MapSpec("netc_addrs", "lpm_trie", "struct netc_addr_key", "struct netc_addr_info",
                abi.ADDR_KEY.size, abi.ADDR_SLOTS.size, 65536, no_prealloc=True,
                comment="remote address -> atom and identity class (IPv4 remotes: netc_addr4_*)"),
        MapSpec("netc_addr4_root", "array", "__u32", "__u64", 4, 8, 2 * 65536, mmapable=True,
                comment="generation, IPv4 remote's top 16 bits -> leaf (atom, class) or child chunk "
                        "(runtime/addr4.py)"),
        MapSpec("netc_addr4_nodes", "array", "__u32", "__u64", 4, 8, 1024, mmapable=True,
                comment="chunks of 16 slots, one per 4-bit stride of an IPv4 remote: leaf or child chunk"),
        MapSpec("netc_rules", "lpm_trie", "struct netc_rule_key", "struct netc_verdicts",
                abi.RULE_KEY.size, abi.VERDICT_SLOTS.size, 65536, no_prealloc=True,
                comment="(policy set, atom, direction, protocol, port prefix) -> winning rule"),
        MapSpec("netc_wild", "lpm_trie", "struct netc_wild_key", "struct netc_verdicts",
                abi.WILD_KEY.size, abi.VERDICT_SLOTS.size, 16384, no_prealloc=True,
                comment="(policy set, direction, class, protocol, port prefix) -> winning wildcard rule"),
        MapSpec("netc_gen", "array", "__u32", "__u32", 4, 4, 1,
                comment="the generation: which of the two slots of the four maps above is live"),
        MapSpec("netc_counters", "percpu_hash", "struct netc_counter_key", "struct netc_counter",
                abi.COUNTER_KEY.size, abi.COUNTER.size, 65536, no_prealloc=True,
                comment="(rule, endpoint, direction, action) -> packets and bytes, per CPU"),
        MapSpec("netc_ct_counters", "percpu_array", "__u32", "struct netc_counter", 4, abi.COUNTER.size,
                abi.CT_COUNTER_SLOTS,
                comment="(endpoint, established or related, direction) -> packets and bytes, per CPU"),
        MapSpec("netc_events", "ringbuf", "", "", 0, 0, RING_BYTES,
                comment="flow events: denials, log and audit rules, sampled new connections"),
        MapSpec("netc_stats", "percpu_array", "__u32", "__u64", 4, 8, abi.STATS,
                comment="events lost, counters full, malformed packets, conntrack churn: per CPU"),
        MapSpec("netc_ct", "lru_hash", "struct netc_ct_key", "struct netc_ct_entry", abi.CT_KEY.size,
                abi.CT_ENTRY.size, CT_ENTRIES,
                comment="connection tracking of IPv6, per endpoint: the oldest entry goes when it is full"),
        MapSpec("netc_ct4", "lru_hash", "struct netc_ct4_key", "struct netc_ct_entry", abi.CT4_KEY.size,
                abi.CT_ENTRY.size, CT_ENTRIES,
                comment="connection tracking of IPv4, under a 20-byte key (cheaper to hash and compare)"),
        MapSpec("netc_ct_timeouts", "array", "__u32", "__u64", 4, 8, abi.CT_TIMEOUTS,
                comment="connection-tracking timeouts in ns, by state"),
    )


def service_maps(program: object) -> tuple[MapSpec, ...]:
    """Load-balancing maps. Sized from the program (one service entry per `vip` line, two table
    regions per entry); netc_backends is sized by the loader from the inventory."""
    from netc.ir.nodes import Program

    assert isinstance(program, Program)
    vips = [(s, v) for s in program.services for v in s.vips]
    slots = sum(2 * s.table_size for s, _ in vips)
    return (
        MapSpec("netc_services", "hash", "struct netc_svc_key", "struct netc_service", abi.SVC_KEY.size,
                abi.SERVICE.size, max(1, len(vips)),
                comment="(VIP, port, protocol) -> service: balance, active table region, affinity"),
        MapSpec("netc_backends", "array", "__u32", "struct netc_backend", 4, abi.BACKEND.size,
                BACKENDS,
                comment="backend id -> address, port and whether it takes new connections"),
        MapSpec("netc_lb_table", "array", "__u32", "__u32", 4, 4, max(1, slots),
                comment="selection tables (Maglev or weighted sequence), two regions per service"),
        MapSpec("netc_lb_rr", "array", "__u32", "__u64", 4, 8, len(vips) + 1,
                comment="service id -> round-robin position"),
        MapSpec("netc_affinity", "lru_hash", "struct netc_affinity_key", "struct netc_affinity",
                abi.AFFINITY_KEY.size, abi.AFFINITY.size, AFFINITY_ENTRIES,
                comment="(service, client address) -> the backend it keeps, for `affinity client-ip`"),
        MapSpec("netc_ct_rev", "lru_hash", "struct netc_ct_key", "struct netc_ct_entry", abi.CT_KEY.size,
                abi.CT_ENTRY.size, CT_ENTRIES if vips else CT_REV_UNUSED,
                comment="service connections' reverse entries: translated tuple -> how to restore a reply"),
        MapSpec("netc_lb_scratch", "percpu_array", "__u32", "struct netc_nat", 4, abi.NAT_SCRATCH_SIZE, 1,
                comment="per-CPU scratch: how the packet being classified is translated"),
    )


BACKENDS = 1024           # default size of netc_backends; the loader sizes it from the inventory
AFFINITY_ENTRIES = 65536
CT_REV_UNUSED = 64        # netc_ct_rev's size in a program without services  # clients remembered per node for `affinity client-ip`
CT_ENTRIES = 262144  # default size of the connection-tracking table (`netc load --conntrack-size`)


RING_BYTES = 256 * 1024  # a power of two of pages: about 3,600 events before the reader must catch up


def plan(program: object) -> ProgramPlan:
    """The plan for a Program: its shape depends on features, never on the number of rules."""
    from netc.ir.nodes import Program

    assert isinstance(program, Program)
    rules = program.rules
    features = {"ipv4", "ipv6", "policy"}
    if any(r.log for r in rules):
        features.add("log")
    if program.services:
        features.add("services")
    if program.limits:
        features.add("limits")
    if program.observes:
        features.add("observe")
    return ProgramPlan(policy_maps() + service_maps(program), len(rules), tuple(sorted(features)))
