"""`netc export nftables|iptables`: the texts parse, the chains mean what eval.py means, user text is inert.

No root needed. The parse checks run `nft -c -f` and `iptables-restore --test` in a network
namespace of their own (`unshare --net`, plus `--map-root-user` when not root): the kernel
validates the whole ruleset and nothing is committed. They skip, saying why, where the tools
or unprivileged user namespaces are missing. Real traffic is tests/kernel/test_export_lab.py.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netc import api
from netc.cli import main
from netc.export import ExportError, combined, export_iptables, export_nftables
from netc.export.iptables import split_combined
from netc.export.model import Chain, Entry, chains, clean, icmp_parts, log_prefix
from netc.export.nftables import ChainPlan, Lookup, plan
from netc.ir.addrset import PortSet
from netc.ir.eval import Packet, evaluate_side, is_ndp
from netc.ir.nodes import Action, Direction, Program
from netc.runtime.inventory import Container, Inventory
from tests.netp_strategies import program

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(glob.glob(str(ROOT / "examples" / "*.netp")))

INVENTORY = {
    "containers": [
        {"name": "web-1", "addresses": ["10.77.0.10", "fd00:77::10"], "labels": {"app": "web", "tier": "web"},
         "interface": "nc0"},
        {"name": "api-1", "addresses": ["10.77.0.11", "fd00:77::11"],
         "labels": {"app": "api", "env": "prod", "tier": "api"}, "interface": "nc1"},
        {"name": "db-1", "addresses": ["10.77.0.12", "fd00:77::12"], "labels": {"app": "db", "tier": "db"},
         "interface": "nc2"},
        {"name": "batch-1", "addresses": ["10.77.0.13"], "labels": {"app": "batch", "env": "prod"}},  # no veth
        {"name": "shop-web", "addresses": ["10.0.9.9", "fd00:c0::9"], "labels": {"app": "shop", "tier": "web"},
         "interface": "nc4"},
        {"name": "payments", "addresses": ["10.20.2.10", "fd00:20::2:10"],
         "labels": {"app": "payments-api", "env": "prod"}, "interface": "nc5"},
    ],
    "host_addresses": ["10.77.0.1", "fd00:77::1"],
}


def inventory() -> Inventory:
    return Inventory.from_dict(INVENTORY)


# the nftables layouts: as exported; every map cut into buckets of 2 elements; and painting held
# to a budget so small that every chain is split into blocks of rules looked up in turn
LAYOUTS: dict[str, dict[str, int]] = {"default": {}, "buckets": {"bucket": 2},
                                      "blocks": {"bucket": 3, "factor": 0, "slack": 2}}


def program_of(path_or_text: str, name: str | None = None) -> Program:
    res = api.check(path_or_text, name=name)
    assert res.ok and res.program is not None, [str(d) for d in res.errors]
    return res.program


# ---------------------------------------------------------------------------- parsing by the tools
def _unavailable(why: str) -> None:
    """Skip where a tool is missing; under NETC_REQUIRE_KERNEL=1 (CI, after `make setup` installed
    them) fail instead, as for kernel tests: CI must not pass a check it never ran."""
    if os.environ.get("NETC_REQUIRE_KERNEL") == "1":
        pytest.fail(f"NETC_REQUIRE_KERNEL=1 but the ruleset check cannot run: {why}", pytrace=False)
    pytest.skip(why)


def _netns_argv() -> list[str]:
    if shutil.which("unshare") is None:
        _unavailable("unshare (util-linux) is not installed")
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]


def _run_checked(argv: list[str], path: Path) -> None:
    tool = argv[0]
    if shutil.which(tool) is None:
        _unavailable(f"{tool} is not installed")
    proc = subprocess.run(_netns_argv() + argv + [str(path)], capture_output=True, text=True)
    if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
        _unavailable(f"no network namespace of our own here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"{' '.join(argv)} {path}:\n{proc.stderr}\n--- the file:\n{path.read_text()}"


@pytest.mark.parametrize("layout", ["default", "buckets", "blocks"])
@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_nftables_export_parses(path: str, layout: str, tmp_path: Path) -> None:
    f = tmp_path / "netc.nft"
    f.write_text(export_nftables(program_of(path), inventory(), **LAYOUTS[layout]))
    _run_checked(["nft", "-c", "-f"], f)


def test_nftables_export_of_10000_rules_is_a_few_lookups(tmp_path: Path) -> None:
    """The generated 10,000-rule policy: maps of at most ~128 elements behind an address map, so
    a packet meets a handful of lookups; and `nft -c` takes the whole file."""
    from netc.bench.generate import generate_policy

    prog = program_of(generate_policy(10_000, 1), name="bench.netp")
    inv = Inventory([Container(n, (f"10.99.0.{i + 2}",), {"app": n}, interface=f"v{i}")
                     for i, n in enumerate(("web", "api", "db"))])
    plans = [p for p in plan(prog, inv) if p.chain.rules]
    assert len(plans) == 3
    for p in plans:
        assert len(p.chain.rules) > 3000 and len(p.blocks) == 1
        assert all(len(m.elements) <= 2 * 128 for m in p.maps())
        b = p.blocks[0]
        assert [fam for fam, _, _ in b.buckets] == [4, 6] and not b.inline
        # per packet: the veth's vmap, neighbour discovery, the address map, then at most three
        # maps and their two falls to the default: the same at any rule count
        assert all(len(lk.maps) <= 3 for lk in p.lookups())
    f = tmp_path / "bench.nft"
    f.write_text(export_nftables(prog, inv))
    _run_checked(["nft", "-c", "-f"], f)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_iptables_export_parses(path: str, tmp_path: Path) -> None:
    parts = export_iptables(program_of(path), inventory())
    (tmp_path / "rules.v4").write_text(parts["iptables"])
    (tmp_path / "rules.v6").write_text(parts["ip6tables"])
    _run_checked(["iptables-restore", "--test"], tmp_path / "rules.v4")
    _run_checked(["ip6tables-restore", "--test"], tmp_path / "rules.v6")


HOSTILE = '''\
group web = app == "web\\" } accept; #"
policy p for web {
    ingress default deny
    allow ingress tcp from 10.0.0.0/8 to port 80 log
    audit ingress udp
}
'''


def test_user_text_cannot_escape_its_quotes(tmp_path: Path) -> None:
    """Quotes, braces, newlines in names, labels and paths stay inside comments and strings."""
    name = 'evil" accept }\n-A FORWARD -j ACCEPT\n#.netp'
    prog = program_of(HOSTILE, name=name)
    inv = Inventory([Container('w"1\n-j ACCEPT', ("10.77.0.10", "fd00:77::10"), {"app": 'web" } accept; #'},
                               interface="nc9"),
                     Container("x" * 300, ("10.77.0.11",), {"app": 'web" } accept; #'}, interface="nc8")],
                    ("10.77.0.1",), 'node"\nns')
    nft = export_nftables(prog, inv)
    parts = export_iptables(prog, inv)
    for text in (nft, parts["iptables"], parts["ip6tables"]):
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue                  # a comment: user text is harmless here, once on one line
            assert line.count('"') % 2 == 0 and "\\" not in line, line
            bare = re.sub(r'"[^"]*"', '""', line)      # what is left outside quoted strings
            assert "-A FORWARD -j ACCEPT" not in bare and "accept }" not in bare and "evil" not in bare, line
        assert not re.search(r"^-A FORWARD -j ACCEPT", text, re.M)
    f = tmp_path / "x.nft"
    f.write_text(nft)
    _run_checked(["nft", "-c", "-f"], f)
    (tmp_path / "v4").write_text(parts["iptables"])
    _run_checked(["iptables-restore", "--test"], tmp_path / "v4")


def test_clean_and_log_prefix() -> None:
    assert clean('a"b\\c\nd\'e`f', 80) == "a?b?c?d?e?f"
    assert len(clean("x" * 500, 29)) == 29
    prog = program_of('group w = app == "w"\npolicy p for w { ingress default deny\n'
                      ' deny ingress from 10.9.9.9 priority 1048575 log\n audit egress udp }')
    for r in prog.rules:
        p = log_prefix(r)
        assert len(p) <= 29 and re.fullmatch(r"netc (deny|audit) r\d+: ", p), p


def test_bad_interface_name_is_refused() -> None:
    prog = program_of('policy p for all { ingress default deny }')
    inv = Inventory([Container("a", ("10.0.0.1",), {}, interface='eth0" accept')])
    with pytest.raises(ExportError, match="interface name"):
        export_nftables(prog, inv)
    with pytest.raises(ExportError, match="interface name"):
        export_iptables(prog, inv)


# ---------------------------------------------------------------------------- structure
def test_chains_only_where_isolated_or_audited() -> None:
    prog = program_of('''
group web = app == "web"
policy p for web { egress default allow
  deny egress to 169.254.169.254 }
policy a for app == "api" { audit ingress tcp to port 22 }
''')
    inv = inventory()
    names = {ch.name: ch for ch in chains(prog, inv)}
    assert set(names) == {"web-1 egress", "api-1 ingress"}
    assert names["web-1 egress"].default_allow and not names["web-1 egress"].audits
    assert not names["api-1 ingress"].isolated and len(names["api-1 ingress"].audits) == 1
    nft = export_nftables(prog, inv)
    body = re.search(r"chain in_1_api_1 \{\n(.*?)\n\t\}", nft, re.S)
    assert body is not None
    assert "accept" not in body.group(1).replace('accept comment "neighbour', "")
    assert "drop" not in body.group(1)
    assert 'return comment "default allow: p"' in nft
    v4 = export_iptables(prog, inv)["iptables"]
    assert "-A FORWARD -i nc0 " in v4 and "-A FORWARD -o nc1 " in v4
    assert "-A INPUT -i nc0 " in v4 and "-A OUTPUT -o nc1 " in v4
    # every egress jump comes before every ingress jump: an ingress chain's ACCEPT is final
    fwd = [ln for ln in v4.splitlines() if ln.startswith("-A FORWARD -") and " -j NETC-" in ln]
    assert [(" -i " in ln) for ln in fwd] == sorted([(" -i " in ln) for ln in fwd], reverse=True)


def test_order_is_priority_then_deny_then_written() -> None:
    prog = program_of('''
group web = app == "web"
policy p for web {
  ingress default deny
  allow ingress tcp from 10.0.0.1 to port 80
  deny ingress tcp from 10.0.0.2 to port 80
  allow ingress tcp from 10.0.0.3 to port 80 priority 5
  deny ingress tcp from 10.0.0.4 to port 80 priority -3
  allow ingress tcp from 10.0.0.5 to port 80
}
policy q for web priority 5 { deny ingress from 10.0.0.6 }
''')
    ch = next(c for c in chains(prog, inventory()) if c.name == "web-1 ingress")
    got = [str(ipaddress.IPv4Address(e.peer.v4[0][0])) for e in ch.rules if e.peer is not None]
    assert got == ["10.0.0.6", "10.0.0.3", "10.0.0.2", "10.0.0.1", "10.0.0.5", "10.0.0.4"]
    nft = export_nftables(prog, inventory())
    ids = {str(ipaddress.IPv4Address(e.peer.v4[0][0])): int(e.rule.id) for e in ch.rules if e.peer is not None}
    pos = [nft.index(f"#   r{ids[f'10.0.0.{i}']} ") for i in (6, 3, 2, 1, 5, 4)]
    assert pos == sorted(pos)     # the chain lists its rules in deciding order
    # each address holds exactly the verdict of its best rule, in one disjoint element
    p = next(x for x in plan(prog, inventory()) if x.chain.name == "web-1 ingress")
    ports = next(m for m in p.maps() if m.kind == "ports" and m.family == 4)
    got80 = {str(ipaddress.IPv4Address(a)): ch.rules[t].action for (a, b), (pr, pp), t in ports.elements
             if a == b and pr == (6, 6) and pp[0] <= 80 <= pp[1]}
    assert got80 == {"10.0.0.1": Action.ALLOW, "10.0.0.2": Action.DENY, "10.0.0.3": Action.ALLOW,
                     "10.0.0.4": Action.DENY, "10.0.0.5": Action.ALLOW, "10.0.0.6": Action.DENY}


def test_peers_resolve_against_the_inventory() -> None:
    prog = program_of('''
group web = app == "web"
policy p for web {
  ingress default deny
  allow ingress tcp from world to port 1
  allow ingress tcp from host to port 2
  allow ingress tcp from (app == "db") to port 3
  allow ingress tcp from {10.77.0.0/24 except 10.77.0.8/29} to port 4
  allow ingress tcp from any to port 5
}''')
    inv = inventory()
    ch = next(c for c in chains(prog, inv) if c.name == "web-1 ingress")
    world, host, db, hole, anyp = (e.peer for e in ch.rules)
    assert anyp is None
    for a in ("10.77.0.10", "10.77.0.13", "fd00:77::12", "10.77.0.1", "fd00:77::1"):
        assert world is not None and not world.contains(a)
    assert world is not None and world.contains("8.8.8.8") and world.contains("fd00:77::99")
    assert host is not None and host.contains("10.77.0.1") and not host.contains("10.77.0.10")
    assert db is not None and db.contains("10.77.0.12") and db.contains("fd00:77::12")
    assert db is not None and not db.contains("10.77.0.11")
    assert hole is not None and hole.contains("10.77.0.7") and not hole.contains("10.77.0.8")
    assert hole is not None and not hole.contains("10.77.0.15") and hole.contains("10.77.0.16")
    v4 = export_iptables(prog, inv)["iptables"]
    assert "-s 10.77.0.0/29 -p tcp -m tcp --dport 4 " in v4 and "-s 10.77.0.16/28 -p tcp -m tcp --dport 4 " in v4


def test_icmp_parts() -> None:
    ps = PortSet.of([(8 << 8, (8 << 8) | 255), ((3 << 8) | 4, (3 << 8) | 4), (0, 255), ((5 << 8) | 1, (6 << 8) | 255)])
    whole, partial = icmp_parts(ps)
    assert whole == [0, 6, 8]
    assert partial == [(3, 4, 4), (5, 1, 255)]


def test_icmp_rules_keep_to_their_family() -> None:
    prog = program_of('''
policy p for app == "web" {
  ingress default deny
  allow ingress icmp type echo-request from any
  allow ingress icmpv6 type echo-request from any
  allow ingress icmp type dest-unreachable code 4 from any
}''')
    parts = export_iptables(prog, inventory())
    assert "--icmp-type 8 " in parts["iptables"] and "--icmp-type 3/4 " in parts["iptables"]
    assert "icmpv6-type 128 " in parts["ip6tables"] and "--icmp-type" not in parts["ip6tables"]
    assert "icmpv6" not in parts["iptables"]
    nft = export_nftables(prog, inventory())
    v4 = re.search(r"map in_0_web_1_icmp_v4 \{.*?\n\t\}", nft, re.S)
    v6 = re.search(r"map in_0_web_1_icmp_v6 \{.*?\n\t\}", nft, re.S)
    assert v4 is not None and v6 is not None
    assert "0.0.0.0/0 . 8 . 0-255 " in v4.group(0) and "0.0.0.0/0 . 3 . 4 " in v4.group(0)
    assert "::/0 . 128 . 0-255 " in v6.group(0) and " . 8 . " not in v6.group(0) and " . 3 . " not in v6.group(0)
    assert "ip saddr . icmp type . icmp code vmap @in_0_web_1_icmp_v4" in nft
    assert "ip6 saddr . icmpv6 type . icmpv6 code vmap @in_0_web_1_icmp_v6" in nft


# ---------------------------------------------------------------------------- meaning, without a kernel
def _first_match(ch: Chain, pkt: Packet) -> bool:
    """What the exported chain does with a first packet (the rules in order, first match decides)."""
    if is_ndp(pkt):
        return True
    remote = pkt.src if ch.direction is Direction.INGRESS else pkt.dst

    def matches(e: Entry) -> bool:
        if e.protocols is not None and pkt.protocol not in e.protocols:
            return False
        if e.protocols is not None and pkt.protocol == 1 and ":" in pkt.src:
            return False
        if e.protocols is not None and pkt.protocol == 58 and ":" not in pkt.src:
            return False
        if e.ports is not None and (pkt.fragment or not e.ports.contains(pkt.dport)):
            return False
        if e.icmp is not None and (pkt.fragment or pkt.icmp_type is None
                                   or not e.icmp.contains((pkt.icmp_type << 8) | (pkt.icmp_code or 0))):
            return False
        return e.peer is None or e.peer.contains(remote)

    for e in ch.rules:
        if matches(e):
            return e.action is Action.ALLOW
    return ch.default_allow if ch.isolated else True


def _in(iv: tuple[int, int], x: int) -> bool:
    return iv[0] <= x <= iv[1]


def _find(lk: Lookup, kind: str, key: tuple[int, ...]) -> int | None:
    """The winner of the element of the `kind` map holding key (address, other fields), if any."""
    for m in lk.maps:
        if m.kind == kind:
            for addr, fields, winner in m.elements:
                if _in(addr, key[0]) and all(_in(f, k) for f, k in zip(fields, key[1:], strict=True)):
                    return winner
    return None


TAIL = -1


def _run_lookup(lk: Lookup, pkt: Packet, remote: int) -> int | None:
    """What the kernel does with one family's lookups (rendered by _lookup_lines): the winning
    rule, TAIL (a readable field no element holds), or None (fell through every lookup)."""
    kinds = {m.kind for m in lk.maps}
    if "ports" in kinds and pkt.protocol in (6, 17, 132) and not pkt.fragment:
        got = _find(lk, "ports", (remote, pkt.protocol, pkt.dport))
        return TAIL if got is None else got          # the map, then `th dport 0-65535 <tail>`
    icmp = 1 if lk.family == 4 else 58
    if "icmp" in kinds and pkt.protocol == icmp and not pkt.fragment and pkt.icmp_type is not None:
        got = _find(lk, "icmp", (remote, pkt.icmp_type, pkt.icmp_code or 0))
        return TAIL if got is None else got          # the map, then `icmp code 0-255 <tail>`
    if "l4" in kinds:
        return _find(lk, "l4", (remote, pkt.protocol))
    return None


def _run_plan(p: ChainPlan, pkt: Packet) -> bool:
    """What the exported chain, as planned (maps, buckets, blocks), does with a first packet."""
    ch = p.chain
    if is_ndp(pkt):
        return True
    family = 6 if ":" in pkt.src else 4
    remote = int(ipaddress.ip_address(pkt.src if ch.direction is Direction.INGRESS else pkt.dst))
    for b in p.blocks:
        here = [lk for lk in b.inline if lk.family == family]
        here += [lk for fam, _, lks in b.buckets if fam == family for lk in lks if _in(lk.span, remote)]
        assert len(here) <= 1, "the address map's spans overlap"
        got = _run_lookup(here[0], pkt, remote) if here else None
        if got is not None and got != TAIL:
            return ch.rules[got].action is Action.ALLOW
        # no rule of this block: its tail, the next block or the default
    return ch.default_allow if ch.isolated else True


def _remotes(prog: Program, inv: Inventory) -> list[str]:
    """Addresses worth trying: containers, hosts, and both edges of every prefix a rule names."""
    out = {a for c in inv.containers for a in c.addresses} | set(inv.host_addresses)
    out |= {"8.8.8.8", "2001:4860::8888", "10.1.2.3", "fd00::1", "169.254.169.254", "fd00:ec2::254"}
    for r in prog.rules:
        for net in r.peer.addrs.to_cidrs()[:40]:
            out.add(str(net.network_address))
            out.add(str(net.broadcast_address))
            out.add(str(net.network_address - 1) if int(net.network_address) else str(net.network_address))
            out.add(str(net.broadcast_address + 1) if int(net.broadcast_address) < (1 << net.max_prefixlen) - 1
                    else str(net.broadcast_address))
    return sorted(out)


def _compare(prog: Program, inv: Inventory, rng: random.Random) -> int:
    """Every container, direction, protocol (fragments too) and remote address of interest: the
    export's chains decide as eval.py does. Returns the number of packets checked."""
    ports = sorted({1, 7, 22, 25, 53, 80, 443, 3868, 5000, 5432, 7001, 8080, 8443, 9090, 9100, 65535}
                   | {min(max(x, 0), 65535) for r in prog.rules if r.ports for lo, hi in r.ports.ranges
                      for x in (lo - 1, lo, hi, hi + 1)})
    by_side = {(ch.container.name, ch.direction): ch for ch in chains(prog, inv)}
    plans = {layout: {(p.chain.container.name, p.chain.direction): p for p in plan(prog, inv, **kw)}
             for layout, kw in LAYOUTS.items()}
    remotes = _remotes(prog, inv)
    checked = 0
    for c in inv.containers:
        for d in (Direction.INGRESS, Direction.EGRESS):
            ch = by_side.get((c.name, d))
            for remote in remotes:
                fam6 = ":" in remote
                own = next((a for a in c.addresses if (":" in a) == fam6), None)
                if own is None or own == remote:
                    continue
                for proto in (6, 17, 132, 1, 58, 47):
                    if (proto == 1 and fam6) or (proto == 58 and not fam6):
                        continue
                    for frag in (False, True):
                        ends = (remote, own) if d is Direction.INGRESS else (own, remote)
                        if proto in (1, 58):
                            pkt = Packet(proto, *ends, icmp_type=rng.choice([0, 1, 3, 8, 11, 128, 129, 2, 135]),
                                         icmp_code=rng.choice([0, 1, 3, 4]), fragment=frag)
                        else:
                            pkt = Packet(proto, *ends, 40000, rng.choice(ports) if proto != 47 else 0,
                                         fragment=frag)
                        want = evaluate_side(prog, inv, pkt, c, d).allowed
                        got = _first_match(ch, pkt) if ch is not None else True
                        assert got == want, f"{c.name} {d.value}: {pkt} (fragment={frag}): export " \
                                            f"{'allows' if got else 'denies'}, eval {'allows' if want else 'denies'}"
                        for layout, p in plans.items():
                            pl = p.get((c.name, d))
                            got = _run_plan(pl, pkt) if pl is not None else True
                            assert got == want, f"nftables ({layout}) {c.name} {d.value}: {pkt}: export " \
                                f"{'allows' if got else 'denies'}, eval {'allows' if want else 'denies'}"
                        checked += 1
    return checked


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_chains_decide_like_eval(path: str) -> None:
    """For first packets, each exported chain decides exactly what eval.py decides for that side:
    the chains as rules in deciding order (what iptables gets), and the nftables maps in every layout."""
    assert _compare(program_of(path), inventory(), random.Random(7)) > 1000


