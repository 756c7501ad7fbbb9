"""`netc fuzz`: random policies and packets, the kernel against the reference semantics.

Everything derives from one seed, so a disagreement is reproduced with `netc fuzz --seed S`.
The generator aims at the hard parts: priorities, overlapping CIDRs with `except`, port ranges,
ICMP types, IPv4 and IPv6, every protocol, fragments, selectors and identity classes.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from netc.ir.eval import Packet, evaluate_side
from netc.ir.nodes import Direction
from netc.runtime.inventory import Container, Inventory

LABEL_KEYS = ["app", "env", "tier"]
LABEL_VALUES = ["web", "api", "db", "prod", "dev"]
V4_BASES = ["10.0.0.0", "10.1.0.0", "10.1.1.0", "192.168.0.0", "8.8.8.0"]
V6_BASES = ["fd00::", "fd00:0:0:1::", "2001:db8::"]


def _cidr(rng: random.Random) -> str:
    if rng.random() < 0.7:
        base = int(ipaddress.IPv4Address(rng.choice(V4_BASES))) + rng.randrange(0, 1024)
        plen = rng.choice([8, 12, 16, 20, 24, 28, 30, 32])
        net = ipaddress.IPv4Network((base, plen), strict=False)
    elif rng.random() < 0.15:
        # wide IPv6 sets cover ::ffff:0:0/96, where the trie keeps IPv4: they must not catch IPv4
        net = ipaddress.IPv6Network(rng.choice(["::/0", "::/1", "::/8", "::/64", "::ffff:0:0/96"]))
    else:
        base = int(ipaddress.IPv6Address(rng.choice(V6_BASES))) + rng.randrange(0, 65536)
        plen = rng.choice([16, 32, 48, 64, 112, 120, 128])
        net = ipaddress.IPv6Network((base, plen), strict=False)
    text = str(net)
    if net.prefixlen <= net.max_prefixlen - 4 and rng.random() < 0.3:
        subs = list(net.subnets(new_prefix=net.prefixlen + rng.randint(1, 4)))
        holes = rng.sample(subs, min(len(subs), rng.randint(1, 2)))
        text += " except " + (str(holes[0]) if len(holes) == 1 else "{" + ", ".join(map(str, holes)) + "}")
    return text


def _selector(rng: random.Random, depth: int = 0) -> str:
    k, v = rng.choice(LABEL_KEYS), rng.choice(LABEL_VALUES)
    r = rng.randrange(7 if depth < 2 else 4)
    if r == 0:
        return f'{k} == "{v}"'
    if r == 1:
        return f'{k} != "{v}"'
    if r == 2:
        vals = rng.sample(LABEL_VALUES, rng.randint(1, 3))
        return f"{k} {'not in' if rng.random() < 0.3 else 'in'} {{" + ", ".join(f'"{x}"' for x in vals) + "}"
    if r == 3:
        return f"has({k})"
    if r == 4:
        return "not " + _selector(rng, depth + 1)
    op = "and" if r == 5 else "or"
    return f"({_selector(rng, depth + 1)} {op} {_selector(rng, depth + 1)})"


def _ports(rng: random.Random) -> str:
    items = []
    for _ in range(rng.randint(1, 3)):
        lo = rng.choice([0, 22, 53, 80, 443, 1000, 5432, 8080, 9000, 60000, rng.randrange(65536)])
        items.append(str(lo) if rng.random() < 0.5 else f"{lo}-{min(65535, lo + rng.randrange(4000))}")
    return ", ".join(items)


def random_rule(rng: random.Random) -> str:
    action = rng.choice(["allow", "allow", "deny", "audit"])
    d = rng.choice(["ingress", "egress"])
    proto = rng.choice(["tcp", "tcp", "udp", "sctp", "icmp", "icmpv6", "any", ""])
    parts = [action, d] + ([proto] if proto else [])
    if proto in ("icmp", "icmpv6") and rng.random() < 0.6:
        t = rng.choice(["echo-request", "echo-reply", "3", "11"] if proto == "icmp"
                       else ["echo-request", "echo-reply", "1", "3"])
        parts.append(f"type {t}" + (f" code {rng.randrange(3)}" if rng.random() < 0.3 else ""))
    peer_kind = rng.randrange(7)
    peers: list[str] = []
    if peer_kind == 1:
        peers = [_cidr(rng)]
    elif peer_kind == 2:
        peers = ["{" + ", ".join(_cidr(rng) for _ in range(rng.randint(1, 3))) + "}"]
    elif peer_kind == 3:
        peers = ["(" + _selector(rng) + ")"]
    elif peer_kind == 4:
        peers = [rng.choice(["world", "host", "any"])]
    elif peer_kind == 5:
        peers = [_cidr(rng), "(" + _selector(rng) + ")"]
    elif peer_kind == 6:
        peers = [_cidr(rng), rng.choice(["world", "host"])]
    ports = _ports(rng) if proto not in ("icmp", "icmpv6") and rng.random() < 0.5 else ""
    if peers:
        parts.append(("from " if d == "ingress" else "to ") + ", ".join(peers))
        if ports:
            parts.append(("to port " if d == "ingress" else "port ") + ports)
    elif ports:
        parts.append("to port " + ports)
    if rng.random() < 0.35:
        parts.append(f"priority {rng.randint(-3, 3)}")
    return " ".join(parts)


def random_program(rng: random.Random, max_rules: int = 12) -> str:
    lines = []
    for i in range(rng.randint(1, 3)):
        sel = "all" if rng.random() < 0.3 else _selector(rng)
        prio = f" priority {rng.randint(-2, 2)}" if rng.random() < 0.4 else ""
        lines.append(f"policy p{i} for {sel}{prio} {{")
        for d in ("ingress", "egress"):
            r = rng.random()
            if r < 0.35:
                lines.append(f"    {d} default deny")
            elif r < 0.55:
                lines.append(f"    {d} default allow")
        for _ in range(rng.randint(0, max_rules)):
            lines.append("    " + random_rule(rng))
        lines.append("}")
    return "\n".join(lines) + "\n"


def random_inventory(rng: random.Random) -> Inventory:
    containers = []
    for i in range(rng.randint(2, 6)):
        labels = {k: rng.choice(LABEL_VALUES) for k in rng.sample(LABEL_KEYS, rng.randint(0, 3))}
        v4 = f"10.{rng.choice([0, 1])}.{rng.choice([0, 1, 2])}.{10 + i}"
        v6 = f"fd00::{i + 1:x}"
        containers.append(Container(f"c{i}", (v4, v6), labels))
    return Inventory(containers, host_addresses=("10.0.0.1", "fd00::ffff"))


def random_packet(rng: random.Random, inv: Inventory, c: Container, d: Direction) -> Packet:
    version = rng.choice([4, 6])
    own = next(a for a in c.addresses if ipaddress.ip_address(a).version == version)
    if version == 4:
        pool = ["10.0.0.1", "8.8.8.8", "192.168.0.9"] + [
            str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(rng.choice(V4_BASES))) + rng.randrange(1100)))
            for _ in range(3)]
    else:
        pool = ["fd00::ffff", "fe80::1", "::ffff:10.0.0.1"] + [
            str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(rng.choice(V6_BASES))) + rng.randrange(70000)))
            for _ in range(3)]
    pool += [a for o in inv.containers for a in o.addresses if ipaddress.ip_address(a).version == version]
    remote = rng.choice(pool)
    proto = rng.choice([6, 6, 17, 132, 1 if version == 4 else 58, 47])
    src, dst = (remote, own) if d is Direction.INGRESS else (own, remote)
    frag = rng.random() < 0.08
    if proto in (1, 58):
        t = rng.choice([0, 3, 8, 11] if proto == 1 else [1, 3, 128, 129, 135])
        return Packet(proto, src, dst, 0, 0, t, rng.choice([0, 0, 1]), frag)
    dport = rng.choice([0, 22, 53, 80, 443, 1000, 1001, 5432, 8080, 9000, 60000, rng.randrange(65536)])
    return Packet(proto, src, dst, rng.randint(1024, 65535), dport, fragment=frag)


@dataclass
class Disagreement:
    seed: int
    policy: str
    container: Container
    direction: Direction
    packet: Packet
    kernel_allows: bool
    reference_allows: bool
    reference_rule: str


@dataclass
class FuzzReport:
    policies: int = 0
    packets: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)


def cases(seed: int, policies: int) -> Iterator[tuple[int, str, Inventory]]:
    for i in range(policies):
        s = seed * 1_000_003 + i
        rng = random.Random(s)
        yield s, random_program(rng), random_inventory(rng)


def run_fuzz(seed: int, policies: int, packets: int, obj: bytes | None = None) -> FuzzReport:
    """Kernel vs reference on random policies; needs root and BPF. One object serves every case:
    the program's shape does not depend on the policy, only the maps do."""
    from netc import api
    from netc.runtime.testrun import KernelClassifier

    report = FuzzReport()
    for case_seed, text, inv in cases(seed, policies):
        res = api.check(text, name=f"fuzz-{case_seed}.netp")
        if res.program is None:
            raise AssertionError(f"seed {case_seed}: the generator wrote an invalid policy: {res.errors}")
        if obj is None:
            obj = api.compile(text, name="fuzz.netp").object
        rng = random.Random(case_seed ^ 0x5EED)
        with KernelClassifier(obj, res.program, inv) as kc:
            for _ in range(packets):
                c = rng.choice(inv.containers)
                d = rng.choice([Direction.INGRESS, Direction.EGRESS])
                pkt = random_packet(rng, inv, c, d)
                ref = evaluate_side(res.program, inv, pkt, c, d)
                k = kc.classify(c, d, pkt)
                report.packets += 1
                if k.allowed != ref.allowed:
                    report.disagreements.append(Disagreement(
                        case_seed, text, c, d, pkt, k.allowed, ref.allowed,
                        ref.rule.location + " " + ref.rule.text if ref.rule else ref.reason.value))
        report.policies += 1
    return report


