"""The change feed in the core (issue 9 item 5): ``Engine(change_feed=True)`` routes
``ChangesLogged`` entries as added / modified / removed per subscription, with ``seq``
(PROTOCOL.md "Change feed", docs/core.md "Change feed")."""

from __future__ import annotations

import logging
from typing import Any

import hypothesis.strategies as st
from engine_driver import Driver
from hypothesis import given, settings

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
        ws.Column(name="name", type=ws.ColumnType.TEXT),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
        ws.Column(name="age", type=ws.ColumnType.INTEGER),
    ],
)
REGISTRY = ws.EntityRegistry([USERS])
EPOCH = "E1"
CREATE, UPDATE, DELETE = ws.Operation.CREATE, ws.Operation.UPDATE, ws.Operation.DELETE


def make(
    *, hooks: ws.HookRegistry | None = None, auto: bool = True, change_feed: bool = True
) -> Driver:
    engine = ws.Engine(
        REGISTRY,
        hooks=hooks,
        limits=ws.Limits(keepalive_interval=None),
        change_feed=change_feed,
    )
    d = Driver(engine, auto=auto)
    d.connect("a")
    d.connect("b")
    return d


def entry(
    seq: int,
    operation: ws.Operation,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    *,
    entity: str = "users",
    schema: str | None = "public",
) -> ws.LogEntry:
    return ws.LogEntry(seq=seq, schema=schema, entity=entity, operation=operation, old=old, new=new)


def logged(d: Driver, *entries: ws.LogEntry, epoch: str = EPOCH, **extra: Any) -> None:
    d.feed(ws.ChangesLogged(epoch=epoch, entries=entries, now=d.now, **extra))


def subscribe(d: Driver, conn: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    response = d.request(
        conn,
        {
            "id": "s",
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "options": {"filters": filters},
        },
    )
    assert response["success"] is True, response
    data: dict[str, Any] = response["data"]
    return data


def eq(column: str, value: Any) -> dict[str, Any]:
    return {"column": column, "operator": "eq", "value": value}


def changes(d: Driver, conn: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    """(seq, change, operation, data) of the notifications ``conn`` received since the
    last take; asserts it received nothing else."""
    out = []
    for message in d.take(conn):
        assert message["type"] == "notification", message
        out.append((message["seq"], message["change"], message["operation"], message["data"]))
    return out


ANN = {"id": 1, "name": "Ann", "status": "active", "age": 30}
ANN_AWAY = {**ANN, "status": "away"}
ANN_OLDER = {**ANN, "age": 31}


# --- added / modified / removed ----------------------------------------------------------


def test_create_matching_is_added_with_the_new_row() -> None:
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, CREATE, new=ANN), entry(2, CREATE, new={**ANN, "id": 2, "status": "x"}))
    assert changes(d, "b") == [(1, "added", "create", ANN)]


def test_update_matching_before_and_after_is_modified_with_the_new_row() -> None:
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, UPDATE, old=ANN, new=ANN_OLDER))
    assert changes(d, "b") == [(1, "modified", "update", ANN_OLDER)]


def test_update_into_the_filter_is_added() -> None:
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, UPDATE, old=ANN_AWAY, new=ANN))
    assert changes(d, "b") == [(1, "added", "update", ANN)]


def test_update_out_of_the_filter_is_removed_with_the_old_row() -> None:
    # The subscriber never receives values outside its filter: the row as it matched.
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, UPDATE, old=ANN, new=ANN_AWAY))
    assert changes(d, "b") == [(1, "removed", "update", ANN)]


def test_update_matching_neither_row_is_not_notified() -> None:
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, UPDATE, old=ANN_AWAY, new={**ANN_AWAY, "age": 5}))
    assert changes(d, "b") == []


def test_delete_matching_is_removed_with_the_old_row() -> None:
    d = make()
    subscribe(d, "b", [eq("status", "active")])
    logged(d, entry(1, DELETE, old=ANN), entry(2, DELETE, old={**ANN_AWAY, "id": 2}))
    assert changes(d, "b") == [(1, "removed", "delete", ANN)]


def test_each_subscription_sees_its_own_effect_in_creation_order() -> None:
    d = make()
    s_active = subscribe(d, "b", [eq("status", "active")])["subscription_id"]
    s_away = subscribe(d, "b", [eq("status", "away")])["subscription_id"]
    s_all = subscribe(d, "b", [])["subscription_id"]
    logged(d, entry(7, UPDATE, old=ANN, new=ANN_AWAY))
    got = [(m["subscription_id"], m["change"], m["data"]) for m in d.take("b")]
    assert got == [
        (s_active, "removed", ANN),
        (s_away, "added", ANN_AWAY),
        (s_all, "modified", ANN_AWAY),
    ]


