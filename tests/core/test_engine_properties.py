"""Hypothesis properties of the engine: arbitrary input, careless hooks, odd storage results
and arbitrary outside changes never escape as an exception, and cost at most the request
they touch. The state machine over connections, subscriptions and writes is in
test_engine_state_machine.py."""

from __future__ import annotations

import builtins
import json
from typing import Any

import orjson
from engine_driver import Driver
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_engine import POSTS, USERS
from wsspec.testing import strategies as wst

import wsspec_core as ws

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "id",
        "type",
        "operation",
        "entity",
        "schema",
        "record_id",
        "data",
        "options",
        "subscription_id",
    ]
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers(), json_values),
        "type": st.sampled_from(["request", "REQUEST", "subscription", "ping", "pong", "x"])
        | json_values,
        "operation": st.sampled_from(
            ["read", "create", "update", "delete", "meta", "subscribe", "unsubscribe", "x"]
        )
        | json_values,
        "entity": st.sampled_from(["users", "posts", "nope", ""]) | json_values,
        "schema": st.sampled_from(["public", "other"]) | json_values,
        "record_id": st.integers(-2, 3) | st.text(max_size=3) | json_values,
        "data": json_values,
        "options": json_values,
        "subscription_id": json_values,
    },
)


def fresh() -> Driver:
    driver = Driver(ws.Engine(ws.EntityRegistry([USERS, POSTS])))
    driver.connect("c")
    return driver


def answers(driver: Driver) -> list[dict[str, Any]]:
    return [m for m in driver.take("c") if m["type"] in ("response", "pong")]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_like | json_values.map(lambda v: {"data": v}), min_size=1, max_size=5))
def test_arbitrary_json_messages_each_get_exactly_one_answer(messages: list[Any]) -> None:
    driver = fresh()
    for message in messages:
        driver.send("c", json.dumps(message))
        [answer] = answers(driver)
        readable_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(readable_id, float) and readable_id.is_integer():
            readable_id = int(readable_id)  # the codec reads 5.0 as the id 5
        if isinstance(readable_id, str | int) and not isinstance(readable_id, bool):
            assert answer["id"] in (readable_id, "")
        else:
            assert answer.get("id", "") in ("", None)


@settings(max_examples=300)
@given(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    driver = fresh()
    driver.send("c", frame)
    [answer] = answers(driver)
    assert answer["type"] in ("response", "pong")


@settings(max_examples=200)
@given(wst.malformed_frames(USERS))
def test_malformed_frames_get_their_error_code(frame: wst.MalformedFrame) -> None:
    driver = fresh()
    driver.send("c", frame.frame)
    [answer] = answers(driver)
    assert answer["success"] is False and answer["error"]["code"] == frame.code


@settings(max_examples=200)
@given(wst.messages(USERS))
def test_valid_messages_never_fail_validation(message: ws.InboundMessage) -> None:
    driver = fresh()
    driver.send("c", ws.encode_inbound(message))
    [answer] = answers(driver)
    if answer["type"] == "response" and not answer["success"]:
        # Only outcomes that depend on the data are allowed for valid messages.
        assert answer["error"]["code"] in {
            "not_found",
            "validation_error",
            "subscription_not_found",
        }


# --- careless hooks, odd storage results, outside changes --------------------------
#
# What a hook, a storage backend or another process does wrong costs one request an error
# response (or the operator a Log line), never an exception out of Engine.handle, and the
# client never sees a repr of the value or the text of the exception (docs/protocol.md
# "Hooks", "Errors").

#: Planted in every repr and exception text below: no frame may ever contain it.
SECRET = "s3cr3t-internals"


class Opaque:
    """A value no codec can write, whose repr must never reach a client."""

    def __repr__(self) -> str:
        return f"<Opaque {SECRET}>"

    __str__ = __repr__


def _broken_str(self: object) -> str:
    raise RuntimeError(SECRET)


junk_atoms = st.one_of(
    json_values,
    st.builds(Opaque),
    st.decimals(allow_nan=True, allow_infinity=True, places=2),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**70, -(2**65)]),
    st.binary(max_size=4),
    st.sets(st.integers(0, 3), max_size=2),
    st.complex_numbers(max_magnitude=2, allow_nan=False),
    st.datetimes(),
    st.dates(),
    st.just(Ellipsis),
)
junk = st.recursive(
    junk_atoms,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), children, max_size=3)
    ),
    max_leaves=8,
)
junk_filter_specs = st.builds(
    ws.FilterSpec,
    column=st.sampled_from(["id", "age", "status", "name", "nope"]) | junk,
    operator=st.sampled_from(["eq", "neq", "in", "between", "like", "is_null", "x"]) | junk,
    value=junk,
    logic_operator=st.sampled_from(["AND", "OR", "xor"]) | junk,
)
junk_options = st.builds(
    ws.QueryOptions,
    filters=st.lists(junk_filter_specs | junk, max_size=3).map(tuple) | junk,
    columns=st.none() | st.just(("id", "name")) | junk,
    omit_columns=st.just(()) | junk,
    preload=st.just(()) | st.just((ws.PreloadSpec(relation="posts"),)) | junk,
    sort=st.just(()) | st.just((ws.SortSpec(column="age", direction="desc"),)) | junk,
    limit=st.none() | st.integers(-2, 5) | junk,
    offset=st.none() | st.integers(-2, 5) | junk,
)
hook_values = st.one_of(junk, junk_options, st.builds(ws.QueryOptions))


