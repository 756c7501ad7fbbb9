"""Hypothesis strategies that write random well-formed .netp programs (as text).

Shared by the fast-reader differential test, the checker fuzz and the kernel differential test.
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

LABEL_KEYS = ["app", "env", "tier", "team"]
LABEL_VALUES = ["web", "api", "db", "prod", "dev", "a", "b"]


@st.composite
def cidr4(draw: st.DrawFn) -> str:
    plen = draw(st.sampled_from([8, 12, 16, 20, 24, 28, 30, 32]))
    # a small address space so that rules overlap often
    base = draw(st.sampled_from([0x0A000000, 0x0A010000, 0x0A010100, 0xC0A80000, 0x08080800]))
    value = base + draw(st.integers(0, 0x3FF))
    net = ipaddress.ip_network((value, plen), strict=False)
    return str(net) if plen != 32 else str(net.network_address)


@st.composite
def cidr6(draw: st.DrawFn) -> str:
    plen = draw(st.sampled_from([16, 32, 48, 64, 112, 128]))
    base = draw(st.sampled_from([0xFD00 << 112, (0xFD00 << 112) | (1 << 96), 0x20010DB8 << 96]))
    value = base + draw(st.integers(0, 0xFFFF))
    net = ipaddress.ip_network((value, plen), strict=False)
    return str(net) if plen != 128 else str(net.network_address)


@st.composite
def addr_item(draw: st.DrawFn) -> str:
    c = draw(st.one_of(cidr4(), cidr6()))
    net = ipaddress.ip_network(c)
    if net.prefixlen <= net.max_prefixlen - 4 and draw(st.booleans()):
        sub = list(net.subnets(new_prefix=net.prefixlen + draw(st.integers(1, 4))))
        hole = draw(st.sampled_from(sub[:16]))
        return f"{c} except {hole}"
    return c


@st.composite
def port_item(draw: st.DrawFn) -> str:
    lo = draw(st.sampled_from([22, 53, 80, 443, 1000, 8080, 9000, 65535, 0, 5432]))
    if draw(st.booleans()):
        return str(lo)
    hi = min(65535, lo + draw(st.integers(0, 3000)))
    return f"{lo}-{hi}"


@st.composite
def selector(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 7 if depth < 2 else 4))
    key = draw(st.sampled_from(LABEL_KEYS))
    val = draw(st.sampled_from(LABEL_VALUES))
    if kind == 0:
        return f'{key} == "{val}"'
    if kind == 1:
        return f'{key} != "{val}"'
    if kind == 2:
        vals = draw(st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=3, unique=True))
        neg = "not in" if draw(st.booleans()) else "in"
        return f"{key} {neg} {{" + ", ".join(f'"{v}"' for v in vals) + "}"
    if kind == 3:
        return f"has({key})"
    if kind == 4:
        return "all"
    if kind == 5:
        return "not " + draw(selector(depth + 1))
    op = "and" if kind == 6 else "or"
    return f"({draw(selector(depth + 1))} {op} {draw(selector(depth + 1))})"


PROTOS = ["tcp", "udp", "sctp", "icmp", "icmpv6", "any", None]


@st.composite
def rule(draw: st.DrawFn, groups: list[str]) -> str:
    action = draw(st.sampled_from(["allow", "allow", "deny", "audit"]))
    direction = draw(st.sampled_from(["ingress", "egress"]))
    proto = draw(st.sampled_from(PROTOS))
    parts = [action, direction]
    if proto:
        parts.append(proto)
    if proto in ("icmp", "icmpv6") and draw(st.booleans()):
        t = draw(st.sampled_from(["echo-request", "echo-reply", "3", "11"] if proto == "icmp"
                                 else ["echo-request", "echo-reply", "1", "128"]))
        parts.append(f"type {t}")
        if draw(st.booleans()):
            parts.append(f"code {draw(st.integers(0, 3))}")
    peer_kind = draw(st.integers(0, 6))
    peers: list[str] = []
    if peer_kind == 0:
        peers = []
    elif peer_kind == 1:
        peers = [draw(addr_item())]
    elif peer_kind == 2:
        items = draw(st.lists(addr_item(), min_size=1, max_size=3))
        peers = ["{" + ", ".join(items) + "}"]
    elif peer_kind == 3 and groups:
        peers = [draw(st.sampled_from(groups))]
    elif peer_kind == 4:
        peers = ["(" + draw(selector()) + ")"]
    elif peer_kind == 5:
        peers = [draw(st.sampled_from(["world", "host", "any"]))]
    else:
        peers = [draw(addr_item()), draw(addr_item())]
    ports = []
    if proto not in ("icmp", "icmpv6") and draw(st.booleans()):
        ports = draw(st.lists(port_item(), min_size=1, max_size=3))
    if direction == "ingress":
        if peers:
            parts.append("from " + ", ".join(peers))
        if ports:
            parts.append("to port " + ", ".join(ports))
    else:
        if peers:
            parts.append("to " + ", ".join(peers))
            if ports:
                parts.append("port " + ", ".join(ports))
        elif ports:
            parts.append("to port " + ", ".join(ports))
    if draw(st.integers(0, 3)) == 0:
        parts.append(f"priority {draw(st.integers(-5, 5))}")
    if draw(st.integers(0, 4)) == 0:
        parts.append("log")
    return " ".join(parts)


@st.composite
def program(draw: st.DrawFn, max_policies: int = 3, max_rules: int = 6) -> str:
    groups = []
    lines = []
    for i in range(draw(st.integers(0, 3))):
        name = f"g{i}"
        groups.append(name)
        lines.append(f"group {name} = {draw(selector())}")
    for i in range(draw(st.integers(1, max_policies))):
        sel = draw(st.one_of(st.just("all"), selector(), st.sampled_from(groups) if groups else selector()))
        prio = f" priority {draw(st.integers(-3, 3))}" if draw(st.booleans()) else ""
        lines.append(f"policy p{i} for {sel}{prio} {{")
        for d in ("ingress", "egress"):
            c = draw(st.integers(0, 2))
            if c == 1:
                lines.append(f"    {d} default deny")
            elif c == 2:
                lines.append(f"    {d} default allow")
        for _ in range(draw(st.integers(0, max_rules))):
            lines.append("    " + draw(rule(groups)))
        lines.append("}")
    return "\n".join(lines) + "\n"
