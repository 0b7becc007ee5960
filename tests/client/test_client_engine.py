"""Scenario tests of the sans-IO client engine (wsspec_core.client): a script of events,
the actions expected. docs/client.md describes the behaviour checked here."""

from __future__ import annotations

import json

import pytest
from client_driver import EPOCH, ClientDriver

from wsspec_core import client as wc

# --- requests ---------------------------------------------------------------------------


def test_a_request_is_sent_and_its_response_completes_it_by_id() -> None:
    d = ClientDriver()
    d.open()
    first = d.call("read", options={"limit": 2})
    second = d.call("create", data={"name": "Ann"})
    a, b = d.sent()
    assert a == {
        "id": a["id"],
        "type": "request",
        "operation": "read",
        "entity": "users",
        "options": {"limit": 2},
    }
    assert b["data"] == {"name": "Ann"} and a["id"] != b["id"]
    # Answered out of order: correlation is by id, not by position.
    done = d.receive({"id": b["id"], "type": "response", "success": True, "data": {"id": 1}})
    assert done == [wc.CompleteCall(call_id=second, response=done[0].response)]
    assert done[0].response["data"] == {"id": 1}
    failed = d.receive(
        {
            "id": a["id"],
            "type": "response",
            "success": False,
            "error": {"code": "invalid_column", "message": "no", "details": {"column": "x"}},
        }
    )
    (fail,) = failed
    assert isinstance(fail, wc.FailCall) and fail.call_id == first
    assert (fail.failure.code, fail.failure.message, fail.failure.origin) == (
        "invalid_column",
        "no",
        "server",
    )
    assert fail.failure.details == {"column": "x"}
    assert d.engine.pending_calls == 0


def test_wire_ids_are_never_reused_across_connections() -> None:
    d = ClientDriver()
    d.open()
    d.call()
    d.lose()
    d.open()
    d.call()
    first, again, second = (m["id"] for m in d.sent())
    assert first == again  # the read, asked again on the new connection
    assert second != first


def test_requests_wait_for_the_connection_or_fail_at_once_as_asked() -> None:
    d = ClientDriver()
    waiting = d.call()
    failing = d.call(when_disconnected=wc.FAIL)
    (fail,) = d.of(wc.FailCall)
    assert fail.call_id == failing and fail.failure.code == wc.NOT_CONNECTED
    assert d.sent() == []
    opened = d.open()
    assert [m["id"] for m in d.sent(opened)] == [d.engine._calls[waiting].wire_id]


def test_every_request_ends_by_its_deadline_queued_or_sent() -> None:
    d = ClientDriver()
    queued = d.call(timeout=5)
    assert d.engine.next_deadline() == d.now + 5
    expired = d.advance(5)
    assert [(a.call_id, a.failure.code) for a in d.of(wc.FailCall, expired)] == [
        (queued, wc.TIMEOUT)
    ]
    d.open()
    sent = d.call(timeout=1)
    wire_id = d.last_sent()["id"]
    expired = d.advance(1)
    assert [(a.call_id, a.failure.code) for a in d.of(wc.FailCall, expired)] == [(sent, wc.TIMEOUT)]
    # Its late answer is expected and dropped without noise.
    late = d.receive({"id": wire_id, "type": "response", "success": True, "data": None})
    assert late == []


def test_a_lost_connection_fails_sent_writes_and_asks_reads_again() -> None:
    d = ClientDriver()
    d.open()
    read = d.call("read")
    write = d.call("update", record_id=1, data={"name": "x"})
    fail_fast_read = d.call("read", when_disconnected=wc.FAIL)
    read_frame = d.sent()[0]
    lost = d.lose()
    failed = {a.call_id: a.failure.code for a in d.of(wc.FailCall, lost)}
    assert failed == {write: wc.CONNECTION_LOST, fail_fast_read: wc.CONNECTION_LOST}
    reopened = d.open()
    assert d.sent(reopened) == [read_frame]  # the same read, same id
    d.receive({"id": read_frame["id"], "type": "response", "success": True, "data": []})
    assert d.of(wc.CompleteCall)[-1].call_id == read


