"""`netc trace drops`: packets the kernel freed as dropped on the containers' interfaces, with why.

bcc (Debian's python3-bpfcc) compiles a small program for the `skb:kfree_skb` tracepoint. The
program keeps a drop when the skb belongs to a watched interface:

  * in the node namespace (where the host-side veths live), only the containers' host-side veths:
    the key is (netns inode, ifindex), since ifindexes are per namespace and the node may be the
    machine's root namespace with other interfaces of its own;
  * in a container's namespace, anything: (netns inode, 0). A drop with no device (a socket's
    packet) is matched by its socket's namespace the same way.

Nothing here relies on kernel headers matching the running kernel: the tracepoint's fields come
from its format file, struct offsets (sk_buff, net_device, net, sock) from the kernel's BTF
(`bpftool btf dump file /sys/kernel/btf/vmlinux`), and the names of `enum skb_drop_reason` from
the format file's print fmt (or BTF). bcc still wants *some* kernel headers to compile its own
helpers; Debian has none for a custom kernel, so those of Debian's kernel are used (see
kernel_headers()).

A tc/tcx program returning TC_ACT_SHOT makes the kernel free the skb with reason TC_INGRESS or
TC_EGRESS: on a host-side veth, where netc attaches, that is a netc denial and is reported as
"netc (tc) drop"; the same reasons elsewhere are "tc drop (not netc)"; anything else is a
"kernel drop".
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import glob
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from netc.errors import NetcError

TRACEFS = "/sys/kernel/tracing"
FORMAT = "events/skb/kfree_skb/format"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"
BCC_DIRS = ("/usr/lib/python3/dist-packages/bcc",)
NETC_REASONS = ("TC_INGRESS", "TC_EGRESS", "XDP")   # what a program attached by netc drops with

KIND_TEXT = {"netc": "netc (tc) drop", "tc": "tc drop (not netc)", "kernel": "kernel drop"}


class TraceError(NetcError):
    """bcc cannot run here, or what to watch cannot be found: the message says exactly why."""


# ---------------------------------------------------------------------- prerequisites
def ensure_tracefs() -> str:
    """The tracefs mount (mounted on /sys/kernel/tracing when absent, like bpffs for the runtime)."""
    for base in (TRACEFS, "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(base, FORMAT)):
            return base
    if os.geteuid() != 0:
        raise TraceError("needs root: tracing kernel drops loads a BPF program (CAP_BPF, CAP_PERFMON) "
                         "and reads tracefs")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise TraceError(f"no tracefs: {TRACEFS} is not mounted and mounting it failed: {os.strerror(err)}")
    if not os.path.exists(os.path.join(TRACEFS, FORMAT)):
        raise TraceError(f"this kernel has no skb:kfree_skb tracepoint ({TRACEFS}/{FORMAT} is missing)")
    return TRACEFS


@dataclass
class TracepointFormat:
    fields: dict[str, tuple[int, int]]     # name -> (offset, size)
    reasons: dict[int, str]                # from the print fmt's __print_symbolic(REC->reason, ...)
    size: int


def read_format(path: str) -> TracepointFormat:
    text = open(path).read()
    fields: dict[str, tuple[int, int]] = {}
    for m in re.finditer(r"field:([^;]*?)(\w+)(\[\d*\])?;\s*offset:(\d+);\s*size:(\d+);", text):
        fields[m.group(2)] = (int(m.group(4)), int(m.group(5)))
    reasons: dict[int, str] = {}
    sym = re.search(r"__print_symbolic\(REC->reason,(.*)", text, re.S)
    if sym:
        for m in re.finditer(r'\{\s*(\d+)\s*,\s*"(\w+)"\s*\}', sym.group(1)):
            reasons[int(m.group(1))] = m.group(2)
    size = max((o + s for o, s in fields.values()), default=0)
    for need in ("skbaddr", "location", "protocol", "reason"):
        if need not in fields:
            raise TraceError(f"{path}: the kfree_skb tracepoint has no `{need}` field on this kernel")
    return TracepointFormat(fields, reasons, size)


class Btf:
    """Just enough of the kernel's BTF to find member offsets: parsed from bpftool's raw dump."""

    def __init__(self, text: str):
        self.types: dict[int, tuple[str, str, list[tuple[str, int, int]], int]] = {}
        self.by_name: dict[tuple[str, str], int] = {}
        self.enums: dict[str, dict[int, str]] = {}
        cur: int | None = None
        enum_name = ""
        for line in text.splitlines():
            if line.startswith("["):
                m = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
                if not m:
                    cur = None
                    continue
                cur, kind, name, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
                t = re.search(r"type_id=(\d+)", rest)
                self.types[cur] = (kind, name, [], int(t.group(1)) if t else 0)
                if name != "(anon)":
                    self.by_name.setdefault((kind, name), cur)
                enum_name = name if kind in ("ENUM", "ENUM64") else ""
                if enum_name:
                    self.enums[enum_name] = {}
            elif cur is not None and line.startswith("\t'"):
                if enum_name:
                    m = re.match(r"\t'(\w+)' val=(-?\d+)", line)
                    if m:
                        self.enums[enum_name][int(m.group(2))] = m.group(1)
                    continue
                m = re.match(r"\t'([^']*)' type_id=(\d+) bits_offset=(\d+)", line)
                if m:
                    self.types[cur][2].append((m.group(1), int(m.group(2)), int(m.group(3))))

    @staticmethod
    def load(path: str = BTF_VMLINUX) -> Btf:
        try:
            p = subprocess.run(["bpftool", "btf", "dump", "file", path], capture_output=True, text=True,
                               timeout=60)
        except FileNotFoundError:
            raise TraceError("bpftool is not installed (apt-get install bpftool): it reads struct offsets "
                             "from the kernel's BTF") from None
        if p.returncode != 0:
            raise TraceError(f"bpftool btf dump file {path} failed: {p.stderr.strip() or p.returncode}")
        return Btf(p.stdout)

    def _strip(self, tid: int) -> int:
        while tid in self.types and self.types[tid][0] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT",
                                                            "TYPE_TAG"):
            tid = self.types[tid][3]
        return tid

    def _find(self, tid: int, member: str) -> tuple[int, int] | None:
        """(bit offset, type id) of `member`, looking through anonymous structs and unions."""
        tid = self._strip(tid)
        for name, mtid, bits in self.types.get(tid, ("", "", [], 0))[2]:
            if name == member:
                return bits, mtid
        for name, mtid, bits in self.types.get(tid, ("", "", [], 0))[2]:
            if name == "(anon)" and self.types.get(self._strip(mtid), ("",))[0] in ("STRUCT", "UNION"):
                found = self._find(mtid, member)
                if found is not None:
                    return bits + found[0], found[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        tid = self.by_name.get(("STRUCT", struct_name))
        if tid is None:
            raise TraceError(f"the kernel's BTF has no struct {struct_name}")
        bits = 0
        for part in path.split("."):
            found = self._find(tid, part)
            if found is None:
                raise TraceError(f"the kernel's BTF has no member {path} in struct {struct_name}")
            bits += found[0]
            tid = found[1]
        if bits % 8:
            raise TraceError(f"struct {struct_name}.{path} is a bit field")
        return bits // 8


def reason_names(fmt: TracepointFormat, btf: Btf | None) -> dict[int, str]:
    """Drop reason names as this kernel defines them: the tracepoint's own table, else BTF."""
    if fmt.reasons:
        return dict(fmt.reasons)
    if btf is not None and "skb_drop_reason" in btf.enums:
        return {v: n.removeprefix("SKB_DROP_REASON_") for v, n in btf.enums["skb_drop_reason"].items()}
    return {}