def make_exception(kind: type[Exception], broken_str: bool) -> Exception:
    """An instance of a subclass of ``kind`` whose text holds the secret (or whose
    ``__str__`` raises): whatever the client gets must carry neither."""
    namespace: dict[str, Any] = {"__str__": _broken_str, "__repr__": _broken_str}
    subclass: type[Exception] = type(
        f"Careless{kind.__name__}", (kind,), namespace if broken_str else {}
    )
    try:
        return subclass(f"{SECRET} in {kind.__name__}")
    except Exception:  # a constructor wanting other arguments (UnicodeDecodeError)
        return Exception.__new__(subclass)


def _constructible(kind: type[Exception]) -> bool:
    try:
        make_exception(kind, False)
    except Exception:
        return False
    return True


#: Every built-in Exception subclass we can make an instance of.
EXCEPTION_TYPES = sorted(
    (
        kind
        for kind in vars(builtins).values()
        if isinstance(kind, type) and issubclass(kind, Exception) and _constructible(kind)
    ),
    key=lambda kind: kind.__name__,
)

exceptions = st.builds(make_exception, st.sampled_from(EXCEPTION_TYPES), st.booleans())
#: What a HookError deliberately tells the client: its own code and message.
HOOK_ERROR_CODES = ["unauthorized", "validation_error"]
hook_errors = st.builds(
    ws.HookError,
    st.sampled_from(HOOK_ERROR_CODES),
    st.just("not allowed"),
    st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2) | junk,
)


class CarelessHook:
    """Sets context attributes to arbitrary values, then maybe raises."""

    def __init__(self, changes: list[tuple[str, Any]], raises: Exception | None) -> None:
        self.changes = changes
        self.raises = raises

    def __call__(self, ctx: ws.HookContext) -> None:
        for name, value in self.changes:
            setattr(ctx, name, value)
        if self.raises is not None:
            raise self.raises

    def __repr__(self) -> str:  # readable falsifying examples, and no secret in them
        raises = type(self.raises).__mro__[1].__name__ if self.raises is not None else None
        return f"CarelessHook({[name for name, _v in self.changes]}, raises={raises})"


careless_hooks = st.builds(
    CarelessHook,
    st.lists(
        st.tuples(st.sampled_from(["options", "data", "record_id", "result"]), hook_values),
        max_size=2,
    ),
    st.none() | exceptions | hook_errors,
)

#: Valid messages of every kind; ids are given when the script is built.
SCRIPT_MESSAGES: list[dict[str, Any]] = [
    {"type": "request", "operation": "read", "entity": "users"},
    {
        "type": "request",
        "operation": "read",
        "entity": "users",
        "options": {"filters": [{"column": "age", "operator": "gt", "value": 1}], "limit": 2},
    },
    {"type": "request", "operation": "read", "entity": "users", "record_id": 1},
    {"type": "request", "operation": "create", "entity": "users", "data": {"name": "new"}},
    {
        "type": "request",
        "operation": "create",
        "entity": "users",
        "data": [{"name": "b1", "age": 3}, {"name": "b2"}],
    },
    {
        "type": "request",
        "operation": "update",
        "entity": "users",
        "record_id": 2,
        "data": {"age": 9},
    },
    {"type": "request", "operation": "delete", "entity": "users", "record_id": 3},
    {"type": "request", "operation": "meta", "entity": "users"},
    {"type": "request", "operation": "meta"},
    {"type": "subscription", "operation": "subscribe", "entity": "users"},
    {
        "type": "subscription",
        "operation": "subscribe",
        "entity": "users",
        "options": {"filters": [{"column": "status", "operator": "eq", "value": "active"}]},
    },
    {"type": "subscription", "operation": "unsubscribe", "subscription_id": "sub-1"},
    {"type": "ping"},
]
SEED_ROWS = [
    {"name": "ann", "age": 1, "status": "active"},
    {"name": "bob", "age": 2, "status": "idle"},
    {"name": "cy", "age": 3, "status": None},
]
SUBSCRIBE_ALL = {"id": "w", "type": "subscription", "operation": "subscribe", "entity": "users"}