def test_cancelled_calls_are_forgotten() -> None:
    d = ClientDriver()
    queued = d.call()
    d.feed(wc.CallCancelled(call_id=queued, now=d.now))
    assert d.sent(d.open()) == []
    sent = d.call()
    wire_id = d.last_sent()["id"]
    d.feed(wc.CallCancelled(call_id=sent, now=d.now))
    assert d.receive({"id": wire_id, "type": "response", "success": True, "data": 1}) == []
    assert d.engine.pending_calls == 0 and d.engine.next_deadline() is None


def test_unencodable_data_fails_the_call_not_the_engine() -> None:
    d = ClientDriver()
    d.open()
    call = d.call("create", data={"when": object()})
    (fail,) = d.of(wc.FailCall)
    assert fail.call_id == call and fail.failure.code == wc.INVALID_REQUEST
    assert d.sent() == []


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"type": "response", "id": "nope", "success": true}',
        '{"type": "surprise"}',
        '{"type": "notification", "subscription_id": "sub-9", "seq": 1}',
        '{"type": "pong", "data": {"epoch": 5, "seq": "x"}}',
        '{"type": "response", "id": 7}',
    ],
)
def test_whatever_the_server_sends_never_raises(frame: str) -> None:
    d = ClientDriver()
    d.open()
    d.call()
    actions = d.feed(wc.FrameReceived(connection_id=d.connection, data=frame, now=d.now))
    assert all(isinstance(a, wc.Log) for a in actions)
    assert d.engine.pending_calls == 1


def test_a_response_without_success_fails_the_call_as_an_invalid_reply() -> None:
    d = ClientDriver()
    d.open()
    call = d.call()
    (failed,) = d.receive({"id": d.last_sent()["id"], "type": "response"})
    assert isinstance(failed, wc.FailCall) and failed.call_id == call
    assert failed.failure.code == wc.INVALID_REPLY


# --- connecting -------------------------------------------------------------------------