def test_hook_added_filters_apply_to_old_and_new_rows() -> None:
    hooks = ws.HookRegistry()
    hooks.register("before_subscribe", lambda ctx: ctx.add_filter("age", "lt", 40))
    d = make(hooks=hooks)
    subscribe(d, "b", [eq("status", "active")])
    old_ann = {**ANN, "age": 50}
    logged(
        d,
        entry(1, UPDATE, old=ANN, new=old_ann),  # leaves by the hook's filter: removed
        entry(2, UPDATE, old=old_ann, new=ANN),  # enters by it: added
        entry(3, CREATE, new={**old_ann, "id": 2}),  # never matches the hook's filter
    )
    assert changes(d, "b") == [(1, "removed", "update", ANN), (2, "added", "update", ANN)]


def test_rows_are_coerced_and_unknown_columns_dropped() -> None:
    d = make()
    subscribe(d, "b", [eq("age", 30)])
    logged(d, entry(1, CREATE, new={**ANN, "age": "30", "extra": 1}))
    assert changes(d, "b") == [(1, "added", "create", ANN)]


def test_entries_are_routed_in_seq_order_with_their_seq() -> None:
    d = make()
    subscribe(d, "b", [])
    logged(d, entry(3, CREATE, new=ANN), entry(9, UPDATE, old=ANN, new=ANN_OLDER))
    logged(d, entry(10, DELETE, old=ANN_OLDER))
    assert [(seq, change) for seq, change, _, _ in changes(d, "b")] == [
        (3, "added"),
        (9, "modified"),
        (10, "removed"),
    ]
    assert d.engine.position == 10 and d.engine.epoch == EPOCH


# --- positions: subscribe reply and pong -------------------------------------------------


def test_subscribe_reply_carries_epoch_and_seq_and_goes_live_after_it() -> None:
    d = make()
    logged(d, entry(1, CREATE, new=ANN), entry(2, UPDATE, old=ANN, new=ANN_OLDER))
    reply = subscribe(d, "b", [])
    assert reply["epoch"] == EPOCH and reply["seq"] == 2
    logged(d, entry(3, DELETE, old=ANN_OLDER))
    assert changes(d, "b") == [(3, "removed", "delete", ANN_OLDER)]


def test_subscribe_reply_before_any_entry_and_through_moves_the_position() -> None:
    d = make()
    assert {k: v for k, v in subscribe(d, "b", []).items() if k in ("epoch", "seq")} == {
        "epoch": None,
        "seq": 0,
    }
    logged(d, through=41)  # a tailer starting at the log's end
    assert d.engine.epoch == EPOCH and d.engine.position == 41
    logged(d, entry(41, CREATE, new=ANN), entry(42, CREATE, new=ANN))
    assert [seq for seq, *_ in changes(d, "b")] == [42]


def test_pong_carries_the_position() -> None:
    d = make()
    logged(d, entry(5, CREATE, new=ANN))
    pong = d.request("a", {"type": "ping", "id": 1})
    assert pong["id"] == 1 and pong["data"] == {"epoch": EPOCH, "seq": 5}


def test_pong_behind_a_write_reports_the_entries_sent_before_it() -> None:
    # The position goes into the pong when it is sent, after the notifications that
    # were routed while it waited behind the write's response.
    d = make(auto=False)
    d.send("a", {"type": "subscription", "operation": "subscribe", "id": "s", "entity": "users"})
    d.run_pending()
    d.take("a")
    d.send("a", {"type": "request", "operation": "create", "id": "w", "entity": "users",
                 "data": {"name": "Ann"}})  # fmt: skip
    d.send("a", {"type": "ping", "id": "p"})
    logged(d, entry(1, CREATE, new=ANN))
    assert d.take("a") == []  # held behind the write's response
    d.run_pending()
    kinds = [(m["type"], m.get("seq"), m.get("data")) for m in d.take("a")]
    assert [k[0] for k in kinds] == ["response", "notification", "pong"]
    assert kinds[2][2] == {"epoch": EPOCH, "seq": 1}


# --- the engine's own writes ---------------------------------------------------------


def write(d: Driver, conn: str, msg_id: str, operation: str, **fields: Any) -> None:
    d.send(
        conn,
        {"type": "request", "operation": operation, "id": msg_id, "entity": "users", **fields},
    )