# ---------------------------------------------------------------------- packet sequences
SEQ_TIMEOUT_S = 0.5   # every state's timeout during sequence runs, so that expiry can be exercised
SEQ_SLEEP_S = 0.65


def random_conversation(rng: random.Random, inv: Inventory, c: Container
                        ) -> list[tuple[Direction, Packet] | float]:
    """A plausible exchange between container c and a remote, with stray packets and pauses mixed in.

    Items are (direction as c sees it, packet) or a float: seconds to wait (past the timeouts)."""
    from netc.ir.conntrack import ACK, FIN, RST, SYN

    version = rng.choice([4, 6])
    own = next(a for a in c.addresses if ipaddress.ip_address(a).version == version)
    probe = random_packet(rng, inv, c, Direction.INGRESS)
    remote = probe.src if ipaddress.ip_address(probe.src).version == version else (
        "10.0.0.1" if version == 4 else "fd00::ffff")
    proto = rng.choice([6, 6, 6, 17, 17, 132, 1 if version == 4 else 58, 47])
    c_starts = rng.random() < 0.5
    cport, rport = rng.randint(1024, 65535), rng.choice([22, 53, 80, 443, 1000, 5432, 8080, rng.randrange(65536)])
    out_dir, in_dir = Direction.EGRESS, Direction.INGRESS

    def pkt(from_c: bool, flags: int = 0, itype: int | None = None, ident: int = 7) -> tuple[Direction, Packet]:
        # the initiator talks from cport/ephemeral to rport; replies come back swapped
        initiator_is_c = c_starts
        from_initiator = from_c == initiator_is_c
        sport, dport = (cport, rport) if from_initiator else (rport, cport)
        src, dst = (own, remote) if from_c else (remote, own)
        d = out_dir if from_c else in_dir
        if proto in (1, 58):
            return d, Packet(proto, src, dst, 0, 0, itype if itype is not None else 8, 0, icmp_id=ident)
        return d, Packet(proto, src, dst, sport, dport, tcp_flags=flags)

    fc = c_starts          # "from the initiator" expressed as from_c
    steps: list[tuple[Direction, Packet] | float] = []
    if proto == 6:
        script = [(fc, SYN), (not fc, SYN | ACK), (fc, ACK), (fc, ACK), (not fc, ACK)]
        end = rng.random()
        if end < 0.4:
            script += [(fc, FIN | ACK), (not fc, FIN | ACK), (fc, ACK)]
        elif end < 0.7:
            script += [(rng.random() < 0.5, RST | ACK), (not fc, ACK)]
        else:
            script += [(not fc, ACK)]
        for from_c, flags in script:
            steps.append(pkt(from_c, flags))
    elif proto in (1, 58):
        req, rep = (8, 0) if proto == 1 else (128, 129)
        ident = rng.choice([0, 7, 300])
        steps += [pkt(fc, itype=req, ident=ident), pkt(not fc, itype=rep, ident=ident),
                  pkt(not fc, itype=rep, ident=ident + 1)]
    else:
        steps += [pkt(fc), pkt(not fc), pkt(not fc), pkt(fc)]
    # strays: the same flow again, mid-stream packets, fragments
    for _ in range(rng.randint(0, 3)):
        steps.insert(rng.randrange(len(steps) + 1), pkt(rng.random() < 0.5, rng.choice([ACK, SYN, 0])))
    if rng.random() < 0.02:   # rare: each pause costs real time (the kernel's clock is real)
        steps.insert(rng.randrange(1, len(steps) + 1), SEQ_SLEEP_S)
        steps.append(pkt(not fc, ACK))
    return steps


