"""Limits over real sockets: oversized messages, and a client that never reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_websocket
from wsserver_support import TIMEOUT, client, demo_app, memory_app, serving, wait_until


async def test_oversized_message_closes_1009(tmp_path: Path) -> None:
    app = memory_app(tmp_path, max_message_bytes=1000)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c, client(url) as other:
            ok = '{"type":"ping","id":"' + "x" * 900 + '"}'
            await c.send(ok)
            assert (await c.recv())["type"] == "pong"
            await c.send('{"type":"ping","id":"' + "x" * 2000 + '"}')
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await c.ws.get_message()
            assert closed.value.reason.code == 1009
            # Other connections are unaffected.
            assert (await other.request("read", "users"))["success"]
            await wait_until(lambda: app.connection_count == 1)


async def test_client_that_never_reads_is_closed_while_others_are_served(
    tmp_path: Path,
) -> None:
    app = demo_app(tmp_path, outbound_queue=4)
    with trio.fail_after(TIMEOUT):
        async with serving(app, close_timeout=5) as url, client(url) as fast:
            rows = [{"name": "n" * 500, "status": "active"} for _ in range(200)]
            assert (await fast.request("create", "users", data=rows))["success"]
            # The slow client's library buffers one message, then stops reading the socket.
            async with client(url, message_queue_size=1) as slow:
                read_all = {
                    "type": "request",
                    "operation": "read",
                    "entity": "users",
                    "options": {"limit": 1000},
                }
                for i in range(200):
                    await slow.send({**read_all, "id": f"s{i}"})
                # Its queue overflows: the engine closes it as a slow consumer...
                await wait_until(lambda: app.connection_count == 1)
                # ...while the other client is served promptly.
                for _ in range(20):
                    with trio.fail_after(1):
                        assert (await fast.request("read", "users", record_id=1))["success"]
                # When the slow client finally reads, it finds the close frame and its code.
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await slow.ws.get_message()
                assert closed.value.reason.code == 1008
                assert "not reading" in closed.value.reason.reason