def test_own_write_is_notified_once_from_the_log_only() -> None:
    d = make()
    subscribe(d, "a", [])
    subscribe(d, "b", [])
    write(d, "a", "w", "create", data={"name": "Ann"})
    [response] = d.take("a")
    assert response["type"] == "response" and response["success"] is True
    assert d.take("b") == []  # the StorageCompleted notified nobody
    row = response["data"]
    logged(d, entry(1, CREATE, new=row))
    assert changes(d, "a") == [(1, "added", "create", row)]
    assert changes(d, "b") == [(1, "added", "create", row)]


def test_response_precedes_own_notification_when_the_entry_arrives_first() -> None:
    d = make(auto=False)
    subscribe_manually(d, "a")
    subscribe_manually(d, "b")
    write(d, "a", "w", "create", data={"name": "Ann"})
    [run] = d.storage_pending
    logged(d, entry(1, CREATE, new={"id": 1, "name": "Ann"}))  # committed, logged, tailed
    assert d.take("a") == []  # held: the write's response has not gone out
    assert [m["seq"] for m in d.take("b")] == [1]  # others are not held
    d.run_pending()
    assert [(m["type"], m.get("seq")) for m in d.take("a")] == [
        ("response", None),
        ("notification", 1),
    ]
    assert run.operation_id  # the write ran once


def test_response_precedes_own_notification_when_the_entry_arrives_after() -> None:
    d = make(auto=False)
    subscribe_manually(d, "a")
    write(d, "a", "w", "create", data={"name": "Ann"})
    d.run_pending()
    assert [m["type"] for m in d.take("a")] == ["response"]
    logged(d, entry(1, CREATE, new={"id": 1, "name": "Ann"}))
    assert [(m["type"], m["seq"]) for m in d.take("a")] == [("notification", 1)]


def test_failed_write_releases_what_it_held() -> None:
    d = make(auto=False)
    subscribe_manually(d, "a")
    write(d, "a", "w", "update", record_id=99, data={"name": "x"})
    logged(d, entry(1, CREATE, new=ANN))  # someone else's change, while a's write runs
    assert d.take("a") == []
    d.run_pending()  # not found
    messages = d.take("a")
    assert [(m["type"], m.get("success")) for m in messages] == [
        ("response", False),
        ("notification", None),
    ]


def test_back_to_back_writes_each_hold_until_their_response() -> None:
    d = make(auto=False)
    subscribe_manually(d, "a")
    write(d, "a", "w1", "create", data={"name": "Ann"})
    write(d, "a", "w2", "create", data={"name": "Bob"})
    first = d.storage_pending.popleft()
    d.finish_storage(first)  # w1 answered; w2 starts in the same event
    assert [m["id"] for m in d.take("a")] == ["w1"]
    logged(d, entry(1, CREATE, new={"id": 1, "name": "Ann"}))
    assert d.take("a") == []  # w2 holds now
    d.run_pending()
    assert [(m.get("id"), m.get("seq")) for m in d.take("a")] == [("w2", None), (None, 1)]


def subscribe_manually(d: Driver, conn: str) -> None:
    d.send(conn, {"type": "subscription", "operation": "subscribe", "id": "s", "entity": "users"})
    d.run_pending()
    [reply] = d.take(conn)
    assert reply["success"] is True


# --- bad entries, epochs, no feed ---------------------------------------------------------


def warnings(d: Driver) -> list[str]:
    out = [log.message for log in d.logged if log.level == logging.WARNING]
    d.logged.clear()
    return out


def test_unusable_entries_are_logged_and_skipped() -> None:
    d = make()
    subscribe(d, "b", [])
    logged(
        d,
        entry(1, CREATE, new=ANN, entity="nope"),
        entry(2, CREATE, new={**ANN, "age": "old"}),
        entry(3, UPDATE, old=None, new=ANN),
        entry(4, ws.Operation.READ, new=ANN),
        entry(5, CREATE, new=ANN),
    )
    logged(d, entry(5, DELETE, old=ANN), entry(4, DELETE, old=ANN))  # not beyond position
    assert [seq for seq, *_ in changes(d, "b")] == [5]
    messages = warnings(d)
    assert len(messages) == 6
    assert "entry 1 skipped" in messages[0] and "nope" in messages[0]
    assert "entry 2" in messages[1] and "'old'" in messages[1]
    assert "entry 3" in messages[2] and "not an object" in messages[2]
    assert "entry 4 skipped" in messages[3]
    assert "seq 5 is not beyond the position 5" in messages[4]
    assert "seq 4 is not beyond" in messages[5]
    assert d.engine.position == 5


