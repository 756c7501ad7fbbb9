"""Python mirror of netc/stdlib/include/netc/abi.h: struct layouts and constants.

Pure data and encoding; no kernel access. Keep in step with abi.h (tests/codegen/test_abi.py
compiles a probe against the header and compares sizes and offsets).
"""

from __future__ import annotations

import ipaddress
import struct

DIR_INGRESS = 0
DIR_EGRESS = 1
DIR_FRAG = 0x80  # or-ed into the direction of a lookup for a non-first fragment (no ports)

CLASS_WORLD = 0
CLASS_HOST = 1
CLASS_CONTAINER = 2

PROTO_OTHER = 255

ACTION_ALLOW = 1
ACTION_DENY = 2

VERDICT_LOG = 0x1

RULE_DEFAULT_ALLOW = 1
RULE_DEFAULT_DENY = 2
RULE_DEFAULT_ISO_ALLOW = 3
RULE_MALFORMED = 4
FIRST_RULE_ID = 16  # 5 and 6 are RULE_ESTABLISHED and RULE_RELATED (below)

PRIO_BIAS = 1 << 20

# struct formats (little-endian host order except where noted)
# An endpoint as the materializer describes it (one generation); the map holds ENDPOINT_SLOTS
ENDPOINT = struct.Struct("<II2B2B2BBxI")     # pset, endpoint_id, isolated[2], default_deny[2], audited[2], observe, pad, sample
ENDPOINT_POLICY = struct.Struct("<I2B2B2BBxI")  # struct netc_endpoint_policy: ENDPOINT without endpoint_id
ENDPOINT_SLOTS = struct.Struct("<IB3x16s16s")   # struct netc_endpoint: endpoint_id, tracked, slot[2]
ADDR_KEY = struct.Struct("<I16s")            # prefixlen, addr[16]
ADDR_INFO = struct.Struct("<II")             # atom, klass
ADDR_SLOTS = struct.Struct("<8s8s")          # struct netc_addr_info: slot[2] of ADDR_INFO
RULE_KEY = struct.Struct("<IIIBB2s")         # prefixlen, pset, atom, dir, proto, port (big-endian bytes)
WILD_KEY = struct.Struct("<IIBBBB2s2x")      # prefixlen, pset, dir, klass, proto, pad, port (big-endian), tail pad
VERDICT = struct.Struct("<QIBBHI4x")         # rank (u64), rule_id, action, flags, pad, audit_rule, pad2
VERDICT_SLOTS = struct.Struct("<24s24s")     # struct netc_verdicts: slot[2] of VERDICT
COUNTER_KEY = struct.Struct("<IIBBH")        # rule_id, endpoint_id, dir, action, pad
COUNTER = struct.Struct("<QQ")               # packets, bytes (one per CPU in a per-CPU map)
EVENT = struct.Struct("<QIIIIBBBBB3x16s16sHH4x")  # see struct netc_event

OBSERVE_DENY = 0x1
OBSERVE_ALLOW = 0x2
OBSERVE_NEW = 0x4
OBSERVE_TRANSLATE = 0x8

STAT_EVENTS_LOST = 0
STAT_COUNTERS_FULL = 1
STAT_MALFORMED = 2
STAT_CT_CREATED = 3
STAT_CT_REMOVED = 4
STAT_LB_REJECTED = 5
STAT_LB_NEW = 6
STATS = 8

CT_KEY = struct.Struct("<IBBH16s16sHH")       # ifindex, proto, family, pad, a, b, port_a, port_b
CT4_KEY = struct.Struct("<IB3x4s4sHH")        # ifindex, proto, pad, a, b (IPv4, network order), port_a, port_b
V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
# created, last, rule_id, state, orig_a, dir, flags, packets, bytes,
# nat, backend_id, nat_port, nat_port2, nat_addr, nat_addr2
CT_ENTRY = struct.Struct("<QQIBBBBQQB3xIHH4x16s16s")
NAT_DNAT = 0x1
NAT_SNAT = 0x2
NAT_REVERSE = 0x4
CT_SYN_SENT, CT_SYN_RECV, CT_ESTABLISHED, CT_FIN_WAIT, CT_CLOSING, CT_UDP, CT_ICMP, CT_OTHER = range(1, 9)
CT_STATES = {1: "syn-sent", 2: "syn-recv", 3: "established", 4: "fin-wait", 5: "closing", 6: "udp",
             7: "icmp", 8: "other"}
CT_TIMEOUTS = 9
CT_TIMEOUT_DEFAULTS_S = {CT_SYN_SENT: 60, CT_SYN_RECV: 60, CT_ESTABLISHED: 7200, CT_FIN_WAIT: 120,
                         CT_CLOSING: 10, CT_UDP: 60, CT_ICMP: 30, CT_OTHER: 60}
RULE_ESTABLISHED = 5
RULE_RELATED = 6
CT_COUNTER_ENDPOINTS = 1024   # endpoint ids below this count established/related in netc_ct_counters
CT_COUNTER_SLOTS = CT_COUNTER_ENDPOINTS * 4


def ct_counter_slot(endpoint_id: int, rule_id: int, direction: int) -> int:
    """The netc_ct_counters slot of an endpoint's established or related packets in a direction."""
    return (endpoint_id * 2 + (rule_id - RULE_ESTABLISHED)) * 2 + direction


def ct_counter_key(slot: int) -> tuple[int, int, int, int]:
    """(rule_id, endpoint_id, dir, action) of a netc_ct_counters slot, as netc_counters keys it."""
    endpoint_id, rest = divmod(slot, 4)
    return RULE_ESTABLISHED + rest // 2, endpoint_id, rest % 2, ACTION_ALLOW


