"""The policy as linear iptables chains: an `iptables-restore` file (IPv4) and an `ip6tables-restore` one (IPv6).

The baseline people migrate from, so deliberately plain: no ipset, no multiport, one rule per
(peer prefix × port range or ICMP type/code) combination, in deciding order. The shape is that
of the nftables export (docs/export.md):

    FORWARD: -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
             -i <veth> -j NETC-E<i>-<NAME>      every container's egress chain, first
             -o <veth> -j NETC-I<i>-<NAME>      then every ingress chain
    INPUT:   established, then the egress chains;  OUTPUT: established, then the ingress chains

Egress chains end an allowed packet with RETURN (the destination's ingress chain still judges
it) and a denied one with DROP; ingress chains ACCEPT or DROP. Each file restores the whole
`filter` table of its family (use `--noflush` to keep other rules; netc's chains are declared,
so they are flushed and rewritten either way).
"""

from __future__ import annotations

from netc.export.model import (
    NDP_TYPES,
    PROTO_NAMES,
    Chain,
    Entry,
    clean,
    header_lines,
    icmp_parts,
    log_prefix,
    prefixes,
    rule_comment,
    slug,
)
from netc.export.model import chains as build_chains
from netc.ir.addrset import PortSet
from netc.ir.nodes import Action, Direction, Program
from netc.runtime.inventory import Inventory

COMMENT_MAX = 120          # the comment match allows 255
CHAIN_MAX = 28             # longest iptables chain name
ESTABLISHED = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"


def chain_name(ch: Chain) -> str:
    head = f"NETC-{'E' if ch.direction is Direction.EGRESS else 'I'}{ch.index}-"
    return head + slug(ch.container.name, CHAIN_MAX - len(head), upper=True)


def l4_args(protos: tuple[int, ...] | None, ports: PortSet | None, icmp: PortSet | None,
            family: int) -> list[str]:
    """One argument string per rule needed for the protocol part ("" for none)."""
    if ports is not None:
        assert protos is not None
        return [f"-p {PROTO_NAMES[p]} -m {PROTO_NAMES[p]} --dport {a if a == b else f'{a}:{b}'}"
                for p in protos for a, b in ports.ranges]
    if icmp is not None:
        assert protos is not None
        whole, partial = icmp_parts(icmp)
        pieces = [str(t) for t in whole] + [f"{t}/{c}" for t, a, b in partial for c in range(a, b + 1)]
        if family == 4:
            return [f"-p icmp -m icmp --icmp-type {x}" for x in pieces]
        return [f"-p ipv6-icmp -m icmp6 --icmpv6-type {x}" for x in pieces]
    if protos is None:
        return [""]
    return [f"-p {PROTO_NAMES[p]}" for p in protos]


def _allow(ch: Chain) -> str:
    return "ACCEPT" if ch.direction is Direction.INGRESS else "RETURN"


def _entry_lines(ch: Chain, e: Entry, family: int) -> list[str]:
    r = e.rule
    name = chain_name(ch)
    comment = f'-m comment --comment "{rule_comment(r, COMMENT_MAX)}"'
    log = f'-j LOG --log-prefix "{log_prefix(r)}"'
    if r.action is Action.AUDIT:
        targets = [log]
    else:
        verdict = f"-j {_allow(ch) if r.action is Action.ALLOW else 'DROP'}"
        targets = [log, verdict] if r.log else [verdict]
    flag = "-s" if ch.remote_is_source else "-d"
    lines = []
    for fam, part, protos in e.families():
        if fam != family:
            continue
        addrs = [""] if part is None else [f"{flag} {p}" for p in prefixes(part)]
        for a in addrs:
            for l4 in l4_args(protos, e.ports, e.icmp, family):
                match = " ".join(x for x in (a, l4) if x)
                for t in targets:
                    lines.append(" ".join(x for x in (f"-A {name}", match, comment, t) if x))
    return lines


def _chain_rules(ch: Chain, family: int) -> list[str]:
    name = chain_name(ch)
    out: list[str] = []
    if family == 6:
        out += [f"-A {name} -p ipv6-icmp -m icmp6 --icmpv6-type {t} "
                f'-m comment --comment "neighbour discovery always passes" -j {_allow(ch)}' for t in NDP_TYPES]
    for e in ch.audits:
        out += _entry_lines(ch, e, family)
    for e in ch.rules:
        out += _entry_lines(ch, e, family)
    if ch.isolated:
        who = clean(", ".join(ch.isolating), 90)
        if ch.default_allow:
            out.append(f'-A {name} -m comment --comment "default allow: {who}" -j {_allow(ch)}')
        else:
            out.append(f'-A {name} -m comment --comment "default deny: {who}" -j DROP')
    return out


def _jumps(chs: list[Chain], direction: Direction, builtin: str, family: int) -> list[str]:
    out = []
    for ch in chs:
        if ch.direction is not direction:
            continue
        what = f'-m comment --comment "{clean(ch.name, 80)}" -j {chain_name(ch)}'
        if ch.interface is not None:
            flag = "-i" if direction is Direction.EGRESS else "-o"
            out.append(f"-A {builtin} {flag} {ch.interface} {what}")
            continue
        flag = "-s" if direction is Direction.EGRESS else "-d"
        for a in ch.container.addresses:
            if (":" in a) == (family == 6):
                out.append(f"-A {builtin} {flag} {a} {what}")
    return out


def _render(program: Program, inventory: Inventory, chs: list[Chain], family: int) -> str:
    tool = "iptables" if family == 4 else "ip6tables"
    out = [f"# {line}" for line in header_lines(program, inventory, tool)]
    out.append(f"# IPv{family}: load with `{tool}-restore FILE` (it replaces the filter table)")
    out += ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    out += [f":{chain_name(ch)} - [0:0]" for ch in chs]
    for builtin in ("FORWARD", "INPUT", "OUTPUT"):
        out.append(f"-A {builtin} {ESTABLISHED}")
    out += _jumps(chs, Direction.EGRESS, "FORWARD", family)
    out += _jumps(chs, Direction.INGRESS, "FORWARD", family)
    out += _jumps(chs, Direction.EGRESS, "INPUT", family)
    out += _jumps(chs, Direction.INGRESS, "OUTPUT", family)
    for ch in chs:
        out += _chain_rules(ch, family)
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def export_iptables(program: Program, inventory: Inventory) -> dict[str, str]:
    """{"iptables": IPv4 rules for iptables-restore, "ip6tables": IPv6 rules for ip6tables-restore}."""
    chs = build_chains(program, inventory)
    return {"iptables": _render(program, inventory, chs, 4), "ip6tables": _render(program, inventory, chs, 6)}


MARK_V4 = "# ===== iptables-restore (IPv4) ====="
MARK_V6 = "# ===== ip6tables-restore (IPv6) ====="


def combined(parts: dict[str, str]) -> str:
    """Both files in one text, each section marked (split at the markers before restoring)."""
    return f"{MARK_V4}\n{parts['iptables']}{MARK_V6}\n{parts['ip6tables']}"


def split_combined(text: str) -> dict[str, str]:
    """The inverse of combined()."""
    head, _, v6 = text.partition(MARK_V6 + "\n")
    return {"iptables": head.removeprefix(MARK_V4 + "\n"), "ip6tables": v6}
