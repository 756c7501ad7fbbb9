"""Attach programs to interfaces: tcx links (kernel ≥ 6.6), or tc clsact filters where tcx is missing.

One small function per hook, as cilium/ebpf's link package does. tcx is used through the raw
bpf(2) syscall because Debian's libbpf 1.1 predates its helpers (attach types 46/47). A tcx link
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
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_DETACH = 34
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


def tcx_attach(prog_fd: int, ifindex: int, hook: Hook) -> int:
    """Create a tcx link (in the caller's network namespace); returns the link fd."""
    attr = _attr()
    _put32(attr, 0, prog_fd)
    _put32(attr, 4, ifindex)
    _put32(attr, 8, hook.tcx_type)
    try:
        return _bpf(BPF_LINK_CREATE, attr)
    except OSError as exc:
        if exc.errno in (22, 95, 524):   # EINVAL, EOPNOTSUPP, ENOTSUPP: no tcx in this kernel
            raise NotSupportedError(f"tcx attach on ifindex {ifindex}: {exc.strerror}") from None
        raise AttachError(f"tcx {hook.value} attach on ifindex {ifindex}: {exc.strerror}") from None


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the program of a link in one step."""
    attr = _attr()
    _put32(attr, 0, link_fd)
    _put32(attr, 4, new_prog_fd)
    try:
        _bpf(BPF_LINK_UPDATE, attr)
    except OSError as exc:
        raise AttachError(f"link update: {exc.strerror}") from None


def link_detach(link_fd: int) -> None:
    attr = _attr()
    _put32(attr, 0, link_fd)
    try:
        _bpf(BPF_LINK_DETACH, attr)
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
    """The id of the program our tc filter runs, or None when there is none."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    parent = 0xFFFFFFF2 if hook is Hook.INGRESS else 0xFFFFFFF3
    with IPRoute() as ipr:
        try:
            filters = ipr.get_filters(ifindex, parent=parent)
        except NetlinkError:
            return None
    for f in filters:
        opts = f.get_attr("TCA_OPTIONS")
        if opts is not None and f["info"] >> 16 == TC_PRIO:
            pid = opts.get_attr("TCA_BPF_ID")
            if pid:
                return int(pid)
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


def _probe_prog() -> int:
    """A two-instruction SCHED_CLS program (r0 = 0; exit) loaded with bpf(BPF_PROG_LOAD)."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000B7, 0x0000000000000095)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _attr(128)
    _put32(attr, 0, 3)            # prog_type SCHED_CLS
    _put32(attr, 4, 2)            # insn_cnt
    ctypes.memmove(ctypes.addressof(attr) + 8, ctypes.addressof(insns).to_bytes(8, "little"), 8)
    ctypes.memmove(ctypes.addressof(attr) + 16, ctypes.addressof(lic).to_bytes(8, "little"), 8)
    try:
        return _bpf(5, attr)      # BPF_PROG_LOAD
    except OSError as exc:
        raise NotSupportedError(f"cannot load a probe program: {exc.strerror}") from None