def run_sequences(seed: int, policies: int, conversations: int, obj: bytes | None = None) -> FuzzReport:
    """Kernel vs the connection-tracking reference model on packet sequences (needs root)."""
    import time

    from netc import api
    from netc.ir.conntrack import ConntrackModel
    from netc.runtime.loader import write_ct_timeouts
    from netc.runtime.testrun import KernelClassifier

    report = FuzzReport()
    for case_seed, text, inv in cases(seed, policies):
        res = api.check(text, name=f"fuzz-{case_seed}.netp")
        assert res.program is not None, res.errors
        if obj is None:
            obj = api.compile(text, name="fuzz.netp").object
        rng = random.Random(case_seed ^ 0x5E0)
        with KernelClassifier(obj, res.program, inv) as kc:
            kc.stateless = False
            write_ct_timeouts(kc.obj.maps["netc_ct_timeouts"], {s: SEQ_TIMEOUT_S for s in range(1, 9)})
            for _ in range(conversations):
                c = rng.choice(inv.containers)
                kc.flush_ct()
                model = ConntrackModel({s: SEQ_TIMEOUT_S for s in range(1, 9)})
                for item in random_conversation(rng, inv, c):
                    if isinstance(item, float):
                        time.sleep(item)
                        continue
                    d, pkt = item
                    now = time.monotonic()
                    k = kc.classify(c, d, pkt)
                    m = model.step(res.program, inv, c, d, pkt, now)
                    report.packets += 1
                    if k.allowed != m:
                        ref = evaluate_side(res.program, inv, pkt, c, d)
                        report.disagreements.append(Disagreement(
                            case_seed, text, c, d, pkt, k.allowed, m,
                            f"model ({'tracked' if m != ref.allowed else ref.reason.value})"))
                        break
        report.policies += 1
    return report