def test_another_epoch_is_logged_and_adopted_from_seq_zero() -> None:
    d = make()
    subscribe(d, "b", [])
    logged(d, entry(8, CREATE, new=ANN))
    assert warnings(d) == []  # the first epoch is simply learnt
    logged(d, entry(1, DELETE, old=ANN), epoch="E2")
    [message] = warnings(d)
    assert "'E1' to 'E2'" in message
    assert d.engine.epoch == "E2" and d.engine.position == 1
    assert [seq for seq, *_ in changes(d, "b")] == [8, 1]
    assert d.request("a", {"type": "ping", "id": 1})["data"] == {"epoch": "E2", "seq": 1}


def test_without_a_feed_nothing_changes() -> None:
    d = make(change_feed=False)
    reply = subscribe(d, "b", [])
    assert set(reply) == {"subscription_id", "schema", "entity"}
    assert "data" not in d.request("a", {"type": "ping", "id": 1})
    write(d, "a", "w", "create", data={"name": "Ann"})
    [note] = d.take("b")
    assert "seq" not in note and "change" not in note
    logged(d, entry(1, CREATE, new=ANN))
    assert d.take("b") == []
    assert "without change_feed" in warnings(d)[0]


# --- the property: routing equals the reference ------------------------------------------

STATUSES = st.sampled_from(["active", "away", None])
AGES = st.sampled_from([0, 1, 2, None])
ROWS = st.fixed_dictionaries({"id": st.just(1), "status": STATUSES, "age": AGES})
FILTER = st.one_of(
    st.builds(
        lambda column, operator, value: {"column": column, "operator": operator, "value": value},
        st.just("status"),
        st.sampled_from(["eq", "neq"]),
        st.sampled_from(["active", "away"]),
    ),
    st.builds(
        lambda operator, value: {"column": "age", "operator": operator, "value": value},
        st.sampled_from(["eq", "neq", "gt", "lte"]),
        st.sampled_from([0, 1, 2]),
    ),
    st.builds(
        lambda column, operator: {"column": column, "operator": operator},
        st.sampled_from(["status", "age"]),
        st.sampled_from(["is_null", "is_not_null"]),
    ),
    st.builds(
        lambda values: {"column": "status", "operator": "in", "value": values},
        st.lists(st.sampled_from(["active", "away"]), min_size=1, max_size=2),
    ),
    st.builds(
        lambda value: {"column": "age", "operator": "eq", "value": value, "logic_operator": "OR"},
        st.sampled_from([0, 2]),
    ),
)
ENTRIES = st.lists(
    st.tuples(st.integers(1, 3), st.sampled_from([CREATE, UPDATE, DELETE]), ROWS, ROWS),
    max_size=12,
)


def reference(
    filters: ws.Filters, entries: list[ws.LogEntry]
) -> list[tuple[int, str, str, dict[str, Any]]]:
    """What one subscription must receive, straight from PROTOCOL.md "Change feed"."""
    out = []
    for e in entries:
        before = e.old is not None and ws.matches(filters, e.old)
        after = e.new is not None and ws.matches(filters, e.new)
        if before and after:
            out.append((e.seq, "modified", e.operation.value, e.new))
        elif after:
            assert e.new is not None
            out.append((e.seq, "added", e.operation.value, e.new))
        elif before:
            assert e.old is not None
            out.append((e.seq, "removed", e.operation.value, e.old))
    return out


@settings(max_examples=300, deadline=None)
@given(
    subscriptions=st.lists(st.lists(FILTER, max_size=3), min_size=1, max_size=4),
    raw_entries=ENTRIES,
    batch=st.integers(1, 4),
)
def test_routing_equals_the_reference_per_subscription(
    subscriptions: list[list[dict[str, Any]]],
    raw_entries: list[tuple[int, ws.Operation, dict[str, Any], dict[str, Any]]],
    batch: int,
) -> None:
    d = make()
    ids = []
    for filters in subscriptions:
        ids.append(subscribe(d, "b", filters)["subscription_id"])
    entries = []
    seq = 0
    for gap, operation, old, new in raw_entries:
        seq += gap
        entries.append(
            entry(
                seq,
                operation,
                old=None if operation is CREATE else old,
                new=None if operation is DELETE else new,
            )
        )
    for start in range(0, len(entries), batch):
        logged(d, *entries[start : start + batch])
    # A replay of what was routed already is skipped: each entry at most once.
    logged(d, *entries[-batch:])
    received: dict[str, list[tuple[int, str, str, dict[str, Any]]]] = {i: [] for i in ids}
    for message in d.take("b"):
        received[message["subscription_id"]].append(
            (message["seq"], message["change"], message["operation"], message["data"])
        )
    for sub_id, filters in zip(ids, subscriptions, strict=True):
        compiled = ws.compile_filters(USERS, [ws.FilterSpec(**f) for f in filters])
        assert received[sub_id] == reference(compiled, entries)
