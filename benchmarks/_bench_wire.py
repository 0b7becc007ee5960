"""A minimal blocking WebSocket client for benchmarks/bench_server.py.

Plain sockets, frames built once before the clock starts, replies counted by walking the
frame headers: the client spends a few microseconds per message, far less than any of the
servers measured, so it is not what limits the rates.  The same code drives the wsspec
servers and the echo servers.  Loopback only.
"""

from __future__ import annotations

import base64
import contextlib
import os
import selectors
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

#: A reply that says the request failed; counted, and the benchmark refuses such a run.
FAILED = b'"success":false'


class Closed(Exception):
    """The server closed the connection."""


def client_frame(text: str) -> bytes:
    """One masked text frame (RFC 6455 5.3: clients must mask), with a random key."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    key = os.urandom(4)
    repeated = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        size, "big"
    )
    return header + key + masked


CLOSE_FRAME = bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big")


class Replies:
    """Counts the complete data frames in what the server sent; keeps the incomplete tail."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.failed = 0
        self.last = b""

    def feed(self, data: bytes) -> int:
        buffer = self.buffer
        buffer += data
        end = len(buffer)
        position = 0
        count = 0
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
            if opcode in (1, 2):
                count += 1
                self.last = bytes(buffer[position + header : position + header + length])
            elif opcode == 8:
                raise Closed(bytes(buffer[position + header : position + header + length]))
            position += header + length  # pings (opcode 9) are ignored: runs are short
        if position:
            self.failed += buffer.count(FAILED, 0, position)
            del buffer[:position]
        return count


def connect(url: str, timeout: float = 10.0) -> tuple[socket.socket, Replies]:
    """Open a WebSocket to ``url`` (ws://127.0.0.1:PORT/PATH); blocking socket."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(handshake(host, port, parts.path or "/"))
    replies = Replies()
    replies.feed(read_handshake(sock))
    return sock, replies


def handshake(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def read_handshake(sock: socket.socket) -> bytes:
    """Read the server's handshake answer; return the bytes after it."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed(f"closed during the handshake: {received!r}")
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise Closed(f"handshake refused: {head!r}")
    return rest


def request(url: str, frame: str) -> bytes:
    """Send one frame, return the payload of the first reply."""
    sock, replies = connect(url)
    try:
        sock.sendall(client_frame(frame))
        while not replies.feed(sock.recv(65536)):
            pass
        return replies.last
    finally:
        close(sock)


def close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(CLOSE_FRAME)
    sock.close()


def one_at_a_time(url: str, frames: Sequence[bytes], seconds: float) -> tuple[int, float, int]:
    """Send a frame, wait for its reply, repeat, for ``seconds``.
    Returns (replies, elapsed seconds, failed replies)."""
    sock, replies = connect(url)
    try:
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        send, recv, feed = sock.sendall, sock.recv, replies.feed
        while True:
            for frame in frames:
                send(frame)
                while not feed(recv(65536)):
                    pass
            done += len(frames)
            if time.perf_counter() >= deadline:
                break
        return done, time.perf_counter() - started, replies.failed
    finally:
        close(sock)


def pipelined(
    url: str, batches: Sequence[bytes], per_batch: int, window: int, seconds: float
) -> tuple[int, float, int]:
    """Keep up to ``window`` requests unanswered (sent in batches of ``per_batch`` frames)
    for ``seconds``, then wait for the last replies.  Returns (replies, elapsed, failed)."""
    sock, replies = connect(url)
    try:
        sock.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        sent = received = 0
        pending = memoryview(b"")
        next_batch = 0
        sending = True
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            if sending and not pending and sent - received <= window - per_batch:
                pending = memoryview(batches[next_batch])
                next_batch = (next_batch + 1) % len(batches)
                sent += per_batch
            if pending:
                with contextlib.suppress(BlockingIOError):
                    pending = pending[sock.send(pending) :]
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
            selector.modify(sock, events)
            for _key, mask in selector.select(timeout=5.0):
                if mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise Closed("connection dropped")
                    received += replies.feed(data)
            now = time.perf_counter()
            if sending and now >= deadline:
                sending = False
            elif now >= deadline + 30:
                raise TimeoutError(f"{sent - received} replies still missing after 30 s")
            if not sending and not pending and received >= sent:
                break
        elapsed = time.perf_counter() - started
        selector.close()
        sock.setblocking(True)
        return received, elapsed, replies.failed
    finally:
        close(sock)


def open_idle(url: str, count: int, first_frame: bytes, batch: int = 50) -> list[socket.socket]:
    """Open ``count`` connections, each sending ``first_frame`` and reading its reply."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opened: list[socket.socket] = []
    try:
        while len(opened) < count:
            group = []
            for _ in range(min(batch, count - len(opened))):
                sock = socket.create_connection((host, port), timeout=10.0)
                opened.append(sock)
                group.append(sock)
                sock.sendall(handshake(host, port, parts.path or "/"))
            for sock in group:
                replies = Replies()
                replies.feed(read_handshake(sock))
                sock.sendall(first_frame)
                while not replies.feed(sock.recv(65536)):
                    pass
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        close(sock)
