"""Network namespace helpers: create, delete, enter.

Named namespaces are bind mounts under /run/netns, exactly as `ip netns add` makes them, so
`ip netns list` shows them and `nsenter --net=/run/netns/NAME` enters them.

We only ever enter the *network* namespace, with setns(fd, CLONE_NEWNET) on the calling thread
(or in a child between fork and exec). `ip netns exec` and `tc -n` also unshare the mount
namespace and remount /sys, which hides bpffs; nothing here does that.

    with in_netns("netc-demo-1a2b-node"):
        ipr = IPRoute()          # a netlink socket of that namespace, usable after we return
    proc = run_in_netns("netc-demo-1a2b-web-1", ["ss", "-ltn"])
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from netc.errors import NetcError

NETNS_RUN_DIR = "/run/netns"

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

_create_lock = threading.Lock()


class NetnsError(NetcError):
    """A network namespace could not be created, entered or removed."""


def _oserror(what: str) -> NetnsError:
    err = ctypes.get_errno()
    hint = "; network namespaces need root (CAP_SYS_ADMIN)" if err == errno.EPERM else ""
    return NetnsError(f"{what}: {os.strerror(err)} (errno {errno.errorcode.get(err, err)}){hint}")


def netns_path(name_or_path: str) -> str:
    """/run/netns/NAME for a name; a path (anything with a `/`) is returned as it is."""
    if "/" in name_or_path:
        return name_or_path
    if not name_or_path or name_or_path in (".", ".."):
        raise NetnsError(f"`{name_or_path}` is not a namespace name")
    return os.path.join(NETNS_RUN_DIR, name_or_path)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(2) for the calling thread."""
    if _libc.setns(fd, nstype) != 0:
        raise _oserror("setns")


def netns_exists(name: str) -> bool:
    """True when /run/netns/NAME exists and is a mounted namespace (not a stale empty file)."""
    path = netns_path(name)
    try:
        st = os.stat(path)
        parent = os.stat(os.path.dirname(path))
    except OSError:
        return False
    return st.st_dev != parent.st_dev  # the bind mount of an nsfs inode lives on nsfs


def list_netns(prefix: str = "") -> list[str]:
    """Names under /run/netns starting with `prefix`."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def _ensure_run_dir() -> None:
    """Create /run/netns as a shared mount point, like iproute2, so later mounts propagate."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    d = NETNS_RUN_DIR.encode()
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        raise _oserror(f"mount --make-shared {NETNS_RUN_DIR}")
    # not a mount point yet: bind it onto itself, then make it shared
    if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
        raise _oserror(f"mount --bind {NETNS_RUN_DIR}")
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
        raise _oserror(f"mount --make-shared {NETNS_RUN_DIR}")


def create_netns(name: str) -> str:
    """Create the named network namespace /run/netns/NAME; returns its path.

    The new namespace is made by a short-lived thread (unshare + bind mount of its
    /proc/thread-self/ns/net), so the calling thread never changes namespace.
    """
    path = netns_path(name)
    with _create_lock:
        _ensure_run_dir()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    except FileExistsError:
        raise NetnsError(f"network namespace `{name}` already exists") from None
    except OSError as exc:
        raise NetnsError(f"cannot create {path}: {exc.strerror}") from None
    os.close(fd)
    failure: list[NetnsError] = []

    def make() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(_oserror("unshare(CLONE_NEWNET)"))
            return
        if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
            failure.append(_oserror(f"mount --bind /proc/thread-self/ns/net {path}"))

    t = threading.Thread(target=make, name=f"netns-create-{name}")
    t.start()
    t.join()
    if failure:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise failure[0]
    return path


def delete_netns(name: str, missing_ok: bool = True) -> None:
    """Unmount and remove /run/netns/NAME (the namespace dies with its last process and fd)."""
    path = netns_path(name)
    if not os.path.lexists(path):
        if missing_ok:
            return
        raise NetnsError(f"network namespace `{name}` does not exist")
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        raise _oserror(f"umount {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetnsError(f"cannot remove {path}: {exc.strerror}") from None


def _open_ns(name_or_path: str) -> int:
    path = netns_path(name_or_path)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"network namespace `{name_or_path}` does not exist") from None
    except OSError as exc:
        raise NetnsError(f"cannot open {path}: {exc.strerror}") from None


@contextlib.contextmanager
def in_netns(name_or_path: str) -> Iterator[None]:
    """Run the body with the calling thread in another network namespace, and always come back.

    Sockets (and pyroute2 IPRoute objects) opened inside stay bound to that namespace after the
    block ends; /proc/sys/net/... opened inside is that namespace's.
    """
    target = _open_ns(name_or_path)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        try:
            setns(target)
        except NetnsError as exc:
            raise NetnsError(f"cannot enter network namespace `{name_or_path}`: {exc}") from None
        try:
            yield
        finally:
            setns(home)  # if this fails the thread is stranded: let the error surface
    finally:
        os.close(target)
        os.close(home)


def run_in_netns(name: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start `argv` with its network namespace (only that one) switched to `name`.

    The child calls setns() between fork and exec; every other namespace, /sys and bpffs
    included, is the caller's. Extra keyword arguments go to subprocess.Popen.
    """
    if "preexec_fn" in popen_kwargs:
        raise TypeError("run_in_netns sets preexec_fn itself")
    fd = _open_ns(name)
    setns_fn = _libc.setns

    def enter() -> None:  # runs in the child, between fork and exec
        if setns_fn(fd, CLONE_NEWNET) != 0:
            raise OSError("setns")

    try:
        return subprocess.Popen(list(argv), preexec_fn=enter, **popen_kwargs)
    except subprocess.SubprocessError:  # preexec_fn failed: "Exception occurred in preexec_fn."
        raise NetnsError(f"cannot start {argv[0]} in network namespace `{name}`: setns failed") from None
    finally:
        os.close(fd)