CT_TABLES = ("netc_ct", "netc_ct4")
CT_REV_TABLE = "netc_ct_rev"   # service connections' reverse entries (struct netc_ct_key, both families)


def ct_table(key: bytes) -> tuple[str, bytes]:
    """Where the datapath tracks the connection of a struct netc_ct_key: (map, key in that map)."""
    if CT_KEY.unpack(key)[2] == 4:
        return "netc_ct4", ct4_key(key)
    return "netc_ct", key


def ct_key_from4(key4: bytes) -> bytes:
    """The struct netc_ct_key of a netc_ct4 entry's key (the same connection, family 4)."""
    ifindex, proto, a, b, port_a, port_b = CT4_KEY.unpack(key4)
    return CT_KEY.pack(ifindex, proto, 4, 0, V4_MAPPED + a, V4_MAPPED + b, port_a, port_b)


def ct4_key(key: bytes) -> bytes:
    """The netc_ct4 key of an IPv4 connection's struct netc_ct_key."""
    ifindex, proto, _, _, a, b, port_a, port_b = CT_KEY.unpack(key)
    return CT4_KEY.pack(ifindex, proto, a[12:], b[12:], port_a, port_b)


EVENT_DENY = 1
EVENT_ALLOW = 2
EVENT_LOG = 3
EVENT_AUDIT = 4
EVENT_NEW = 5
EVENT_TRANSLATE = 6
EVENT_KINDS = {1: "deny", 2: "allow", 3: "log", 4: "audit", 5: "new", 6: "translate"}
ACTION_NONE = 0

RULE_KEY_FIXED_BITS = 80
WILD_KEY_FIXED_BITS = 64


ORDER_MAX = (1 << 32) - 1


def rank(priority: int, deny: bool, order: int = 0) -> int:
    """Higher wins: priority, then deny over allow, then the rule written first (lower order)."""
    return ((priority + PRIO_BIAS) << 33) | (int(deny) << 32) | (ORDER_MAX - order)


def addr_key(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    if network.version == 4:
        raw = b"\x00" * 10 + b"\xff\xff" + network.network_address.packed
        return ADDR_KEY.pack(network.prefixlen + 96, raw)
    return ADDR_KEY.pack(network.prefixlen, network.network_address.packed)


def rule_key(pset: int, atom: int, direction: int, proto: int, port: int, port_bits: int) -> bytes:
    return RULE_KEY.pack(RULE_KEY_FIXED_BITS + port_bits, pset, atom, direction, proto,
                         port.to_bytes(2, "big"))


def wild_key(pset: int, direction: int, klass: int, proto: int, port: int, port_bits: int) -> bytes:
    return WILD_KEY.pack(WILD_KEY_FIXED_BITS + port_bits, pset, direction, klass, proto, 0,
                         port.to_bytes(2, "big"))


def verdict(rank_: int, rule_id: int, action: int, flags: int, audit_rule: int = 0) -> bytes:
    return VERDICT.pack(rank_, rule_id, action, flags, 0, audit_rule)


def endpoint(pset: int, endpoint_id: int, isolated: tuple[bool, bool], default_deny: tuple[bool, bool],
             audited: tuple[bool, bool] = (False, False), observe: int = 0, sample: int = 0) -> bytes:
    return ENDPOINT.pack(pset, endpoint_id, int(isolated[0]), int(isolated[1]),
                         int(default_deny[0]), int(default_deny[1]), int(audited[0]), int(audited[1]),
                         observe, sample)


# ---------------------------------------------------------------------- services (load balancing)
BALANCE_MAGLEV = 1
BALANCE_RANDOM = 2
BALANCE_ROUND_ROBIN = 3
BALANCES = {"maglev": BALANCE_MAGLEV, "random": BALANCE_RANDOM, "round-robin": BALANCE_ROUND_ROBIN}
BACKEND_ACTIVE = 0x1

SVC_KEY = struct.Struct("<16sHBx")           # VIP (v4-mapped), port (host order), proto, pad
SERVICE = struct.Struct("<IIIB3xQ")          # svc_id, table_base, table_len, balance, pad, affinity_ns
BACKEND = struct.Struct("<16sHBBI")          # addr, port, family, flags, svc_id
AFFINITY_KEY = struct.Struct("<I16s")        # svc_id, client address
AFFINITY = struct.Struct("<QI4x")            # last_ns, backend_id, pad
NAT_SCRATCH_SIZE = 88                        # sizeof(struct netc_nat): the datapath's own scratch


def addr16(address: str) -> bytes:
    """An address as the datapath keys it: IPv6, or IPv4 as ::ffff:a.b.c.d."""
    ip = ipaddress.ip_address(address)
    return ip.packed if ip.version == 6 else b"\x00" * 10 + b"\xff\xff" + ip.packed


def svc_key(vip: str, port: int, proto: int) -> bytes:
    return SVC_KEY.pack(addr16(vip), port, proto)


def service(svc_id: int, table_base: int, table_len: int, balance: int, affinity_ns: int) -> bytes:
    return SERVICE.pack(svc_id, table_base, table_len, balance, affinity_ns)


def backend(address: str, port: int, active: bool, svc_id: int) -> bytes:
    return BACKEND.pack(addr16(address), port, ipaddress.ip_address(address).version,
                        BACKEND_ACTIVE if active else 0, svc_id)
