"""A small ctypes binding of libbpf (libbpf.so.1): open, load, maps, test runs, pinning.

Written against Debian 12's libbpf 1.1, which predates tcx: it does not know the `tcx/ingress`
and `tcx/egress` section names, so it opens such programs with type BPF_PROG_TYPE_UNSPEC and
would refuse to load them ("missing BPF prog type, check ELF section name"). `BpfObject.open_mem`
therefore gives every program in a `tcx/*` (or `tc*`) section the type BPF_PROG_TYPE_SCHED_CLS
and the expected attach type newer libbpf would give it (BPF_TCX_INGRESS / BPF_TCX_EGRESS); the
kernel loads SCHED_CLS programs the same way whichever hook they are later attached to.

Objects owning file descriptors (BpfObject, and Map when it came from bpf_obj_get) are context
managers and close them. Errors are netc.errors.LoadError, or VerifierError carrying the whole
verifier log when the kernel rejects a program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from netc.errors import LoadError, VerifierError

# enum bpf_prog_type / bpf_attach_type values used here (uapi linux/bpf.h)
BPF_PROG_TYPE_UNSPEC = 0
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff) in the uapi this kernel and libbpf 1.1 agree on
SKB_CTX_IFINDEX = 40  # offsetof(struct __sk_buff, ifindex)

LOG_BUF_SIZE = 16 << 20  # verifier logs of rejected programs can be long; keep the whole thing


class _OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts (libbpf 1.1)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_unused", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf 1.1: last field batch_size)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts of libbpf 1.1 (the fields up to map_ifindex)."""

    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", ctypes.c_uint32), ("btf_key_type_id", ctypes.c_uint32),
                ("btf_value_type_id", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("inner_map_fd", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("map_extra", ctypes.c_uint64), ("numa_node", ctypes.c_uint32),
                ("map_ifindex", ctypes.c_uint32)]


class _MapInfo(ctypes.Structure):
    """struct bpf_map_info (the prefix this code reads)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


assert ctypes.sizeof(_OpenOpts) == 80 and ctypes.sizeof(_TestRunOpts) == 80
assert ctypes.sizeof(_MapInfo) == 88 and ctypes.sizeof(_BatchOpts) == 24

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_vp, _cp, _int, _u32, _sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "libbpf_set_print": (_vp, [_PRINT_FN]),
    "bpf_object__open_mem": (_vp, [_vp, _sz, ctypes.POINTER(_OpenOpts)]),
    "bpf_object__load": (_int, [_vp]),
    "bpf_object__close": (None, [_vp]),
    "bpf_object__next_program": (_vp, [_vp, _vp]),
    "bpf_object__next_map": (_vp, [_vp, _vp]),
    "bpf_object__find_map_by_name": (_vp, [_vp, _cp]),
    "bpf_program__name": (_cp, [_vp]),
    "bpf_program__section_name": (_cp, [_vp]),
    "bpf_program__type": (_int, [_vp]),
    "bpf_program__set_type": (_int, [_vp, _int]),
    "bpf_program__expected_attach_type": (_int, [_vp]),
    "bpf_program__set_expected_attach_type": (_int, [_vp, _int]),
    "bpf_program__set_log_buf": (_int, [_vp, _vp, _sz]),
    "bpf_program__set_log_level": (_int, [_vp, _u32]),
    "bpf_program__fd": (_int, [_vp]),
    "bpf_program__insn_cnt": (_sz, [_vp]),
    "bpf_map__name": (_cp, [_vp]),
    "bpf_map__fd": (_int, [_vp]),
    "bpf_map__type": (_int, [_vp]),
    "bpf_map__key_size": (_u32, [_vp]),
    "bpf_map__value_size": (_u32, [_vp]),
    "bpf_map__max_entries": (_u32, [_vp]),
    "bpf_map__set_max_entries": (_int, [_vp, _u32]),
    "bpf_map__reuse_fd": (_int, [_vp, _int]),
    "bpf_map__btf_key_type_id": (_u32, [_vp]),
    "bpf_map__btf_value_type_id": (_u32, [_vp]),
    "bpf_map_update_elem": (_int, [_int, _vp, _vp, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (_int, [_int, _vp, _vp]),
    "bpf_map_delete_elem": (_int, [_int, _vp]),
    "bpf_map_get_next_key": (_int, [_int, _vp, _vp]),
    "bpf_map_update_batch": (_int, [_int, _vp, _vp, ctypes.POINTER(_u32), ctypes.POINTER(_BatchOpts)]),
    "bpf_map_lookup_batch": (_int, [_int, _vp, _vp, _vp, _vp, ctypes.POINTER(_u32), ctypes.POINTER(_BatchOpts)]),
    "bpf_prog_test_run_opts": (_int, [_int, ctypes.POINTER(_TestRunOpts)]),
    "bpf_map_create": (_int, [_int, _cp, _u32, _u32, _u32, ctypes.POINTER(_MapCreateOpts)]),
    "bpf_obj_pin": (_int, [_int, _cp]),
    "bpf_obj_get": (_int, [_cp]),
    "bpf_obj_get_info_by_fd": (_int, [_int, _vp, ctypes.POINTER(_u32)]),
}

_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
# libbpf's print callback is process-wide: one open/load at a time captures its messages.
_print_lock = threading.RLock()


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with argument and return types declared (LoadError if missing)."""
    global _lib, _libc
    with _lib_lock:
        if _lib is None:
            try:
                handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
            except OSError as e:
                raise LoadError(f"cannot load libbpf.so.1 ({e}); install it with: apt-get install libbpf1") from e
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.vsnprintf.restype = ctypes.c_int
            libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
            _libc = libc
            _lib = handle
        return _lib


def _errno_text(ret: int | None = None) -> tuple[int, str]:
    err = ctypes.get_errno()
    if ret is not None and ret < 0 and not err:
        err = -ret
    return err, os.strerror(err) if err else "unknown error"


class _Capture:
    """Collects libbpf's log messages while it is installed as libbpf's print callback."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._buf = ctypes.create_string_buffer(8192)

        def _print(level: int, fmt: bytes | None, ap: int | None) -> int:
            assert _libc is not None
            n = _libc.vsnprintf(self._buf, len(self._buf), fmt, ap)
            self.lines.append(self._buf.value.decode("utf-8", "replace"))
            return n

        self._fn = _PRINT_FN(_print)
        self._old: int | None = None

    def __enter__(self) -> _Capture:
        _print_lock.acquire()
        self._old = lib().libbpf_set_print(self._fn)
        return self

    def __exit__(self, *exc: object) -> None:
        # restore whatever was installed before (NULL silences libbpf, as the default would print to stderr)
        old = ctypes.cast(ctypes.c_void_p(self._old), _PRINT_FN) if self._old else _PRINT_FN()
        lib().libbpf_set_print(old)
        _print_lock.release()

    @property
    def text(self) -> str:
        return "".join(self.lines)


@dataclass(frozen=True, slots=True)
class TestRun:
    retval: int
    duration_ns: int
    data_out: bytes
    ctx_out: bytes | None = None


def skb_ctx(*, ifindex: int = 0, mark: int = 0, priority: int = 0) -> bytes:
    """A struct __sk_buff for prog_test_run's ctx_in.

    The kernel accepts only a few fields from it. `ifindex` picks the device the test skb
    appears on (skb->ifindex); it must name a device in the caller's network namespace, and 0 or
    1 mean the loopback device, which is what test runs use without a context.
    """
    buf = bytearray(SKB_CTX_SIZE)
    buf[8:12] = mark.to_bytes(4, "little")
    buf[32:36] = priority.to_bytes(4, "little")
    buf[SKB_CTX_IFINDEX:SKB_CTX_IFINDEX + 4] = ifindex.to_bytes(4, "little")
    return bytes(buf)


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, *, ctx: bytes | None = None,
                  data_out_size: int | None = None) -> TestRun:
    """Run a loaded program on `data` with BPF_PROG_TEST_RUN.

    Returns the program's return value, the average duration per run in ns and the packet as the
    program left it (and the context, when one was passed). Caveat: with repeat > 1 every run
    sees the same buffer and the same maps (DESIGN.md §7).
    """
    bpf = lib()
    data_in = ctypes.create_string_buffer(data, len(data))
    out_size = data_out_size if data_out_size is not None else len(data) + 4096
    data_out = ctypes.create_string_buffer(out_size)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    opts.data_in = ctypes.cast(data_in, ctypes.c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(data_out, ctypes.c_void_p)
    opts.data_size_out = out_size
    opts.repeat = repeat
    ctx_in = ctx_out = None
    if ctx is not None:
        ctx_in = ctypes.create_string_buffer(ctx, len(ctx))
        ctx_out = ctypes.create_string_buffer(len(ctx))
        opts.ctx_in = ctypes.cast(ctx_in, ctypes.c_void_p)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(ctx_out, ctypes.c_void_p)
        opts.ctx_size_out = len(ctx)
    ctypes.set_errno(0)
    ret = bpf.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        err, text = _errno_text(ret)
        hint = " (ctx ifindex must name a device in this network namespace)" if err == 19 else ""
        raise LoadError(f"test run of program fd {prog_fd}: {text}{hint}")
    return TestRun(retval=opts.retval, duration_ns=opts.duration,
                   data_out=data_out.raw[: opts.data_size_out],
                   ctx_out=ctx_out.raw[: opts.ctx_size_out] if ctx_out is not None else None)


def bpf_obj_pin(fd: int, path: str) -> None:
    ctypes.set_errno(0)
    ret = lib().bpf_obj_pin(fd, os.fsencode(path))
    if ret < 0:
        raise LoadError(f"pin {path}: {_errno_text(ret)[1]}")


def bpf_obj_get(path: str) -> int:
    """Open a pinned object; returns a new fd the caller owns."""
    ctypes.set_errno(0)
    fd = lib().bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise LoadError(f"open pinned object {path}: {_errno_text(fd)[1]}")
    return fd


def map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ctypes.set_errno(0)
    ret = lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret < 0:
        raise LoadError(f"map info of fd {fd}: {_errno_text(ret)[1]}")
    return info


BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
_barrier: tuple[int, int] | None = None   # (outer, inner) fds, made on first use, kept for the process


def _map_create(map_type: int, name: bytes, key_size: int, value_size: int, max_entries: int,
                inner_fd: int = 0) -> int:
    opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), inner_map_fd=inner_fd)
    ctypes.set_errno(0)
    fd = lib().bpf_map_create(map_type, name, key_size, value_size, max_entries, ctypes.byref(opts))
    if fd < 0:
        raise LoadError(f"create map {name.decode()}: {_errno_text(fd)[1]}")
    return int(fd)


def wait_for_programs() -> None:
    """Return once every BPF program that was running when this was called has finished, so none
    still uses what it read before: an RCU grace period. The kernel waits for one on every update
    of a map-in-map from user space (maybe_wait_bpf_programs() in kernel/bpf/syscall.c), so this
    updates a private one-slot ARRAY_OF_MAPS; tc programs run inside an RCU read-side section."""
    global _barrier
    if _barrier is None:
        inner = _map_create(BPF_MAP_TYPE_ARRAY, b"netc_barrier_in", 4, 4, 1)
        outer = _map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, b"netc_barrier", 4, 4, 1, inner)
        _barrier = (outer, inner)
    outer, inner = _barrier
    ctypes.set_errno(0)
    ret = lib().bpf_map_update_elem(outer, (0).to_bytes(4, "little"), inner.to_bytes(4, "little"), BPF_ANY)
    if ret < 0:
        raise LoadError(f"wait for running programs (map-in-map update): {_errno_text(ret)[1]}")


PERCPU_MAP_TYPES = frozenset({5, 6, 10})   # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


def possible_cpus() -> int:
    """The number of possible CPUs, as per-CPU maps count them (/sys/devices/system/cpu/possible)."""
    try:
        with open("/sys/devices/system/cpu/possible") as fh:
            text = fh.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


def per_cpu_values(raw: bytes, value_size: int) -> list[bytes]:
    step = (value_size + 7) & ~7
    return [raw[i:i + value_size] for i in range(0, len(raw), step)]


class Map:
    """A BPF map: an fd with its key and value sizes. Keys and values are bytes (see runtime/abi.py)."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, *, map_type: int = 0,
                 max_entries: int = 0, owns_fd: bool = False):
        self.name = name
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.map_type = map_type
        self.max_entries = max_entries
        self._owns_fd = owns_fd

    @classmethod
    def from_pinned(cls, path: str) -> Map:
        fd = bpf_obj_get(path)
        try:
            info = map_info(fd)
        except LoadError:
            os.close(fd)
            raise
        return cls(info.name.decode(errors="replace"), fd, info.key_size, info.value_size,
                   map_type=info.type, max_entries=info.max_entries, owns_fd=True)

    def __repr__(self) -> str:
        return f"Map({self.name!r}, fd={self.fd}, key_size={self.key_size}, value_size={self.value_size})"

    def close(self) -> None:
        if self._owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, what: str, data: bytes, size: int) -> None:
        if len(data) != size:
            raise ValueError(f"map {self.name}: {what} is {len(data)} bytes, the map's is {size}")

    def _fail(self, op: str, ret: int) -> LoadError:
        return LoadError(f"map {self.name}: {op}: {_errno_text(ret)[1]}")

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._check("key", key, self.key_size)
        self._check("value", value, self.value_size)
        ctypes.set_errno(0)
        ret = lib().bpf_map_update_elem(self.fd, key, value, flags)
        if ret < 0:
            raise self._fail("update", ret)

    @property
    def per_cpu(self) -> bool:
        return self.map_type in PERCPU_MAP_TYPES

    def lookup(self, key: bytes) -> bytes | None:
        """The value; for a per-CPU map, every possible CPU's value, each padded to 8 bytes."""
        self._check("key", key, self.key_size)
        size = self.value_size
        if self.per_cpu:
            size = ((self.value_size + 7) & ~7) * possible_cpus()
        value = ctypes.create_string_buffer(size)
        ctypes.set_errno(0)
        ret = lib().bpf_map_lookup_elem(self.fd, key, value)
        if ret < 0:
            if _errno_text(ret)[0] == 2:  # ENOENT
                return None
            raise self._fail("lookup", ret)
        return value.raw

    def delete(self, key: bytes) -> bool:
        self._check("key", key, self.key_size)
        ctypes.set_errno(0)
        ret = lib().bpf_map_delete_elem(self.fd, key)
        if ret < 0:
            if _errno_text(ret)[0] == 2:
                return False
            raise self._fail("delete", ret)
        return True

    def keys(self) -> Iterator[bytes]:
        """Iterate the keys (bpf_map_get_next_key). Concurrent deletes may restart the walk."""
        bpf = lib()
        nxt = ctypes.create_string_buffer(self.key_size)
        prev: bytes | None = None
        while True:
            ctypes.set_errno(0)
            ret = bpf.bpf_map_get_next_key(self.fd, prev, nxt)
            if ret < 0:
                if _errno_text(ret)[0] == 2:
                    return
                raise self._fail("next key", ret)
            prev = nxt.raw
            yield prev

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def array_values(self, chunk: int = 65536) -> bytes:
        """An array map's values, index 0 first, all of them (bpf_map_lookup_batch, a chunk of
        entries per syscall)."""
        if self.key_size != 4 or self.per_cpu:
            raise ValueError(f"map {self.name}: not an array of plain values")
        out = bytearray()
        token = ctypes.c_uint32(0)
        first = True
        keys = ctypes.create_string_buffer(4 * chunk)
        values = ctypes.create_string_buffer(self.value_size * chunk)
        while len(out) < self.max_entries * self.value_size:
            count = ctypes.c_uint32(chunk)
            opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
            ctypes.set_errno(0)
            ret = lib().bpf_map_lookup_batch(self.fd, None if first else ctypes.byref(token), ctypes.byref(token),
                                             keys, values, ctypes.byref(count), ctypes.byref(opts))
            first = False
            out += values.raw[:count.value * self.value_size]
            if ret < 0:
                if _errno_text(ret)[0] == 2:   # ENOENT: the last batch
                    break
                raise self._fail("batch lookup", ret)
        return bytes(out)

    def update_batch(self, items: list[tuple[bytes, bytes]], flags: int = BPF_ANY) -> None:
        """Write many entries in one syscall where the map type supports it, else one by one."""
        if not items:
            return
        keys = b"".join(k for k, _ in items)
        values = b"".join(v for _, v in items)
        if not self.update_batch_raw(keys, values, len(items), flags):
            for key, value in items:   # the map type has no batch update (e.g. LPM tries)
                self.update(key, value, flags)

    def update_batch_raw(self, keys: bytes, values: bytes, n: int, flags: int = BPF_ANY) -> bool:
        """Write n entries, keys and values laid end to end, in one syscall; False (nothing
        written) when the map type has no batch update."""
        if len(keys) != n * self.key_size or len(values) != n * self.value_size:
            raise ValueError(f"map {self.name}: batch entries do not match the key/value sizes")
        count = ctypes.c_uint32(n)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=flags)
        ctypes.set_errno(0)
        ret = lib().bpf_map_update_batch(self.fd, keys, values, ctypes.byref(count), ctypes.byref(opts))
        if ret < 0:
            err, _ = _errno_text(ret)
            if err in (95, 22, 524) and count.value == 0:  # EOPNOTSUPP / EINVAL / ENOTSUPP: e.g. LPM tries
                return False
            raise self._fail(f"batch update (wrote {count.value} of {n})", ret)
        return True