# ---------------------------------------------------------------------- services
FUZZ_TABLES = (13, 31, 251)   # small primes: tables fill fast and every slot is exercised


def random_service(rng: random.Random, j: int, inv: Inventory) -> str:
    """A service with VIPs of both families, backends by selector and by address, weights."""
    proto = rng.choice(["tcp", "udp"])
    port = rng.choice([80, 53, 443])
    lines = [f"service s{j} {{", f"    vip 10.96.{j}.1 port {port} {proto}"]
    if rng.random() < 0.7:
        lines.append(f"    vip fd00:96::{j}:1 port {port} {proto}")
    backends = []
    for _ in range(rng.randint(1, 3)):
        w = f" weight {rng.randint(1, 4)}" if rng.random() < 0.5 else ""
        p = f" port {rng.choice([8080, 8443, 5353])}" if rng.random() < 0.7 else ""
        r = rng.random()
        if r < 0.6:
            backends.append(f"({_selector(rng)}){p}{w}")
        else:
            c = rng.choice(inv.containers)
            backends.append(f"{rng.choice(c.addresses)}{p}{w}")
    lines.append("    backends " + ", ".join(backends))
    lines.append(f"    balance maglev table {rng.choice(FUZZ_TABLES)}")
    lines.append("}")
    return "\n".join(lines)


