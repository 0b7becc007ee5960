"""The trio + trio-websocket transport: :func:`serve`.

It moves bytes and nothing else: each handshake on the path becomes a
:class:`TrioWebSocketTransport` handed to the runtime, which runs the connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from wsproto.events import TextMessage

from wsspec_core import RequestInfo

from ..runtime import CLOSE_TIMEOUT, SHUTDOWN_TIMEOUT, App, TransportClosed

logger = logging.getLogger("wsspec.server")

_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class TrioWebSocketTransport:
    """One trio-websocket handshake, then connection."""

    def __init__(self, request: WebSocketRequest) -> None:
        self.request = request
        self.ws: WebSocketConnection | None = None
        #: The channel trio-websocket's own reader task puts complete messages in, once
        #: accepted (and where this trio-websocket has it).
        self._messages: trio.MemoryReceiveChannel[str | bytes] | None = None

    async def accept(self) -> None:
        try:
            self.ws = await self.request.accept()
        except _GONE:
            raise TransportClosed from None
        if _CAN_TAKE_NOWAIT:
            self._messages = self.ws._recv_channel

    def receive_nowait(self) -> str | bytes | None:
        """A message trio-websocket has already received, or ``None``: what
        ``get_message()`` returns, without its checkpoint (it always yields to the
        scheduler, even with a message waiting), so that the runtime handles the messages
        at hand together and writes their replies with one ``send_all``. A closed channel
        is left for receive() to report."""
        messages = self._messages
        if messages is None:
            return None
        try:
            return messages.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def reject(self, status: int, reason: str) -> None:
        with contextlib.suppress(*_GONE):
            await self.request.reject(status, body=reason.encode())

    async def receive(self) -> str | bytes | None:
        assert self.ws is not None
        try:
            return await self.ws.get_message()
        except ConnectionClosed:
            return None

    async def send(self, frames: Sequence[str]) -> None:
        assert self.ws is not None
        try:
            if _CAN_COALESCE:
                # One frame too: send_message's work without its debug log call.
                await _send_joined(self.ws, frames)
            else:
                for frame in frames:
                    await self.ws.send_message(frame)
        except _GONE:
            raise TransportClosed from None

    async def close(self, code: int, reason: str) -> None:
        assert self.ws is not None
        try:
            await self.ws.aclose(code, reason)
        except _GONE:
            raise TransportClosed from None

    async def ping(self) -> None:
        assert self.ws is not None
        try:
            await self.ws.ping()
        except _GONE:
            raise TransportClosed from None

    def closed_by_peer(self) -> str:
        reason = self.ws.closed if self.ws is not None else None
        return "dropped" if reason is None else f"code {reason.code}"


async def _send_joined(ws: WebSocketConnection, frames: Sequence[str]) -> None:
    """Send ``frames`` as separate WebSocket text messages written with one ``send_all``.

    trio-websocket has no call for several messages at once, so this does what its
    ``send_message`` does for each frame (``_send``: the same lock, the same error
    mapping) with the frames' bytes joined: one system call and one wake-up of the client
    instead of one per reply. Used for a single frame too: the same work as
    ``send_message`` less its debug log call. It reaches into private attributes, justified
    by the gain measured in benchmarks/bench_server.py (docs/server.md "How it runs"), and
    checked by ``_CAN_COALESCE`` so that a trio-websocket without them falls back to the
    public API.
    """
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    send = ws._wsproto.send
    data = (
        send(TextMessage(data=frames[0]))
        if len(frames) == 1
        else b"".join(send(TextMessage(data=frame)) for frame in frames)
    )
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None


#: Whether this trio-websocket keeps its received messages in ``_recv_channel`` (a trio
#: memory channel), which receive_nowait() takes from as get_message() does.
_CAN_TAKE_NOWAIT = "_recv_channel" in WebSocketConnection.__init__.__code__.co_names

#: Whether this trio-websocket has the private attributes _send_joined relies on.
_CAN_COALESCE = all(
    hasattr(WebSocketConnection, name) for name in ("_abort_web_socket", "_send")
) and all(
    name in WebSocketConnection.__init__.__code__.co_names
    for name in ("_stream_lock", "_wsproto", "_stream", "_close_reason")
)


def request_info(request: WebSocketRequest) -> RequestInfo:
    path, _, query = request.path.partition("?")
    headers = tuple(
        (
            name.decode("latin-1") if isinstance(name, bytes) else str(name),
            value.decode("latin-1") if isinstance(value, bytes) else str(value),
        )
        for name, value in request.headers
    )
    remote = request.remote
    address = getattr(remote, "address", None)
    port = getattr(remote, "port", None)
    if address is not None and port is not None:
        remote_address: str | None = f"{address}:{port}"
    else:
        remote_address = str(remote) if remote else None
    return RequestInfo(path=path, query=query, headers=headers, remote_address=remote_address)


async def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    path: str | None = "/ws",
    close_timeout: float = CLOSE_TIMEOUT,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    sock: socket.socket | None = None,
    metrics_address: tuple[str, int] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``ws://host:port/path`` with trio-websocket until
    :meth:`App.request_shutdown` is called or the calling scope is cancelled, then shut
    down gracefully.

    Use inside your own nursery: ``url = await nursery.start(serve, app, "127.0.0.1", 0)``
    returns the URL actually bound (port 0 picks a free port; :func:`port_of` reads it).
    ``path=None`` accepts any path; other paths are refused with HTTP 404.

    ``ssl_context`` (a server context with its certificate loaded) serves ``wss://``.
    ``sock``: accept on this listening socket instead of binding ``host:port`` (the
    ``--workers`` processes share one). ``metrics_address=(host, port)``: serve
    ``/metrics``, ``/healthz`` and ``/readyz`` there (docs/operations.md).

    Shutdown: stop accepting, tell the engine, which finishes the requests it accepted and
    closes every connection with 1001 (going away); wait up to ``shutdown_timeout`` seconds
    for the connections to close, then drop the rest.  Cancellation starts the same
    graceful shutdown, shielded, so it can take up to ``shutdown_timeout`` seconds.
    """
    shutdown_requested = app._shutdown_requested = anyio.Event()
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                partial(
                    _serve_until_shutdown,
                    app,
                    host,
                    port,
                    path,
                    close_timeout,
                    shutdown_timeout,
                    shutdown_requested,
                    _Listening(ssl_context, sock, metrics_address),
                )
            )
            task_status.started(url)
            try:
                await shutdown_requested.wait()
            finally:
                # On cancellation too: the server is shielded and shuts down gracefully.
                shutdown_requested.set()
    finally:
        app._shutdown_requested = None


