"""What the nftables and iptables exports share: every container's chains, resolved against an inventory.

The reference semantics (netc/ir/eval.py) decides one side of a packet like this: neighbour
discovery passes; audits report; in an isolated direction the best matching rule by (priority,
deny beats allow) decides, else the default. A firewall chain that tries rules in order and
stops at the first match does the same when its rules are sorted by (priority descending, deny
first, then written order): the first rule that matches is a best one, and equal-ranked rules
have the same action. So each (container, direction) becomes one chain of `Entry`s in that
order, with every peer resolved to concrete addresses:

- `any`: no address match at all;
- addresses, CIDRs and sets with `except`: the exact set (AddrSet), as disjoint prefixes;
- a selector: the addresses of the inventory's containers it selects, now;
- `host`: the inventory's host addresses;
- `world`: every address minus every container address and every host address.

The result is a snapshot of the inventory: containers that come later are not in it.

    >>> from netc.api import check
    >>> from netc.runtime.inventory import Container, Inventory
    >>> src = 'group web = app == "web"\\npolicy p for web { ingress default deny\\n allow ingress tcp from world to port 80 }'
    >>> inv = Inventory([Container("web-1", ("10.0.0.5",), {"app": "web"}, interface="veth1")])
    >>> [ch.name for ch in chains(check(src).program, inv)]
    ['web-1 ingress']
    >>> e = chains(check(src).program, inv)[0].rules[0]
    >>> e.peer.contains("10.0.0.5"), e.peer.contains("10.0.0.6"), e.protocols
    (False, True, (6,))
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from netc.errors import NetcError
from netc.ir.addrset import AddrSet, PortSet
from netc.ir.nodes import Action, Direction, Peer, Program, Protocol, Rule
from netc.runtime.inventory import Container, Inventory

# protocol names both iptables and nftables understand
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}
NDP_TYPES = (133, 134, 135, 136, 137)
PORT_PROTOCOLS = (Protocol.TCP.value, Protocol.UDP.value, Protocol.SCTP.value)
FAMILY_OF_ICMP = {Protocol.ICMP.value: 4, Protocol.ICMPV6.value: 6}

# An interface name a firewall rule may carry unquoted and that cannot break out of a quoted string.
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")


class ExportError(NetcError):
    """The policy or the inventory cannot be exported (the message says what and why)."""


# ---------------------------------------------------------------------------- text from users
def clean(text: str, limit: int) -> str:
    """Text from a .netp file or an inventory, made safe for a quoted string or a `#` comment.

    Printable ASCII only; no quotes and no backslashes (neither nft nor iptables-restore would
    read them back the same); at most `limit` characters (the head is kept, an ellipsis marks a cut).
    """
    out = "".join(ch if " " <= ch <= "~" and ch not in "\"'\\`" else "?" for ch in text)
    if len(out) > limit:
        out = out[: max(limit - 3, 0)] + "..."
    return out


def clean_tail(text: str, limit: int) -> str:
    """Like clean(), but keeps the end (for paths: the file name matters more than the directory)."""
    out = clean(text, 1 << 20)
    if len(out) > limit:
        out = "..." + out[len(out) - limit + 3:]
    return out


def slug(text: str, limit: int, upper: bool = False) -> str:
    """A fragment of an identifier: letters, digits and `_` only."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "x"
    return s.upper() if upper else s.lower()


def check_interface(c: Container) -> str | None:
    """The container's host-side veth, validated; None when the inventory gives none."""
    if c.interface is None:
        return None
    if not _IFNAME_RE.fullmatch(c.interface):
        raise ExportError(f"container `{clean(c.name, 60)}`: interface name `{clean(c.interface, 60)}` "
                          "cannot be exported (1 to 15 letters, digits and `_.@+-`)")
    return c.interface


def log_prefix(rule: Rule) -> str:
    """`netc deny r12: ` — at most 29 characters (iptables' LOG limit); rule ids are integers."""
    word = "audit" if rule.action is Action.AUDIT else rule.action.value
    return clean(f"netc {word} r{int(rule.id)}: ", 29)


def rule_comment(rule: Rule, limit: int) -> str:
    """`examples/quickstart.netp:17 web-ingress` (sanitized, at most `limit` characters)."""
    tail = f" {clean(rule.policy, 48)}"
    return clean_tail(rule.location, max(limit - len(tail), 16)) + tail


# ---------------------------------------------------------------------------- resolution
def container_addresses(inv: Inventory) -> AddrSet:
    return AddrSet.union_all(AddrSet.from_cidr(a) for c in inv.containers for a in c.addresses)


def host_addresses(inv: Inventory) -> AddrSet:
    return AddrSet.union_all(AddrSet.from_cidr(a) for a in inv.host_addresses)


def resolve_peer(peer: Peer, inv: Inventory) -> AddrSet | None:
    """The addresses a peer stands for in this inventory; None: every address (`any`)."""
    if peer.any:
        return None
    parts = [peer.addrs]
    if peer.selectors:
        parts.extend(AddrSet.from_cidr(a) for c in inv.containers
                     if any(s.matches(c.labels) for s in peer.selectors) for a in c.addresses)
    if peer.host:
        parts.append(host_addresses(inv))
    if peer.world:
        parts.append(AddrSet.everything().subtract(container_addresses(inv).union(host_addresses(inv))))
    s = AddrSet.union_all(parts)
    return None if s == AddrSet.everything() else s


def family_part(s: AddrSet, family: int) -> AddrSet:
    return AddrSet(s.v4, ()) if family == 4 else AddrSet((), s.v6)


