"""A tiny server for lab containers: `python -m netc.runtime.labserver --tcp 80 --udp 53 --name web-1`.

TCP (IPv4 and IPv6 on one dual-stack socket): every connection gets `netc <name> tcp <port>\\n`,
then the server closes it. Echo (`--echo PORT`, TCP): the connection stays open and every line the
client sends is answered with `netc <name> echo <port> <line>`, until the client closes it: a
long-lived connection, to see which backend serves it from start to end. UDP (one IPv4 and one IPv6 socket): every datagram is answered with
`netc <name> udp <port>\\n`, sent from the address it was sent to (so a connected client socket
accepts the reply even on a container with several addresses).

One thread, one selector. Prints `ready` on stdout once every socket is bound (the lab waits for
it), then writes nothing more there. Exits with status 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Callable

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
CMSG_SPACE = socket.CMSG_SPACE(64)


def _tcp_socket(port: int) -> socket.socket:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr: tuple[str, int] = ("::", port)
    except OSError:  # no IPv6 in this kernel
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = ("0.0.0.0", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(128)
    s.setblocking(False)
    return s


def _udp_sockets(port: int) -> list[socket.socket]:
    out = []
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s4.bind(("0.0.0.0", port))
    out.append(s4)
    try:
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        s6 = None
    if s6 is not None:
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        s6.bind(("::", port))
        out.append(s6)
    for s in out:
        s.setblocking(False)
    return out


def _on_accept(sock: socket.socket, reply: bytes) -> None:
    try:
        conn, _ = sock.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    with conn:
        conn.settimeout(1.0)
        with contextlib.suppress(OSError):
            conn.sendall(reply)
            conn.shutdown(socket.SHUT_WR)


def _on_echo_accept(sock: socket.socket, reply: bytes, sel: selectors.BaseSelector) -> None:
    try:
        conn, _ = sock.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, (_on_echo_data, (reply, bytearray())))


def _on_echo_data(conn: socket.socket, state: tuple[bytes, bytearray], sel: selectors.BaseSelector) -> None:
    prefix, pending = state
    try:
        data = conn.recv(65536)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if not data:
        sel.unregister(conn)
        conn.close()
        return
    pending += data
    while b"\n" in pending:
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        conn.setblocking(True)
        conn.settimeout(1.0)
        with contextlib.suppress(OSError):
            conn.sendall(prefix + line + b"\n")
        conn.setblocking(False)


def _reply_cmsg(level: int, ctype: int, data: bytes) -> list[tuple[int, int, bytes]]:
    """The pktinfo control message that makes the reply leave from the address that was asked."""
    if level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(data) >= 12:
        ifindex, _spec, addr = struct.unpack("=I4s4s", data[:12])
        return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, addr, b"\0" * 4))]
    if level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO and len(data) >= 20:
        addr6, ifindex = struct.unpack("=16sI", data[:20])
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, struct.pack("=16sI", addr6, 0))]
    return []


def _on_datagram(sock: socket.socket, reply: bytes) -> None:
    try:
        _data, ancdata, _flags, peer = sock.recvmsg(65535, CMSG_SPACE)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:  # e.g. an ICMP error queued on the socket
        return
    cmsg: list[tuple[int, int, bytes]] = []
    for level, ctype, data in ancdata:
        cmsg = _reply_cmsg(level, ctype, data)
        if cmsg:
            break
    with contextlib.suppress(OSError):
        sock.sendmsg([reply], cmsg, 0, peer)


def serve(name: str, tcp: list[int], udp: list[int], ready: Callable[[], None] | None = None,
          echo: list[int] | None = None) -> None:
    sel = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    try:
        for port in tcp:
            s = _tcp_socket(port)
            sockets.append(s)
            sel.register(s, selectors.EVENT_READ, (_on_accept, f"netc {name} tcp {port}\n".encode()))
        for port in echo or []:
            s = _tcp_socket(port)
            sockets.append(s)
            sel.register(s, selectors.EVENT_READ, (_on_echo_accept, f"netc {name} echo {port} ".encode()))
        for port in udp:
            for s in _udp_sockets(port):
                sockets.append(s)
                sel.register(s, selectors.EVENT_READ, (_on_datagram, f"netc {name} udp {port}\n".encode()))
        if ready:
            ready()
        while True:
            for key, _ in sel.select():
                handler, reply = key.data
                if handler in (_on_echo_accept, _on_echo_data):
                    handler(key.fileobj, reply, sel)
                else:
                    handler(key.fileobj, reply)
    finally:
        sel.close()
        for s in sockets:
            s.close()


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _ports(values: list[str], proto: str) -> list[int]:
    out = []
    for v in values:
        for part in v.split(","):
            if not part:
                continue
            if not part.isdigit() or not 1 <= int(part) <= 65535:
                raise SystemExit(f"labserver: bad {proto} port `{part}`")
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netc.runtime.labserver",
                                 description="Answer TCP connections and UDP datagrams with a line naming this server.")
    ap.add_argument("--name", required=True, help="the container name put in every reply")
    ap.add_argument("--tcp", action="append", default=[], help="a TCP port to listen on (repeatable, or comma-separated)")
    ap.add_argument("--udp", action="append", default=[], help="a UDP port to answer on (repeatable, or comma-separated)")
    ap.add_argument("--echo", action="append", default=[],
                    help="a TCP port whose connections stay open, each line answered (repeatable)")
    args = ap.parse_args(argv)
    tcp, udp, echo = _ports(args.tcp, "tcp"), _ports(args.udp, "udp"), _ports(args.echo, "echo")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        # nothing more goes to stdout: point fd 1 at /dev/null so the lab may close its pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    try:
        serve(args.name, tcp, udp, ready, echo)
    except OSError as exc:
        print(f"labserver {args.name}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
