"""Every error code a client can provoke, over a real socket."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from wsserver_support import TIMEOUT, client, demo_app, serving, wait_until
from wsspec import HookError

from wsspec_core import (
    Create,
    Delete,
    ReadList,
    ReadOne,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    Update,
)

pytestmark = pytest.mark.usefixtures("transport")

USERS = {"type": "request", "entity": "users"}

#: (frame sent, expected error code). Run on one connection, in this order.
CASES: list[tuple[Any, str]] = [
    ("not json", "invalid_message"),
    ({"id": "1"}, "invalid_message"),
    ({"id": "1", "type": "shout"}, "invalid_message_type"),
    (
        {"id": "1", "type": "request", "operation": "explode", "entity": "users"},
        "invalid_operation",
    ),
    (
        {"id": "1", "type": "subscription", "operation": "read", "entity": "users"},
        "invalid_subscription_operation",
    ),
    ({**USERS, "id": "1", "operation": "read", "entity": "nope"}, "model_not_found"),
    (
        {**USERS, "id": "1", "operation": "read", "options": {"columns": ["password"]}},
        "invalid_column",
    ),
    (
        {
            **USERS,
            "id": "1",
            "operation": "read",
            "options": {"filters": [{"column": "id", "operator": "regex", "value": 1}]},
        },
        "invalid_filter",
    ),
    ({**USERS, "id": "1", "operation": "read", "options": {"limit": -1}}, "invalid_options"),
    ({**USERS, "id": "1", "operation": "read", "record_id": 404}, "not_found"),
    (
        {**USERS, "id": "1", "operation": "update", "record_id": 404, "data": {"name": "x"}},
        "not_found",
    ),
    (
        {**USERS, "id": "1", "operation": "create", "data": {"name": "x", "nope": 1}},
        "invalid_column",
    ),
    (
        {
            "type": "request",
            "entity": "posts",
            "id": "1",
            "operation": "create",
            "data": {"title": "t", "user_id": 999},
        },
        "validation_error",
    ),
    ({"id": "1", "type": "subscription", "operation": "unsubscribe"}, "missing_subscription_id"),
    (
        {"id": "1", "type": "subscription", "operation": "unsubscribe", "subscription_id": "zz"},
        "subscription_not_found",
    ),
    ({"id": "1", "type": "subscription", "operation": "subscribe", "entity": "users"}, ""),
    (
        {"id": "1", "type": "subscription", "operation": "subscribe", "entity": "users"},
        "subscription_limit",
    ),
]


async def test_client_mistakes(tmp_path: Path) -> None:
    app = demo_app(tmp_path, max_subscriptions_per_connection=1)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            for frame, code in CASES:
                await c.send(frame)
                reply = await c.recv()
                if not code:
                    assert reply["success"], reply
                    continue
                assert reply["type"] == "response" and reply["success"] is False, (frame, reply)
                assert reply["error"]["code"] == code, (frame, reply)
                assert reply["id"] == ("" if frame == "not json" else "1")


async def test_rate_limited(tmp_path: Path) -> None:
    app = demo_app(tmp_path, rate_limit=1.0, rate_burst=3)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            codes = []
            for _ in range(5):
                reply = await c.request("read", "users")
                codes.append(reply["error"]["code"] if not reply["success"] else "ok")
            assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited"]


async def test_hook_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = demo_app(tmp_path)

    @app.hook("before_create")
    async def refuse(ctx):
        await anyio.sleep(0)  # hooks run on the server's loop: asyncio under uvicorn
        raise HookError("unauthorized", "not allowed to create")

    @app.hook("before_delete")
    def crash(ctx):
        raise RuntimeError("secret internals")

    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            reply = await c.request("create", "users", data={"name": "x"})
            assert reply["error"] == {"code": "unauthorized", "message": "not allowed to create"}
            with caplog.at_level(logging.ERROR, logger="wsspec.server"):
                reply = await c.request("delete", "users", record_id=1)
            assert reply["error"]["code"] == "hook_error"
            assert "secret" not in str(reply)
            assert "secret internals" in caplog.text  # logged server-side, with traceback


class FailingStorage:
    """Every operation fails: expected failures (StorageFailure) for users, and an
    unexpected exception for posts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def execute(self, operation: Any) -> Any:
        if operation.entity.name == "users":
            raise StorageFailure(StorageError(kind=StorageErrorKind.UNAVAILABLE, message="db down"))
        raise RuntimeError("SELECT secret FROM internals")


@pytest.mark.parametrize(
    ("operation", "fields", "code"),
    [
        ("read", {}, "read_error"),
        ("read", {"record_id": 1}, "read_error"),
        ("create", {"data": {"name": "x"}}, "create_error"),
        ("update", {"record_id": 1, "data": {"name": "x"}}, "update_error"),
        ("delete", {"record_id": 1}, "delete_error"),
    ],
)
async def test_storage_errors(tmp_path: Path, operation: str, fields: dict, code: str) -> None:
    assert {ReadList, ReadOne, Create, Update, Delete}  # every operation kind is covered
    app = demo_app(tmp_path, storage_wrapper=FailingStorage)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            reply = await c.request(operation, "users", **fields)
            assert reply["error"]["code"] == code
            assert reply["error"]["message"] == "db down"
            if "data" in fields:
                fields = {**fields, "data": {"title": "x", "user_id": 1}}
            reply = await c.request(operation, "posts", **fields)
            assert reply["error"]["code"] == code
            assert reply["error"]["message"] == "internal storage error"
            assert "SELECT" not in str(reply)


async def test_storage_failures_are_logged_with_the_request_id_and_the_database_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client is told no internals; the operator's log says which request failed and
    what the database said (ERROR), and a constraint the client broke only at INFO."""
    app = demo_app(tmp_path)
    with caplog.at_level(logging.INFO, logger="wsspec.storage"), trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            await c.request("create", "users", data={"name": "u"})
            with sqlite3.connect(tmp_path / "test.db") as db:
                db.execute("DROP TABLE posts")  # behind the server's back
            await c.send(
                {"id": "lost-1", "type": "request", "operation": "read", "entity": "posts"}
            )
            reply = await c.recv()
            assert reply["error"]["code"] == "read_error"
            assert "posts" not in reply["error"]["message"]
            await wait_until(lambda: "lost-1" in caplog.text)
    (record,) = [r for r in caplog.records if "lost-1" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "no such table: posts" in record.getMessage()
    assert "ReadList on public.posts" in record.getMessage()