def random_service_program(rng: random.Random, inv: Inventory) -> str:
    text = random_program(rng, max_rules=8)
    return text + "\n".join(random_service(rng, j, inv) for j in range(rng.randint(1, 3))) + "\n"


@dataclass
class ServiceDisagreement:
    seed: int
    policy: str
    container: Container
    packet: Packet
    what: str


def run_service_fuzz(seed: int, policies: int, packets: int, obj: bytes | None = None
                     ) -> tuple[int, int, list[ServiceDisagreement]]:
    """Clients' packets to VIPs (and others) through the client's egress in the kernel, against
    the reference: the same backend chosen (Maglev is exact), the same verdict on the translated
    packet, the same reject when no backend is eligible. Returns (policies, packets, disagreements).
    One object serves every case: the load-balancing maps are sized per case."""
    from netc import api
    from netc.ir.eval import translate
    from netc.runtime.testrun import TC_ACT_REDIRECT, KernelClassifier

    out: list[ServiceDisagreement] = []
    n = 0
    for i in range(policies):
        case_seed = seed * 1_000_003 + i
        rng = random.Random(case_seed)
        inv = random_inventory(rng)
        text = random_service_program(rng, inv)
        res = api.check(text, name=f"fuzz-lb-{case_seed}.netp")
        if res.program is None:
            raise AssertionError(f"seed {case_seed}: the generator wrote an invalid policy: {res.errors}\n{text}")
        if obj is None:
            obj = api.compile(text, name="fuzz-lb.netp").object
        vips = [(v, s) for s in res.program.services for v in s.vips]
        with KernelClassifier(obj, res.program, inv) as kc:
            for _ in range(packets):
                c = rng.choice(inv.containers)
                if rng.random() < 0.7:
                    vip, _svc = rng.choice(vips)
                    version = ipaddress.ip_address(vip.address).version
                    own = next(a for a in c.addresses if ipaddress.ip_address(a).version == version)
                    pkt = Packet(vip.protocol.value, own, vip.address, rng.randint(1024, 65535), vip.port)
                else:
                    pkt = random_packet(rng, inv, c, Direction.EGRESS)
                n += 1
                translated, t = translate(res.program, inv, pkt)
                k = kc.classify(c, Direction.EGRESS, pkt)
                if t is not None and t.backend is None:
                    if k.retval != TC_ACT_REDIRECT:
                        out.append(ServiceDisagreement(case_seed, text, c, pkt,
                                                       f"service {t.service} has no backend: kernel returned "
                                                       f"{k.retval}, not a reject"))
                    continue
                ref = evaluate_side(res.program, inv, translated, c, Direction.EGRESS)
                if k.allowed != ref.allowed:
                    out.append(ServiceDisagreement(case_seed, text, c, pkt,
                                                   f"kernel {'allows' if k.allowed else 'denies'}, reference "
                                                   f"{'allows' if ref.allowed else 'denies'} {translated}"))
                elif t is not None and k.allowed and k.destination() != (t.address, t.port):
                    out.append(ServiceDisagreement(case_seed, text, c, pkt,
                                                   f"kernel sent it to {k.destination()}, reference to "
                                                   f"{t.address}:{t.port} ({t.backend})"))
    return policies, n, out