def test_backoff_is_full_jitter_over_a_doubling_capped_window() -> None:
    config = wc.ClientConfig(reconnect_initial=0.5, reconnect_max=4.0)
    assert [wc.backoff_delay(config, n, 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert wc.backoff_delay(config, 3, 0.25) == 1.0
    assert wc.backoff_delay(config, 10_000, 0.5) == 2.0  # no overflow after a long outage
    assert wc.backoff_delay(config, 0, 0.0) == 0.0


def test_reconnects_back_off_and_a_frame_resets_the_backoff() -> None:
    d = ClientDriver(reconnect_initial=1.0, reconnect_max=8.0)
    d.jitter = 1.0
    d.open()
    d.lose()
    assert d.engine.phase is wc.Phase.WAITING
    waits = []
    for _ in range(5):
        start = d.now
        d.run_until_idle_deadline()  # -> CONNECTING
        waits.append(d.now - start)
        (opening,) = d.of(wc.OpenConnection)[-1:]
        d.feed(
            wc.ConnectFailed(
                connection_id=opening.connection_id, now=d.now, jitter=1.0, reason="refused"
            )
        )
    start = d.now
    d.run_until_idle_deadline()
    waits.append(d.now - start)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    d.connection = d.of(wc.OpenConnection)[-1].connection_id
    d.feed(wc.ConnectionOpened(connection_id=d.connection, now=d.now))
    d.receive({"type": "pong", "timestamp": "t"})  # the server is up
    d.lose()
    start = d.now
    d.run_until_idle_deadline()
    assert d.now - start == 1.0


def test_the_first_connection_failing_stops_the_engine_unless_retrying_is_asked() -> None:
    d = ClientDriver()
    d.call()
    d.feed(wc.ConnectRequested(now=d.now))
    actions = d.feed(wc.ConnectFailed(connection_id=1, now=d.now, jitter=0.5, reason="refused"))
    assert isinstance(actions[-1], wc.Stop) and actions[-1].failure.code == wc.CONNECT_FAILED
    assert d.of(wc.FailCall)[0].failure.code == wc.CONNECT_FAILED
    # After a stop nothing is attempted again, and new work fails at once.
    assert d.engine.next_deadline() is None
    d.call()
    assert d.of(wc.FailCall)[-1].failure.code == wc.CONNECT_FAILED

    retrying = ClientDriver(retry_first_connect=True)
    retrying.feed(wc.ConnectRequested(now=retrying.now))
    retrying.feed(wc.ConnectFailed(connection_id=1, now=retrying.now, jitter=0.5, reason="x"))
    assert retrying.engine.phase is wc.Phase.WAITING


@pytest.mark.parametrize("status", [401, 403])
def test_an_auth_refusal_is_final_even_after_connecting(status: int) -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1")
    d.lose()
    d.run_until_idle_deadline()
    retry = d.of(wc.OpenConnection)[-1].connection_id
    actions = d.feed(
        wc.ConnectFailed(
            connection_id=retry, now=d.now, jitter=0.5, reason="forbidden", status=status
        )
    )
    assert isinstance(actions[-1], wc.Stop)
    assert actions[-1].failure.code == wc.HANDSHAKE_REJECTED
    assert actions[-1].failure.status == status
    (ended,) = d.of(wc.EndSubscription, actions)
    assert ended.failure.status == status
    assert d.engine.phase is wc.Phase.STOPPED and d.engine.next_deadline() is None


def test_another_refusal_is_retried() -> None:
    d = ClientDriver()
    d.open()
    d.lose()
    d.run_until_idle_deadline()
    retry = d.of(wc.OpenConnection)[-1].connection_id
    d.feed(wc.ConnectFailed(connection_id=retry, now=d.now, jitter=0.5, reason="busy", status=503))
    assert d.engine.phase is wc.Phase.WAITING


def test_a_connection_attempt_that_hangs_is_abandoned_and_stale_events_ignored() -> None:
    d = ClientDriver(connect_timeout=3.0, retry_first_connect=True)
    d.call()
    d.feed(wc.ConnectRequested(now=d.now))
    actions = d.advance(3.0)
    assert wc.CloseConnection(connection_id=1, reason="no connection within 3 s") in actions
    assert d.engine.phase is wc.Phase.WAITING
    # The abandoned attempt connects after all: not used.
    assert d.feed(wc.ConnectionOpened(connection_id=1, now=d.now)) == []
    assert d.feed(wc.FrameReceived(connection_id=1, data="{}", now=d.now)) == []
    assert d.engine.phase is wc.Phase.WAITING
    d.open()
    assert d.connection == 2 and len(d.sent()) == 1


def test_pings_carry_keepalive_and_a_silent_server_is_dropped() -> None:
    d = ClientDriver(ping_interval=10.0, pong_timeout=5.0)
    d.open()
    assert d.engine.next_deadline() == d.now + 10
    pinged = d.advance(10)
    (ping,) = d.sent(pinged)
    assert ping == {"type": "ping", "id": ping["id"]}
    d.advance(3)
    d.receive({"type": "response", "id": "unrelated"})  # anything proves it alive
    assert d.engine.next_deadline() == d.now + 5
    d.advance(4.9)
    d.receive({"type": "pong", "id": ping["id"], "timestamp": "t"})
    assert d.engine.next_deadline() == d.now - 7.9 + 10  # the next ping, on schedule
    pinged = d.run_until_idle_deadline()
    assert d.sent(pinged)[0]["type"] == "ping"
    dropped = d.advance(5)
    assert wc.CloseConnection(connection_id=d.connection, reason="no pong within 5 s") in (dropped)
    assert d.engine.phase is wc.Phase.WAITING


def test_close_fails_everything_and_closes_the_connection() -> None:
    d = ClientDriver()
    d.open()
    call = d.call()
    d.subscribe()
    actions = d.feed(wc.CloseRequested(now=d.now))
    assert actions[0] == wc.CloseConnection(
        connection_id=d.connection, reason="the client was closed"
    )
    assert d.of(wc.FailCall, actions)[0].call_id == call
    assert d.of(wc.EndSubscription, actions)[0].failure.code == wc.CLOSED
    assert isinstance(actions[-1], wc.Stop)
    assert d.feed(wc.CloseRequested(now=d.now)) == []


# --- subscriptions ----------------------------------------------------------------------


def test_subscribe_confirms_with_rows_and_position() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe(options={"filters": [{"column": "a", "operator": "eq", "value": 1}]}, snapshot=True)
    sent = d.last_sent()
    assert sent == {
        "id": sent["id"],
        "type": "subscription",
        "operation": "subscribe",
        "entity": "users",
        "options": {"filters": [{"column": "a", "operator": "eq", "value": 1}]},
        "snapshot": True,
    }
    (confirmed,) = d.reply_subscribe(sent, "sub-1", seq=7, rows=[{"id": 1}])
    assert (confirmed.rows, confirmed.epoch, confirmed.seq) == ([{"id": 1}], EPOCH, 7)
    assert d.engine.next_deadline() is None  # a confirmed subscription has no deadline


def test_a_refused_subscribe_ends_it_with_the_servers_error() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    (ended,) = d.receive(
        {
            "id": d.last_sent()["id"],
            "type": "response",
            "success": False,
            "error": {"code": "model_not_found", "message": "Model not found: users"},
        }
    )
    assert isinstance(ended, wc.EndSubscription)
    assert (ended.failure.code, ended.failure.origin) == ("model_not_found", "server")


def test_notifications_are_delivered_once_in_seq_order() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=3)
    for seq in (3, 4, 4, 2, 6, 5, 7):
        d.notify("sub-1", seq)
    assert d.delivered() == [4, 6, 7]
    (first,) = d.of(wc.DeliverChange)[:1]
    assert (first.change.change, first.change.operation, first.change.data) == (
        "added",
        "create",
        {"id": 1},
    )
    assert first.change.message["subscription_id"] == "sub-1"


def test_without_seq_every_notification_is_delivered() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=None)
    d.notify("sub-1", None)
    d.notify("sub-1", None)
    assert d.delivered() == [None, None]


