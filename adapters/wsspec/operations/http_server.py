"""A minimal HTTP/1.1 server for ``/metrics``, ``/healthz`` and ``/readyz`` on a port of
their own (``wsspec serve --metrics-port``, ``App.running(metrics_address=...)``).

It runs on the runtime's own event loop (anyio: trio or asyncio), so a scrape reads the
counters on the thread that writes them. It answers ``GET`` and ``HEAD`` of those paths and
nothing else, one request per connection (``Connection: close``; Prometheus and every
probe handle that). Every buffer and wait is bounded: a request head of at most
``MAX_REQUEST_HEAD`` bytes (431 beyond), ``REQUEST_TIMEOUT`` seconds to send it and read
the answer, ``MAX_CLIENTS`` connections at once (more are closed unanswered). Plain HTTP
only: bind it to an interface only your monitoring reaches.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from .endpoints import PATHS, Reply, respond

if TYPE_CHECKING:
    from ..runtime import App

logger = logging.getLogger("wsspec.operations")

#: Bytes of request line and headers read at most; a scraper sends about a hundred.
MAX_REQUEST_HEAD = 8192
#: Seconds a client has to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Connections served at once; a scraper and a probe or two need a handful.
MAX_CLIENTS = 32
#: Bytes read and dropped after the reply, waiting for the client to close (_linger).
LINGER_BYTES = 65536

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


async def serve_operations(
    app: App,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the operations endpoints of ``app`` on ``host:port`` until cancelled;
    ``task_status.started`` gets ``http://HOST:PORT/metrics`` with the port bound."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.listeners[0]
    address = bound.extra(SocketAttribute.local_address)
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    url = f"http://{shown}:{bound.extra(SocketAttribute.local_port)}/metrics"
    limiter = anyio.CapacityLimiter(MAX_CLIENTS)
    async with listener:
        logger.info("metrics, /healthz and /readyz on %s", url.removesuffix("/metrics"))
        task_status.started(url)
        await listener.serve(partial(_serve_client, app, limiter))


async def _serve_client(
    app: App, limiter: anyio.CapacityLimiter, stream: anyio.abc.ByteStream
) -> None:
    # Never raises: an exception here would end the listener's task group, and the server.
    async with stream:
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            return  # too many at once: closed unanswered
        try:
            with anyio.move_on_after(REQUEST_TIMEOUT):
                head = await _read_head(stream)
                reply, head_only = await _answer(app, head)
                await stream.send(_encode(reply, head_only=head_only))
                await _linger(stream)
        except _GONE:
            pass
        except Exception:
            logger.exception("the operations endpoint failed on a request")
        finally:
            limiter.release()


async def _read_head(stream: anyio.abc.ByteStream) -> bytes | None:
    """The request line and headers, or ``None`` when they exceed MAX_REQUEST_HEAD."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_REQUEST_HEAD:
            return None
        buffer += await stream.receive(4096)
    head = buffer.partition(b"\r\n\r\n")[0]
    return head if len(head) <= MAX_REQUEST_HEAD else None


async def _linger(stream: anyio.abc.ByteStream) -> None:
    """Half-close, then read and drop what the client still sends until it closes (at most
    LINGER_BYTES, within the request's timeout): closing a socket with unread data makes
    the kernel reset the connection, and the client could lose the reply (a 431 to a
    request larger than we read) before reading it."""
    if isinstance(stream, anyio.abc.SocketStream):
        await stream.send_eof()
    drained = 0
    while drained < LINGER_BYTES:
        drained += len(await stream.receive(65536))


async def _answer(app: App, head: bytes | None) -> tuple[Reply, bool]:
    """The reply to a request head, and whether it is to a HEAD (no body sent)."""
    if head is None:
        return Reply(431, "text/plain", b"request head too large\n"), False
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return Reply(400, "text/plain", b"bad request\n"), False
    method, target = parts[0], parts[1].decode("latin-1")
    if method not in (b"GET", b"HEAD"):
        return Reply(405, "text/plain", b"GET or HEAD only\n"), False
    path = target.partition("?")[0]
    if path not in PATHS:
        return Reply(404, "text/plain", b"not found: /metrics, /healthz, /readyz\n"), False
    return await respond(app, path), method == b"HEAD"


def _encode(reply: Reply, *, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        "Connection: close\r\n"
    )
    if reply.status == 405:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode("latin-1") + (b"" if head_only else reply.body)
