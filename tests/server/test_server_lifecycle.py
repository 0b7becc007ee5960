"""Connection lifecycle over real sockets: auth at the handshake, disconnects in the middle
of a write, graceful shutdown, keepalive, routing."""

from __future__ import annotations

import json
import threading
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsserver_support import (
    TIMEOUT,
    GatedStorage,
    client,
    demo_app,
    in_asyncio,
    memory_app,
    serving,
    wait_thread_event,
    wait_until,
)
from wsspec import HookError, serve

from wsspec_core import Create

TOKENS = {"secret-1": 1, "secret-2": 2}


def auth_app(tmp_path: Path):
    app = demo_app(tmp_path)

    @app.hook("before_connect")
    def authenticate(ctx):
        user_id = TOKENS.get(ctx.request_info.query_param("token") or "")
        if user_id is None:
            raise HookError("unauthorized", "bad token")
        ctx.metadata["user_id"] = user_id

    @app.hook("before_read")
    def own_posts_only(ctx):
        if ctx.entity_name == "posts":
            ctx.add_filter("user_id", "eq", ctx.metadata["user_id"])

    return app


async def websockets_open(url: str) -> str:
    try:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            return json.loads(await ws.recv())["type"]
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code} {exc.response.body.decode()}"


@pytest.mark.usefixtures("transport")
async def test_before_connect_token_auth_and_row_filter(tmp_path: Path) -> None:
    app = auth_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            assert await in_asyncio(websockets_open, url + "?token=nope") == "refused 403 bad token"
            assert await in_asyncio(websockets_open, url) == "refused 403 bad token"
            assert await in_asyncio(websockets_open, url + "?token=secret-1") == "pong"
            with pytest.raises(trio_websocket.ConnectionRejected) as refused:
                async with client(url + "?token=bad"):
                    pass
            assert refused.value.status_code == 403
            async with client(url + "?token=secret-1") as one:
                for user in ("u1", "u2"):
                    assert (await one.request("create", "users", data={"name": user}))["success"]
                for title, user_id in (("mine", 1), ("theirs", 2)):
                    reply = await one.request(
                        "create", "posts", data={"title": title, "user_id": user_id}
                    )
                    assert reply["success"]
                reply = await one.request("read", "posts")
                assert [p["title"] for p in reply["data"]] == ["mine"]
                assert reply["metadata"]["total"] == 1
                reply = await one.request("read", "posts", record_id=2)
                assert reply["error"]["code"] == "not_found"
            await wait_until(lambda: app.connection_count == 0)


@pytest.mark.usefixtures("transport")
async def test_disconnect_in_the_middle_of_a_write(tmp_path: Path) -> None:
    app = demo_app(tmp_path, storage_wrapper=GatedStorage)
    storage = app.storage
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as watcher:
            await watcher.request("subscribe", "users")
            async with client(url) as leaver:
                await leaver.request("subscribe", "users")
                await leaver.request("subscribe", "posts")
                assert app.subscription_count == 3
                rows = [{"name": f"n{i}"} for i in range(3)]
                await leaver.send(
                    {
                        "id": "w",
                        "type": "request",
                        "operation": "create",
                        "entity": "users",
                        "data": rows,
                    }
                )
                await wait_thread_event(storage.write_started)
            # The leaver is gone while its write waits in the storage thread.
            await wait_until(lambda: app.connection_count == 1)
            assert app.subscription_count == 1
            storage.release()
            notes = [await watcher.recv() for _ in range(3)]
            assert [n["data"]["name"] for n in notes] == ["n0", "n1", "n2"]
            reply = await watcher.request("read", "users")
            assert reply["metadata"]["total"] == 3  # all of the batch, exactly once
        assert app.subscription_count == 0
        assert app.connection_count == 0


