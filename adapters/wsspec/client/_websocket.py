"""A minimal WebSocket client connection: wsproto (the sans-IO protocol) over an anyio byte
stream, so the one code path runs on asyncio and on trio (docs/client.md "Why anyio and
wsproto").

Only what the client needs: the opening handshake (a refusal's HTTP status is kept, since
403 means "stop trying"), text messages both ways, answering the server's pings and close,
and a bound on the size of an incoming message.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from collections.abc import Sequence

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from ..transports.wsproto_failure import install as _install_wsproto_failure

# A server frame that fails the connection (not UTF-8, a protocol error) is answered with a
# close frame carrying the code, as RFC 6455 asks (see the module).
_install_wsproto_failure()

#: Bytes read from the socket at a time.
_READ_SIZE = 65536
#: The largest message accepted from a server: the server's own default cap on one reply
#: frame is 16 MiB (docs/protocol.md "Limits", max_reply_bytes); four times that, so a
#: server configured higher still works, while a broken one cannot exhaust memory.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class HandshakeRejected(Exception):
    """The server answered the opening handshake with an HTTP status other than 101."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {body}" if body else ""))
        self.status = status
        self.body = body


class ConnectionClosed(Exception):
    """The WebSocket is closed (``code`` from the close frame; 1006 when the TCP
    connection ended without one)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


def parse_url(url: str) -> tuple[bool, str, int, str]:
    """``ws://`` or ``wss://`` URL -> (tls, host, port, request target)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return tls, parts.hostname, port, target


class WebSocket:
    """One open client WebSocket. ``receive`` is for one reader task, ``send`` for any
    number of writers (a lock keeps frames whole)."""

    def __init__(self, stream: anyio.abc.ByteStream, protocol: WSConnection) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_lock = anyio.Lock()
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0
        self._closed: ConnectionClosed | None = None

    async def send(self, text: str) -> None:
        if self._closed is not None:
            raise self._closed
        if self._protocol.state is not ConnectionState.OPEN:
            raise ConnectionClosed(1006, "the connection is closing")
        await self._write(self._protocol.send(Message(data=text)))

    async def receive(self) -> str | bytes:
        """The next whole message; raises :class:`ConnectionClosed` when the connection
        ends."""
        while True:
            for event in self._protocol.events():
                if isinstance(event, TextMessage | BytesMessage):
                    self._parts.append(event.data)
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE_BYTES:
                        await self.close(1009, "message too big")
                        raise ConnectionClosed(1009, "message too big")
                    if event.message_finished:
                        parts, self._parts, self._size = self._parts, [], 0
                        if isinstance(event, TextMessage):
                            return "".join(parts)  # type: ignore[arg-type]
                        return b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    if self._protocol.state is ConnectionState.OPEN:
                        await self._write(self._protocol.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(self._protocol.send(event.response()))
                    self._closed = ConnectionClosed(event.code, event.reason or "")
                    raise self._closed
            if self._closed is not None:
                raise self._closed
            if self._protocol.state is ConnectionState.CLOSED:
                self._closed = ConnectionClosed(1006, "connection closed")
                raise self._closed
            try:
                data: bytes | None = await self._stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = None
            # wsproto turns the end of the stream (None) into a close event with 1006,
            # which the loop above raises as ConnectionClosed.
            self._protocol.receive_data(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (best effort, bounded) and drop the TCP connection."""
        with anyio.move_on_after(1, shield=True):
            if self._protocol.state is ConnectionState.OPEN:
                with contextlib.suppress(ConnectionClosed, anyio.BrokenResourceError, OSError):
                    await self._write(
                        self._protocol.send(CloseConnection(code=code, reason=reason))
                    )
        self._closed = self._closed or ConnectionClosed(code, reason)
        await anyio.aclose_forcefully(self._stream)

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self._closed = self._closed or ConnectionClosed(1006, f"send failed: {exc}")
                raise self._closed from None


async def open_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocket:
    """Connect and complete the opening handshake. Raises :class:`HandshakeRejected` with
    the status of a refusal, ``OSError`` when there is no connection, and
    :class:`ConnectionClosed` when the server hangs up during the handshake. Bound it from
    outside (a cancel scope): it has no timeout of its own."""
    tls, host, port, target = parse_url(url)
    if tls:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(
            host,
            port,
            tls=True,
            ssl_context=ssl_context or ssl.create_default_context(),
            tls_standard_compatible=False,
        )
    else:
        stream = await anyio.connect_tcp(host, port)
    try:
        protocol = WSConnection(ConnectionType.CLIENT)
        default_port = 443 if tls else 80
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header += f":{port}"
        request = Request(
            host=host_header,
            target=target,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        )
        await stream.send(protocol.send(request))
        status: int | None = None
        body: list[bytes] = []
        while True:
            for event in protocol.events():
                if isinstance(event, AcceptConnection):
                    return WebSocket(stream, protocol)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise HandshakeRejected(status, "")
                elif isinstance(event, RejectData):
                    body.append(event.data)
                    if event.body_finished:
                        assert status is not None
                        text = b"".join(body).decode(errors="replace").strip()
                        raise HandshakeRejected(status, text[:200])
            try:
                data: bytes | None = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = None
            if data is None:
                if status is not None:
                    raise HandshakeRejected(status, b"".join(body).decode(errors="replace"))
                raise ConnectionClosed(1006, "the server closed the connection in the handshake")
            protocol.receive_data(data)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
