"""Filtered subscriptions across clients, notification contents, broadcast, notify_change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from websockets.asyncio.client import connect
from wsserver_support import TIMEOUT, client, demo_app, in_asyncio, memory_app, serving

pytestmark = pytest.mark.usefixtures("transport")

ACTIVE = {"filters": [{"column": "status", "operator": "eq", "value": "active"}]}


async def test_filtered_subscription_across_two_clients(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as watcher, client(url) as writer:
            sub = await watcher.request("subscribe", "users", schema="public", options=ACTIVE)
            subscription_id = sub["data"]["subscription_id"]

            alice = {"name": "Alice", "email": "a@example.com", "status": "active"}
            bob = {"name": "Bob", "email": "b@example.com", "status": "inactive"}
            created = await writer.request("create", "users", data=alice)  # no schema given
            assert created["success"]
            assert (await writer.request("create", "users", data=bob))["success"]
            assert (await writer.request("update", "users", record_id=2, data={"name": "B"}))[
                "success"
            ]
            assert (await writer.request("delete", "users", record_id=1))["success"]

            note = await watcher.recv()
            assert note == {
                "type": "notification",
                "operation": "create",
                "subscription_id": subscription_id,
                "schema": "public",
                "entity": "users",
                "data": {"id": 1, **alice},
                "timestamp": note["timestamp"],
            }
            note = await watcher.recv()
            assert note["operation"] == "delete"
            assert note["data"] == {"id": 1, **alice}  # the full row as it was
            # Bob (inactive) was never notified: the next message is the pong.
            await watcher.send({"type": "ping", "id": "after"})
            assert (await watcher.recv())["type"] == "pong"


async def test_writer_gets_its_response_before_its_own_notification(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            await c.request("subscribe", "users")
            await c.send(
                {
                    "id": "w",
                    "type": "request",
                    "operation": "create",
                    "entity": "users",
                    "data": {"name": "Self"},
                }
            )
            first, second = await c.recv(), await c.recv()
            assert (first["type"], first["id"]) == ("response", "w")
            assert second["type"] == "notification" and second["data"]["name"] == "Self"


async def websockets_subscriber(url: str, ready: trio.Event, token: trio.lowlevel.TrioToken):
    async with connect(url) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": "s",
                    "type": "subscription",
                    "operation": "subscribe",
                    "entity": "users",
                    "options": ACTIVE,
                }
            )
        )
        reply = json.loads(await ws.recv())
        trio.from_thread.run_sync(ready.set, trio_token=token)
        return reply, json.loads(await ws.recv())


async def test_websockets_subscriber_sees_trio_writer(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, trio.open_nursery() as nursery:
            ready = trio.Event()
            result: list = []

            async def subscriber() -> None:
                result.append(
                    await in_asyncio(
                        websockets_subscriber, url, ready, trio.lowlevel.current_trio_token()
                    )
                )

            nursery.start_soon(subscriber)
            await ready.wait()
            async with client(url) as writer:
                await writer.request("create", "users", data={"name": "I", "status": "inactive"})
                await writer.request("create", "users", data={"name": "A", "status": "active"})
        reply, note = result[0]
        assert reply["success"]
        assert note["operation"] == "create" and note["data"]["name"] == "A"


async def test_broadcast_and_notify_change(tmp_path: Path) -> None:
    app = memory_app(tmp_path)

    @app.hook("before_connect")
    def remember_role(ctx):
        ctx.metadata["role"] = ctx.request_info.query_param("role")

    with trio.fail_after(TIMEOUT):
        async with (
            serving(app) as url,
            client(url + "?role=admin") as admin,
            client(url + "?role=user") as user,
        ):
            await user.request("subscribe", "users", options=ACTIVE)
            assert app.broadcast({"type": "announcement", "text": "hi"}) == 2
            assert (await admin.recv()) == {"type": "announcement", "text": "hi"}
            assert (await user.recv())["text"] == "hi"
            only_admins = app.broadcast({"type": "x"}, lambda meta: meta.get("role") == "admin")
            assert only_admins == 1
            assert (await admin.recv()) == {"type": "x"}

            row = {"id": 9, "name": "Ext", "email": None, "status": "active"}
            app.notify_change("users", "create", row, schema="public")
            note = await user.recv()
            assert (note["operation"], note["data"]) == ("create", row)
            app.notify_change("users", "update", {**row, "status": "gone"})
            await user.send({"type": "ping", "id": 1})
            assert (await user.recv())["type"] == "pong"  # filtered out
