"""Read-ahead over real sockets: every transport hands the runtime the messages it already
holds without waiting (``receive_nowait``), uvicorn's writes a batch of replies at once,
and a client that pipelines thousands of reads by key (run inline on SQLite, answered in
place) gets every reply, in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import wsserver_support
from wsserver_support import TIMEOUT, client, demo_app, serving, wait_until
from wsspec.transports.asgi import ASGIWebSocket

pytestmark = pytest.mark.usefixtures("transport")


async def test_pipelined_reads_by_key_are_read_ahead_and_answered_in_order(
    tmp_path: Path,
) -> None:
    app = demo_app(tmp_path)
    count = 3000
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            for i in range(1, 11):
                created = await c.request("create", "users", data={"name": f"u{i}"})
                assert created["success"], created
            runtime = app._runtime
            assert runtime is not None
            await wait_until(lambda: len(runtime.connections) == 1)
            [conn] = runtime.connections.values()
            # The transport offers the messages it holds: uvicorn's queue (its receive()'s
            # resume_reading included), hypercorn's channel, trio-websocket's channel.
            assert conn.transport.receive_nowait is not None
            if wsserver_support.transport == "uvicorn":
                # Under uvicorn's wsproto protocol a batch of replies leaves with one write.
                assert conn.transport.send.__func__ is ASGIWebSocket._send_joined
            replies: list[dict[str, Any]] = []

            async def read_all() -> None:
                for _ in range(count):
                    replies.append(await c.recv())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for i in range(count):
                    # Keys 1-10 exist; 11 does not: its reply is not_found, in its place.
                    await c.send(
                        {
                            "id": i,
                            "type": "request",
                            "operation": "read",
                            "entity": "users",
                            "record_id": i % 11 + 1,
                        }
                    )
            assert [r["id"] for r in replies] == list(range(count))
            for i, reply in enumerate(replies):
                key = i % 11 + 1
                if key <= 10:
                    assert reply["success"] and reply["data"]["name"] == f"u{key}", reply
                else:
                    assert not reply["success"] and reply["error"]["code"] == "not_found", reply
            # The connection still reads: nothing stalled once the burst was over.
            assert (await c.request("read", "users", record_id=3))["data"]["name"] == "u3"