def seeded(hooks: ws.HookRegistry | None = None, **driver_options: Any) -> Driver:
    """A driver whose ``users`` holds three rows, with a watcher connection ``w``
    subscribed to every users change, opened before any hook is registered."""
    driver = Driver(ws.Engine(ws.EntityRegistry([USERS, POSTS]), hooks=hooks), **driver_options)
    driver.connect("w")
    for row in SEED_ROWS:
        driver.request(
            "w",
            {
                "id": "seed",
                "type": "request",
                "operation": "create",
                "entity": "users",
                "data": row,
            },
        )
    assert driver.request("w", SUBSCRIBE_ALL)["success"]
    driver.take("w")
    return driver


def script(indexes: list[int]) -> list[dict[str, Any]]:
    return [{**SCRIPT_MESSAGES[i], "id": f"q{n}"} for n, i in enumerate(indexes)]


scripts = st.lists(st.integers(0, len(SCRIPT_MESSAGES) - 1), min_size=1, max_size=8).map(script)


def assert_nothing_leaked(driver: Driver) -> None:
    for action in driver.log:
        if isinstance(action, ws.Send):
            assert SECRET not in action.frame, action.frame
            assert "object at 0x" not in action.frame, action.frame
        elif isinstance(action, ws.RejectConnection | ws.CloseConnection):
            assert SECRET not in action.reason


def assert_one_answer_each(
    driver: Driver, conn: str, messages: list[dict[str, Any]], allowed: set[str]
) -> list[dict[str, Any]]:
    """Every message got exactly one answer, with its id, in order; every error is one of
    ``allowed`` and a hook_error says nothing more than that."""
    answers = [m for m in driver.take(conn) if m["type"] in ("response", "pong")]
    assert [a["id"] for a in answers] == [m["id"] for m in messages]
    for answer in answers:
        if answer["type"] == "response" and not answer["success"]:
            error = answer["error"]
            event(f"error {error['code']}")
            assert error["code"] in allowed, error
            if error["code"] in ("hook_error", "internal_error"):
                assert set(error) == {"code", "message"}, error
                assert error["message"] in (
                    "a server hook failed",
                    "the result could not be encoded",
                ), error
    return answers


def assert_still_serving(driver: Driver, conn: str) -> None:
    pong = driver.request(conn, {"type": "ping", "id": "alive"})
    assert pong["type"] == "pong" and pong["id"] == "alive"


#: Whatever a request may fairly get, with careless hooks around.
ANY_OUTCOME = {
    "hook_error",
    "internal_error",
    "not_found",
    "validation_error",
    "invalid_message",
    "invalid_filter",
    "invalid_column",
    "invalid_options",
    "subscription_not_found",
    "read_error",
    "create_error",
    "update_error",
    "delete_error",
    *HOOK_ERROR_CODES,
}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hooks=st.lists(st.tuples(st.sampled_from(list(ws.HookType)), careless_hooks), max_size=3),
    messages=scripts,
)
def test_careless_hooks_cost_one_request_never_the_engine(
    hooks: list[tuple[ws.HookType, CarelessHook]], messages: list[dict[str, Any]]
) -> None:
    registry = ws.HookRegistry()
    driver = seeded(registry)
    for hook_type, hook in hooks:  # registered after the watcher was set up
        registry.register(hook_type, hook)
    driver.connect("c")
    if "c" in driver.accepted:
        for message in messages:
            driver.send("c", message)
        assert_one_answer_each(driver, "c", messages, ANY_OUTCOME)
        assert_still_serving(driver, "c")
    else:  # a before_connect hook raised: the handshake is refused, 403 by default
        assert driver.rejected["c"][0] == 403
    # A change from outside still reaches the watcher, and the watcher is still served.
    driver.take("w")
    driver.feed(
        ws.ChangeCommitted(
            schema=None,
            entity="users",
            operation=ws.Operation.CREATE,
            row={"id": 99, "name": "outside"},
            now=driver.now,
        )
    )
    assert [m["data"]["id"] for m in driver.take("w") if m["type"] == "notification"] == [99]
    driver.disconnect("c")
    assert_still_serving(driver, "w")
    assert_nothing_leaked(driver)


def mangle(data: st.DataObject) -> Any:
    """A storage_result for the driver: replaces a value in the result, or all of it."""

    def storage_result(action: ws.RunStorage, result: Any) -> Any:
        how = data.draw(st.sampled_from(["keep", "value", "whole"]), label="mangle")
        if how == "whole":
            return data.draw(junk, label="result")
        if how == "value":
            rows = result.rows if isinstance(result, ws.ListResult) else result
            rows = rows if isinstance(rows, list) else [rows]
            rows = [row for row in rows if isinstance(row, dict) and row]
            if rows:
                row = data.draw(st.sampled_from(rows), label="row")
                column = data.draw(st.sampled_from(sorted(row)), label="column")
                row[column] = data.draw(junk, label="value")
        return result

    return storage_result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=scripts, data=st.data())
