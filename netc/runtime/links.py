"""Attach programs to interfaces: tcx links (kernel ≥ 6.6), or tc clsact filters where tcx is missing.

One small function per hook, as cilium/ebpf's link package does. Links are made with libbpf's
generic bpf_link_create/bpf_link_update/bpf_link_detach: Debian's libbpf 1.1 predates the tcx
helpers but passes attach types 46/47 (tcx) and 37 (XDP) through to the kernel. A tcx link
dies with its fd unless pinned, so links are pinned under bpffs; replacing the program of a
link (BPF_LINK_UPDATE) is atomic: a packet sees the old program or the new one, never neither.

The fallback is chosen by probing (a tcx link on a veth made for the probe), not by version.
tc filters are replaced in place with `tc filter replace` semantics (same prio and handle),
which is atomic too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import functools
import os
from dataclasses import dataclass

from netc.errors import AttachError, NotSupportedError

_SYS_BPF = 321
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

TC_PRIO = 0xC0DE & 0xFFFF   # our tc filter's priority (fallback mode)
TC_HANDLE = 1


class Hook(enum.Enum):
    """Where on the host-side veth: its ingress carries traffic *from* the container."""

    INGRESS = "ingress"
    EGRESS = "egress"

    @property
    def tcx_type(self) -> int:
        return BPF_TCX_INGRESS if self is Hook.INGRESS else BPF_TCX_EGRESS


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_uint8]) -> int:
    ctypes.set_errno(0)
    ret = _libc().syscall(_SYS_BPF, ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _attr(size: int = 64) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * size)()


def _put32(attr: ctypes.Array[ctypes.c_uint8], offset: int, value: int) -> None:
    ctypes.memmove(ctypes.addressof(attr) + offset, value.to_bytes(4, "little"), 4)


BPF_XDP = 37
XDP_FLAGS_SKB_MODE = 1 << 1


@functools.cache
def _libbpf() -> ctypes.CDLL:
    from netc.runtime.libbpf import lib

    bpf = lib()
    for name, args in (("bpf_link_create", [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]),
                       ("bpf_link_update", [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]),
                       ("bpf_link_detach", [ctypes.c_int])):
        fn = getattr(bpf, name)
        fn.restype = ctypes.c_int
        fn.argtypes = args
    return bpf


def _call(fn: str, *args: object) -> int:
    ctypes.set_errno(0)
    ret = getattr(_libbpf(), fn)(*args)
    if ret < 0:
        err = -ret if ret < -1 else (ctypes.get_errno() or 1)
        raise OSError(err, os.strerror(err))
    return int(ret)


def tcx_attach(prog_fd: int, ifindex: int, hook: Hook) -> int:
    """Create a tcx link (in the caller's network namespace); returns the link fd."""
    try:
        return _call("bpf_link_create", prog_fd, ifindex, hook.tcx_type, None)
    except OSError as exc:
        if exc.errno in (22, 95, 524):   # EINVAL, EOPNOTSUPP, ENOTSUPP: no tcx in this kernel
            raise NotSupportedError(f"tcx attach on ifindex {ifindex}: {exc.strerror}") from None
        raise AttachError(f"tcx {hook.value} attach on ifindex {ifindex}: {exc.strerror}") from None


class _XdpOpts(ctypes.Structure):
    # struct bpf_link_create_opts (libbpf 1.1): sz, flags, then the per-type union
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("_union", ctypes.c_uint64 * 6)]


