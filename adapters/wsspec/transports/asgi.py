"""The ASGI transport: a wsspec :class:`~wsspec.App` as an ASGI 3 application.

It runs under uvicorn (asyncio) and hypercorn (asyncio or trio workers), and mounts at a
route of a Starlette or FastAPI application. It moves messages and nothing else: each
WebSocket handshake becomes an :class:`ASGIWebSocket` that the runtime runs.

The runtime lives as long as the server: the ASGI ``lifespan`` starts it and shuts it down
gracefully. Mounted inside another application, the host's lifespan must enter
:meth:`App.running` instead (Starlette does not pass lifespan events to mounted apps);
a handshake that arrives while no runtime runs is refused with 503 and logged.

Plain HTTP requests for ``/metrics``, ``/healthz`` and ``/readyz`` get the operations
endpoints (docs/operations.md); any other HTTP request a 404.

Flow control: ``await send(...)`` returns once the server took the frame, and both servers
hold a slow client's ``send`` while their socket buffer is full, so frames the client does
not read pile up in the runtime's queue, which the engine bounds (close 1008), exactly as
on trio-websocket.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from wsproto import WSConnection
from wsproto.events import Message as WsprotoMessage

from wsspec_core import RequestInfo

from ..runtime import TransportClosed

if TYPE_CHECKING:
    from ..runtime import App

logger = logging.getLogger("wsspec.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Skip:
    """What ASGIWebSocket._data_of returns for a message that carries no data."""


_SKIP = _Skip()

#: Close code for a refusal where the server cannot answer the handshake with an HTTP
#: status: the server turns a close before accept into HTTP 403 anyway.
_CLOSE_POLICY_VIOLATION = 1008


class ASGIWebSocket:
    """One ASGI WebSocket connection, as the runtime's ``Transport``."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._peer_close: int | None = None
        #: receive_nowait() took the disconnect: receive() reports it.
        self._ended = False
        # The runtime's optional read-ahead hooks (runtime.Transport), where the server's
        # receive is recognised: they let the runtime handle the messages already at hand
        # together and write their replies itself (docs/server.md "How it runs"). None
        # elsewhere: each reply is written as soon as it is queued.
        owner = getattr(receive, "__self__", None)
        queue = getattr(owner, "queue", None)
        trio = sys.modules.get("trio")
        #: uvicorn (wsproto and websockets-sansio): receive() is its protocol's, which
        #: takes from an asyncio.Queue, without waiting when the queue holds a message.
        self.buffered: Callable[[], int] | None = (
            queue.qsize  # a count: the runtime asks whether it is non-zero
            if isinstance(queue, asyncio.Queue)
            and type(owner).__module__.startswith("uvicorn.protocols.websockets.")
            and getattr(receive, "__name__", "") == "receive"
            else None
        )
        #: hypercorn's trio worker: receive() is a trio memory channel's.
        self.receive_nowait: Callable[[], str | bytes | None] | None = None
        if trio is not None and isinstance(owner, trio.MemoryReceiveChannel):
            self._channel = owner
            self.receive_nowait = self._take_nowait
        elif (
            self.buffered is not None
            and type(getattr(owner, "read_paused", None)) is bool
            and hasattr(getattr(owner, "transport", None), "resume_reading")
        ):
            # uvicorn's receive() is ``await queue.get()``, then resume_reading() once the
            # queue is empty if it paused reading (it pauses after each message it
            # queues): the same without the coroutines, for a message already queued.
            self._uvicorn: Any = owner
            self.receive_nowait = self._take_from_uvicorn
            if _joins_uvicorn_writes(owner, send):
                self.send = self._send_joined  # type: ignore[method-assign]

    async def _emit(self, message: Message) -> None:
        try:
            await self._send(message)
        except Exception:
            # Servers raise their own types once the client is gone (uvicorn's
            # ClientDisconnected, an OSError; RuntimeError after a close): all mean gone.
            raise TransportClosed from None

    async def accept(self) -> None:
        await self._emit({"type": "websocket.accept"})

    async def reject(self, status: int, reason: str) -> None:
        try:
            if "websocket.http.response" in self._scope.get("extensions", {}):
                await self._send(
                    {
                        "type": "websocket.http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await self._send({"type": "websocket.http.response.body", "body": reason.encode()})
            else:
                await self._send({"type": "websocket.close", "code": _CLOSE_POLICY_VIOLATION})
        except Exception:
            pass  # the client is gone already

    def _take_nowait(self) -> str | bytes | None:
        """A message hypercorn has already put in the application's channel, or ``None``
        (none there; or the disconnect, which receive() then reports): receive()'s work
        without the channel's checkpoint, which yields even when a message waits."""
        trio = sys.modules["trio"]
        while not self._ended:
            try:
                message = self._channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return None
            data = self._data_of(message)
            if not isinstance(data, _Skip):
                self._ended = data is None
                return data
        return None

    def _take_from_uvicorn(self) -> str | bytes | None:
        """A message uvicorn has already queued, or ``None`` (none there; or the
        disconnect, which receive() then reports): what its receive() does for it."""
        protocol = self._uvicorn
        queue = protocol.queue
        while not self._ended and queue.qsize():
            message = queue.get_nowait()
            if protocol.read_paused and not queue.qsize():
                protocol.read_paused = False
                protocol.transport.resume_reading()
            data = self._data_of(message)
            if not isinstance(data, _Skip):
                self._ended = data is None
                return data
        return None

    async def receive(self) -> str | bytes | None:
        if self._ended:
            return None
        while True:
            data = self._data_of(await self._receive())
            if not isinstance(data, _Skip):
                return data

    def _data_of(self, message: Message) -> str | bytes | _Skip | None:
        """A received message's text or bytes; ``None`` for the disconnect (its code
        kept); ``_SKIP`` for anything else (nothing else is defined after the connect)."""
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        if kind == "websocket.disconnect":
            self._peer_close = message.get("code", 1005)
            return None
        return _SKIP

    async def send(self, frames: Sequence[str]) -> None:
        # _emit's work with one try around the whole batch: a coroutine call less per
        # frame, on the path every response takes.
        send = self._send
        try:
            for frame in frames:
                await send({"type": "websocket.send", "text": frame})
        except Exception:
            raise TransportClosed from None

    async def _send_joined(self, frames: Sequence[str]) -> None:
        """``send`` under uvicorn's wsproto protocol: what its ``send`` does for each
        ``websocket.send`` (wait until the transport is writable, wsproto's frame for the
        message, ``transport.write``), once for the whole batch, so the batch leaves with
        one write (one system call) rather than one per frame. In any state but an open
        connection (closing, closed, refused) each frame goes through uvicorn's own
        ``send``, which decides."""
        protocol = self._uvicorn
        await protocol.writable.wait()
        if (
            protocol.disconnected
            or protocol.close_sent
            or protocol.response_started
            or not protocol.handshake_complete
        ):
            await ASGIWebSocket.send(self, frames)
            return
        conn_send = protocol.conn.send
        try:
            output = b"".join([conn_send(WsprotoMessage(data=frame)) for frame in frames])
        except Exception:  # wsproto's LocalProtocolError: the connection is closing
            raise TransportClosed from None
        transport = protocol.transport
        if not transport.is_closing():
            transport.write(output)

    async def close(self, code: int, reason: str) -> None:
        await self._emit({"type": "websocket.close", "code": code, "reason": reason})

    async def ping(self) -> None:
        # ASGI has no ping: the server keeps WebSockets alive by itself (uvicorn's
        # ws_ping_interval, hypercorn's websocket_ping_interval), so answer at once.
        return

    def closed_by_peer(self) -> str:
        return "dropped" if self._peer_close is None else f"code {self._peer_close}"


def _joins_uvicorn_writes(protocol: Any, send: Send) -> bool:
    """Whether ``send`` is uvicorn's wsproto protocol's, with the state its
    ``websocket.send`` reads: then a batch of frames is written with one
    ``transport.write`` (``ASGIWebSocket._send_joined``), as the trio transport joins its
    writes (docs/server.md "How it runs"). A uvicorn without that state gets one
    ``send`` per frame."""
    return (
        type(protocol).__module__ == "uvicorn.protocols.websockets.wsproto_impl"
        and getattr(send, "__self__", None) is protocol
        and getattr(send, "__name__", "") == "send"
        and isinstance(getattr(protocol, "writable", None), asyncio.Event)
        and isinstance(getattr(protocol, "conn", None), WSConnection)
        and all(
            type(getattr(protocol, name, None)) is bool
            for name in ("disconnected", "close_sent", "response_started", "handshake_complete")
        )
    )


def request_info(scope: Scope) -> RequestInfo:
    client = scope.get("client")
    return RequestInfo(
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ),
        remote_address=f"{client[0]}:{client[1]}" if client else None,
    )


class ASGIApp:
    """An :class:`App` as an ASGI application. ``path`` (e.g. ``"/ws"``) refuses WebSocket
    handshakes on other paths with 404; ``None`` (the default, right when mounting)
    accepts every path it is given."""

    def __init__(self, app: App, *, path: str | None = None, **runtime_options: Any) -> None:
        self.app = app
        self.path = path
        #: ``close_timeout``, ``shutdown_timeout``: for the runtime the lifespan runs.
        self.runtime_options = runtime_options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        from ..operations.endpoints import PATHS, respond

        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: the path below the mount point
            path = path[len(root) :]
        method = scope.get("method", "GET")
        if path in PATHS and method in ("GET", "HEAD"):
            reply = await respond(self.app, path)
            status, content_type, body = reply.status, reply.content_type, reply.body
            if method == "HEAD":
                body = b""
        else:
            status, content_type, body = 404, "text/plain; charset=utf-8", b"a WebSocket endpoint\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode("latin-1"))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        connect = await receive()
        transport = ASGIWebSocket(scope, receive, send)
        if connect["type"] != "websocket.connect":
            return
        info = request_info(scope)
        if self.path is not None and info.path != self.path:
            await transport.reject(404, "not found")
            return
        runtime = self.app._runtime
        if runtime is None:
            logger.error(
                "WebSocket refused: the wsspec runtime is not running (run the ASGI server "
                "with lifespan on, or enter App.running() in the host app's lifespan)"
            )
            await transport.reject(503, "server not running")
            return
        await runtime.run_connection(transport, info)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with self.app.running(**self.runtime_options):
                started = True
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
        except Exception as exc:
            if started:
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            else:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})