@pytest.mark.usefixtures("transport")
async def test_abrupt_disconnect_is_reported_once(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    disconnects = []
    app.hooks.register("after_disconnect", lambda ctx: disconnects.append(ctx.connection_id))
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            async with client(url) as c:
                await c.request("subscribe", "users")
                await c.ws._stream.aclose()  # drop TCP without a closing handshake
            await wait_until(lambda: app.connection_count == 0 and bool(disconnects))
            assert app.subscription_count == 0
            await trio.sleep(0.1)
            assert len(disconnects) == 1


async def test_graceful_shutdown(tmp_path: Path) -> None:
    app = demo_app(tmp_path, storage_wrapper=GatedStorage)
    storage = app.storage
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve, app, "127.0.0.1", 0))
            async with client(url) as busy, client(url) as idle:
                await busy.send(
                    {
                        "id": "w",
                        "type": "request",
                        "operation": "create",
                        "entity": "users",
                        "data": {"name": "in flight"},
                    }
                )
                await wait_thread_event(storage.write_started)
                app.request_shutdown()
                await trio.sleep(0.1)
                storage.release()
                reply = await busy.recv()
                assert (reply["id"], reply["success"]) == ("w", True)
                for ws in (busy.ws, idle.ws):
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 1001
        # serve() returned: nothing listens any more.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))


async def test_cancelling_serve_shuts_down_gracefully(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve, app, "127.0.0.1", 0))
            async with client(url) as c:
                nursery.cancel_scope.cancel()
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await c.ws.get_message()
                assert closed.value.reason.code == 1001


async def test_keepalive_pings_are_answered(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """Ten minutes of silence on trio's MockClock (no real time passes): the default
    keepalive pings every 30 s, the client library answers, the connection stays."""
    app = memory_app(tmp_path)
    with trio.fail_after(TIMEOUT * 60):
        async with serving(app) as url, client(url) as c:
            await trio.sleep(600)
            assert (await c.request("read", "users"))["success"]
            assert app.connection_count == 1


async def test_client_that_never_answers_pings_is_closed_1011(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A peer that never answers: pinged after the interval of silence, closed after the
    timeout, on the monotonic clock the runtime reads (here trio's MockClock)."""
    app = memory_app(tmp_path, keepalive_interval=30.0, keepalive_timeout=20.0)
    with trio.fail_after(TIMEOUT * 60):
        async with serving(app) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(conn.send(wsproto.events.Request(host="localhost", target="/ws")))
            start = trio.current_time()
            seen: list[tuple[float, object]] = []
            while not any(isinstance(e, wsproto.events.CloseConnection) for _, e in seen):
                data = await stream.receive_some()
                if not data:
                    break
                conn.receive_data(data)
                # Pings are deliberately left unanswered.
                seen.extend((trio.current_time() - start, e) for e in conn.events())
            assert isinstance(seen[0][1], wsproto.events.AcceptConnection)
            (ping_at,) = [at for at, e in seen if isinstance(e, wsproto.events.Ping)]
            close_at, close = seen[-1]
            # The engine's sweep runs every half of the shorter period (10 s here).
            assert 30.0 <= ping_at <= 40.0
            assert 20.0 <= close_at - ping_at <= 30.0
            assert isinstance(close, wsproto.events.CloseConnection) and close.code == 1011
            await stream.aclose()
            await wait_until(lambda: app.connection_count == 0)


@pytest.mark.usefixtures("transport")
async def test_other_paths_are_not_found(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            with pytest.raises(trio_websocket.ConnectionRejected) as refused:
                async with client(url.replace("/ws", "/other")):
                    pass
            assert refused.value.status_code == 404
            assert app.connection_count == 0


class SlowPosts:
    """Reads of posts wait (in their worker thread) until released."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.started = threading.Event()

    def execute(self, operation):
        if operation.entity.name == "posts" and not isinstance(operation, Create):
            self.started.set()
            self.gate.wait(timeout=TIMEOUT)
        return self.inner.execute(operation)


@pytest.mark.usefixtures("transport")
async def test_a_slow_read_does_not_hold_up_other_reads(tmp_path: Path) -> None:
    app = demo_app(tmp_path, storage_wrapper=SlowPosts)
    storage = app.storage
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as slow, client(url) as quick:
            await slow.send({"id": "s", "type": "request", "operation": "read", "entity": "posts"})
            await wait_thread_event(storage.started)
            for _ in range(5):
                with trio.fail_after(1):
                    assert (await quick.request("read", "users"))["success"]
            storage.gate.set()
            assert (await slow.recv())["success"]
