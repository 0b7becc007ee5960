"""Property ``subscription``: a subscriber is notified of exactly the matching writes.

A subscription with random filters (on the ``sub`` connection) receives, for the fuzzer's
creates, updates and deletes on ``main``, a notification for exactly the writes that match
(the record after a create or update, the record as it was for a delete), with the stored
record, in commit order; after unsubscribe, none.  A ping round trip on ``sub`` serves as a
barrier (the server answers in order), plus a grace period for late notifications.

A server with the change feed (its subscribe reply carries ``seq``; PROTOCOL.md "Change
feed") is held to the feed's rules instead: an update is notified as ``added``,
``modified`` or ``removed`` by the filters on the record before and after it (``removed``
carries the record as it matched), and notifications arrive asynchronously, within
:data:`FEED_DELIVERY` seconds of the write's response (the protocol promises 1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from wsspec_core import Entity, matches

from ... import strategies as wst
from ..compare import (
    check_envelope,
    compare,
    compile_or_reject,
    error_code,
    norm_key,
    normalise,
    spec_json,
)
from ..entities import Target, entity_ref
from ..report import PropertyFailure, Refused
from ..wire import Connection, dump

if TYPE_CHECKING:
    from ..runner import Fuzzer

__all__ = ["PER_ENTITY", "check"]

#: Run once per entity (else once, drawing the entity).
PER_ENTITY = True

#: Seconds a change-feed server may take to notify a write (PROTOCOL.md: within 1 s).
FEED_DELIVERY = 2.0

#: (operation, key, record notified, change or None)
Expected = tuple[str, Any, dict[str, Any], str | None]


def check(fuzzer: Fuzzer, data: st.DataObject, target: Target | None) -> None:
    chosen = fuzzer.pick(data, target)
    entity = chosen.entity
    key_column = entity.primary_key
    planned = data.draw(chosen.row_lists(max_size=4), label="creates")
    specs = data.draw(
        wst.filter_specs(entity, samples=planned, columns=chosen.filterable()), label="filters"
    )
    update_rows = chosen.rows(optional=True).map(
        lambda r: {k: v for k, v in r.items() if k != key_column.name}
    )
    later: list[tuple[str, int, dict[str, Any]]] = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("update"), st.integers(0, len(planned) - 1), update_rows),
                st.tuples(st.just("delete"), st.integers(0, len(planned) - 1), st.just({})),
            ),
            max_size=4,
        ),
        label="writes",
    )
    compiled = compile_or_reject(entity, specs)
    fuzzer.describe("subscription filters", [spec_json(s) for s in specs])
    fuzzer.describe("creates", planned)
    fuzzer.describe(
        "then", [[op, f"record #{i}", d] if d else [op, f"record #{i}"] for op, i, d in later]
    )

    sub = fuzzer.sub
    sub.inbox.clear()
    reply = sub.request(
        {
            "type": "subscription",
            "operation": "subscribe",
            **entity_ref(entity),
            "options": {"filters": [spec_json(s) for s in specs]},
        }
    )
    check_envelope(reply)
    if not reply.get("success"):
        raise PropertyFailure(f"a valid subscribe failed with {error_code(reply)!r}")
    subscription_id = (reply.get("data") or {}).get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise PropertyFailure("a subscribe response has no subscription_id")
    feed = "seq" in (reply.get("data") or {})
    expected: list[Expected] = []
    states: list[dict[str, Any] | None] = []
    ours: set[Any] = set()
    try:
        for row in planned:
            stored = fuzzer.create(entity, row)
            states.append(stored)
            ours.add(norm_key(key_column, stored[key_column.name]))
            _expect(expected, compiled, entity, "create", None, stored, feed=feed)
        for operation, index, changes in later:
            current = states[index]
            if current is None:
                continue  # already deleted
            key = current[key_column.name]
            if operation == "delete":
                response = fuzzer.delete(entity, key)
                if not response.get("success"):
                    raise PropertyFailure(
                        f"deleting an own record failed with {error_code(response)!r}"
                    )
                states[index] = None
                _expect(expected, compiled, entity, "delete", current, None, feed=feed)
                continue
            if not changes:
                continue
            response = fuzzer.main.request(
                {
                    "type": "request",
                    "operation": "update",
                    **entity_ref(entity),
                    "record_id": key,
                    "data": changes,
                }
            )
            check_envelope(response)
            if not response.get("success"):
                if error_code(response) == "validation_error":
                    raise Refused("validation_error")
                raise PropertyFailure(f"a valid update failed with {error_code(response)!r}")
            states[index] = response["data"]
            _expect(expected, compiled, entity, "update", current, response["data"], feed=feed)
        if feed:
            sid: str = subscription_id
            sub.wait_until(
                lambda inbox: _count(inbox, sid, entity, ours) >= len(expected),
                FEED_DELIVERY,
            )
        sub.barrier(fuzzer.config.grace)
        received = _notifications(sub, subscription_id, entity, ours)
        _compare_notifications(entity, expected, received)

        # After unsubscribing: nothing more.
        reply = sub.request(
            {
                "type": "subscription",
                "operation": "unsubscribe",
                "subscription_id": subscription_id,
            }
        )
        check_envelope(reply)
        if not reply.get("success"):
            raise PropertyFailure(f"unsubscribing failed with {error_code(reply)!r}")
        subscription_id_after = subscription_id
        subscription_id = ""
        stored = fuzzer.create(entity, planned[0])
        ours.add(norm_key(key_column, stored[key_column.name]))
        fuzzer.delete(entity, stored[key_column.name])
        sub.barrier(fuzzer.config.grace)
        if feed:  # give late notifications the time a feed may take to arrive
            sub.drain(min(FEED_DELIVERY, 0.5))
        late = _notifications(sub, subscription_id_after, entity, ours)
        if late:
            raise PropertyFailure(f"a notification arrived after unsubscribe: {dump(late[0])}")
    finally:
        if subscription_id:
            fuzzer.transcript.note("cleanup")
            try:
                sub.request(
                    {
                        "type": "subscription",
                        "operation": "unsubscribe",
                        "subscription_id": subscription_id,
                    }
                )
            except PropertyFailure:
                fuzzer.reset_connection("sub")
        if fuzzer.is_open("sub"):
            fuzzer.sub.inbox.clear()


def _expect(
    expected: list[Expected],
    compiled: Any,
    entity: Entity,
    operation: str,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    *,
    feed: bool,
) -> None:
    """What a write must notify: without a feed, the record after it (before it, for a
    delete) when that matches; with a feed, its effect on the result set (PROTOCOL.md)."""
    key = entity.primary_key.name
    before = normalise(entity, old) if old is not None else None
    after = normalise(entity, new) if new is not None else None
    was = before is not None and matches(compiled, before)
    now = after is not None and matches(compiled, after)
    if not feed:
        record = after if after is not None else before
        if record is not None and matches(compiled, record):
            expected.append((operation, record[key], record, None))
        return
    if was and now:
        assert after is not None
        expected.append((operation, after[key], after, "modified"))
    elif now:
        assert after is not None
        expected.append((operation, after[key], after, "added"))
    elif was:
        assert before is not None
        expected.append((operation, before[key], before, "removed"))


def _count(
    inbox: list[dict[str, Any]], subscription_id: str, entity: Entity, ours: set[Any]
) -> int:
    key = entity.primary_key
    return sum(
        1
        for m in inbox
        if m.get("type") == "notification"
        and m.get("subscription_id") == subscription_id
        and isinstance(m.get("data"), dict)
        and norm_key(key, m["data"].get(key.name)) in ours
    )


def _notifications(
    conn: Connection, subscription_id: str, entity: Entity, ours: set[Any]
) -> list[dict[str, Any]]:
    key = entity.primary_key
    found = []
    rest = []
    for message in conn.inbox:
        if message.get("type") != "notification":
            rest.append(message)
            continue
        record = message.get("data")
        mine = isinstance(record, dict) and norm_key(key, record.get(key.name)) in ours
        if message.get("subscription_id") == subscription_id and mine:
            found.append(message)
    conn.inbox[:] = rest
    return found


def _compare_notifications(
    entity: Entity,
    expected: list[Expected],
    received: list[dict[str, Any]],
) -> None:
    key = entity.primary_key
    got = [(str(m.get("operation")), norm_key(key, m["data"].get(key.name)), m) for m in received]
    for position in range(max(len(expected), len(got))):
        want = expected[position] if position < len(expected) else None
        have = got[position] if position < len(got) else None
        if want is not None and have is not None and want[:2] == have[:2]:
            compare(entity, want[2], have[2]["data"], f"the record in a {want[0]} notification")
            if want[3] is not None and have[2].get("change") != want[3]:
                raise PropertyFailure(
                    f"the {want[0]} of {key.name}={dump(want[1])} was notified as "
                    f"{dump(have[2].get('change'))}, not {dump(want[3])}"
                )
            for field in ("schema", "entity", "timestamp"):
                if field not in have[2]:
                    raise PropertyFailure(f"a notification has no {field!r}")
            continue
        if have is not None and all(e[:2] != have[:2] for e in expected):
            raise PropertyFailure(
                f"the subscriber was notified of a {have[0]} of {key.name}={dump(have[1])}, "
                "which does not match its filters"
            )
        if want is not None and all(g[:2] != want[:2] for g in got):
            raise PropertyFailure(
                f"the subscriber was not notified of the {want[0]} of "
                f"{key.name}={dump(want[1])}, "
                "which matches its filters"
            )
        raise PropertyFailure(
            "the subscriber's notifications are not in commit order: expected "
            + dump([[e[0], e[1]] for e in expected])
            + ", got "
            + dump([[g[0], g[1]] for g in got])
        )
