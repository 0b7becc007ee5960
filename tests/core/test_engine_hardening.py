"""What careless hooks, odd storage results and outside changes cost: one error response
or one log line, never an exception out of ``Engine.handle`` (docs/core.md "Failures")."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from engine_driver import Driver
from test_engine import POSTS, USERS, make, subscribe

import wsspec_core as ws

READ_ALL = {"id": "r", "type": "request", "operation": "read", "entity": "users"}


def with_hook(hook_type: str, hook: ws.Hook) -> Driver:
    hooks = ws.HookRegistry()
    hooks.register(hook_type, hook)
    return make(hooks=hooks)


@pytest.mark.parametrize(
    "bad",
    [{"filters": []}, None, "filters", ws.QueryOptions(filters=[1, 2])],  # type: ignore[arg-type]
)
def test_before_read_setting_unusable_options_costs_a_hook_error(bad: Any) -> None:
    def careless(ctx: ws.HookContext) -> None:
        ctx.options = bad

    d = with_hook("before_read", careless)
    response = d.request("a", READ_ALL)
    assert response["success"] is False
    assert response["error"] == {"code": "hook_error", "message": "a server hook failed"}
    assert d.logged and d.logged[-1].level == ws.LOG_ERROR
    # The connection and the server carry on.
    assert d.request("b", {"id": "p", "type": "ping"})["type"] == "pong"
    assert d.request("a", {**READ_ALL, "id": "r2"})["error"]["code"] == "hook_error"


@pytest.mark.parametrize(
    ("hook_type", "field", "value"),
    [
        ("before_create", "data", {"name": object()}),
        ("before_create", "data", 42),
        ("before_update", "record_id", object()),
        ("before_update", "data", [1, 2]),
        ("before_delete", "record_id", [1]),
        ("before_subscribe", "options", ws.QueryOptions(filters=(None,))),  # type: ignore[arg-type]
    ],
)
def test_before_hooks_setting_values_of_the_wrong_type(
    hook_type: str, field: str, value: Any
) -> None:
    def careless(ctx: ws.HookContext) -> None:
        setattr(ctx, field, value)

    d = with_hook(hook_type, careless)
    operation = hook_type.removeprefix("before_")
    message: dict[str, Any] = {
        "id": "x",
        "type": "request",
        "operation": operation,
        "entity": "users",
    }
    if operation == "subscribe":
        message["type"] = "subscription"
    if operation in ("update", "delete"):
        message["record_id"] = 1
    if operation in ("create", "update"):
        message["data"] = {"name": "n"}
    response = d.request("a", message)
    assert response["success"] is False
    assert response["error"]["code"] in {"hook_error", "invalid_message", "validation_error"}
    assert "object at 0x" not in str(response["error"])  # no internals
    assert d.request("a", {"id": "p", "type": "ping"})["type"] == "pong"


def test_unencodable_after_hook_result_costs_a_hook_error() -> None:
    def decimal_result(ctx: ws.HookContext) -> None:
        ctx.result = {"price": decimal.Decimal("1.10")}

    d = with_hook("after_read", decimal_result)
    response = d.request("a", READ_ALL)
    assert response["error"] == {"code": "hook_error", "message": "a server hook failed"}
    assert "Decimal" in d.logged[-1].message


def test_unencodable_storage_row_costs_an_internal_error_and_a_log_line() -> None:
    d = make(auto=False)
    d.send("a", {**READ_ALL, "record_id": 1})
    (run,) = d.storage_pending
    d.storage_pending.clear()
    d.feed(
        ws.StorageCompleted(
            operation_id=run.operation_id, result={"id": decimal.Decimal(1)}, now=d.now
        )
    )
    assert d.take("a")[0]["error"]["code"] == "internal_error"
    assert d.logged


@pytest.mark.parametrize("result", [42, "rows", [1], ws.ListResult(rows=[1], total=1)])
def test_storage_results_of_the_wrong_shape_cost_one_request(result: Any) -> None:
    d = make(auto=False)
    d.send("a", READ_ALL)
    (run,) = d.storage_pending
    d.storage_pending.clear()
    d.feed(ws.StorageCompleted(operation_id=run.operation_id, result=result, now=d.now))
    assert d.take("a")[0]["error"] == {"code": "read_error", "message": "internal storage error"}


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


def test_an_exception_of_any_kind_from_a_hook_is_a_hook_error() -> None:
    def broken(ctx: ws.HookContext) -> None:
        raise _Unprintable

    d = with_hook("before_handle", broken)
    assert d.request("a", READ_ALL)["error"]["code"] == "hook_error"


# --- ChangeCommitted rows are coerced like written data ---------------------------------

EVENTS = ws.Entity(
    schema="public",
    name="events",
    table_name="events",
    columns=[
        ws.Column(name="id", type=ws.ColumnType.INTEGER, nullable=False, primary_key=True),
        ws.Column(name="day", type=ws.ColumnType.DATE),
        ws.Column(name="count", type=ws.ColumnType.INTEGER),
    ],
)


def change(
    entity: str, row: Any, operation: ws.Operation = ws.Operation.CREATE
) -> ws.ChangeCommitted:
    return ws.ChangeCommitted(schema=None, entity=entity, operation=operation, row=row, now=0.0)


def test_change_rows_are_coerced_before_matching() -> None:
    d = Driver(ws.Engine(ws.EntityRegistry([EVENTS])))
    d.connect("a")
    subscribe(d, "a", [{"column": "day", "operator": "eq", "value": "2024-01-01"}], entity="events")
    subscribe(d, "a", [{"column": "count", "operator": "gt", "value": 5}], entity="events", id="s2")
    d.feed(change("events", {"id": "1", "day": "2024-01-01", "count": "7", "secret": "x"}))
    notified = d.take("a")
    assert len(notified) == 2
    assert all(n["data"] == {"id": 1, "day": "2024-01-01", "count": 7} for n in notified)
    assert datetime.date(2024, 1, 1).isoformat() == notified[0]["data"]["day"]


@pytest.mark.parametrize(
    "row",
    [{"id": 1, "count": "seven"}, {"id": 1, "day": "yesterday"}, "not a row", None, [1, 2]],
)
def test_a_change_row_that_cannot_be_coerced_is_logged_and_skipped(row: Any) -> None:
    d = Driver(ws.Engine(ws.EntityRegistry([EVENTS])))
    d.connect("a")
    subscribe(d, "a", [], entity="events")
    d.feed(change("events", row))
    assert d.take("a") == []
    assert d.logged and d.logged[-1].level == ws.LOG_WARNING


def test_a_change_of_an_unknown_entity_or_operation_is_logged_and_skipped() -> None:
    d = make()
    d.feed(change("nope", {"id": 1}))
    d.feed(change("users", {"id": 1, "name": "n"}, operation=ws.Operation.READ))
    assert len(d.logged) == 2


# --- two clocks -----------------------------------------------------------------------


def test_timestamps_come_from_the_wall_clock_and_timers_from_the_monotonic_one() -> None:
    engine = ws.Engine(ws.EntityRegistry([USERS, POSTS]), limits=ws.Limits(keepalive_interval=10.0))
    d = Driver(engine, now=5.0)  # a monotonic clock starts anywhere
    d.feed(ws.ConnectionOpened(connection_id="a", request=ws.RequestInfo(), now=5.0, wall=1.7e9))
    d.feed(
        ws.MessageReceived(connection_id="a", data='{"type":"ping","id":1}', now=5.0, wall=1.7e9)
    )
    assert d.take("a")[0]["timestamp"].startswith("2023-11-14T22:13:20")
    # The wall clock jumps a day ahead: keepalive does not notice.
    d.feed(ws.TimePassed(now=6.0, wall=1.7e9 + 86400))
    assert d.pings == []
    d.feed(ws.TimePassed(now=16.0, wall=1.7e9 + 86400))
    assert d.pings == ["a"]
