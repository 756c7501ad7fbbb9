"""What is attached where: a small SQLite database, and one lock so loads never interleave.

The database records *intent and result*; bpffs pins are the kernel's own record. After a
crash the two are reconciled from the pins (see loader.recover), so `netc status` and
`netc unload` work from a fresh process whatever happened before.

    $NETC_STATE_DIR (default /var/lib/netc)
        state.db       targets, versions, attachments, drained backends
        netc.lock      flock: one load/unload/sync at a time
        objects/       the artifacts of loaded versions (manifest and all)
    $NETC_BPFFS (default /sys/fs/bpf/netc)
        <target>/v<N>/        maps and programs of version N (published by an atomic rename)
        <target>/links/       one pinned tcx link per container and hook: <container>@<hook>
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from netc.errors import NetcError

SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    inventory TEXT NOT NULL,          -- path of the inventory file, or lab:<name>
    node_netns TEXT,                  -- the namespace the host-side veths live in (NULL: this one)
    mode TEXT NOT NULL DEFAULT 'tcx'  -- tcx | tc
);
CREATE TABLE IF NOT EXISTS versions (
    target TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,              -- loading | active | retired | interrupted
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    object TEXT NOT NULL,
    prog_ids TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (target, version)
);
CREATE TABLE IF NOT EXISTS syncs (
    target TEXT NOT NULL,
    seconds REAL NOT NULL,            -- wall time of one `netc sync` (inventory change applied)
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    target TEXT NOT NULL,
    container TEXT NOT NULL,
    hook TEXT NOT NULL,               -- ingress | egress (of the host-side veth)
    interface TEXT NOT NULL,
    ifindex INTEGER NOT NULL,
    mode TEXT NOT NULL,
    pin TEXT,
    version INTEGER NOT NULL,
    attached_at REAL NOT NULL,
    PRIMARY KEY (target, container, hook)
);
CREATE TABLE IF NOT EXISTS drained (
    target TEXT NOT NULL,
    service TEXT NOT NULL,
    backend TEXT NOT NULL,            -- a container name, or an address as the service writes it
    at REAL NOT NULL,
    PRIMARY KEY (target, service, backend)
);
"""


class StateError(NetcError):
    pass


def state_dir() -> str:
    return os.environ.get("NETC_STATE_DIR", "/var/lib/netc")


def bpffs_root() -> str:
    return os.environ.get("NETC_BPFFS", "/sys/fs/bpf/netc")


@dataclass
class Version:
    target: str
    version: int
    state: str
    source: str
    source_sha256: str
    object: str
    prog_ids: str
    created_at: float


@dataclass
class Attachment:
    target: str
    container: str
    hook: str
    interface: str
    ifindex: int
    mode: str
    pin: str | None
    version: int
    attached_at: float


class State:
    def __init__(self, directory: str | None = None):
        self.dir = directory or state_dir()
        os.makedirs(os.path.join(self.dir, "objects"), exist_ok=True)
        self.db = sqlite3.connect(os.path.join(self.dir, "state.db"), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(versions)")}
        if "load_seconds" not in cols:   # databases made before loads were timed
            self.db.execute("ALTER TABLE versions ADD COLUMN load_seconds REAL")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------- queries
    def targets(self) -> list[tuple[str, str, str | None, str]]:
        return list(self.db.execute("SELECT name, inventory, node_netns, mode FROM targets ORDER BY name"))

    def target(self, name: str) -> tuple[str, str, str | None, str] | None:
        row = self.db.execute("SELECT name, inventory, node_netns, mode FROM targets WHERE name=?",
                              (name,)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def versions(self, target: str) -> list[Version]:
        return [Version(*r) for r in self.db.execute(
            "SELECT target, version, state, source, source_sha256, object, prog_ids, created_at "
            "FROM versions WHERE target=? ORDER BY version", (target,))]

    def record_sync(self, target: str, seconds: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO syncs(target, seconds, at) VALUES(?,?,?)", (target, seconds, time.time()))
            # keep the last hundred per target
            db.execute("DELETE FROM syncs WHERE target=? AND rowid NOT IN (SELECT rowid FROM syncs "
                       "WHERE target=? ORDER BY at DESC LIMIT 100)", (target, target))

    def active(self, target: str) -> Version | None:
        vs = [v for v in self.versions(target) if v.state == "active"]
        return vs[-1] if vs else None

    def attachments(self, target: str) -> list[Attachment]:
        return [Attachment(*r) for r in self.db.execute(
            "SELECT target, container, hook, interface, ifindex, mode, pin, version, attached_at "
            "FROM attachments WHERE target=? ORDER BY container, hook", (target,))]

    def next_version(self, target: str) -> int:
        row = self.db.execute("SELECT MAX(version) FROM versions WHERE target=?", (target,)).fetchone()
        return (row[0] or 0) + 1


@contextlib.contextmanager
def exclusive(directory: str | None = None, wait_s: float = 30.0) -> Iterator[None]:
    """The one lock for everything that changes the kernel: a second `netc load` waits for the
    first (up to wait_s), then refuses with the holder's pid; never interleaves."""
    d = directory or state_dir()
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "netc.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise StateError(f"another netc command (pid {holder}) is changing the kernel state; "
                                     f"waited {wait_s:.0f} s") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
