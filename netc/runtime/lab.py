"""`netc lab`: containers made of network namespaces, the embedded default for demos and tests.

A lab is one *node* namespace standing in for the host (the machine's root namespace is never
touched) and one namespace per container, each joined to the node by a veth pair:

    netc-<lab>-node                       netc-<lab>-<container>
    nc<hex><i>  10.77.0.1/32  ◀── veth ──▶ eth0  10.77.0.(10+i)/32
                fd00:77::1/128                  fd00:77::(10+i)/128
    route 10.77.0.(10+i)/32 dev nc<hex><i>      default via 10.77.0.1 dev eth0 onlink
                                                default via fd00:77::1 dev eth0 onlink

netc attaches its programs to the node-side veths, read from the inventory a lab writes to
`$NETC_STATE_DIR/labs/<lab>.inventory.json`. The format and every choice are in docs/lab.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netc.errors import NetcError
from netc.runtime.inventory import Container, Inventory
from netc.runtime.netns import (
    NetnsError,
    create_netns,
    delete_netns,
    in_netns,
    netns_exists,
    run_in_netns,
)

STATE_ENV = "NETC_STATE_DIR"
DEFAULT_STATE_DIR = "/var/lib/netc"
NODE_V4 = "10.77.0.1"
NODE_V6 = "fd00:77::1"
HOST_ADDRESSES = (NODE_V4, NODE_V6)
RECORD_FORMAT = 1
MAX_DEFAULT_INDEX = 244          # 10.77.0.254 is the last default address
SERVER_READY_TIMEOUT = 10.0      # seconds for every server to bind its sockets
STOP_TIMEOUT = 1.0               # seconds between SIGTERM and SIGKILL

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_NAME = 40
_IFA_F_NODAD = 0x02
_RTNH_F_ONLINK = 4
_RT_SCOPE_LINK = 253
VETH_GROUP = 77                  # device group of every host-side veth: `down` deletes them in one call

# Servers started by this process, kept so `down` can reap them (no zombies in long-lived
# processes such as a test session) and so Popen never warns about a child it lost track of.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LabError(NetcError):
    """A lab could not be created, changed, found or removed."""


class TopologyError(LabError):
    """A topology file is invalid; the message names the file and the entry."""


# ---------------------------------------------------------------------------- topology

@dataclass(frozen=True)
class ContainerSpec:
    """One container of a topology: what the user asked for."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    addresses: tuple[str, ...] | None = None      # None: the lab's default addresses
    serve: tuple[tuple[str, int], ...] = ()       # (("tcp", 80), ("udp", 53))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "labels": dict(self.labels)}
        if self.addresses is not None:
            d["addresses"] = list(self.addresses)
        d["serve"] = [f"{p}:{n}" for p, n in self.serve]
        return d


@dataclass(frozen=True)
class Topology:
    name: str | None
    containers: tuple[ContainerSpec, ...]
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        d["containers"] = [c.to_json() for c in self.containers]
        return d


_TOP_KEYS = {"name", "containers"}
_CONTAINER_KEYS = {"name", "labels", "addresses", "serve"}


def _check_address(a: Any, at: str) -> str:
    if isinstance(a, bool) or not isinstance(a, str | int):
        raise TopologyError(f"{at}: `{a}` is not an address")
    text = str(a).strip()
    if "/" in text:
        raise TopologyError(f"{at}: `{text}`: give the address without a prefix length "
                            "(every container address is a /32 or /128)")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise TopologyError(f"{at}: `{text}` is not an IPv4 or IPv6 address") from None
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        raise TopologyError(f"{at}: {ip} cannot be a container address "
                            "(loopback, multicast, unspecified and link-local addresses are reserved)")
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        raise TopologyError(f"{at}: {ip} cannot be a container address")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise TopologyError(f"{at}: {text} is an IPv4-mapped IPv6 address; give {ip.ipv4_mapped} instead")
    if str(ip) in HOST_ADDRESSES:
        raise TopologyError(f"{at}: {ip} is the lab node's own address")
    return str(ip)


