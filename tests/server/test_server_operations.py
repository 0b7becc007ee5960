"""Every operation over real sockets, driven by two independent client libraries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.asyncio.client import connect
from wsserver_support import TIMEOUT, client, demo_app, in_asyncio, memory_app, serving

pytestmark = pytest.mark.usefixtures("transport")

SUBSCRIBE_ACTIVE = {"filters": [{"column": "status", "operator": "eq", "value": "active"}]}

#: (message, check of the reply): the whole protocol surface on a fresh database.
SCENARIO: list[tuple[dict[str, Any], Any]] = [
    (
        {"id": "m0", "type": "request", "operation": "meta"},
        lambda r: (
            sorted((e["schema"], e["entity"]) for e in r["data"])
            == [("public", "posts"), ("public", "users")]
        ),
    ),
    (
        {"id": "m1", "type": "request", "operation": "meta", "entity": "users"},
        lambda r: (
            r["data"]["primary_key"] == "id"
            and [c["name"] for c in r["data"]["columns"]] == ["id", "name", "email", "status"]
        ),
    ),
    (
        {
            "id": "c1",
            "type": "request",
            "operation": "create",
            "schema": "public",
            "entity": "users",
            "data": {"name": "Alice", "email": "a@example.com", "status": "active"},
        },
        lambda r: (
            r["data"] == {"id": 1, "name": "Alice", "email": "a@example.com", "status": "active"}
        ),
    ),
    (
        {
            "id": "c2",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": [{"name": "Bob", "status": "inactive"}, {"name": "Carol", "status": "active"}],
        },
        lambda r: [u["id"] for u in r["data"]] == [2, 3] and r["data"][0]["email"] is None,
    ),
    (
        {
            "id": "c3",
            "type": "request",
            "operation": "create",
            "entity": "posts",
            "data": {"title": "Hello", "content": "First", "user_id": 1},
        },
        lambda r: r["data"] == {"id": 1, "title": "Hello", "content": "First", "user_id": 1},
    ),
    (
        {"id": "r1", "type": "request", "operation": "read", "entity": "users", "record_id": "1"},
        lambda r: r["data"]["name"] == "Alice" and r["metadata"]["total"] == 1,
    ),
    (
        {
            "id": "r2",
            "type": "request",
            "operation": "read",
            "entity": "users",
            "options": {
                "filters": [{"column": "status", "operator": "eq", "value": "active"}],
                "sort": [{"column": "name", "direction": "desc"}],
                "limit": 1,
            },
        },
        lambda r: (
            [u["name"] for u in r["data"]] == ["Carol"]
            and r["metadata"]["total"] == 2
            and r["metadata"]["count"] == 1
            and r["metadata"]["limit"] == 1
        ),
    ),
    (
        {
            "id": "r3",
            "type": "request",
            "operation": "read",
            "entity": "posts",
            "options": {"preload": [{"relation": "user"}]},
        },
        lambda r: r["data"][0]["user"]["name"] == "Alice",
    ),
    (
        {
            "id": "u1",
            "type": "request",
            "operation": "update",
            "entity": "users",
            "record_id": 2,
            "data": {"status": "active"},
        },
        lambda r: r["data"] == {"id": 2, "name": "Bob", "email": None, "status": "active"},
    ),
    (
        {"id": "s1", "type": "subscription", "operation": "subscribe", "entity": "users"},
        lambda r: (
            r["data"]["subscription_id"]
            and (r["data"]["schema"], r["data"]["entity"]) == ("public", "users")
        ),
    ),
    (
        {"id": "p1", "type": "ping"},
        lambda r: r["type"] == "pong" and r["id"] == "p1" and r["timestamp"].endswith("Z"),
    ),
    (
        {"id": "d1", "type": "request", "operation": "delete", "entity": "posts", "record_id": 1},
        lambda r: r["data"] == {"deleted": True, "id": 1},
    ),
    (
        {"id": "d2", "type": "request", "operation": "delete", "entity": "posts", "record_id": 1},
        lambda r: not r["success"] and r["error"]["code"] == "not_found",
    ),
]


def check_replies(replies: list[dict[str, Any]]) -> None:
    assert len(replies) == len(SCENARIO)
    for (message, check), reply in zip(SCENARIO, replies, strict=True):
        assert reply["id"] == message["id"], reply
        if message["type"] != "ping" and message["id"] != "d2":
            assert reply["success"] is True, reply
        assert check(reply), (message, reply)


async def run_scenario_websockets(url: str) -> list[dict[str, Any]]:
    replies = []
    async with connect(url) as ws:
        for message, _ in SCENARIO:
            await ws.send(json.dumps(message))
            replies.append(json.loads(await ws.recv()))
        # Unsubscribe the subscription made above.
        subscription_id = replies[9]["data"]["subscription_id"]
        unsubscribe = {"id": "x1", "type": "subscription", "operation": "unsubscribe"}
        await ws.send(json.dumps({**unsubscribe, "subscription_id": subscription_id}))
        replies.append(json.loads(await ws.recv()))
    return replies


async def test_every_operation_websockets_client(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            replies = await in_asyncio(run_scenario_websockets, url)
            *replies, unsubscribed = replies
            check_replies(replies)
            assert unsubscribed["success"] and unsubscribed["data"]["unsubscribed"] is True
            await trio.sleep(0.05)
            assert app.subscription_count == 0


async def test_every_operation_trio_websocket_client(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            replies = []
            for message, _ in SCENARIO:
                await c.send(message)
                replies.append(await c.recv())
            check_replies(replies)
            assert app.subscription_count == 1
            subscription_id = replies[9]["data"]["subscription_id"]
            reply = await c.request("unsubscribe", subscription_id=subscription_id)
            assert reply["data"] == {"unsubscribed": True, "subscription_id": subscription_id}
            assert app.subscription_count == 0


async def test_pipelined_requests_answered_in_order(tmp_path: Path) -> None:
    """A pipelining client (the README's JS client style): a create then a read of the same
    row, and many requests beyond the in-flight and queue limits (backpressure pauses the
    reader, never rejects): every reply comes back, in order."""
    app = demo_app(tmp_path, max_in_flight=2, max_queued=3)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            create = {"type": "request", "operation": "create", "entity": "users"}
            await c.send({**create, "id": "c", "data": {"name": "Ann", "status": "active"}})
            await c.send(
                {
                    "id": "r",
                    "type": "request",
                    "operation": "read",
                    "entity": "users",
                    "record_id": 1,
                }
            )
            for i in range(100):
                await c.send(
                    {"id": f"q{i}", "type": "request", "operation": "read", "entity": "users"}
                )
            replies = [await c.recv() for _ in range(102)]
            assert [r["id"] for r in replies] == ["c", "r"] + [f"q{i}" for i in range(100)]
            assert replies[1]["data"]["name"] == "Ann"
            assert all(r["success"] for r in replies)


async def test_binary_frame_holding_json(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            await c.ws.send_message(b'{"type":"ping","id":7}')
            assert (await c.recv())["id"] == 7


async def test_inline_storage_mode(tmp_path: Path) -> None:
    """App(storage_threads=0) runs storage on the event loop (for MemoryStorage)."""
    app = memory_app(tmp_path)
    app.storage_threads = 0
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            await c.request("subscribe", "users")
            await c.send(
                {
                    "id": "w",
                    "type": "request",
                    "operation": "create",
                    "entity": "users",
                    "data": [{"name": "a"}, {"name": "b"}],
                }
            )
            await c.send({"id": "r", "type": "request", "operation": "read", "entity": "users"})
            replies = [await c.recv() for _ in range(4)]
            assert [(r["type"], r.get("id")) for r in replies] == [
                ("response", "w"),
                ("notification", None),
                ("notification", None),
                ("response", "r"),
            ]
            assert replies[3]["metadata"]["total"] == 2


class ThreadRecordingStorage:
    """Records which thread ran each kind of operation; delegates everything."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: dict[str, set[int]] = {}

    def execute(self, operation: Any) -> Any:
        import threading

        self.threads.setdefault(type(operation).__name__, set()).add(threading.get_ident())
        return self.inner.execute(operation)

    def never_blocks(self, operation: Any) -> bool:
        result: bool = self.inner.never_blocks(operation)
        return result

    def entities(self) -> Any:
        return self.inner.entities()


async def test_sqlite_reads_by_key_run_on_the_event_loop_and_the_rest_in_threads(
    tmp_path: Path,
) -> None:
    import threading

    recorder: list[ThreadRecordingStorage] = []

    def wrap(storage: Any) -> ThreadRecordingStorage:
        recorder.append(ThreadRecordingStorage(storage))
        return recorder[0]

    app = demo_app(tmp_path, storage_wrapper=wrap)
    loop_threads: set[int] = set()
    # Plain hooks run on the server's event loop thread (uvicorn's is not the test's).
    app.hook("before_connect")(lambda ctx: loop_threads.add(threading.get_ident()))
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            created = await c.request("create", "users", data={"name": "Ann"})
            one = await c.request("read", "users", record_id=created["data"]["id"])
            assert one["data"]["name"] == "Ann"
            listed = await c.request("read", "users")
            assert listed["metadata"]["total"] == 1
    threads = recorder[0].threads
    (loop_thread,) = loop_threads
    assert threads["ReadOne"] == {loop_thread}
    assert loop_thread not in threads["ReadList"] | threads["Create"]


JS_CLIENT = Path(__file__).parent / "js" / "readme_client.mjs"


def _node_with_websocket() -> str | None:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        return None
    probe = subprocess.run(
        [
            node,
            "--experimental-websocket",
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ],
        capture_output=True,
        check=False,
    )
    return node if probe.returncode == 0 else None


async def test_the_go_readme_javascript_client_works_unchanged(tmp_path: Path) -> None:
    import pytest

    node = _node_with_websocket()
    if node is None:
        pytest.skip(
            "Node.js with a WebSocket global (node >= 20 --experimental-websocket) is not installed"
        )
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            done = await trio.run_process(
                [node, "--experimental-websocket", str(JS_CLIENT), url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()
    outcome = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert outcome == {
        "created": ["Alice", "Bob", "Carol"],
        "ids": ["number", "number", "number"],
        "notified": [["create", "Alice", True], ["create", "Carol", True]],
        "active": ["Alice", "Carol"],
        "refused": "not_found",
    }
