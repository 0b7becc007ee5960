"""Scenario tests of the engine: scripts of events, asserting the actions and messages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from engine_driver import Driver

import wsspec_core as ws

USERS = ws.Entity(
    schema="public",
    name="users",
    table_name="users",
    columns=[
        ws.Column(
            name="id",
            type=ws.ColumnType.INTEGER,
            nullable=False,
            primary_key=True,
            has_default=True,
        ),
        ws.Column(name="name", type=ws.ColumnType.TEXT, nullable=False),
        ws.Column(name="email", type=ws.ColumnType.TEXT),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
        ws.Column(name="age", type=ws.ColumnType.INTEGER),
    ],
    relations=[
        ws.Relation(
            name="posts",
            kind=ws.RelationKind.HAS_MANY,
            target="public.posts",
            local_column="id",
            remote_column="user_id",
        )
    ],
)
POSTS = ws.Entity(
    schema="public",
    name="posts",
    table_name="posts",
    columns=[
        ws.Column(
            name="id",
            type=ws.ColumnType.INTEGER,
            nullable=False,
            primary_key=True,
            has_default=True,
        ),
        ws.Column(name="title", type=ws.ColumnType.TEXT, nullable=False),
        ws.Column(name="user_id", type=ws.ColumnType.INTEGER),
    ],
    relations=[
        ws.Relation(
            name="user",
            kind=ws.RelationKind.BELONGS_TO,
            target="public.users",
            local_column="user_id",
            remote_column="id",
        )
    ],
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def make(*, hooks: ws.HookRegistry | None = None, auto: bool = True, **limits: Any) -> Driver:
    engine = ws.Engine(ws.EntityRegistry([USERS, POSTS]), hooks=hooks, limits=ws.Limits(**limits))
    driver = Driver(engine, auto=auto)
    driver.connect("a")
    driver.connect("b")
    return driver


def create(d: Driver, conn: str, data: Any, msg_id: str = "c", **extra: Any) -> dict[str, Any]:
    return d.request(
        conn,
        {
            "id": msg_id,
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": data,
            **extra,
        },
    )


# --- messages ----------------------------------------------------------------------


def test_ping_gets_pong_with_its_id() -> None:
    d = make()
    pong = d.request("a", {"type": "ping", "id": 7})
    assert pong["type"] == "pong" and pong["id"] == 7
    assert TIMESTAMP.match(pong["timestamp"])


def test_not_json_is_invalid_message_with_empty_id() -> None:
    d = make()
    d.send("a", "{not json")
    [response] = d.take("a")
    assert response["id"] == "" and response["success"] is False
    assert response["error"]["code"] == "invalid_message"
    assert TIMESTAMP.match(response["timestamp"])


def test_unknown_entity_is_reported_before_bad_options() -> None:
    d = make()
    response = d.request(
        "a",
        {
            "id": "x",
            "type": "request",
            "operation": "read",
            "entity": "nope",
            "options": {"limit": "ten"},
        },
    )
    assert response["error"]["code"] == "model_not_found"
    response = d.request(
        "a",
        {
            "id": "y",
            "type": "request",
            "operation": "read",
            "entity": "users",
            "options": {"limit": "ten"},
        },
    )
    assert response["error"]["code"] == "invalid_options"


def test_ambiguous_entity_lists_candidates() -> None:
    other = ws.Entity(
        schema="audit",
        name="users",
        table_name="audit_users",
        columns=[ws.Column(name="id", type=ws.ColumnType.INTEGER, primary_key=True)],
    )
    engine = ws.Engine(ws.EntityRegistry([USERS, POSTS, other]))
    d = Driver(engine)
    d.connect("a")
    response = d.request(
        "a", {"id": "1", "type": "request", "operation": "read", "entity": "users"}
    )
    assert response["error"]["code"] == "model_not_found"
    assert response["error"]["details"]["candidates"] == ["audit.users", "public.users"]
    ok = d.request(
        "a",
        {"id": "2", "type": "request", "operation": "read", "entity": "users", "schema": "audit"},
    )
    assert ok["success"] is True and ok["data"] == []


# --- operations ----------------------------------------------------------------------


def test_create_then_read_list_and_one() -> None:
    d = make()
    created = create(d, "a", {"name": "Ann", "status": "active", "age": "41"})
    assert created["success"] is True
    assert created["data"] == {"id": 1, "name": "Ann", "email": None, "status": "active", "age": 41}
    create(d, "a", {"name": "Bob", "status": "inactive"})
    listed = d.request(
        "a",
        {
            "id": "r",
            "type": "request",
            "operation": "READ",
            "entity": "users",
            "options": {"sort": [{"column": "name", "direction": "DESC"}], "limit": 1},
        },
    )
    assert listed["data"] == [
        {"id": 2, "name": "Bob", "email": None, "status": "inactive", "age": None}
    ]
    assert listed["metadata"] == {"total": 2, "count": 1, "limit": 1, "offset": 0}
    one = d.request(
        "a",
        {
            "id": "o",
            "type": "request",
            "operation": "read",
            "entity": "users",
            "record_id": "1",
            "options": {"columns": ["name"]},
        },
    )
    assert one["data"] == {"name": "Ann"} and one["metadata"] == {"total": 1}


def test_query_cache_tells_equal_values_of_other_types_apart() -> None:
    d = make()
    create(d, "a", {"name": "5.0", "age": 1})

    def read(column: str, value: Any) -> dict[str, Any]:
        filters = [{"column": column, "operator": "eq", "value": value}]
        message = {
            "id": "r",
            "type": "request",
            "operation": "read",
            "entity": "users",
            "options": {"filters": filters},
        }
        return d.request("a", message)

    assert read("age", 1)["metadata"]["total"] == 1
    assert read("age", True)["error"]["code"] == "invalid_filter"  # not the cached 1
    assert read("name", 5)["metadata"]["total"] == 0  # "5"
    assert read("name", 5.0)["metadata"]["total"] == 1  # "5.0", not the cached "5"
    assert read("name", -0.0)["metadata"]["total"] == 0  # "-0.0"


def test_batch_create_is_one_response_with_a_list() -> None:
    d = make()
    response = create(d, "a", [{"name": "A"}, {"name": "B"}])
    assert [r["id"] for r in response["data"]] == [1, 2]


def test_batch_create_is_atomic() -> None:
    d = make()
    response = create(d, "a", [{"name": "A", "id": 5}, {"name": "B", "id": 5}])
    assert response["error"]["code"] == "validation_error"
    listed = d.request("a", {"id": "r", "type": "request", "operation": "read", "entity": "users"})
    assert listed["data"] == []


def test_update_is_partial_and_delete_returns_the_key() -> None:
    d = make()
    create(d, "a", {"name": "Ann", "status": "active", "age": 3})
    updated = d.request(
        "a",
        {
            "id": "u",
            "type": "request",
            "operation": "update",
            "entity": "users",
            "record_id": 1,
            "data": {"status": "gone"},
        },
    )
    assert updated["data"] == {"id": 1, "name": "Ann", "email": None, "status": "gone", "age": 3}
    deleted = d.request(
        "a",
        {"id": "d", "type": "request", "operation": "delete", "entity": "users", "record_id": "1"},
    )
    assert deleted["data"] == {"deleted": True, "id": 1}


@pytest.mark.parametrize("operation", ["read", "update", "delete"])
def test_missing_record_is_not_found(operation: str) -> None:
    d = make()
    message: dict[str, Any] = {
        "id": "m",
        "type": "request",
        "operation": operation,
        "entity": "users",
        "record_id": 99,
    }
    if operation == "update":
        message["data"] = {"name": "x"}
    response = d.request("a", message)
    assert response["success"] is False and response["error"]["code"] == "not_found"


def test_meta_describes_entity_and_lists_entities() -> None:
    d = make()
    meta = d.request("a", {"id": "m", "type": "request", "operation": "meta", "entity": "posts"})
    assert meta["data"]["primary_key"] == "id"
    assert meta["data"]["schema"] == "public" and meta["data"]["table_name"] == "posts"
    assert [c["name"] for c in meta["data"]["columns"]] == ["id", "title", "user_id"]
    assert meta["data"]["relations"][0]["name"] == "user"
    listing = d.request("a", {"id": "l", "type": "request", "operation": "meta"})
    assert listing["data"] == [
        {"schema": "public", "entity": "posts"},
        {"schema": "public", "entity": "users"},
    ]


def test_storage_constraint_failure_is_validation_error_with_column() -> None:
    d = make()
    create(d, "a", {"name": "A", "id": 1})
    response = create(d, "a", {"name": "B", "id": 1})
    assert response["error"]["code"] == "validation_error"
    assert response["error"]["details"] == {"column": "id"}


def test_storage_other_failure_uses_operation_code() -> None:
    d = make(auto=False)
    d.send("a", {"id": "r", "type": "request", "operation": "read", "entity": "users"})
    [run] = d.storage_pending
    d.feed(
        ws.StorageFailed(
            operation_id=run.operation_id,
            error=ws.StorageError(
                kind=ws.StorageErrorKind.UNAVAILABLE, message="database unavailable"
            ),
            now=d.now,
        )
    )
    [response] = d.take("a")
    assert response["error"] == {"code": "read_error", "message": "database unavailable"}


# --- order ---------------------------------------------------------------------------


def test_pipelined_create_then_read_sees_the_row() -> None:
    d = make(auto=False)
    d.send(
        "a",
        {
            "id": "1",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "A"},
        },
    )
    d.send("a", {"id": "2", "type": "request", "operation": "read", "entity": "users"})
    assert len(d.storage_pending) == 1  # the read waits for the write
    d.finish_storage(d.storage_pending.popleft())
    assert len(d.storage_pending) == 1
    d.finish_storage(d.storage_pending.popleft())
    first, second = d.take("a")
    assert first["id"] == "1" and second["id"] == "2"
    assert second["data"][0]["name"] == "A"


def test_reads_run_together_and_answer_in_request_order() -> None:
    d = make(auto=False)
    for i in range(3):
        d.send("a", {"id": str(i), "type": "request", "operation": "read", "entity": "users"})
    assert len(d.storage_pending) == 3
    third = d.storage_pending.pop()
    d.finish_storage(third)
    assert d.take("a") == []  # held until the first two are answered
    d.run_pending()
    assert [m["id"] for m in d.take("a")] == ["0", "1", "2"]


def test_in_flight_limit_and_backpressure() -> None:
    d = make(auto=False, max_in_flight=2, max_queued=2)
    for i in range(4):
        d.send("a", {"id": str(i), "type": "request", "operation": "read", "entity": "users"})
    assert len(d.storage_pending) == 2
    assert "a" in d.paused
    d.send("a", {"id": "late", "type": "request", "operation": "read", "entity": "users"})
    d.run_pending()
    assert [m["id"] for m in d.take("a")] == ["0", "1", "2", "3", "late"]
    assert "a" not in d.paused


def test_rate_limit_answers_rate_limited() -> None:
    d = make(rate_limit=1.0, rate_burst=2)
    answers = [
        d.request("a", {"id": str(i), "type": "request", "operation": "read", "entity": "users"})
        for i in range(3)
    ]
    assert [a["success"] for a in answers] == [True, True, False]
    assert answers[2]["error"]["code"] == "rate_limited"
    d.now += 1.0
    assert d.request("a", {"id": "x", "type": "request", "operation": "read", "entity": "users"})[
        "success"
    ]


# --- subscriptions -------------------------------------------------------------------


def subscribe(d: Driver, conn: str, filters: list[dict[str, Any]], **extra: Any) -> str:
    response = d.request(
        conn,
        {
            "id": "s",
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "options": {"filters": filters},
            **extra,
        },
    )
    assert response["success"] is True, response
    return str(response["data"]["subscription_id"])


def test_filtered_subscription_sees_only_matching_writes() -> None:
    d = make()
    sub = subscribe(
        d, "b", [{"column": "status", "operator": "eq", "value": "active"}], schema="public"
    )
    create(d, "a", {"name": "In", "status": "active"})
    create(d, "a", {"name": "Out", "status": "inactive"})
    notes = d.take("b")
    assert [n["data"]["name"] for n in notes] == ["In"]
    assert notes[0] == {
        "type": "notification",
        "operation": "create",
        "subscription_id": sub,
        "schema": "public",
        "entity": "users",
        "data": {"id": 1, "name": "In", "email": None, "status": "active", "age": None},
        "timestamp": notes[0]["timestamp"],
    }


def test_update_notified_by_after_image_and_delete_carries_pre_image() -> None:
    d = make()
    create(d, "a", {"name": "X", "status": "inactive"})
    subscribe(d, "b", [{"column": "status", "operator": "eq", "value": "active"}])
    d.request(
        "a",
        {
            "id": "u",
            "type": "request",
            "operation": "update",
            "entity": "users",
            "record_id": 1,
            "data": {"status": "active"},
        },
    )
    d.request(
        "a",
        {"id": "d", "type": "request", "operation": "delete", "entity": "users", "record_id": 1},
    )
    notes = d.take("b")
    assert [(n["operation"], n["data"]["status"]) for n in notes] == [
        ("update", "active"),
        ("delete", "active"),
    ]
    assert notes[1]["data"]["name"] == "X"


def test_own_response_comes_before_own_notification() -> None:
    d = make()
    subscribe(d, "a", [])
    d.take("a")
    create(d, "a", {"name": "A"})  # request() removed the response; check the raw order
    d.send(
        "a",
        {
            "id": "c2",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "B"},
        },
    )
    kinds = [m["type"] for m in d.take("a")]
    assert kinds == ["notification", "response", "notification"]  # A's note, then B's pair


def test_subscription_is_live_only_after_its_acknowledgement() -> None:
    d = make(auto=False)
    d.send(
        "a",
        {
            "id": "w",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "A"},
        },
    )
    d.send("b", {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"})
    [ack] = d.take("b")
    assert ack["success"]
    d.run_pending()
    assert [m["type"] for m in d.take("b")] == ["notification"]


def test_unsubscribe_rules() -> None:
    d = make()
    sub = subscribe(d, "a", [])
    other = d.request(
        "b", {"id": "u", "type": "subscription", "operation": "unsubscribe", "subscription_id": sub}
    )
    assert other["error"]["code"] == "subscription_not_found"
    missing = d.request("b", {"id": "u", "type": "subscription", "operation": "unsubscribe"})
    assert missing["error"]["code"] == "missing_subscription_id"
    ok = d.request(
        "a", {"id": "u", "type": "subscription", "operation": "unsubscribe", "subscription_id": sub}
    )
    assert ok["data"] == {"unsubscribed": True, "subscription_id": sub}
    create(d, "b", {"name": "A"})
    assert d.take("a") == []


def test_subscription_limit() -> None:
    d = make(max_subscriptions_per_connection=1)
    subscribe(d, "a", [])
    response = d.request(
        "a", {"id": "s2", "type": "subscription", "operation": "subscribe", "entity": "users"}
    )
    assert response["error"]["code"] == "subscription_limit"


def test_invalid_subscription_filter_is_rejected() -> None:
    d = make()
    response = d.request(
        "a",
        {
            "id": "s",
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "options": {"filters": [{"column": "nope", "operator": "eq", "value": 1}]},
        },
    )
    assert response["error"]["code"] == "invalid_column"


def test_disconnect_removes_subscriptions_but_in_flight_write_still_notifies() -> None:
    d = make(auto=False)
    d.send("b", {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"})
    d.send("a", {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"})
    d.send(
        "a",
        {
            "id": "w",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "A"},
        },
    )
    assert d.engine.subscription_count == 2
    d.disconnect("a")
    assert d.engine.subscription_count == 1
    d.run_pending()
    assert [m["type"] for m in d.take("b")] == ["response", "notification"]
    assert d.engine.connection_count == 1


def test_external_change_is_notified() -> None:
    d = make()
    subscribe(d, "b", [{"column": "age", "operator": "gt", "value": 10}])
    for age in (5, 50):
        d.feed(
            ws.ChangeCommitted(
                schema=None,
                entity="users",
                operation=ws.Operation.CREATE,
                row={"id": age, "name": "n", "email": None, "status": None, "age": age},
                now=d.now,
            )
        )
    assert [n["data"]["age"] for n in d.take("b")] == [50]


# --- hooks ---------------------------------------------------------------------------


def test_before_read_filter_protects_read_one_update_and_delete() -> None:
    hooks = ws.HookRegistry()

    def only_mine(ctx: ws.HookContext) -> None:
        ctx.add_filter("name", "eq", ctx.metadata.get("user"))

    for hook_type in ("before_read", "before_update", "before_delete"):
        hooks.register(hook_type, only_mine)
    hooks.register(
        "before_connect", lambda ctx: ctx.metadata.update(user=ctx.request_info.query_param("u"))
    )
    engine = ws.Engine(ws.EntityRegistry([USERS, POSTS]), hooks=hooks)
    d = Driver(engine)
    d.connect("ann", ws.RequestInfo(query="u=Ann"))
    create(d, "ann", {"name": "Ann"})
    create(d, "ann", {"name": "Bob"})
    assert [
        r["name"]
        for r in d.request(
            "ann", {"id": "r", "type": "request", "operation": "read", "entity": "users"}
        )["data"]
    ] == ["Ann"]
    for operation in ("read", "update", "delete"):
        message = {
            "id": "x",
            "type": "request",
            "operation": operation,
            "entity": "users",
            "record_id": 2,
            "data": {"status": "x"} if operation == "update" else None,
        }
        assert d.request("ann", message)["error"]["code"] == "not_found"


def test_hook_error_codes_and_generic_failures() -> None:
    hooks = ws.HookRegistry()

    def deny(ctx: ws.HookContext) -> None:
        raise ws.HookError("validation_error", "email is required", {"field": "email"})

    def broken(ctx: ws.HookContext) -> None:
        raise RuntimeError("secret internals")

    hooks.register("before_create", deny)
    hooks.register("before_delete", broken)
    d = make(hooks=hooks)
    response = create(d, "a", {"name": "A"})
    assert response["error"] == {
        "code": "validation_error",
        "message": "email is required",
        "details": {"field": "email"},
    }
    response = d.request(
        "a",
        {"id": "d", "type": "request", "operation": "delete", "entity": "users", "record_id": 1},
    )
    assert response["error"]["code"] == "hook_error"
    assert "secret" not in response["error"]["message"]


def test_before_hook_changes_data_and_after_hook_replaces_result() -> None:
    hooks = ws.HookRegistry()
    hooks.register("before_create", lambda ctx: ctx.data.update(status="new"))

    def mask(ctx: ws.HookContext) -> None:
        ctx.result = {k: v for k, v in ctx.result.items() if k != "email"}

    hooks.register("after_create", mask)
    d = make(hooks=hooks)
    subscribe(d, "b", [])
    response = create(d, "a", {"name": "A", "email": "a@x"})
    assert response["data"] == {"id": 1, "name": "A", "status": "new", "age": None}
    [note] = d.take("b")
    assert note["data"]["email"] == "a@x" and note["data"]["status"] == "new"


def test_hook_injected_bad_data_is_validated() -> None:
    hooks = ws.HookRegistry()
    hooks.register("before_create", lambda ctx: ctx.data.update(age="old"))
    d = make(hooks=hooks)
    assert create(d, "a", {"name": "A"})["error"]["code"] == "validation_error"


def test_before_subscribe_filter_is_fixed_for_the_subscription() -> None:
    hooks = ws.HookRegistry()
    hooks.register("before_subscribe", lambda ctx: ctx.add_filter("status", "eq", "mine"))
    d = make(hooks=hooks)
    subscribe(d, "b", [])
    create(d, "a", {"name": "A", "status": "mine"})
    create(d, "a", {"name": "B", "status": "theirs"})
    assert [n["data"]["name"] for n in d.take("b")] == ["A"]


def test_before_connect_rejection_refuses_the_handshake() -> None:
    hooks = ws.HookRegistry()

    def auth(ctx: ws.HookContext) -> None:
        if ctx.request_info.query_param("token") != "good":
            raise ws.HookError("unauthorized", "bad token")

    hooks.register("before_connect", auth)
    engine = ws.Engine(ws.EntityRegistry([USERS, POSTS]), hooks=hooks)
    d = Driver(engine)
    d.connect("bad", ws.RequestInfo(query="token=evil"))
    d.connect("good", ws.RequestInfo(query="token=good"))
    assert d.rejected == {"bad": (403, "bad token")}
    assert d.accepted == {"good"}


def test_disconnect_hooks_run_in_order_with_metadata() -> None:
    hooks = ws.HookRegistry()
    seen: list[tuple[str, Any]] = []
    hooks.register("before_connect", lambda ctx: ctx.metadata.update(user="u1"))
    hooks.register("before_disconnect", lambda ctx: seen.append(("before", ctx.metadata["user"])))
    hooks.register("after_disconnect", lambda ctx: seen.append(("after", ctx.metadata["user"])))
    d = make(hooks=hooks)
    d.disconnect("a")
    assert seen == [("before", "u1"), ("after", "u1")]


# --- limits and lifecycle ------------------------------------------------------------


def test_oversized_message_closes_with_1009() -> None:
    d = make(max_message_bytes=64)
    d.send("a", {"id": "x", "type": "ping", "pad": "x" * 100})
    assert d.closed["a"][0] == 1009


def test_message_size_counts_utf8_bytes_not_characters() -> None:
    d = make(max_message_bytes=100)
    d.send("a", '{"type":"ping","id":"' + "\u00e9" * 30 + '"}')  # 51 characters, 81 bytes
    assert d.take("a")[0]["type"] == "pong"
    d.send("a", '{"type":"ping","id":"' + "\u20ac" * 60 + '"}')  # 83 characters, 203 bytes
    assert d.closed["a"] == (1009, "message too big")


def test_a_client_that_does_not_read_is_closed_with_1008_and_its_queue_dropped() -> None:
    d = make(outbound_queue=160, max_in_flight=8, max_queued=72)
    d.not_reading.add("b")
    d.request("b", {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"})
    for n in range(200):  # others' writes: b never reads its notifications
        create(d, "a", {"name": f"u{n}"}, msg_id=f"c{n}")
        if "b" in d.closed:
            break
    assert d.closed["b"] == (1008, "outbound queue full: client is not reading")
    close = next(a for a in d.log if isinstance(a, ws.CloseConnection))
    assert close.discard_queued  # the close frame need not wait behind what b never read
    sends_to_b = [a for a in d.log if isinstance(a, ws.Send) and a.connection_id == "b"]
    assert len(sends_to_b) == 161  # the acknowledgement and 160 notifications: one too many
    d.send("b", {"type": "ping", "id": 1})  # late frames are ignored, nothing is sent
    assert "a" not in d.closed


def test_a_pipelining_client_that_reads_is_never_closed_and_reading_pauses() -> None:
    d = make(auto=False, outbound_queue=144, max_in_flight=8, max_queued=64)
    d.not_reading.add("a")  # a reads nothing until the test says so
    for n in range(72):
        d.send("a", {"type": "ping", "id": n})
    assert "a" in d.paused  # 72 pongs unwritten: the backlog's high-water mark
    assert "a" not in d.closed
    d.feed(ws.FramesWritten(connection_id="a", count=30, now=d.now))
    assert "a" in d.paused  # 42 left: above half the mark
    d.feed(ws.FramesWritten(connection_id="a", count=10, now=d.now))
    assert "a" not in d.paused  # 32 left


def test_a_burst_of_held_notifications_has_room_of_its_own() -> None:
    """Notifications held behind a client's own write leave together with its response;
    the client could not read them while they were held, so the burst does not count
    against outbound_queue (docs/core.md "Flow control")."""
    hooks = ws.HookRegistry()
    hooks.register("after_create", lambda ctx: None)
    d = make(hooks=hooks, auto=False, outbound_queue=4, max_in_flight=1, max_queued=1)
    d.send("a", {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"})
    d.run_pending()
    d.not_reading.add("a")  # from here a's frames are not reported written at once
    d.send(
        "a",
        {
            "id": "w",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "own"},
        },
    )
    d.finish_storage(d.storage_pending.popleft())  # committed; after_create pending
    for n in range(3):  # three more changes while a's hook runs: held behind its response
        d.feed(
            ws.ChangeCommitted(
                schema=None,
                entity="users",
                operation=ws.Operation.CREATE,
                row={"id": 100 + n, "name": f"o{n}"},
                now=d.now,
            )
        )
    d.finish_hooks(d.hooks_pending.popleft())  # response + 4 held frames: backlog 5 > 4
    assert "a" not in d.closed
    assert [m.get("id") for m in d.take("a")][:2] == ["s", "w"]
    d.feed(ws.FramesWritten(connection_id="a", count=5, now=d.now))
    for n in range(5):  # the allowance is spent as the burst is written: 4 fit, then 1008
        d.feed(
            ws.ChangeCommitted(
                schema=None,
                entity="users",
                operation=ws.Operation.CREATE,
                row={"id": 200 + n, "name": f"p{n}"},
                now=d.now,
            )
        )
    assert d.closed["a"] == (1008, "outbound queue full: client is not reading")


@pytest.mark.parametrize(
    "limits",
    [
        {"outbound_queue": 16},
        {"outbound_queue": 143, "max_in_flight": 8, "max_queued": 64},
        {"outbound_queue": 100, "max_in_flight": 1, "max_queued": 50},
    ],
)
def test_limits_refuse_an_outbound_queue_that_would_close_pipelining_clients(
    limits: dict[str, int],
) -> None:
    with pytest.raises(ValueError, match=r"outbound_queue .* must be at least 2 \* "):
        ws.Limits(**limits)


def test_keepalive_pings_then_closes_dead_peer() -> None:
    d = make(keepalive_interval=10.0, keepalive_timeout=5.0)
    deadline = d.engine.next_deadline()
    assert deadline is not None
    d.now += 10.0
    d.feed(ws.TimePassed(now=d.now))
    assert sorted(d.pings) == ["a", "b"]
    d.feed(ws.PongReceived(connection_id="b", now=d.now))
    d.now += 6.0
    d.feed(ws.TimePassed(now=d.now))
    assert d.closed == {"a": (1011, "keepalive timeout")}


def test_shutdown_finishes_work_then_closes_with_1001() -> None:
    d = make(auto=False)
    d.send(
        "a",
        {
            "id": "w",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "A"},
        },
    )
    d.feed(ws.ShutdownRequested(now=d.now))
    assert d.closed == {"b": (1001, "server shutting down")}
    d.run_pending()
    assert d.take("a")[0]["success"] is True
    assert d.closed["a"] == (1001, "server shutting down")
    d.connect("late")
    assert d.rejected["late"][0] == 503


def test_preload_paths_deeper_than_the_limit_are_invalid_options() -> None:
    d = make(max_preload_depth=3)
    read = {"id": "r", "type": "request", "operation": "read", "entity": "users"}
    ok = d.request("a", {**read, "options": {"preload": [{"relation": "posts.user.posts"}]}})
    assert ok["success"] is True
    deep = "posts.user.posts.user"
    reply = d.request("a", {**read, "options": {"preload": [{"relation": deep}]}})
    assert reply["error"]["code"] == "invalid_options"
    assert reply["error"]["details"] == {"relation": deep, "limit": 3}
    assert "4 relations deep" in reply["error"]["message"]


def test_a_reply_larger_than_the_limit_is_the_operations_error_naming_it() -> None:
    d = make(max_reply_bytes=2_000)
    for n in range(30):
        create(d, "a", {"name": "x" * 50}, msg_id=f"c{n}")
    reply = d.request("a", {"id": "r", "type": "request", "operation": "read", "entity": "users"})
    assert reply["success"] is False
    assert reply["error"]["code"] == "read_error"
    assert reply["error"]["details"] == {"limit": 2_000}
    assert "2000 bytes" in reply["error"]["message"]
    small = d.request(
        "a",
        {
            "id": "r2",
            "type": "request",
            "operation": "read",
            "entity": "users",
            "options": {"limit": 3},
        },
    )
    assert small["success"] is True and len(small["data"]) == 3
    assert d.logged and "exceeds 2000 bytes" in d.logged[-1].message


def test_total_beyond_max_count_is_a_lower_bound_flagged_inexact() -> None:
    d = make(max_count=5)
    for n in range(12):
        create(d, "a", {"name": f"u{n}"}, msg_id=f"c{n}")
    read = {"id": "r", "type": "request", "operation": "read", "entity": "users"}
    page = d.request("a", {**read, "options": {"limit": 3}})
    assert page["metadata"]["total_exact"] is False
    assert page["metadata"]["total"] == 6  # offset + max(limit, max_count) + 1
    everything = d.request("a", {**read, "id": "r2", "options": {"limit": 100}})
    assert everything["metadata"]["total"] == 12 and "total_exact" not in everything["metadata"]


def test_configured_filter_limits_apply_to_every_operation_and_subscriptions() -> None:
    d = make(max_filters=2)
    three = [{"column": "age", "operator": "gt", "value": n} for n in range(3)]
    for message in (
        {"type": "request", "operation": "read", "entity": "users", "record_id": 1},
        {"type": "request", "operation": "delete", "entity": "users", "record_id": 1},
        {"type": "subscription", "operation": "subscribe", "entity": "users"},
    ):
        reply = d.request("a", {"id": "x", **message, "options": {"filters": three}})
        assert reply["error"]["code"] == "invalid_options", message