def parse_container_spec(data: Any, where: str = "container") -> ContainerSpec:
    """Validate one topology entry (a mapping) and return its ContainerSpec."""
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: expected a mapping with `name`, `labels`, `addresses`, `serve`")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise TopologyError(f"{where}: every container needs a `name`")
    at = f"{where} ({name})"
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise TopologyError(f"{at}: container names are lower-case letters, digits and `-`, "
                            f"start with a letter or digit, at most {MAX_NAME} characters")
    unknown = sorted(set(data) - _CONTAINER_KEYS)
    if unknown:
        raise TopologyError(f"{at}: unknown key `{unknown[0]}` (a container has "
                            + ", ".join(f"`{k}`" for k in sorted(_CONTAINER_KEYS)) + ")")
    labels_raw = data.get("labels") or {}
    if not isinstance(labels_raw, dict):
        raise TopologyError(f"{at}: `labels` must be a mapping of names to values")
    labels: dict[str, str] = {}
    for k, v in labels_raw.items():
        if not isinstance(k, str) or not k:
            raise TopologyError(f"{at}: label names must be non-empty strings, not `{k}`")
        if v is None or isinstance(v, list | dict):
            raise TopologyError(f"{at}: label `{k}` needs a string value")
        labels[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    addresses: tuple[str, ...] | None = None
    if "addresses" in data and data["addresses"] is not None:
        raw = data["addresses"]
        if not isinstance(raw, list):
            raise TopologyError(f"{at}: `addresses` must be a list")
        seen: list[str] = []
        for a in raw:
            ip = _check_address(a, at)
            if ip in seen:
                raise TopologyError(f"{at}: address {ip} is listed twice")
            seen.append(ip)
        addresses = tuple(seen)
    serve_raw = data.get("serve") or []
    if not isinstance(serve_raw, list):
        raise TopologyError(f"{at}: `serve` must be a list such as [\"tcp:80\", \"udp:53\"]")
    serve: list[tuple[str, int]] = []
    for s in serve_raw:
        m = re.fullmatch(r"\s*(tcp|udp|echo)\s*:\s*(\d{1,5})\s*", str(s))
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise TopologyError(f"{at}: `{s}` is not a server; write `tcp:PORT`, `udp:PORT` or `echo:PORT` "
                                "with a port from 1 to 65535")
        entry = (m.group(1), int(m.group(2)))
        if entry in serve:
            raise TopologyError(f"{at}: `{s}` is listed twice in `serve`")
        serve.append(entry)
    return ContainerSpec(name, labels, addresses, tuple(serve))


def _check_unique(specs: Sequence[ContainerSpec], where: str, taken: dict[str, str] | None = None) -> None:
    names: set[str] = set()
    owner: dict[str, str] = dict(taken or {})
    for i, c in enumerate(specs):
        if c.name in names:
            raise TopologyError(f"{where}: containers[{i}] ({c.name}): the name `{c.name}` is used twice")
        names.add(c.name)
        for a in c.addresses or ():
            if a in owner:
                raise TopologyError(f"{where}: containers[{i}] ({c.name}): address {a} "
                                    f"also belongs to `{owner[a]}`")
            owner[a] = c.name


def parse_topology(data: Any, where: str = "topology") -> Topology:
    """Validate a topology given as data (what the YAML file holds)."""
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: expected a mapping with `containers` (and optionally `name`)")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise TopologyError(f"{where}: unknown key `{unknown[0]}` (a topology has `name` and `containers`)")
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
            raise TopologyError(f"{where}: `name: {name}`: lab names are lower-case letters, digits and `-`, "
                                f"start with a letter or digit, at most {MAX_NAME} characters")
    raw = data.get("containers")
    if not isinstance(raw, list):
        raise TopologyError(f"{where}: `containers` must be a list of containers")
    specs = [parse_container_spec(c, f"{where}: containers[{i}]") for i, c in enumerate(raw)]
    _check_unique(specs, where)
    if len(specs) > MAX_DEFAULT_INDEX + 1 and any(c.addresses is None for c in specs):
        raise TopologyError(f"{where}: at most {MAX_DEFAULT_INDEX + 1} containers get default addresses")
    return Topology(name, tuple(specs), None)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and validate a topology file (YAML, or JSON which is YAML too)."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TopologyError(f"cannot read topology {path}: {exc.strerror}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(f"{path}{loc}: not valid YAML: {problem}") from None
    topo = parse_topology(data if data is not None else {}, path)
    return Topology(topo.name, topo.containers, os.path.abspath(path))


# ---------------------------------------------------------------------------- lab model

@dataclass
class Server:
    pid: int
    start_time: int          # /proc/PID/stat field 22: tells a recycled PID from ours
    argv: list[str]
    log: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time, "argv": self.argv, "log": self.log}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Server:
        return Server(int(d["pid"]), int(d["start_time"]), list(d.get("argv", [])), str(d.get("log", "")))

    def alive(self) -> bool:
        return _process_alive(self.pid, self.start_time)