def xdp_attach(prog_fd: int, ifindex: int, *, generic: bool = False) -> int:
    """Create an XDP link (native by default, generic/SKB mode on request); returns the link fd."""
    opts = _XdpOpts(sz=ctypes.sizeof(_XdpOpts), flags=XDP_FLAGS_SKB_MODE if generic else 0)
    try:
        return _call("bpf_link_create", prog_fd, ifindex, BPF_XDP, ctypes.byref(opts))
    except OSError as exc:
        if exc.errno in (95, 524):
            raise NotSupportedError(f"XDP on ifindex {ifindex}: {exc.strerror}") from None
        raise AttachError(f"XDP attach on ifindex {ifindex}: {exc.strerror}") from None


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the program of a link in one step."""
    try:
        _call("bpf_link_update", link_fd, new_prog_fd, None)
    except OSError as exc:
        raise AttachError(f"link update: {exc.strerror}") from None


def link_detach(link_fd: int) -> None:
    try:
        _call("bpf_link_detach", link_fd)
    except OSError as exc:
        if exc.errno != 2:   # ENOENT: the device went away, so did the attachment
            raise AttachError(f"link detach: {exc.strerror}") from None


@dataclass(frozen=True)
class LinkInfo:
    link_id: int
    prog_id: int
    ifindex: int
    attach_type: int


def _info(fd: int, size: int) -> bytes:
    buf = (ctypes.c_uint8 * size)()
    attr = _attr()
    _put32(attr, 0, fd)
    _put32(attr, 4, size)
    ctypes.memmove(ctypes.addressof(attr) + 8, ctypes.addressof(buf).to_bytes(8, "little"), 8)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return bytes(buf)


def link_info(link_fd: int) -> LinkInfo:
    raw = _info(link_fd, 64)
    i = lambda off: int.from_bytes(raw[off:off + 4], "little")  # noqa: E731
    return LinkInfo(i(4), i(8), i(16), i(20))


def prog_id(prog_fd: int) -> int:
    raw = _info(prog_fd, 256)
    return int.from_bytes(raw[4:8], "little")


# ---------------------------------------------------------------------- tc clsact fallback
def tc_attach(prog_fd: int, ifindex: int, hook: Hook, name: str) -> None:
    """Add or atomically replace our direct-action filter on the clsact qdisc (pyroute2)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    parent = 0xFFFFFFF2 if hook is Hook.INGRESS else 0xFFFFFFF3
    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code != 17:   # EEXIST: the qdisc is there already
                raise AttachError(f"tc clsact on ifindex {ifindex}: {exc}") from None
        try:
            ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, parent=parent, fd=prog_fd, name=name,
                   direct_action=True, prio=TC_PRIO, protocol=0x0003)
        except NetlinkError as exc:
            raise AttachError(f"tc {hook.value} filter on ifindex {ifindex}: {exc}") from None


def tc_detach(ifindex: int, hook: Hook) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    parent = 0xFFFFFFF2 if hook is Hook.INGRESS else 0xFFFFFFF3
    with IPRoute() as ipr:
        try:
            ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=parent, prio=TC_PRIO, protocol=0x0003)
        except NetlinkError as exc:
            if exc.code not in (2, 19, 22):  # gone already
                raise AttachError(f"tc filter removal on ifindex {ifindex}: {exc}") from None


def tc_prog_id(ifindex: int, hook: Hook) -> int | None:
    """The id of the program our tc filter runs, or None when there is none.

    pyroute2 does not decode TCA_BPF_ID, so this asks `tc -j` (a child process inherits the
    calling thread's network namespace; no `-n`, which would remount /sys).
    """
    import json
    import socket
    import subprocess

    try:
        ifname = socket.if_indextoname(ifindex)
    except OSError:
        return None
    proc = subprocess.run(["tc", "-j", "filter", "show", "dev", ifname, hook.value],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    for f in json.loads(proc.stdout):
        if f.get("pref") == TC_PRIO and f.get("kind") == "bpf":
            prog = f.get("options", {}).get("prog", {})
            if "id" in prog:
                return int(prog["id"])
    return None


@functools.cache
def tcx_supported() -> bool:
    """Probe once: can this kernel create a tcx link? (a veth pair made for the probe, then removed)"""
    from pyroute2 import IPRoute

    from netc.runtime.libbpf import BpfObject  # noqa: F401  (ensures libbpf is loadable)

    name = f"ncprobe{os.getpid() % 100000}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=name + "p")
        try:
            idx = ipr.link_lookup(ifname=name)[0]
            fd = _probe_prog()
            try:
                link = tcx_attach(fd, idx, Hook.INGRESS)
                os.close(link)
                return True
            except NotSupportedError:
                return False
            finally:
                os.close(fd)
        finally:
            ipr.link("del", ifname=name)


def _probe_prog(prog_type: int = 3, retval: int = 0) -> int:
    """A two-instruction program (r0 = retval; exit) of a type (3 SCHED_CLS, 6 XDP), for probes."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000B7 | (retval << 32), 0x0000000000000095)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _attr(128)
    _put32(attr, 0, prog_type)
    _put32(attr, 4, 2)            # insn_cnt
    ctypes.memmove(ctypes.addressof(attr) + 8, ctypes.addressof(insns).to_bytes(8, "little"), 8)
    ctypes.memmove(ctypes.addressof(attr) + 16, ctypes.addressof(lic).to_bytes(8, "little"), 8)
    try:
        return _bpf(5, attr)      # BPF_PROG_LOAD
    except OSError as exc:
        raise NotSupportedError(f"cannot load a probe program: {exc.strerror}") from None