def prefixes(s: AddrSet) -> list[str]:
    """Disjoint prefixes, a host as a bare address."""
    out = []
    for net in s.to_cidrs():
        out.append(str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net))
    return out


@dataclass(frozen=True)
class Entry:
    """One rule as a firewall matches it."""

    rule: Rule
    peer: AddrSet | None                 # None: any address
    protocols: tuple[int, ...] | None    # None: any protocol
    ports: PortSet | None                # destination ports (tcp/udp/sctp)
    icmp: PortSet | None                 # `type << 8 | code` values

    @property
    def action(self) -> Action:
        return self.rule.action

    def families(self) -> Iterator[tuple[int, AddrSet | None, tuple[int, ...] | None]]:
        """(family, that family's addresses or None for any, that family's protocols or None)."""
        for fam in (4, 6):
            protos = self.protocols
            if protos is not None:
                protos = tuple(p for p in protos if FAMILY_OF_ICMP.get(p, fam) == fam)
                if not protos:
                    continue       # an icmp rule never matches IPv6, an icmpv6 rule never IPv4
            if self.peer is None:
                yield fam, None, protos
                continue
            part = family_part(self.peer, fam)
            if not part.is_empty():
                yield fam, part, protos


def icmp_parts(icmp: PortSet) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Split `type << 8 | code` intervals into whole types and (type, code_lo, code_hi) pieces."""
    whole: list[int] = []
    partial: list[tuple[int, int, int]] = []
    for lo, hi in icmp.ranges:
        t = lo >> 8
        while (t << 8) <= hi:
            a, b = max(lo, t << 8), min(hi, (t << 8) | 255)
            if a == t << 8 and b == (t << 8) | 255:
                whole.append(t)
            else:
                partial.append((t, a & 255, b & 255))
            t += 1
    return whole, partial


def make_entry(rule: Rule, inv: Inventory) -> Entry:
    protocols: tuple[int, ...] | None
    if rule.protocol is not None:
        protocols = (rule.protocol.value,)
    elif rule.ports is not None:
        protocols = PORT_PROTOCOLS                 # ports without a protocol: tcp, udp and sctp
    elif rule.icmp is not None:
        protocols = (Protocol.ICMP.value, Protocol.ICMPV6.value)
    else:
        protocols = None
    return Entry(rule, resolve_peer(rule.peer, inv), protocols, rule.ports, rule.icmp)


@dataclass(frozen=True)
class Chain:
    """One container's side in one direction: what its firewall chain does."""

    container: Container
    index: int                      # the container's position in the inventory (names chains)
    interface: str | None           # validated host-side veth; None: match by address
    direction: Direction
    isolating: tuple[str, ...]      # names of the policies that isolate this direction
    default_allow: bool             # isolated, and every isolating policy says `default allow`
    audits: tuple[Entry, ...]
    rules: tuple[Entry, ...]        # allow and deny rules, in deciding order

    @property
    def isolated(self) -> bool:
        return bool(self.isolating)

    @property
    def name(self) -> str:
        return f"{self.container.name} {self.direction.value}"

    @property
    def remote_is_source(self) -> bool:
        return self.direction is Direction.INGRESS


def chains(program: Program, inv: Inventory) -> list[Chain]:
    """Every chain the exports need: one per container and direction that is isolated or audited.

    Order: by container (inventory order), egress before ingress.
    """
    out: list[Chain] = []
    for index, c in enumerate(inv.containers):
        for a in c.addresses:
            ipaddress.ip_address(a)       # the inventory reader validated them; be sure anyway
        iface = check_interface(c)
        selecting = [p for p in program.policies if p.selector.matches(c.labels)]
        for d in (Direction.EGRESS, Direction.INGRESS):
            isolating = [p for p in selecting if d in p.isolates]
            written = [r for p in selecting for r in p.rules if r.direction is d]
            audits = tuple(make_entry(r, inv) for r in written if r.action is Action.AUDIT)
            if not isolating and not audits:
                continue                  # nothing to do: the direction is open and unaudited
            decisive = [r for r in written if r.action is not Action.AUDIT] if isolating else []
            order = sorted(range(len(decisive)),
                           key=lambda i: (-decisive[i].priority, decisive[i].action is not Action.DENY, i))
            rules = tuple(make_entry(decisive[i], inv) for i in order)
            default_allow = bool(isolating) and all(p.defaults.get(d) is Action.ALLOW for p in isolating)
            out.append(Chain(c, index, iface, d, tuple(p.name for p in isolating), default_allow,
                             audits, rules))
    return out


def header_lines(program: Program, inv: Inventory, tool: str) -> list[str]:
    """The comment block both exports start with (every piece of user text cleaned)."""
    files = ", ".join(clean_tail(p, 80) for p, _ in program.sources[:1]) or "(text)"
    lines = [f"generated by netc export {tool} from {files}",
             f"inventory: {len(inv.containers)} container(s)"
             + (f", node namespace {clean(inv.node_netns, 60)}" if inv.node_netns else ""),
             "Enforced on the containers' host-side veths in the node's namespace: traffic from a",
             "container enters on its veth (its egress policy), traffic to it leaves on it (ingress).",
             "Stateful: packets of established connections pass first; the rules judge new ones.",
             "A snapshot of the inventory: export again when containers come, go or change labels."]
    if program.services:
        lines.append(f"not exported: {len(program.services)} service(s) (no load balancing: VIPs are "
                     "not translated)")
    if program.limits:
        lines.append(f"not exported: {len(program.limits)} rate limit(s)")
    return lines