@dataclass
class LabContainer:
    name: str
    index: int
    netns: str
    interface: str                   # host-side veth, in the node namespace
    ifindex: int | None              # of that veth, in the node namespace
    addresses: tuple[str, ...]
    labels: dict[str, str]
    serve: tuple[tuple[str, int], ...] = ()
    server: Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "netns": self.netns, "interface": self.interface,
                "ifindex": self.ifindex, "addresses": list(self.addresses), "labels": dict(self.labels),
                "serve": [f"{p}:{n}" for p, n in self.serve],
                "server": self.server.to_json() if self.server else None}

    @staticmethod
    def from_json(d: dict[str, Any]) -> LabContainer:
        serve = tuple((p, int(n)) for p, n in (s.split(":") for s in d.get("serve", [])))
        return LabContainer(d["name"], int(d["index"]), d["netns"], d["interface"],
                            d.get("ifindex"), tuple(d.get("addresses", [])), dict(d.get("labels", {})),
                            serve, Server.from_json(d["server"]) if d.get("server") else None)

    def address(self, ipv6: bool = False) -> str | None:
        for a in self.addresses:
            if (":" in a) == ipv6:
                return a
        return None

    def to_inventory(self) -> Container:
        return Container(self.name, self.addresses, dict(self.labels), self.netns, self.interface, self.ifindex)


@dataclass
class Lab:
    name: str
    hex: str
    created: float
    node_netns: str
    topology: dict[str, Any]
    topology_path: str | None = None
    containers: list[LabContainer] = field(default_factory=list)
    next_index: int = 0
    state: str = "up"                 # "starting" while `up` runs; "up" once complete
    host_addresses: tuple[str, ...] = HOST_ADDRESSES
    state_dir: str = ""
    # namespaces this process created (not recorded): what a failed `up` may remove
    made_netns: set[str] = field(default_factory=set, repr=False, compare=False)

    # --- paths
    @property
    def record_path(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.json")

    @property
    def inventory_path(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.inventory.json")

    @property
    def log_dir(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.logs")

    # --- lookups
    def container(self, name: str) -> LabContainer:
        for c in self.containers:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.containers) or "none"
        raise LabError(f"lab `{self.name}` has no container `{name}` (containers: {known})")

    @property
    def namespaces(self) -> list[str]:
        return [self.node_netns] + [c.netns for c in self.containers]

    def inventory(self) -> Inventory:
        return Inventory([c.to_inventory() for c in self.containers], tuple(self.host_addresses),
                         self.node_netns)

    # --- (de)serialisation
    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "name": self.name,
            "hex": self.hex,
            "state": self.state,
            "created": self.created,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.created)),
            "topology_path": self.topology_path,
            "topology": self.topology,
            "node_netns": self.node_netns,
            "host_addresses": list(self.host_addresses),
            "next_index": self.next_index,
            "containers": [c.to_json() for c in self.containers],
            "namespaces": self.namespaces,
            "veths": [c.interface for c in self.containers],
            "pids": [c.server.pid for c in self.containers if c.server],
            "inventory_path": self.inventory_path,
            "inventory": self.inventory().to_json(),
        }

    @staticmethod
    def from_json(d: dict[str, Any], state_dir: str) -> Lab:
        return Lab(d["name"], d["hex"], float(d["created"]), d["node_netns"], d.get("topology", {}),
                   d.get("topology_path"), [LabContainer.from_json(c) for c in d.get("containers", [])],
                   int(d.get("next_index", 0)), d.get("state", "up"),
                   tuple(d.get("host_addresses", HOST_ADDRESSES)), state_dir)

    def save(self) -> None:
        """Write the record and the inventory (atomically, each with a rename)."""
        _ensure_dir(self.state_dir)
        try:
            _write_json(self.inventory_path, self.inventory().to_json())
            _write_json(self.record_path, self.to_json())
        except OSError as exc:
            raise LabError(f"cannot write the state of lab `{self.name}` in {self.state_dir}: "
                           f"{exc.strerror}") from None