def test_after_a_reconnect_the_subscription_resumes_from_its_position() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe(options={"limit": 5})
    d.reply_subscribe(d.last_sent(), "sub-1", seq=10)
    d.notify("sub-1", 11)
    d.lose()
    d.notify("sub-1", 12)  # on a dead connection: ignored
    reopened = d.open()
    (resubscribe,) = d.sent(reopened)
    assert resubscribe["resume"] == {"epoch": EPOCH, "seq": 11}
    assert resubscribe["snapshot"] is True and resubscribe["options"] == {"limit": 5}
    d.notify("sub-1", 12)  # the old id means nothing on the new connection
    assert d.reply_subscribe(resubscribe, "sub-9", seq=11, recovered=True) == []
    for seq in (12, 13):
        d.notify("sub-9", seq)
    assert d.delivered() == [11, 12, 13]
    assert d.of(wc.DeliverResync) == []


def test_recovered_false_yields_a_resync_with_the_fresh_rows() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=10)
    d.lose()
    (resubscribe,) = d.sent(d.open())
    (resync,) = d.reply_subscribe(
        resubscribe, "sub-2", seq=50, epoch="E2", recovered=False, rows=[{"id": 3}]
    )
    assert isinstance(resync, wc.DeliverResync)
    assert (resync.resync.rows, resync.resync.epoch, resync.resync.seq) == ([{"id": 3}], "E2", 50)
    assert resync.resync.reason == wc.NOT_RECOVERED
    d.notify("sub-2", 50)
    d.notify("sub-2", 51)
    assert d.delivered() == [51]
    assert d.engine.position("sub") == ("E2", 51)