def test_odd_storage_results_cost_one_request_never_the_engine(
    messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    driver = seeded()
    driver.storage_result = mangle(data)
    driver.connect("c")
    for message in messages:
        driver.send("c", message)
    assert_one_answer_each(driver, "c", messages, ANY_OUTCOME)
    assert_still_serving(driver, "c")
    assert_still_serving(driver, "w")
    assert_nothing_leaked(driver)


USERS_COLUMNS = {column.name for column in USERS.columns}
WRITES = [ws.Operation.CREATE, ws.Operation.UPDATE, ws.Operation.DELETE]
change_values = st.one_of(
    st.integers(-1, 5),
    st.sampled_from(["3", "4.0", "active", "idle", "a", "x y", ""]),
    st.none(),
    json_values,
)
change_rows = st.dictionaries(
    st.sampled_from(sorted(USERS_COLUMNS)) | st.text(max_size=4), change_values, max_size=6
)
#: Rows a database could well report, text where a number belongs included.
plausible_rows = st.fixed_dictionaries(
    {"id": st.integers(1, 5) | st.sampled_from(["2", "3.0"])},
    optional={
        "name": st.sampled_from(["ann", "bob", "a%"]) | st.text(max_size=3),
        "age": st.none() | st.integers(-1, 5) | st.sampled_from(["2", "4.0"]),
        "status": st.none() | st.sampled_from(["active", "idle"]),
        "email": st.none() | st.text(max_size=3),
        "unregistered": json_values,
    },
)
SUBSCRIPTION_FILTERS = [
    [],
    [{"column": "age", "operator": "gt", "value": 1}],
    [{"column": "status", "operator": "eq", "value": "active"}],
    [{"column": "id", "operator": "in", "value": [1, 2, "3"]}],
    [{"column": "name", "operator": "like", "value": "a%"}],
]


def compiled(flt: list[dict[str, Any]]) -> ws.Filters:
    return ws.compile_filters(USERS, tuple(ws.FilterSpec(**spec) for spec in flt))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(
        st.builds(
            ws.ChangeCommitted,
            schema=st.none() | st.sampled_from(["public", "other", ""]) | st.text(max_size=6),
            entity=st.sampled_from(["users", "users", "posts", "nope", ""]) | st.text(max_size=6),
            operation=st.sampled_from(WRITES) | st.sampled_from(list(ws.Operation)),
            row=plausible_rows
            | plausible_rows
            | change_rows
            | json_values
            | st.dictionaries(st.sampled_from(["id", "age", "name"]), junk, max_size=2),
            now=st.just(0.0),
        ),
        min_size=1,
        max_size=4,
    ),
    filters=st.lists(st.sampled_from(SUBSCRIPTION_FILTERS), max_size=3),
)
def test_arbitrary_outside_changes_are_notified_or_logged(
    changes: list[ws.ChangeCommitted], filters: list[list[dict[str, Any]]]
) -> None:
    driver = seeded()  # "w" holds one subscription to every users change
    filters = [[], *filters]
    for n, flt in enumerate(filters[1:]):
        message = {**SUBSCRIBE_ALL, "id": f"s{n}", "options": {"filters": flt}}
        assert driver.request("w", message)["success"]
    for change in changes:
        logged = len(driver.logged)
        driver.feed(change)
        notifications = [m for m in driver.take("w") if m["type"] == "notification"]
        was_logged = len(driver.logged) > logged
        event(f"{len(notifications)} notified, logged: {was_logged}")
        resolved = driver.engine.registry.resolve(change.schema, change.entity)
        if resolved is not USERS or change.operation not in WRITES:
            # posts has no subscriber here; anything else is not a change of ours
            assert notifications == []
            assert was_logged or resolved is POSTS
            continue
        try:
            row = ws.coerce_change_row(USERS, change.row)
        except ws.InvalidRequest:
            assert notifications == [] and was_logged
            continue
        # Coerced to the entity's columns, once per matching subscription, or logged
        # when the coerced row cannot be encoded or routed.
        if was_logged:
            assert notifications == []
            continue
        expected = sum(ws.matches(compiled(flt), row) for flt in filters)
        assert len(notifications) == expected
        for notification in notifications:
            assert notification["operation"] == change.operation.value
            assert notification["entity"] == "users" and notification["schema"] == "public"
            decoded = ws.decode_outbound(orjson.dumps(notification).decode())
            assert isinstance(decoded, ws.Notification) and decoded.data == row
    assert_still_serving(driver, "w")
    assert_nothing_leaked(driver)
