"""The client answers a server frame that fails the connection (here a text frame that is
not UTF-8) with a close frame carrying the code, 1007, before it reports the close: RFC
6455 section 7.1.7, as the servers do (tests/server/test_server_protocol_failure.py). A raw
trio server, since no WebSocket server library would send such a frame."""

from __future__ import annotations

import base64
import hashlib
import struct
from functools import partial

import pytest
import trio
from wsspec.client._websocket import ConnectionClosed, open_websocket

TIMEOUT = 10


async def read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(TIMEOUT):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_the_client_answers_a_failing_server_frame_with_a_close_frame() -> None:
    """A server that sends a text frame of invalid UTF-8: the wsspec client raises
    ConnectionClosed(1007) and sends the server a 1007 close frame first."""
    received: list[bytes] = []

    async def broken_server(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        payload = b'{"type":"pong","id":"\xff"}'
        await stream.send_all(bytes((0x81, len(payload))) + payload)
        received.append(await read_to_end(stream))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, broken_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        ws = await open_websocket(f"ws://127.0.0.1:{port}/ws")
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(TIMEOUT):
            await ws.receive()
        await ws.close()
        assert closed.value.code == 1007
        with trio.fail_after(TIMEOUT):
            while not received:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # Client frames are masked: unmask the close frame's payload.
    frame = received[0]
    assert frame[0] == 0x88 and frame[1] & 0x80, frame
    size, mask = frame[1] & 0x7F, frame[2:6]
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(frame[6 : 6 + size]))
    assert struct.unpack("!H", payload[:2])[0] == 1007
