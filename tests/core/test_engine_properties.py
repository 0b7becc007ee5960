"""Hypothesis properties of the engine: arbitrary input never escapes as an exception, and a
state machine over connections, subscriptions, writes and out-of-order storage completions
keeps the protocol's invariants (docs/protocol.md "Order", "Subscriptions and
notifications")."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from engine_driver import Driver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
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


# --- the state machine -------------------------------------------------------------

STATUSES = ["active", "idle", None]

Filter = tuple[str, Any]  # ("status", value) | ("age_gt", n) | ("all", None)


def model_matches(flt: Filter, row: dict[str, Any]) -> bool:
    kind, value = flt
    if kind == "all":
        return True
    if kind == "status":
        return bool(row["status"] == value)
    return row["age"] is not None and row["age"] > value


def wire_filters(flt: Filter) -> list[dict[str, Any]]:
    kind, value = flt
    if kind == "all":
        return []
    if kind == "status":
        return [{"column": "status", "operator": "eq", "value": value}]
    return [{"column": "age", "operator": "gt", "value": value}]


class EngineMachine(RuleBasedStateMachine):
    """Connections, subscriptions and writes, with storage completions in random order.

    Reference model: a subscription is live from the action that acknowledged it until its
    connection closes or it is unsubscribed; a write commits when its storage operation
    runs. Each committed write must be notified exactly once to each live subscription
    whose filter matches the row, and to no other.
    """

    connections = Bundle("connections")

    @initialize()
    def setup(self) -> None:
        limits = ws.Limits(max_in_flight=2, max_queued=3, max_subscriptions_per_connection=3)
        self.engine = ws.Engine(ws.EntityRegistry([USERS, POSTS]), limits=limits)
        self.driver = Driver(self.engine, auto=False)
        self.next_conn = 0
        self.next_msg = 0
        self.version = 0
        self.open: set[int] = set()
        self.sent_ids: dict[int, list[str]] = {}
        self.pending_subs: dict[str, tuple[int, Filter]] = {}  # msg id -> (conn, filter)
        self.live: dict[str, tuple[int, Filter]] = {}  # subscription id -> (conn, filter)
        self.expected: list[tuple[str, str, int, int]] = []
        self.notified: list[tuple[str, str, int, int]] = []
        self.answered: dict[int, list[str]] = {}
        self.pending_unsubs: dict[str, str] = {}  # msg id -> subscription id
        self.op_conn: dict[int, int] = {}  # storage operation id -> connection

    def feed_and_observe(self, actions: list[ws.Action], conn: int) -> None:
        for action in actions:
            if isinstance(action, ws.RunStorage):
                self.op_conn[action.operation_id] = conn
            if not isinstance(action, ws.Send):
                continue
            target = action.connection_id
            assert isinstance(target, int)
            message = ws.decode_outbound(action.frame)
            if isinstance(message, ws.Notification):
                data = message.data
                self.notified.append(
                    (message.subscription_id, message.operation.value, data["id"], data["age"])
                )
                continue
            assert isinstance(message, ws.Response)
            self.answered.setdefault(target, []).append(str(message.id))
            pending = self.pending_subs.pop(str(message.id), None)
            if pending is not None and message.success:
                self.live[message.data["subscription_id"]] = pending
            unsubscribed = self.pending_unsubs.pop(str(message.id), None)
            if unsubscribed is not None and message.success:
                self.live.pop(unsubscribed, None)

    def msg_id(self) -> str:
        self.next_msg += 1
        return f"m{self.next_msg}"

    def send(self, conn: int, message: dict[str, Any]) -> None:
        self.sent_ids.setdefault(conn, []).append(message["id"])
        self.feed_and_observe(self.driver.send(conn, message), conn)

    @rule(target=connections)
    def open_connection(self) -> int:
        self.next_conn += 1
        conn = self.next_conn
        self.driver.connect(conn)
        self.open.add(conn)
        return conn

    @rule(conn=consumes(connections))
    def close_connection(self, conn: int) -> None:
        if conn not in self.open:
            return
        self.open.discard(conn)
        self.live = {s: v for s, v in self.live.items() if v[0] != conn}
        self.pending_subs = {m: v for m, v in self.pending_subs.items() if v[0] != conn}
        self.driver.disconnect(conn)

    @rule(
        conn=connections,
        flt=st.one_of(
            st.just(("all", None)),
            st.tuples(st.just("status"), st.sampled_from(["active", "idle"])),
            st.tuples(st.just("age_gt"), st.integers(0, 3)),
        ),
    )
    def subscribe(self, conn: int, flt: Filter) -> None:
        if conn not in self.open:
            return
        msg = self.msg_id()
        self.pending_subs[msg] = (conn, flt)
        self.send(
            conn,
            {
                "id": msg,
                "type": "subscription",
                "operation": "subscribe",
                "entity": "users",
                "options": {"filters": wire_filters(flt)},
            },
        )

    @rule(conn=connections, data=st.data())
    def unsubscribe(self, conn: int, data: st.DataObject) -> None:
        mine = sorted(s for s, (c, _f) in self.live.items() if c == conn)
        if conn not in self.open or not mine:
            return
        sub = data.draw(st.sampled_from(mine))
        msg = self.msg_id()
        self.pending_unsubs[msg] = sub  # live until its acknowledgement goes out
        self.send(
            conn,
            {"id": msg, "type": "subscription", "operation": "unsubscribe", "subscription_id": sub},
        )

    @rule(
        conn=connections,
        operation=st.sampled_from(["create", "update", "delete"]),
        record=st.integers(1, 4),
        status=st.sampled_from(STATUSES),
        age=st.none() | st.integers(0, 4),
    )
    def write(
        self, conn: int, operation: str, record: int, status: str | None, age: int | None
    ) -> None:
        if conn not in self.open:
            return
        message: dict[str, Any] = {
            "id": self.msg_id(),
            "type": "request",
            "operation": operation,
            "entity": "users",
        }
        if operation == "create":
            message["data"] = {"name": "n", "status": status, "age": age}
        else:
            message["record_id"] = record
            if operation == "update":
                message["data"] = {"status": status, "age": age}
        self.send(conn, message)

    @rule(conn=connections)
    def read(self, conn: int) -> None:
        if conn in self.open:
            self.send(
                conn,
                {"id": self.msg_id(), "type": "request", "operation": "read", "entity": "users"},
            )

    @precondition(lambda self: bool(self.driver.storage_pending))
    @rule(data=st.data())
    def complete_storage(self, data: st.DataObject) -> None:
        pending = self.driver.storage_pending
        index = data.draw(st.integers(0, len(pending) - 1))
        action = pending[index]
        del pending[index]
        self.commit(action)

    def commit(self, action: ws.RunStorage) -> None:
        operation = action.operation
        conn = self.op_conn.pop(action.operation_id)
        try:
            result = self.driver.storage.execute(operation)
        except ws.StorageFailure as exc:
            self.feed_and_observe(
                self.driver.feed(
                    ws.StorageFailed(
                        operation_id=action.operation_id, error=exc.error, now=self.driver.now
                    )
                ),
                conn,
            )
            return
        rows: list[dict[str, Any]] = []
        kind = ""
        if isinstance(operation, ws.Create):
            rows, kind = result, "create"
        elif isinstance(operation, ws.Update) and result is not None:
            rows, kind = [result], "update"
        elif isinstance(operation, ws.Delete) and result is not None:
            rows, kind = [result], "delete"
        live_now = dict(self.live)
        for row in rows:
            for sub, (_conn, flt) in sorted(live_now.items()):
                if model_matches(flt, row):
                    self.expected.append((sub, kind, row["id"], row["age"]))
        self.feed_and_observe(
            self.driver.feed(
                ws.StorageCompleted(
                    operation_id=action.operation_id, result=result, now=self.driver.now
                )
            ),
            conn,
        )

    @invariant()
    def in_flight_within_limit(self) -> None:
        per_conn: dict[int, list[ws.StorageOperation]] = {}
        for action in self.driver.storage_pending:
            per_conn.setdefault(self.op_conn[action.operation_id], []).append(action.operation)
        for operations in per_conn.values():
            assert len(operations) <= self.engine.limits.max_in_flight
            writes = [op for op in operations if not isinstance(op, ws.ReadList | ws.ReadOne)]
            assert not writes or len(operations) == 1  # a write runs alone

    @invariant()
    def subscription_limit_holds(self) -> None:
        per_conn = Counter(conn for conn, _flt in self.live.values())
        assert all(
            n <= self.engine.limits.max_subscriptions_per_connection for n in per_conn.values()
        )
        assert self.engine.subscription_count == len(self.live)

    @invariant()
    def notified_exactly_as_expected(self) -> None:
        assert Counter(self.notified) == Counter(self.expected)

    def teardown(self) -> None:
        if not hasattr(self, "driver"):
            return
        while self.driver.storage_pending:
            self.commit(self.driver.storage_pending.popleft())
        assert Counter(self.notified) == Counter(self.expected)
        for conn in self.open:
            assert self.answered.get(conn, []) == self.sent_ids.get(conn, []), conn


EngineMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_state_machine = EngineMachine.TestCase