def _header_version(path: str) -> tuple[int, ...]:
    m = re.search(r"linux-headers-(\d+)\.(\d+)\.(\d+)(?:-(\d+))?", path)
    return tuple(int(x or 0) for x in m.groups()) if m else (0,)


def _overlay(sources: list[str], dest: str) -> None:
    """A tree of symlinks merging Debian's split header packages (the arch part first)."""
    os.makedirs(dest, exist_ok=True)
    names: dict[str, list[str]] = {}
    for src in sources:
        for name in os.listdir(src):
            names.setdefault(name, []).append(os.path.join(src, name))
    for name, paths in names.items():
        target = os.path.join(dest, name)
        dirs = [p for p in paths if os.path.isdir(p)]
        if len(dirs) > 1:
            _overlay(dirs, target)
        elif not os.path.lexists(target):
            os.symlink(paths[0], target)


def kernel_headers() -> str | None:
    """Make sure bcc finds kernel headers; returns the BCC_KERNEL_SOURCE set, or None when bcc finds
    them itself (headers for the running kernel under /lib/modules, or BCC_KERNEL_SOURCE given).

    This program reads no kernel struct through headers (offsets come from BTF), so headers of
    another kernel version serve: bcc needs them only for its own helper definitions. Debian
    ships none for a custom kernel; its own kernel's (linux-headers-amd64) are split into an arch
    package and a -common one, which bcc can only use as one tree: a symlink overlay of the two
    is made once under $NETC_STATE_DIR/bcc/."""
    release = os.uname().release
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.isdir(f"/lib/modules/{release}/build/include"):
        return None
    found = []
    for d in glob.glob("/usr/src/linux-headers-*"):
        if d.endswith("-common") or "-common-" in d or not os.path.isdir(os.path.join(d, "include")):
            continue
        complete = os.path.exists(os.path.join(d, "include/linux/kconfig.h"))
        common = None
        if not complete:
            ver = os.path.basename(d).removeprefix("linux-headers-")
            src = f"/lib/modules/{ver}/source"
            cands = [os.path.realpath(src)] if os.path.isdir(src) else []
            cands.append(re.sub(r"-[a-z0-9]+$", "-common", d))
            common = next((c for c in cands if os.path.exists(os.path.join(c, "include/linux/kconfig.h"))), None)
            if common is None:
                continue
        found.append((_header_version(d), d, common))
    if not found:
        raise TraceError(f"bcc needs kernel headers to compile its helpers: there are none for {release} "
                         f"(no /lib/modules/{release}/build, CONFIG_IKHEADERS is off) and no Debian "
                         "headers under /usr/src; install linux-headers-amd64 (make setup does)")
    _, d, common = max(found)
    if common is None:
        path = d
    else:
        from netc.runtime.state import state_dir

        path = os.path.join(state_dir(), "bcc", os.path.basename(d) + "+common")
        if not os.path.exists(os.path.join(path, "include/linux/kconfig.h")):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".headers-", dir=os.path.dirname(path))
            _overlay([d, common], tmp)
            if os.path.lexists(path):
                shutil.rmtree(path)     # an incomplete overlay; rmtree removes symlinks, never their targets
            os.rename(tmp, path)
    os.environ["BCC_KERNEL_SOURCE"] = path
    return path