# addresses where the random programs' CIDRs fall (tests/netp_strategies.py), labels they select on
RANDOM_INVENTORY = Inventory([
    Container("r-web", ("10.1.1.5", "fd00::5"), {"app": "web", "env": "prod"}, interface="nr0"),
    Container("r-api", ("10.1.0.9", "fd00:0:1::9"), {"app": "api", "tier": "a"}, interface="nr1"),
    Container("r-db", ("192.168.0.200",), {"app": "db", "team": "b"}, interface="nr2"),
    Container("r-dev", ("10.0.3.1", "2001:db8::77"), {"env": "dev"}),
], ("10.1.1.1", "fd00::1"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=program(max_policies=3, max_rules=8), seed=st.integers(0, 1 << 16))
def test_random_programs_decide_like_eval(text: str, seed: int) -> None:
    """Random programs (overlapping CIDRs, except holes, ranges, priorities, ICMP types, selectors):
    the exports decide as eval.py does, in every nftables layout."""
    res = api.check(text, name="random.netp", inventory=RANDOM_INVENTORY)
    assume(res.ok and res.program is not None)
    assert res.program is not None
    _compare(res.program, RANDOM_INVENTORY, random.Random(seed))


# ---------------------------------------------------------------------------- the command
@pytest.fixture
def inv_file(tmp_path: Path) -> Path:
    import json

    p = tmp_path / "inv.json"
    p.write_text(json.dumps(INVENTORY))
    return p


def test_cli_nftables_to_stdout_and_file(inv_file: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["export", "nftables", str(ROOT / "examples/quickstart.netp"),
                                  "--inventory", str(inv_file)])
    assert r.exit_code == 0, r.output
    assert "table inet netc {" in r.stdout
    out = tmp_path / "x.nft"
    r = CliRunner().invoke(main, ["export", "nftables", str(ROOT / "examples/quickstart.netp"),
                                  "--inventory", str(inv_file), "-o", str(out)])
    assert r.exit_code == 0 and out.read_text().startswith("#!/usr/sbin/nft -f")


def test_cli_iptables_writes_v4_and_v6(inv_file: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["export", "iptables", str(ROOT / "examples/three-tier.netp"),
                                  "--inventory", str(inv_file), "-o", str(tmp_path / "rules")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rules.v4").read_text().rstrip().endswith("COMMIT")
    assert "fd00" in (tmp_path / "rules.v6").read_text()
    r = CliRunner().invoke(main, ["export", "iptables", str(ROOT / "examples/three-tier.netp"),
                                  "--inventory", str(inv_file)])
    assert r.exit_code == 0
    parts = split_combined(r.stdout)
    assert parts == export_iptables(program_of(str(ROOT / "examples/three-tier.netp")), inventory())
    assert combined(parts) == r.stdout


def test_cli_says_what_a_service_loses(inv_file: Path) -> None:
    r = CliRunner().invoke(main, ["export", "nftables", str(ROOT / "examples/every-construct.netp"),
                                  "--inventory", str(inv_file)])
    assert r.exit_code == 0
    assert "service(s) not exported" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["nftables", "examples/nope.netp", "--inventory", "INV"], "no such file: examples/nope.netp"),
    (["nftables", "examples/quickstart.netp"], "give exactly one of --inventory FILE or --lab NAME"),
    (["nftables", "examples/quickstart.netp", "--inventory", "INV", "--lab", "x"], "give exactly one"),
    (["iptables", "examples/quickstart.netp", "--lab", "no-such-lab"], "no lab named `no-such-lab`"),
    (["iptables", "examples/quickstart.netp", "--inventory", "/nonexistent.yaml"], "no such inventory"),
    (["nftables", "examples/quickstart.netp", "--inventory", "INV", "-o", "/nonexistent/x"], "cannot write"),
])
def test_cli_errors_are_messages(args: list[str], message: str, inv_file: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NETC_STATE_DIR", str(tmp_path / "state"))
    args = [str(inv_file) if a == "INV" else a for a in args]
    r = CliRunner().invoke(main, ["export", *args])
    assert r.exit_code == 1, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)


def test_cli_prints_diagnostics_of_a_broken_file(inv_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.netp"
    bad.write_text("policy p for all {\n  allow ingress tcp corp\n}\n")
    r = CliRunner().invoke(main, ["export", "nftables", str(bad), "--inventory", str(inv_file)])
    assert r.exit_code == 1
    assert "bad.netp:2:" in r.stderr and "error[E" in r.stderr
    assert r.stdout == ""


def test_cli_refuses_an_unsafe_interface(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text('containers: [{name: a, addresses: [10.0.0.1], interface: "x y"}]\n')
    r = CliRunner().invoke(main, ["export", "iptables", str(ROOT / "examples/zero-trust.netp"),
                                  "--inventory", str(inv)])
    assert r.exit_code == 1 and "cannot be exported" in r.stderr