# ---------------------------------------------------------------------------- state files

def state_dir() -> str:
    """`$NETC_STATE_DIR/labs` (NETC_STATE_DIR defaults to /var/lib/netc)."""
    return os.path.join(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR, "labs")


def _ensure_dir(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create the state directory {directory}: {exc.strerror} "
                       f"(set {STATE_ENV} to a writable directory)") from None


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """One writer at a time for the records in `directory` (an flock, released on crash)."""
    _ensure_dir(directory)
    try:
        fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LabError(f"cannot lock {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_record(path: str, directory: str) -> Lab:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return Lab.from_json(data, directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"cannot read lab record {path}: {exc}") from None


def list_labs() -> list[Lab]:
    """Every lab recorded in the state directory, oldest first."""
    d = state_dir()
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LabError(f"cannot read the state directory {d}: {exc.strerror}") from None
    labs = []
    for n in names:
        if n.endswith(".json") and not n.endswith(".inventory.json") and ".tmp." not in n:
            with contextlib.suppress(LabError, FileNotFoundError):
                labs.append(_read_record(os.path.join(d, n), d))
    return sorted(labs, key=lambda lab: (lab.created, lab.name))


def lab_by_name(name: str) -> Lab:
    """The recorded lab called `name`."""
    d = state_dir()
    path = os.path.join(d, f"{name}.json")
    if not NAME_RE.match(name) or not os.path.exists(path):
        known = ", ".join(lab.name for lab in list_labs()) or "none"
        raise LabError(f"no lab named `{name}` in {d} (labs: {known})")
    return _read_record(path, d)


def latest_lab() -> Lab:
    """The most recently created lab (what commands use when no lab is named)."""
    labs = list_labs()
    if not labs:
        raise LabError(f"no lab is up (nothing recorded in {state_dir()}); start one with `netc lab up FILE`")
    return labs[-1]


def _resolve(lab: Lab | str | None) -> Lab:
    if lab is None:
        return latest_lab()
    if isinstance(lab, Lab):
        return lab
    return lab_by_name(lab)


# ---------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return rest[0], int(rest[19])


def _process_alive(pid: int, start_time: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[1] == start_time and st[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def _stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; raises LabError if the process survives."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        _reap(server.pid)
        if not server.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(server.pid)
            if not server.alive():
                return
            time.sleep(0.005)
    _reap(server.pid)
    if server.alive():
        raise LabError(f"server process {server.pid} survived SIGKILL")


def _server_argv(c: LabContainer) -> list[str]:
    argv = [sys.executable, "-m", "netc.runtime.labserver", "--name", c.name]
    for proto, port in c.serve:
        argv += [f"--{proto}", str(port)]
    return argv


def _start_server(lab: Lab, c: LabContainer) -> subprocess.Popen[bytes]:
    os.makedirs(lab.log_dir, exist_ok=True)
    log = os.path.join(lab.log_dir, f"{c.name}.log")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])   # so `-m netc...` works from a checkout too
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = _server_argv(c)
    with open(log, "wb") as logf:
        proc = run_in_netns(c.netns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                            env=env, start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    st = _proc_stat(proc.pid)
    c.server = Server(proc.pid, st[1] if st else 0, argv, log)
    return proc


def _await_ready(lab: Lab, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait until every server printed `ready` (all its sockets are bound)."""
    sel = selectors.DefaultSelector()
    buf: dict[str, bytes] = {}
    for name, p in procs.items():
        assert p.stdout is not None
        sel.register(p.stdout, selectors.EVENT_READ, name)
        buf[name] = b""
    pending = set(procs)
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"lab `{lab.name}`: servers of {', '.join(sorted(pending))} did not start "
                               f"within {SERVER_READY_TIMEOUT:.0f} s")
            for key, _ in sel.select(left):
                name = key.data
                chunk = os.read(key.fd, 4096)
                buf[name] += chunk
                if b"ready\n" in buf[name]:
                    pending.discard(name)
                    sel.unregister(key.fileobj)
                elif not chunk:
                    p = procs[name]
                    try:
                        p.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        pass
                    c = lab.container(name)
                    log = ""
                    if c.server:
                        with contextlib.suppress(OSError), open(c.server.log, encoding="utf-8", errors="replace") as fh:
                            log = fh.read().strip()
                    raise LabError(f"lab `{lab.name}`: the server of `{name}` exited "
                                   f"(status {p.returncode}) before it was ready"
                                   + (f": {log.splitlines()[-1]}" if log else ""))
    finally:
        sel.close()
        for p in procs.values():
            if p.stdout:
                p.stdout.close()


# ---------------------------------------------------------------------------- netlink work

def _nl_error(what: str, exc: Exception) -> LabError:
    code = getattr(exc, "code", None)
    text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return LabError(f"{what}: {text}")


def _sysctl(name: str, value: str) -> None:
    """Write /proc/sys/<name> in the calling thread's current network namespace."""
    path = "/proc/sys/" + name.replace(".", "/")
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise LabError(f"cannot set {name}={value}: {exc.strerror}") from None


def _iproute(netns: str) -> Any:
    """A pyroute2 IPRoute whose netlink socket belongs to `netns` (opened while inside it)."""
    from pyroute2 import IPRoute

    with in_netns(netns):
        return IPRoute()


def _prepare_ns(netns: str, node: bool) -> Any:
    """Settings common to every lab namespace: no DAD, lo up; forwarding on the node."""
    with in_netns(netns):
        for scope in ("all", "default"):
            _sysctl(f"net.ipv6.conf.{scope}.accept_dad", "0")
            _sysctl(f"net.ipv6.conf.{scope}.dad_transmits", "0")
        if node:
            _sysctl("net.ipv4.ip_forward", "1")
            _sysctl("net.ipv6.conf.all.forwarding", "1")
        else:
            # a container routes everything through the node; it needs no router advertisements
            _sysctl("net.ipv6.conf.all.accept_ra", "0")
            _sysctl("net.ipv6.conf.default.accept_ra", "0")
    ipr = _iproute(netns)
    try:
        ipr.link("set", index=1, state="up")
    except Exception as exc:
        ipr.close()
        raise _nl_error(f"cannot bring lo up in {netns}", exc) from None
    return ipr


def _add_addr(ipr: Any, index: int, address: str) -> None:
    if ":" in address:
        ipr.addr("add", index=index, address=address, prefixlen=128, flags=_IFA_F_NODAD)
    else:
        ipr.addr("add", index=index, address=address, prefixlen=32)


def _wire_container(lab: Lab, node_ipr: Any, c: LabContainer) -> None:
    """Create c's namespace and veth pair, addresses and routes. Records ifindex in `c`."""
    create_netns(c.netns)
    lab.made_netns.add(c.netns)
    cipr = _prepare_ns(c.netns, node=False)
    try:
        fd = os.open(f"/run/netns/{c.netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            node_ipr.link("add", ifname=c.interface, kind="veth", group=VETH_GROUP,
                          peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        found = node_ipr.link_lookup(ifname=c.interface)
        if not found:
            raise LabError(f"veth {c.interface} vanished right after it was made")
        host = found[0]
        c.ifindex = host
        eth0 = cipr.link_lookup(ifname="eth0")[0]
        node_ipr.link("set", index=host, state="up")
        cipr.link("set", index=eth0, state="up")
        for a in HOST_ADDRESSES:
            _add_addr(node_ipr, host, a)
        for a in c.addresses:
            _add_addr(cipr, eth0, a)
            v6 = ":" in a
            node_ipr.route("add", dst=f"{a}/{128 if v6 else 32}", oif=host, scope=_RT_SCOPE_LINK,
                           family=socket.AF_INET6 if v6 else socket.AF_INET)
        if any(":" not in a for a in c.addresses):
            cipr.route("add", dst="0.0.0.0/0", gateway=NODE_V4, oif=eth0, flags=_RTNH_F_ONLINK,
                       family=socket.AF_INET)
        if any(":" in a for a in c.addresses):
            cipr.route("add", dst="::/0", gateway=NODE_V6, oif=eth0, flags=_RTNH_F_ONLINK,
                       family=socket.AF_INET6)
    except LabError:
        raise
    except NetcError:
        raise
    except Exception as exc:
        raise _nl_error(f"lab `{lab.name}`: cannot wire container `{c.name}`", exc) from None
    finally:
        cipr.close()


def _default_addresses(index: int) -> tuple[str, ...]:
    if index > MAX_DEFAULT_INDEX:
        raise LabError(f"container index {index} has no default address (the last is 10.77.0.254); "
                       "give `addresses` explicitly")
    return (f"10.77.0.{10 + index}", f"fd00:77::{10 + index}")


def _new_container(lab: Lab, spec: ContainerSpec, index: int) -> LabContainer:
    addrs = spec.addresses if spec.addresses is not None else _default_addresses(index)
    return LabContainer(spec.name, index, f"netc-{lab.name}-{spec.name}", f"nc{lab.hex}{index}",
                        None, tuple(addrs), dict(spec.labels), spec.serve)


def _check_addresses_free(lab: Lab, c: LabContainer) -> None:
    for other in lab.containers:
        if other is c:
            continue
        clash = set(other.addresses) & set(c.addresses)
        if clash:
            raise LabError(f"lab `{lab.name}`: address {sorted(clash)[0]} of `{c.name}` "
                           f"also belongs to `{other.name}`")


# ---------------------------------------------------------------------------- operations

def _check_netns_free(names: list[str]) -> None:
    taken = [n for n in names if os.path.lexists(f"/run/netns/{n}")]
    if taken:
        raise LabError(f"network namespace {taken[0]} already exists; not touching it")


def _lab_base_name(topo: Topology, path: str) -> str:
    if topo.name:
        return topo.name
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(path).stem.lower()).strip("-")
    return (stem or "lab")[:MAX_NAME]


def _reserve(base: str, directory: str) -> tuple[str, str, int]:
    """Pick `<base>-<4 hex>` free in the state dir and in /run/netns; create its record file."""
    for _ in range(64):
        h = secrets.token_hex(2)
        name = f"{base}-{h}"
        if netns_exists(f"netc-{name}-node"):
            continue
        try:
            fd = os.open(os.path.join(directory, f"{name}.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise LabError(f"cannot write in the state directory {directory}: {exc.strerror}") from None
        return name, h, fd
    raise LabError(f"cannot find a free lab name for `{base}`")


def up(topology_path: str | os.PathLike[str]) -> Lab:
    """Create the lab a topology file describes: namespaces, veths, addresses, routes, servers.

    Returns the Lab, already recorded with its inventory. On any failure everything made so far
    is removed again and the error is raised.
    """
    topo = load_topology(topology_path)
    directory = state_dir()
    _ensure_dir(directory)
    name, hx, fd = _reserve(_lab_base_name(topo, str(topology_path)), directory)
    os.close(fd)
    lab = Lab(name, hx, time.time(), f"netc-{name}-node", topo.to_json(), topo.path, state="starting",
              state_dir=directory)
    node_ipr = None
    try:
        for i, spec in enumerate(topo.containers):
            lab.containers.append(_new_container(lab, spec, i))
        lab.next_index = len(topo.containers)
        for c in lab.containers:
            _check_addresses_free(lab, c)
        _check_netns_free([lab.node_netns] + [c.netns for c in lab.containers])
        lab.save()   # the plan first: a crash from here on leaves a record `down` can act on
        create_netns(lab.node_netns)
        lab.made_netns.add(lab.node_netns)
        node_ipr = _prepare_ns(lab.node_netns, node=True)
        for c in lab.containers:
            _wire_container(lab, node_ipr, c)
        procs = {c.name: _start_server(lab, c) for c in lab.containers if c.serve}
        lab.save()   # pids recorded before we wait on them
        _await_ready(lab, procs)
        lab.state = "up"
        lab.save()
    except BaseException as exc:
        if node_ipr is not None:
            node_ipr.close()
            node_ipr = None
        cleanup_error: NetcError | None = None
        try:
            _teardown(lab, owned_only=True)
        except NetcError as err:
            cleanup_error = err
        if isinstance(exc, NetcError):
            if cleanup_error is not None:
                raise LabError(f"{exc}\n  (cleaning up also failed: {cleanup_error})") from None
            raise
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
            raise
        raise LabError(f"lab `{lab.name}`: {exc}") from exc
    finally:
        if node_ipr is not None:
            node_ipr.close()
    return lab


def _teardown(lab: Lab, owned_only: bool = False) -> None:
    """Stop servers, remove veths and namespaces, remove state files. Raises if anything stays.

    owned_only: remove only the namespaces this process created (a failed `up` cleaning up).
    """
    problems: list[str] = []
    namespaces = [c.netns for c in lab.containers] + [lab.node_netns]
    if owned_only:
        namespaces = [ns for ns in namespaces if ns in lab.made_netns]
    for c in lab.containers:
        if c.server:
            try:
                _stop_server(c.server)
            except NetcError as exc:
                problems.append(str(exc))
    # Deleting the host-side veths first makes their removal synchronous and checkable; the
    # namespaces then go with their last reference.
    if lab.node_netns in namespaces and netns_exists(lab.node_netns):
        try:
            ipr = _iproute(lab.node_netns)
            try:
                # one call for all of them (a single RCU grace period instead of one per veth)
                with contextlib.suppress(Exception):
                    ipr.link("del", index=0, group=VETH_GROUP)
                for c in lab.containers:
                    with contextlib.suppress(Exception):
                        for idx in ipr.link_lookup(ifname=c.interface):
                            ipr.link("del", index=idx)
                left = [c.interface for c in lab.containers if ipr.link_lookup(ifname=c.interface)]
                if left:
                    problems.append(f"veths still present in {lab.node_netns}: {', '.join(left)}")
            finally:
                ipr.close()
        except NetcError as exc:
            problems.append(str(exc))
    for ns in namespaces:
        try:
            delete_netns(ns)
        except NetnsError as exc:
            problems.append(str(exc))
        if netns_exists(ns):
            problems.append(f"namespace {ns} is still present")
    if problems:
        raise LabError(f"lab `{lab.name}` was not removed completely: " + "; ".join(problems))
    for path in (lab.inventory_path, lab.record_path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(lab.log_dir, ignore_errors=True)


def down(name: str | Lab | None = None) -> Lab:
    """Remove a lab (the latest when no name is given): servers, veths, namespaces, state files."""
    lab = _resolve(name)
    with _locked(lab.state_dir):
        if not os.path.exists(lab.record_path):
            raise LabError(f"lab `{lab.name}` is already down")
        lab = _read_record(lab.record_path, lab.state_dir)
        _teardown(lab)
    return lab


def down_all() -> list[str]:
    """Remove every recorded lab; returns their names. Reports every failure at the end."""
    removed, failed = [], []
    for lab in list_labs():
        try:
            down(lab)
            removed.append(lab.name)
        except NetcError as exc:
            failed.append(str(exc))
    if failed:
        raise LabError("; ".join(failed))
    return removed


def status() -> list[dict[str, Any]]:
    """Every recorded lab with what actually exists: namespaces present or missing, servers alive."""
    out = []
    for lab in list_labs():
        containers = []
        for c in lab.containers:
            containers.append({
                "name": c.name, "netns": c.netns, "netns_present": netns_exists(c.netns),
                "interface": c.interface, "ifindex": c.ifindex, "addresses": list(c.addresses),
                "labels": dict(c.labels), "serve": [f"{p}:{n}" for p, n in c.serve],
                "server_pid": c.server.pid if c.server else None,
                "server_alive": c.server.alive() if c.server else None,
            })
        node = netns_exists(lab.node_netns)
        healthy = node and all(c["netns_present"] and c["server_alive"] is not False for c in containers)
        out.append({"name": lab.name, "state": lab.state if healthy or lab.state != "up" else "degraded",
                    "created": lab.created, "topology_path": lab.topology_path,
                    "node_netns": lab.node_netns, "node_netns_present": node,
                    "inventory_path": lab.inventory_path, "record_path": lab.record_path,
                    "containers": containers})
    return out


def exec(lab: Lab | str | None, container: str, argv: Sequence[str], **popen_kwargs: Any) -> int:  # noqa: A001
    """Run `argv` in a container's network namespace and wait; returns its exit status."""
    lab = _resolve(lab)
    c = lab.container(container)
    if not argv:
        raise LabError("exec needs a command")
    try:
        proc = run_in_netns(c.netns, argv, **popen_kwargs)
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise LabError(f"cannot run {argv[0]}: permission denied") from None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise


def _target_address(lab: Lab, to: str, ipv6: bool) -> str:
    try:
        return str(ipaddress.ip_address(to))
    except ValueError:
        pass
    try:
        c = lab.container(to)
    except LabError:
        raise LabError(f"`{to}` is neither a container of lab `{lab.name}` nor an address") from None
    addr = c.address(ipv6)
    if addr is None:
        raise LabError(f"container `{to}` has no IPv{6 if ipv6 else 4} address")
    return addr


CONNECTED, REFUSED, TIMED_OUT = "connected", "refused", "timed out"


def probe(lab: Lab | str | None, from_container: str, to: str, port: int, udp: bool = False,
          timeout: float = 1.0, ipv6: bool = False) -> str:
    """Try one TCP connection (or one UDP request/reply) from a container.

    `to` is a container of the lab (its IPv4 address, or IPv6 with ipv6=True) or an address.
    Returns "connected", "refused" (TCP RST, or ICMP port unreachable for UDP) or "timed out".
    Other errors (no route, ...) raise LabError.
    """
    lab = _resolve(lab)
    src = lab.container(from_container)
    addr = _target_address(lab, to, ipv6)
    if not 0 < int(port) < 65536:
        raise LabError(f"port {port} is out of range")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with in_netns(src.netns):
        s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    with s:
        try:
            s.settimeout(timeout)
            s.connect((addr, int(port)))
            if not udp:
                return CONNECTED
            s.send(b"netc probe\n")
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            s.recv(512)
            return CONNECTED
        except ConnectionRefusedError:
            return REFUSED
        except TimeoutError:
            return TIMED_OUT
        except OSError as exc:
            proto = "udp" if udp else "tcp"
            raise LabError(f"probe {proto} {from_container} -> {addr}:{port}: "
                           f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})") from None


def add_container(lab: Lab | str | None, spec: ContainerSpec | dict[str, Any]) -> LabContainer:
    """Add one container to a running lab (a topology entry); updates the record and inventory."""
    lab = _resolve(lab)
    if isinstance(spec, dict):
        spec = parse_container_spec(spec, "container")
    with _locked(lab.state_dir):
        lab = _read_record(lab.record_path, lab.state_dir)
        if any(c.name == spec.name for c in lab.containers):
            raise LabError(f"lab `{lab.name}` already has a container `{spec.name}`")
        c = _new_container(lab, spec, lab.next_index)
        _check_addresses_free(lab, c)
        _check_netns_free([c.netns])
        lab.containers.append(c)
        lab.next_index += 1
        node_ipr = None
        try:
            node_ipr = _iproute(lab.node_netns)
            _wire_container(lab, node_ipr, c)
            if c.serve:
                proc = _start_server(lab, c)
                _await_ready(lab, {c.name: proc})
            lab.save()
        except BaseException as exc:
            with contextlib.suppress(NetcError):
                _teardown_containers(lab, node_ipr, [c], delete_ns=c.netns in lab.made_netns)
            if isinstance(exc, NetcError) or not isinstance(exc, Exception):
                raise
            raise LabError(f"lab `{lab.name}`: cannot add `{c.name}`: {exc}") from exc
        finally:
            if node_ipr is not None:
                node_ipr.close()
    return c


def _teardown_containers(lab: Lab, node_ipr: Any, containers: list[LabContainer], delete_ns: bool = True) -> None:
    """Stop the containers' servers, delete their veths and (delete_ns) their namespaces."""
    problems = []
    for c in containers:
        if c.server:
            try:
                _stop_server(c.server)
            except NetcError as exc:
                problems.append(str(exc))
        if node_ipr is not None:
            with contextlib.suppress(Exception):
                for idx in node_ipr.link_lookup(ifname=c.interface):
                    node_ipr.link("del", index=idx)
            if node_ipr.link_lookup(ifname=c.interface):
                problems.append(f"veth {c.interface} is still present")
        if delete_ns:
            delete_netns(c.netns)
            if netns_exists(c.netns):
                problems.append(f"namespace {c.netns} is still present")
        if c.server and c.server.log:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(c.server.log)
    if problems:
        raise LabError(f"lab `{lab.name}`: " + "; ".join(problems))


def remove_container(lab: Lab | str | None, name: str) -> None:
    """Remove one container from a running lab; updates the record and inventory."""
    lab = _resolve(lab)
    with _locked(lab.state_dir):
        lab = _read_record(lab.record_path, lab.state_dir)
        c = lab.container(name)
        node_ipr = _iproute(lab.node_netns) if netns_exists(lab.node_netns) else None
        try:
            _teardown_containers(lab, node_ipr, [c])
        finally:
            if node_ipr is not None:
                node_ipr.close()
        lab.containers.remove(c)
        lab.save()