class _Listening:
    """Where and how :func:`serve` listens, beyond host and port."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        sock: socket.socket | None,
        metrics_address: tuple[str, int] | None,
    ) -> None:
        self.ssl_context = ssl_context
        self.sock = sock
        self.metrics_address = metrics_address

    async def listeners(
        self, host: str, port: int
    ) -> list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]:
        if self.sock is not None:
            plain = [trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))]
        else:
            plain = await trio.open_tcp_listeners(port, host=host)
        if self.ssl_context is None:
            return plain
        # As trio-websocket's own serve_websocket wraps them for wss://.
        return [
            trio.SSLListener(listener, self.ssl_context, https_compatible=True)
            for listener in plain
        ]


def _bound_address(listener: trio.SocketListener | trio.SSLListener[trio.SocketStream]) -> Any:
    plain = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    assert isinstance(plain, trio.SocketListener)
    return plain.socket.getsockname()


async def _serve_until_shutdown(
    app: App,
    host: str,
    port: int,
    path: str | None,
    close_timeout: float,
    shutdown_timeout: float,
    shutdown_requested: anyio.Event,
    listening: _Listening,
    task_status: trio.TaskStatus[str],
) -> None:
    # Shielded: the caller's cancellation must not kill in-flight writes or connections
    # mid-message; serve() sets shutdown_requested instead, and the shutdown is bounded.
    with trio.CancelScope(shield=True):
        async with (
            app.running(
                close_timeout=close_timeout,
                shutdown_timeout=shutdown_timeout,
                metrics_address=listening.metrics_address,
            ) as runtime,
            trio.open_nursery() as handlers,
        ):

            async def handle(request: WebSocketRequest) -> None:
                info = request_info(request)
                if path is not None and info.path != path:
                    await request.reject(404, body=b"not found")
                    return
                await runtime.run_connection(TrioWebSocketTransport(request), info)

            listeners = await listening.listeners(host, port)
            server = trio_websocket.WebSocketServer(
                handle,
                listeners,
                handler_nursery=handlers,
                # So that trio-websocket never buffers a frame the engine would refuse.
                max_message_size=app.limits.max_message_bytes,
                disconnect_timeout=close_timeout,
            )
            accepting = trio.CancelScope()

            async def listen(
                task_status: trio.TaskStatus[trio_websocket.WebSocketServer],
            ) -> None:
                with accepting:
                    await server.run(task_status=task_status)

            await handlers.start(listen)
            bound_host, bound_port = _bound_address(listeners[0])[:2]
            scheme = "ws" if listening.ssl_context is None else "wss"
            url = f"{scheme}://{_format_host(bound_host)}:{bound_port}{path or '/'}"
            logger.info("listening on %s", url)
            task_status.started(url)
            await shutdown_requested.wait()
            accepting.cancel()
            await runtime.shutdown()
            handlers.cancel_scope.cancel()


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_of(url: str) -> int:
    """The port of a URL returned by :func:`serve`."""
    port = urlsplit(url).port
    assert port is not None
    return port