def _section_attach(section: str) -> tuple[int, int] | None:
    """(prog type, expected attach type) for section names libbpf 1.1 does not know."""
    if section == "tcx/ingress":
        return BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS
    if section == "tcx/egress":
        return BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_EGRESS
    if section.startswith(("tc/", "tcx/")) or section == "tc":
        return BPF_PROG_TYPE_SCHED_CLS, 0
    return None


_MSG_SUBJECT = re.compile(r"\b(map|prog) '([^']+)'")


class BpfObject:
    """An ELF BPF object opened through libbpf; load() puts its maps and programs in the kernel."""

    def __init__(self, ptr: int, name: str, keepalive: object):
        self._obj: int | None = ptr
        self.name = name
        self._keepalive = keepalive  # libbpf may refer to the ELF buffer while the object lives
        self._log_bufs: dict[str, ctypes.Array[ctypes.c_char]] = {}
        self.loaded = False
        self.libbpf_log = ""

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open_mem(cls, data: bytes, name: str) -> BpfObject:
        bpf = lib()
        buf = ctypes.create_string_buffer(data, len(data))
        cname = name.encode()
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), object_name=cname)
        with _Capture() as cap:
            ctypes.set_errno(0)
            ptr = bpf.bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
        if not ptr:
            _, text = _errno_text()
            detail = cap.text.strip().splitlines()
            raise LoadError(f"cannot open BPF object {name}: {text}" + (f" ({detail[-1]})" if detail else ""))
        obj = cls(ptr, name, (buf, cname))
        try:
            obj._fix_program_types()
        except BaseException:
            obj.close()
            raise
        return obj

    def _ptr(self) -> int:
        if self._obj is None:
            raise LoadError(f"BPF object {self.name} is closed")
        return self._obj

    def _iter_programs(self) -> Iterator[tuple[str, int]]:
        bpf = lib()
        prog = bpf.bpf_object__next_program(self._ptr(), None)
        while prog:
            yield bpf.bpf_program__name(prog).decode(), prog
            prog = bpf.bpf_object__next_program(self._ptr(), prog)

    def _iter_maps(self) -> Iterator[tuple[str, int]]:
        bpf = lib()
        m = bpf.bpf_object__next_map(self._ptr(), None)
        while m:
            yield bpf.bpf_map__name(m).decode(), m
            m = bpf.bpf_object__next_map(self._ptr(), m)

    def _fix_program_types(self) -> None:
        bpf = lib()
        for name, prog in self._iter_programs():
            section = bpf.bpf_program__section_name(prog).decode()
            if bpf.bpf_program__type(prog) != BPF_PROG_TYPE_UNSPEC:
                continue
            known = _section_attach(section)
            if known is None:
                raise LoadError(f"program {name}: section {section!r} names no program type this "
                                f"libbpf knows and netc cannot infer one")
            prog_type, attach = known
            bpf.bpf_program__set_type(prog, prog_type)
            if attach:
                bpf.bpf_program__set_expected_attach_type(prog, attach)

    # -- before load -----------------------------------------------------------------------
    def _map_ptr(self, name: str) -> int:
        m = lib().bpf_object__find_map_by_name(self._ptr(), name.encode())
        if not m:
            raise LoadError(f"map {name}: not in BPF object {self.name}")
        return m

    def set_max_entries(self, map_name: str, n: int) -> None:
        if self.loaded:
            raise LoadError(f"map {map_name}: max_entries can only change before load")
        ctypes.set_errno(0)
        ret = lib().bpf_map__set_max_entries(self._map_ptr(map_name), n)
        if ret < 0:
            raise LoadError(f"map {map_name}: set max_entries {n}: {_errno_text(ret)[1]}")

    def reuse_map(self, map_name: str, fd: int) -> None:
        """Use an existing map (e.g. a pinned one, kept across versions) instead of creating it."""
        if self.loaded:
            raise LoadError(f"map {map_name}: a map can only be reused before load")
        ctypes.set_errno(0)
        ret = lib().bpf_map__reuse_fd(self._map_ptr(map_name), fd)
        if ret < 0:
            raise LoadError(f"map {map_name}: reuse fd {fd}: {_errno_text(ret)[1]}")

    # -- load ----------------------------------------------------------------------------
    def load(self, *, log_level: int = 0) -> None:
        """Create the maps and load the programs.

        With log_level 0 the verifier runs without a log and libbpf retries a failing program
        with log level 1 into our buffer, so a rejection always comes with its log. Pass 1 or 2
        for the full log of accepted programs too, or 4 for the statistics (instructions
        processed, states): `verifier_log(name)` returns it.
        """
        bpf = lib()
        if self.loaded:
            raise LoadError(f"BPF object {self.name} is already loaded")
        for name, prog in self._iter_programs():
            buf = ctypes.create_string_buffer(LOG_BUF_SIZE)
            self._log_bufs[name] = buf
            bpf.bpf_program__set_log_buf(prog, buf, LOG_BUF_SIZE)
            bpf.bpf_program__set_log_level(prog, log_level)
        with _Capture() as cap:
            ctypes.set_errno(0)
            ret = bpf.bpf_object__load(self._ptr())
        self.libbpf_log = cap.text
        if ret == 0:
            self.loaded = True
            return
        err, text = _errno_text(ret)
        # which program failed? the one with no fd whose verifier log has content
        for name, prog in self._iter_programs():
            log = self.verifier_log(name)
            if bpf.bpf_program__fd(prog) < 0 and log.strip():
                raise VerifierError(f"program {name}: the kernel verifier rejected it ({text})", log)
        # otherwise name what libbpf's last complaint was about: "map 'x': failed to create: ..."
        lines = [ln.strip().removeprefix("libbpf: ") for ln in cap.text.splitlines() if ln.strip()]
        about = [(m, ln) for ln in lines for m in _MSG_SUBJECT.finditer(ln)]
        if about:
            match, line = about[-1]
            kind, who = match.groups()
            msg = f"{'program' if kind == 'prog' else 'map'} {who}: {text} (libbpf: {line})"
        else:
            msg = f"BPF object {self.name}: {text}" + (f" (libbpf: {lines[-1]})" if lines else "")
        if err == 1:
            msg += "; loading BPF programs needs root (CAP_BPF and CAP_NET_ADMIN)"
        raise LoadError(msg)

    def verifier_log(self, program: str) -> str:
        buf = self._log_bufs.get(program)
        return buf.value.decode("utf-8", "replace") if buf is not None else ""

    # -- after load ----------------------------------------------------------------------
    @property
    def programs(self) -> dict[str, int]:
        """Program name → fd (fds stay owned by this object)."""
        bpf = lib()
        return {name: bpf.bpf_program__fd(prog) for name, prog in self._iter_programs()}

    @property
    def sections(self) -> dict[str, str]:
        """Program name → ELF section name (e.g. tcx/ingress)."""
        bpf = lib()
        return {name: bpf.bpf_program__section_name(prog).decode() for name, prog in self._iter_programs()}

    def attach_type(self, program: str) -> int:
        for name, prog in self._iter_programs():
            if name == program:
                return lib().bpf_program__expected_attach_type(prog)
        raise LoadError(f"program {program}: not in BPF object {self.name}")

    def insn_count(self, program: str) -> int:
        """Instructions of `program` as libbpf hands it to the kernel."""
        for name, prog in self._iter_programs():
            if name == program:
                return lib().bpf_program__insn_cnt(prog)
        raise LoadError(f"program {program}: not in BPF object {self.name}")

    @property
    def maps(self) -> dict[str, Map]:
        """Map name → Map (fds stay owned by this object; fd is -1 before load)."""
        bpf = lib()
        return {name: Map(name, bpf.bpf_map__fd(m), bpf.bpf_map__key_size(m), bpf.bpf_map__value_size(m),
                          map_type=bpf.bpf_map__type(m), max_entries=bpf.bpf_map__max_entries(m))
                for name, m in self._iter_maps()}

    def btf_type_ids(self, map_name: str) -> tuple[int, int]:
        """(BTF key type id, BTF value type id) libbpf recorded for the map; 0 means none."""
        m = self._map_ptr(map_name)
        return lib().bpf_map__btf_key_type_id(m), lib().bpf_map__btf_value_type_id(m)

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        if self._obj is not None:
            lib().bpf_object__close(self._obj)
            self._obj = None
        self._log_bufs.clear()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
