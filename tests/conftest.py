"""Shared test configuration.

Tests marked `kernel` need root and a kernel that lets us use bpf(). Without them they skip with
the reason, except when NETC_REQUIRE_KERNEL=1 (CI), where they fail instead: a CI machine that
silently skipped every kernel test would report green for code it never ran.
"""

from __future__ import annotations

import ctypes
import functools
import os

import pytest

_SYS_BPF = 321  # x86_64
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_ARRAY = 2


@functools.cache
def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN) to load BPF programs"
    try:
        ctypes.CDLL("libbpf.so.1")
    except OSError:
        return "libbpf.so.1 is not installed (apt-get install libbpf1)"
    libc = ctypes.CDLL(None, use_errno=True)
    # union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, ...
    attr = (ctypes.c_uint32 * 32)(_BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    fd = libc.syscall(_SYS_BPF, _BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        return f"bpf() is unavailable: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    return None


def require_kernel() -> bool:
    return os.environ.get("NETC_REQUIRE_KERNEL") == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable()
    if reason is None:
        return
    if require_kernel():
        pytest.fail(f"NETC_REQUIRE_KERNEL=1 but this kernel test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)
