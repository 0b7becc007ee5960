"""Limits over real sockets: oversized messages, and a client that never reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_websocket
from wsserver_support import TIMEOUT, client, demo_app, memory_app, serving, wait_until

pytestmark = pytest.mark.usefixtures("transport")


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
    """A subscriber that stops reading: notifications fill its socket buffers, then its
    outbound queue, and it is closed with 1008; the writer and others never wait for it."""
    app = demo_app(tmp_path, outbound_queue=4, max_in_flight=1, max_queued=1)
    with trio.fail_after(TIMEOUT):
        # The slow client's library buffers one message, then stops reading the socket.
        async with (
            serving(app, close_timeout=5) as url,
            client(url) as fast,
            client(url, message_queue_size=1) as slow,
        ):
            assert (await slow.request("subscribe", "users"))["success"]
            rows = [{"name": "n" * 5000, "status": "active"} for _ in range(150)]
            for _ in range(40):
                with trio.fail_after(2):  # the writer is never slowed down
                    assert (await fast.request("create", "users", data=rows))["success"]
                if app.connection_count == 1:
                    break
            # Its queue overflowed: the engine closed it as a slow consumer...
            await wait_until(lambda: app.connection_count == 1)
            assert app.subscription_count == 0
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


async def test_pipelining_client_is_not_mistaken_for_a_slow_consumer(tmp_path: Path) -> None:
    """A client that fires requests as fast as it can and reads every reply (the README's
    JS client) is never closed as a slow consumer, even with a tiny outbound queue: the
    server stops reading its requests while their replies wait to be written."""
    app = memory_app(tmp_path, outbound_queue=16, max_in_flight=4, max_queued=4)
    count = 3000
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            replies = []

            async def read_all() -> None:
                for _ in range(count):
                    replies.append(await c.recv())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for i in range(count):
                    await c.send(
                        {"type": "request", "operation": "read", "entity": "users", "id": i}
                    )
            assert [r["id"] for r in replies] == list(range(count))
            assert app.connection_count == 1
