"""Many WebSocket client connections on plain non-blocking sockets, driven from one
selector loop: the client side of ``bench_fanout.py`` and ``bench_latency.py``.

It builds on ``_bench_wire`` (the handshake, masked client frames) and adds what a
connection kept open for longer than a few seconds needs: it hands back the payload of every
data frame, answers the server's keepalive pings with pongs, and reports a close frame with
its code.  One Python loop serves every connection, so the client costs a few microseconds
per frame, far less than any server it measures.  Loopback only.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import _bench_wire as wire

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(wire.Closed):
    """The server closed the connection: ``code`` is its close code (``None``: the TCP
    connection ended without a close frame)."""

    def __init__(self, code: int | None, reason: bytes = b"") -> None:
        super().__init__(f"closed by the server: code {code} {reason!r}")
        self.code = code
        self.reason = reason
        self.connection: Connection | None = None


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked control frame (the zero mask: loopback, and control payloads are tiny)."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


@dataclass(eq=False)
class Connection:
    """One client connection: its socket, the bytes still to send, the frames received."""

    sock: socket.socket
    tag: object = None
    buffer: bytearray = field(default_factory=bytearray)
    outgoing: bytearray = field(default_factory=bytearray)
    received: int = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the server; return the payloads of the data frames completed.
        A ping queues its pong; a close frame raises :class:`Closed`."""
        buffer = self.buffer
        buffer += data
        end = len(buffer)
        position = 0
        payloads: list[bytes] = []
        while end - position >= 2:
            length = buffer[position + 1] & 0x7F
            header = 2
            if length == 126:
                if end - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if end - position < header + length:
                break
            opcode = buffer[position] & 0x0F
            start = position + header
            if opcode in (TEXT, BINARY):
                payloads.append(bytes(buffer[start : start + length]))
            elif opcode == PING:
                self.outgoing += control_frame(PONG, bytes(buffer[start : start + length]))
            elif opcode == CLOSE:
                body = bytes(buffer[start : start + length])
                code = int.from_bytes(body[:2], "big") if len(body) >= 2 else None
                raise Closed(code, body[2:])
            position = start + length
        if position:
            del buffer[:position]
        self.received += len(payloads)
        return payloads

    def flush(self) -> None:
        """Write what the socket takes now (non-blocking)."""
        if self.outgoing:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = self.sock.send(self.outgoing)
                del self.outgoing[:sent]


def open_connections(url: str, count: int, batch: int = 100) -> list[Connection]:
    """Open ``count`` WebSocket connections to ``url`` (handshakes ``batch`` at a time);
    each socket is non-blocking once open."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opened: list[Connection] = []
    try:
        while len(opened) < count:
            group: list[socket.socket] = []
            for _ in range(min(batch, count - len(opened))):
                sock = socket.create_connection((host, port), timeout=30.0)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                group.append(sock)
                opened.append(Connection(sock))
                sock.sendall(wire.handshake(host, port, parts.path or "/"))
            for conn in opened[-len(group) :]:
                conn.buffer += wire.read_handshake(conn.sock)
                conn.sock.setblocking(False)
    except BaseException:
        close_connections(opened)
        raise
    return opened


def close_connections(connections: Sequence[Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(OSError):
            conn.sock.setblocking(True)
            conn.sock.settimeout(0.2)
            conn.sock.sendall(wire.CLOSE_FRAME)
        conn.sock.close()


class Loop:
    """A selector over connections.  :meth:`send` writes at once what the socket takes and
    leaves the rest to :meth:`poll`, which returns, for each connection that received data,
    the payloads of its complete data frames (pongs to pings are sent on the way)."""

    def __init__(self, connections: Sequence[Connection]) -> None:
        self.selector = selectors.DefaultSelector()
        self.connections = list(connections)
        for conn in self.connections:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._writing: set[Connection] = set()

    def close(self) -> None:
        self.selector.close()

    def send(self, conn: Connection, data: bytes) -> None:
        conn.outgoing += data
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        conn.flush()
        wants_write = bool(conn.outgoing)
        if wants_write != (conn in self._writing):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_write else 0)
            self.selector.modify(conn.sock, events, conn)
            if wants_write:
                self._writing.add(conn)
            else:
                self._writing.discard(conn)

    def poll(self, timeout: float) -> Iterator[tuple[Connection, list[bytes]]]:
        for key, mask in self.selector.select(timeout):
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                self._write(conn)
            if mask & selectors.EVENT_READ:
                try:
                    data = conn.sock.recv(1 << 18)
                except (BlockingIOError, InterruptedError):
                    continue
                try:
                    if not data:
                        raise Closed(None)
                    payloads = conn.feed(data)
                except Closed as closed:
                    closed.connection = conn
                    raise
                if conn.outgoing:
                    self._write(conn)
                yield conn, payloads