def test_a_server_that_ignores_resume_gets_a_resync_too() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=10)
    d.lose()
    (resubscribe,) = d.sent(d.open())
    (resync,) = d.reply_subscribe(resubscribe, "sub-2", seq=20)  # no "recovered"
    assert resync.resync.reason == wc.RESUME_UNSUPPORTED and resync.resync.rows is None


def test_without_a_position_a_subscription_is_resubscribed_plainly_with_a_resync() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=None)
    d.lose()
    (resubscribe,) = d.sent(d.open())
    assert "resume" not in resubscribe and "snapshot" not in resubscribe
    (resync,) = d.reply_subscribe(resubscribe, "sub-2", seq=None)
    assert resync.resync.reason == wc.NO_POSITION


def test_an_unconfirmed_subscribe_is_sent_again_as_asked_and_confirmed_once() -> None:
    d = ClientDriver()
    d.subscribe(snapshot=True)
    (first,) = d.sent(d.open())
    d.lose()
    (again,) = d.sent(d.open())
    assert "resume" not in again and again["snapshot"] is True
    d.reply_subscribe(first, "sub-0")  # a stray answer to the first one: unknown now
    confirmed = d.reply_subscribe(again, "sub-1", rows=[])
    assert d.of(wc.ConfirmSubscription) == confirmed


def test_an_unconfirmed_subscribe_ends_at_its_deadline_and_is_taken_down_if_it_comes() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe(timeout=2)
    sent = d.last_sent()
    (ended,) = d.advance(2)
    assert isinstance(ended, wc.EndSubscription) and ended.failure.code == wc.TIMEOUT
    (unsubscribe,) = d.sent(d.reply_subscribe(sent, "sub-1"))
    assert unsubscribe["operation"] == "unsubscribe"
    assert unsubscribe["subscription_id"] == "sub-1"


def test_unsubscribe_stops_delivery_at_once() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1")
    d.notify("sub-1", 1)
    (unsubscribe,) = d.sent(d.feed(wc.UnsubscribeRequested(key="sub", now=d.now)))
    assert unsubscribe["subscription_id"] == "sub-1"
    d.notify("sub-1", 2)
    assert d.delivered() == [1]
    assert d.sent(d.lose() + d.open()) == []  # not resubscribed


def test_pongs_advance_live_subscriptions_only() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe("a")
    d.reply_subscribe(d.last_sent(), "sub-1", seq=5)
    d.subscribe("b")  # sent, not answered yet
    pending = d.last_sent()
    d.receive({"type": "pong", "timestamp": "t", "data": {"epoch": EPOCH, "seq": 40}})
    assert d.engine.position("a") == (EPOCH, 40)
    assert d.engine.position("b") == (None, None)
    d.reply_subscribe(pending, "sub-2", seq=38)
    d.notify("sub-2", 39)  # b's own change, not covered by a pong it was not live for
    assert d.delivered("b") == [39]
    d.notify("sub-1", 39)  # covered by the pong: a duplicate
    assert d.delivered("a") == []
    d.lose()
    (resume_a, _) = d.sent(d.open())
    assert resume_a["resume"] == {"epoch": EPOCH, "seq": 40}


def test_a_pong_of_another_epoch_resubscribes_to_resync() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=5)
    actions = d.receive({"type": "pong", "timestamp": "t", "data": {"epoch": "E2", "seq": 2}})
    unsubscribe, resubscribe = d.sent(actions)
    assert unsubscribe["subscription_id"] == "sub-1"
    assert resubscribe["resume"] == {"epoch": EPOCH, "seq": 5}
    d.notify("sub-1", 6)  # the old subscription: dropped, the resume covers it
    (resync,) = d.reply_subscribe(resubscribe, "sub-2", seq=2, epoch="E2", recovered=False)
    assert resync.resync.epoch == "E2"
    assert d.delivered() == []