def import_bcc() -> Any:
    """bcc's Python package from Debian's python3-bpfcc, without putting the whole system
    site-packages on the path (PyPI's `bcc` is an unrelated package and must never be used)."""
    if "bcc" in sys.modules and hasattr(sys.modules["bcc"], "BPF"):
        return sys.modules["bcc"]
    pkg = next((d for d in BCC_DIRS if os.path.exists(os.path.join(d, "__init__.py"))), None)
    if pkg is None:
        raise TraceError("bcc is not installed: its Python package comes from Debian "
                         "(apt-get install python3-bpfcc bpfcc-tools; make setup does); "
                         "PyPI's `bcc` is an unrelated package")
    spec = importlib.util.spec_from_file_location("bcc", os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    if spec is None or spec.loader is None:
        raise TraceError(f"cannot import bcc from {pkg}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # libbcc.so missing or mismatched: say which
        del sys.modules["bcc"]
        raise TraceError(f"cannot import bcc from {pkg}: {type(exc).__name__}: {exc}") from None
    return module


# ---------------------------------------------------------------------- what to watch
@dataclass
class WatchEntry:
    container: str
    side: str            # "host" (host-side veth, node namespace) | "container" (its own namespace)
    netns: str           # path of the namespace
    inode: int
    ifindex: int         # 0: every device of that namespace
    interface: str


@dataclass
class Watch:
    what: str            # "lab demo-3e6a" | "target demo-3e6a"
    entries: list[WatchEntry] = field(default_factory=list)
    netc_interfaces: set[tuple[int, int]] = field(default_factory=set)   # (inode, ifindex) netc attaches to

    def describe(self) -> str:
        names = sorted({e.container for e in self.entries})
        hosts = sum(1 for e in self.entries if e.side == "host")
        netc = f", netc attached to {len(self.netc_interfaces)}" if self.netc_interfaces else ", netc not attached"
        return f"{self.what}: {len(names)} container(s) ({', '.join(names)}), {hosts} host-side veth(s){netc}, " \
               f"and {sum(1 for e in self.entries if e.side == 'container')} container namespace(s)"


def _netns_path(name: str) -> str:
    return name if "/" in name else os.path.join("/run/netns", name)


def _ifindexes(node_netns: str | None) -> dict[str, int]:
    if node_netns is None:
        return {n: i for i, n in socket.if_nameindex()}
    from netc.runtime.netns import in_netns

    with in_netns(node_netns):
        return {n: i for i, n in socket.if_nameindex()}


def _netc_interfaces(target: str) -> set[str]:
    """The host-side veths netc has attached to for `target` (a lab's target has the lab's name)."""
    from netc.runtime.state import State, state_dir

    if not os.path.exists(os.path.join(state_dir(), "state.db")):
        return set()
    with State() as st:
        return {a.interface for a in st.attachments(target)}


def resolve_watch(*, target: str | None = None, lab: str | None = None,
                  containers: tuple[str, ...] | list[str] = ()) -> Watch:
    """The interfaces of a lab's or a loaded target's containers, as (netns inode, ifindex)."""
    if target and lab:
        raise TraceError("say either --target or --lab, not both")
    if target is None and lab is None:
        from netc.runtime.state import State, state_dir

        names: list[str] = []
        if os.path.exists(os.path.join(state_dir(), "state.db")):
            with State() as st:
                names = [t[0] for t in st.targets()]
        if len(names) == 1:
            target = names[0]
        else:
            from netc.runtime.lab import list_labs

            labs = list_labs()
            if not labs:
                raise TraceError("nothing to watch: no target is loaded and no lab is up; "
                                 "say --target T or --lab L")
            if names:
                raise TraceError(f"several targets are loaded ({', '.join(names)}): say --target T or --lab L")
            lab = labs[-1].name
    if lab is not None:
        from netc.runtime.lab import lab_by_name

        lb = lab_by_name(lab)
        what, node_netns = f"lab {lb.name}", lb.node_netns
        rows = [(c.name, c.netns, c.interface) for c in lb.containers]
    else:
        from netc.runtime.loader import reload_inventory
        from netc.runtime.state import State

        with State() as st:
            row = st.target(str(target))
        if row is None:
            raise TraceError(f"no target `{target}` is loaded (see `netc status`)")
        inv = reload_inventory(row[1])
        what, node_netns = f"target {row[0]}", row[2]
        rows = [(c.name, c.netns, c.interface) for c in inv.containers]
    if containers:
        unknown = sorted(set(containers) - {r[0] for r in rows})
        if unknown:
            raise TraceError(f"{what} has no container {', '.join(unknown)} "
                             f"(it has {', '.join(r[0] for r in rows) or 'none'})")
        rows = [r for r in rows if r[0] in containers]
    attached = _netc_interfaces(what.split(" ", 1)[1])
    node_path = _netns_path(node_netns) if node_netns else "/proc/self/ns/net"
    try:
        node_inode = os.stat(node_path).st_ino
        by_name = _ifindexes(node_netns)
    except (OSError, NetcError) as exc:
        raise TraceError(f"{what}: the node namespace {node_path} is not there: {exc}") from None
    w = Watch(what)
    for name, netns, interface in rows:
        if interface and interface in by_name:
            w.entries.append(WatchEntry(name, "host", node_path, node_inode, by_name[interface], interface))
            if interface in attached:
                w.netc_interfaces.add((node_inode, by_name[interface]))
        if netns:
            path = _netns_path(netns)
            try:
                w.entries.append(WatchEntry(name, "container", path, os.stat(path).st_ino, 0, "*"))
            except OSError:
                pass
    if not w.entries:
        raise TraceError(f"{what}: none of its containers' interfaces or namespaces exist")
    return w


# ---------------------------------------------------------------------- the BPF program
PROGRAM = r"""
struct watch_key { u32 inum; u32 ifindex; };
struct drop_event {
    u64 ts;
    u64 location;
    u32 reason;
    u32 inum;
    u32 ifindex;
    u32 len;
    u32 entry;       /* the watch entry that matched */
    u16 protocol;    /* ethertype, host order */
    u8 l4;
    u8 family;       /* 4, 6 or 0 */
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    char ifname[16];
};

BPF_HASH(watch, struct watch_key, u32, 4096);
BPF_RINGBUF_OUTPUT(drops, 256);
BPF_ARRAY(lost, u64, 1);

static __always_inline u64 rd64(u64 addr) { u64 v = 0; bpf_probe_read_kernel(&v, 8, (void *)addr); return v; }
static __always_inline u32 rd32(u64 addr) { u32 v = 0; bpf_probe_read_kernel(&v, 4, (void *)addr); return v; }
static __always_inline u16 rd16(u64 addr) { u16 v = 0; bpf_probe_read_kernel(&v, 2, (void *)addr); return v; }

int netc_kfree_skb(void *ctx)
{
    u8 raw[TP_SIZE];
    __builtin_memset(raw, 0, sizeof(raw));
    bpf_probe_read_kernel(raw, sizeof(raw), ctx);
    u64 skb = 0, location = 0;
    u32 reason = 0;
    u16 protocol = 0;
    __builtin_memcpy(&skb, raw + TP_SKBADDR, 8);
    __builtin_memcpy(&location, raw + TP_LOCATION, 8);
    __builtin_memcpy(&protocol, raw + TP_PROTOCOL, 2);
    __builtin_memcpy(&reason, raw + TP_REASON, 4);
    if (!skb)
        return 0;

    struct watch_key key = {};
    u64 dev = rd64(skb + OFF_SKB_DEV);
    u64 net = 0;
    if (dev) {
        net = rd64(dev + OFF_DEV_NET);
        key.ifindex = rd32(dev + OFF_DEV_IFINDEX);
    } else {
        u64 sk = rd64(skb + OFF_SKB_SK);
        if (!sk)
            return 0;
        net = rd64(sk + OFF_SK_NET);
    }
    if (!net)
        return 0;
    key.inum = rd32(net + OFF_NET_INUM);
    u32 *entry = watch.lookup(&key);
    if (!entry) {
        u32 ifindex = key.ifindex;
        key.ifindex = 0;
        entry = watch.lookup(&key);
        key.ifindex = ifindex;
        if (!entry)
            return 0;
    }

    struct drop_event *e = drops.ringbuf_reserve(sizeof(struct drop_event));
    if (!e) {
        int zero = 0;
        u64 *n = lost.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts = bpf_ktime_get_ns();
    e->location = location;
    e->reason = reason;
    e->inum = key.inum;
    e->ifindex = key.ifindex;
    e->entry = *entry;
    e->protocol = protocol;
    e->len = rd32(skb + OFF_SKB_LEN);
    if (dev)
        bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), (void *)(dev + OFF_DEV_NAME));

    u64 head = rd64(skb + OFF_SKB_HEAD);
    u16 nh = rd16(skb + OFF_SKB_NETWORK_HEADER);
    if (head && nh != 0xffff) {
        u64 ip = head + nh;
        u8 b[40];
        __builtin_memset(b, 0, sizeof(b));
        bpf_probe_read_kernel(b, sizeof(b), (void *)ip);
        u64 l4 = 0;
        if (protocol == 0x0800 && (b[0] >> 4) == 4) {
            e->family = 4;
            e->l4 = b[9];
            __builtin_memcpy(e->saddr, b + 12, 4);
            __builtin_memcpy(e->daddr, b + 16, 4);
            if (((b[6] & 0x1f) | b[7]) == 0)           /* first fragment or not a fragment */
                l4 = ip + (b[0] & 0xf) * 4;
        } else if (protocol == 0x86DD && (b[0] >> 4) == 6) {
            e->family = 6;
            e->l4 = b[6];
            __builtin_memcpy(e->saddr, b + 8, 16);
            __builtin_memcpy(e->daddr, b + 24, 16);
            l4 = ip + 40;
        }
        if (l4 && (e->l4 == 6 || e->l4 == 17 || e->l4 == 132)) {
            e->sport = __builtin_bswap16(rd16(l4));
            e->dport = __builtin_bswap16(rd16(l4 + 2));
        } else if (l4 && (e->l4 == 1 || e->l4 == 58)) {
            e->dport = __builtin_bswap16(rd16(l4));   /* ICMP: type << 8 | code */
        }
    }
    drops.ringbuf_submit(e, 0);
    return 0;
}
"""

EVENT = struct.Struct("<QQIIIIIHBB16s16sHH16s")
PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def program_text(fmt: TracepointFormat, btf: Btf) -> str:
    defs = {
        "TP_SIZE": fmt.size,
        "TP_SKBADDR": fmt.fields["skbaddr"][0],
        "TP_LOCATION": fmt.fields["location"][0],
        "TP_PROTOCOL": fmt.fields["protocol"][0],
        "TP_REASON": fmt.fields["reason"][0],
        "OFF_SKB_DEV": btf.offset("sk_buff", "dev"),
        "OFF_SKB_SK": btf.offset("sk_buff", "sk"),
        "OFF_SKB_LEN": btf.offset("sk_buff", "len"),
        "OFF_SKB_HEAD": btf.offset("sk_buff", "head"),
        "OFF_SKB_NETWORK_HEADER": btf.offset("sk_buff", "network_header"),
        "OFF_DEV_NET": btf.offset("net_device", "nd_net.net"),
        "OFF_DEV_IFINDEX": btf.offset("net_device", "ifindex"),
        "OFF_DEV_NAME": btf.offset("net_device", "name"),
        "OFF_NET_INUM": btf.offset("net", "ns.inum"),
        "OFF_SK_NET": btf.offset("sock", "__sk_common.skc_net.net"),
    }
    return "".join(f"#define {k} {v}\n" for k, v in defs.items()) + PROGRAM


# ---------------------------------------------------------------------- drops
@dataclass
class Drop:
    ts_ns: int
    time: float
    kind: str                 # netc | tc | kernel
    reason: str
    reason_code: int
    container: str
    side: str                 # host | container
    interface: str
    ifindex: int
    netns_inode: int
    protocol: str | None
    src: str | None
    sport: int | None
    dst: str | None
    dport: int | None
    bytes: int
    location: str             # the kernel function that freed it: symbol+offset
    icmp_type: int | None = None
    icmp_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time)) + \
            f".{int(self.time * 1000) % 1000:03d}Z"
        d["kind_text"] = KIND_TEXT[self.kind]
        return d


