"""A frame that fails the WebSocket connection is answered with a close frame carrying the
reason's code (RFC 6455 section 7.1.7), on every transport: the client learns why instead
of seeing the TCP connection end (issue 12, part 1). Raw sockets, since a WebSocket library
would refuse to send such frames. The client side:
tests/client/test_client_protocol_failure.py."""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

import pytest
import trio
from wsserver_support import TIMEOUT, client, demo_app, serving

pytestmark = pytest.mark.usefixtures("transport")


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    """One client frame (FIN and ``first_byte``'s opcode), masked with a random key."""
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes((first_byte, 0x80 | len(payload))) + key + masked


async def raw_connection(url: str) -> trio.SocketStream:
    """A TCP connection to ``url`` (ws://127.0.0.1:PORT/PATH) past the opening handshake."""
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, f"connection ended during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    # Nothing follows the handshake until the client speaks.
    assert head.endswith(b"\r\n\r\n"), head
    return stream


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the peer sends until it closes the TCP connection."""
    received = b""
    with trio.fail_after(TIMEOUT):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


def close_frame(received: bytes) -> tuple[int, str]:
    """The code and reason of the close frame that ends ``received`` (a server's frames,
    unmasked; hypercorn may send a ping of its own first)."""
    assert received, "the TCP connection ended without a close frame"
    while received[0] == 0x89:  # a ping: skip it
        assert received[1] < 126, received
        received = received[2 + received[1] :]
    assert received, "the TCP connection ended without a close frame"
    assert received[0] == 0x88, f"not a close frame: {received!r}"
    size = received[1]
    assert size < 126 and len(received) == 2 + size, received
    (code,) = struct.unpack("!H", received[2:4])
    return code, received[4:].decode()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # A text frame that is not UTF-8: 1007, invalid frame payload data.
        (masked_frame(0x81, b'{"type":"ping","id":"\xff\xfe"}'), 1007),
        # A reserved opcode: 1002, protocol error.
        (masked_frame(0x83, b"{}"), 1002),
    ],
    ids=["invalid-utf8", "reserved-opcode"],
)
async def test_a_failed_connection_gets_a_close_frame_with_the_code(
    tmp_path: Path, frame: bytes, code: int
) -> None:
    async with serving(demo_app(tmp_path)) as url:
        stream = await raw_connection(url)
        await stream.send_all(frame)
        received_code, reason = close_frame(await read_to_end(stream))
        assert received_code == code, reason
        assert reason, "the close frame says why"
        await stream.aclose()
        # The server goes on serving everyone else.
        async with client(url) as other:
            assert (await other.request("read", "users"))["success"]