def test_lagged_resubscribes_from_the_position_given() -> None:
    d = ClientDriver()
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=0)
    for seq in (1, 2, 3):
        d.notify("sub-1", seq)
    actions = d.feed(wc.SubscriptionLagged(key="sub", epoch=EPOCH, seq=1, now=d.now))
    unsubscribe, resubscribe = d.sent(actions)
    assert unsubscribe["operation"] == "unsubscribe"
    assert resubscribe["resume"] == {"epoch": EPOCH, "seq": 1}
    d.reply_subscribe(resubscribe, "sub-2", seq=1, recovered=True)
    for seq in (2, 3, 4):
        d.notify("sub-2", seq)
    assert d.delivered() == [1, 2, 3, 2, 3, 4]


def test_events_hold_their_invariants() -> None:
    with pytest.raises(ValueError):
        wc.TimePassed(now=1.0, jitter=1.5)
    with pytest.raises(ValueError):
        wc.CallRequested(call_id=1, operation="read", deadline=float("inf"), now=0.0)
    with pytest.raises(ValueError):
        wc.CallRequested(call_id=1, operation="read", deadline=1, now=0, when_disconnected="x")
    with pytest.raises(ValueError):
        wc.ClientConfig(reconnect_initial=0)
    with pytest.raises(ValueError):
        wc.ClientConfig(reconnect_initial=5, reconnect_max=1)
    d = ClientDriver()
    d.call(record_id=1)
    with pytest.raises(ValueError):
        d.feed(wc.CallRequested(call_id="call-1", operation="read", deadline=1e9, now=d.now))
    assert json.loads(d.engine._calls["call-1"].frame)["record_id"] == 1


def test_a_pong_answered_before_a_resume_does_not_skip_its_replay() -> None:
    """A ping sent before a resubscribe is answered before the resubscribe's reply: its
    position must not count for the resumed subscription, whose replay follows."""
    d = ClientDriver(ping_interval=5.0)
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=0)
    d.notify("sub-1", 1)
    d.notify("sub-1", 2)
    d.advance(5)  # the ping goes out
    lagged = d.feed(wc.SubscriptionLagged(key="sub", epoch=EPOCH, seq=0, now=d.now))
    resubscribe = d.sent(lagged)[-1]
    d.receive({"type": "pong", "id": d.sent()[-3]["id"], "data": {"epoch": EPOCH, "seq": 2}})
    assert d.engine.position("sub") == (EPOCH, 0)
    d.reply_subscribe(resubscribe, "sub-2", seq=0, recovered=True)
    d.notify("sub-2", 1)
    d.notify("sub-2", 2)
    assert d.delivered() == [1, 2, 1, 2]


def test_a_transient_subscribe_error_is_retried_with_backoff_from_the_same_position() -> None:
    d = ClientDriver(reconnect_initial=1.0)
    d.open()
    d.subscribe()
    d.reply_subscribe(d.last_sent(), "sub-1", seq=4)
    d.lose()
    (resubscribe,) = d.sent(d.open())
    error = {"code": "subscribe_error", "message": "the log was reset while it started"}
    refused = d.receive(
        {"id": resubscribe["id"], "type": "response", "success": False, "error": error}
    )
    assert d.of(wc.EndSubscription, refused) == [] and d.sent(refused) == []
    assert d.engine.next_deadline() == d.now + 1.0
    (again,) = d.sent(d.advance(1.0))
    assert again["resume"] == {"epoch": EPOCH, "seq": 4}
    d.receive({"id": again["id"], "type": "response", "success": False, "error": error})
    assert d.engine.next_deadline() == d.now + 2.0  # backing off
    (third,) = d.sent(d.advance(2.0))
    assert d.reply_subscribe(third, "sub-2", seq=4, recovered=True) == []
    d.notify("sub-2", 5)
    assert d.delivered() == [5]
    # Other refusals end it.
    d.lose()
    (last,) = d.sent(d.open())
    error = {"code": "unauthorized", "message": "no longer"}
    (ended,) = d.receive({"id": last["id"], "type": "response", "success": False, "error": error})
    assert isinstance(ended, wc.EndSubscription) and ended.failure.code == "unauthorized"