def format_drop(d: Drop) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(d.time)) + f".{int(d.time * 1000) % 1000:03d}"
    if d.interface == "-":
        where = "a socket, in the container" if d.side == "container" else "a socket"
    else:
        where = f"{d.interface} ({'host side' if d.side == 'host' else 'in the container'})"
    if d.src and d.dst:
        if d.protocol in ("tcp", "udp", "sctp"):
            pkt = f"{d.protocol} {_hostport(d.src, d.sport)} -> {_hostport(d.dst, d.dport)}"
        else:
            pkt = f"{d.protocol or 'ip'} {d.src} -> {d.dst}"
            if d.icmp_type is not None:
                pkt += f" type {d.icmp_type} code {d.icmp_code}"
    else:
        pkt = "(no IP header)"
    return f"{clock}  {KIND_TEXT[d.kind]:<18} {d.reason:<20} {d.container:<12} {where:<30} {pkt}  " \
           f"{d.bytes} B  at {d.location}"


def _hostport(addr: str, port: int | None) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class DropTracer:
    """Compile, load and attach the tracepoint program; iterate drops; detach on exit."""

    def __init__(self, watch: Watch):
        self.watch = watch
        self.lost = 0
        self.bpf: Any = None
        self._pending: collections.deque[Drop] = collections.deque()

    def __enter__(self) -> DropTracer:
        if os.geteuid() != 0:
            raise TraceError("needs root: tracing kernel drops loads a BPF program (CAP_BPF, CAP_PERFMON)")
        base = ensure_tracefs()
        fmt = read_format(os.path.join(base, FORMAT))
        btf = Btf.load()
        self.reasons = reason_names(fmt, btf)
        text = program_text(fmt, btf)
        kernel_headers()
        bcc = import_bcc()
        self.bpf = _quiet_compile(bcc, text)
        try:
            table = self.bpf["watch"]
            for i, e in enumerate(self.watch.entries):
                table[table.Key(e.inode, e.ifindex)] = table.Leaf(i)
            self.bpf.attach_tracepoint(tp="skb:kfree_skb", fn_name="netc_kfree_skb")
            self.bpf["drops"].open_ring_buffer(self._on_event)
        except Exception as exc:
            self.close()
            raise TraceError(f"cannot attach to skb:kfree_skb: {type(exc).__name__}: {exc}") from None
        self._mono0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._wall0 = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.lost = int(self.bpf["lost"][ctypes.c_int(0)].value)
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None

    def _on_event(self, _ctx: Any, data: Any, size: int) -> None:
        raw = ctypes.string_at(data, min(size, EVENT.size))
        if len(raw) < EVENT.size:
            return
        self._pending.append(self.decode(raw))

    def decode(self, raw: bytes) -> Drop:
        (ts, location, reason, inum, ifindex, length, entry, _ethertype, l4, family, saddr, daddr, sport, dport,
         ifname) = EVENT.unpack(raw)
        e = self.watch.entries[entry] if entry < len(self.watch.entries) else None
        name = self.reasons.get(reason, f"reason {reason}")
        if name in NETC_REASONS:
            kind = "netc" if (inum, ifindex) in self.watch.netc_interfaces else "tc"
        else:
            kind = "kernel"
        src = dst = None
        if family == 4:
            src, dst = str(ipaddress.IPv4Address(saddr[:4])), str(ipaddress.IPv4Address(daddr[:4]))
        elif family == 6:
            src, dst = str(ipaddress.IPv6Address(saddr)), str(ipaddress.IPv6Address(daddr))
        proto = PROTOS.get(l4, str(l4)) if family else None
        ports = proto in ("tcp", "udp", "sctp")
        icmp = (dport >> 8, dport & 0xff) if proto in ("icmp", "icmpv6") else None
        try:
            where = self.bpf.ksym(location, show_offset=True).decode() if self.bpf is not None else hex(location)
        except Exception:
            where = hex(location)
        return Drop(
            ts_ns=ts, time=self._wall0 - (self._mono0 - ts) / 1e9, kind=kind, reason=name, reason_code=reason,
            container=e.container if e else "?", side=e.side if e else "?",
            interface=ifname.split(b"\0", 1)[0].decode(errors="replace") or "-",
            ifindex=ifindex, netns_inode=inum, protocol=proto, src=src, sport=sport if ports else None,
            dst=dst, dport=dport if ports else None, bytes=length, location=where,
            icmp_type=icmp[0] if icmp else None, icmp_code=icmp[1] if icmp else None)

    def drops(self, duration: float | None = None) -> Iterator[Drop]:
        deadline = None if duration is None else time.monotonic() + duration
        while True:
            wait = 200 if deadline is None else int(max(0.0, min(0.2, deadline - time.monotonic())) * 1000)
            self.bpf.ring_buffer_poll(timeout=wait)
            while self._pending:
                yield self._pending.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                self.bpf.ring_buffer_consume()
                while self._pending:
                    yield self._pending.popleft()
                return


def _quiet_compile(bcc: Any, text: str) -> Any:
    """bcc.BPF(text) with bcc's and clang's messages captured: on failure they become the error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            try:
                return bcc.BPF(text=text)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        except Exception as exc:
            log.seek(0)
            lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
            detail = "\n  ".join(lines[-12:])
            raise TraceError(f"bcc could not compile the drop tracer: {exc}" +
                             (f"\n  {detail}" if detail else "")) from None


def drops_json(drops: list[Drop]) -> str:
    return "".join(json.dumps(d.to_json()) + "\n" for d in drops)
