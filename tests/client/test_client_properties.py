"""Hypothesis: the client engine against a model server, under any interleaving of frames,
lost connections, refused and hanging attempts, time, log resets and retention trims.

The model server (``ModelServer``) is a faithful, tiny change-feed server: a table of rows
``{id, v}``, a log with ``seq`` and ``epoch``, subscriptions filtered on ``v`` (``all``
or ``even``) with ``added``/``modified``/``removed``, ``snapshot`` and ``resume``
(PROTOCOL.md "Change feed"), and pongs with positions. It may also repeat a notification
it already sent (as a broken proxy might). Frames travel through two queues that the
test empties in any order and amount; a lost connection loses what is in them.

Checked after every step:
* each subscription's changes arrive with strictly increasing ``seq``, each beyond the
  position of the last confirmation or resync (at most once, in order);
* nothing is delivered to an ended subscription; each call is answered exactly once;
* no call outlives its deadline, and ``next_deadline()`` never lets one pass unseen.
At the end, after the network settles: every call has been answered, and each live
subscription's state, rebuilt from what the application received (snapshot or baseline,
then changes, resyncs replacing everything), equals the server's matching rows: no change
was lost.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wsspec_core import client as wc

FILTERS = {"all": lambda row: True, "even": lambda row: row["v"] % 2 == 0}


class ModelServer:
    def __init__(self) -> None:
        self.epochs = 1
        self.epoch = "E1"
        self.rows: dict[int, dict[str, int]] = {}
        self.next_row = 1
        self.log: list[int] = []  # the seqs of the current epoch: 1..len
        self.trimmed_through = 0
        self.connection: int | None = None
        self.to_client: deque[str] = deque()
        self.to_server: deque[str] = deque()
        self.subscriptions: dict[str, str] = {}  # server id -> filter name
        self.next_sid = 0
        self.changes: list[tuple[int, dict[str, int] | None, dict[str, int] | None]] = []
        #: The notifications sent on the current connection (to repeat one).
        self.sent_notifications: list[str] = []
        self.notifications = 0
        #: Answer the next subscribe with ``subscribe_error`` (a transient refusal).
        self.refuse_next_subscribe = False

    @property
    def last(self) -> int:
        return len(self.log)

    def matching(self, kind: str) -> dict[int, dict[str, int]]:
        return {k: dict(r) for k, r in self.rows.items() if FILTERS[kind](r)}

    def open(self, connection_id: int) -> None:
        self.connection = connection_id
        self.sent_notifications = []
        self.to_client.clear()
        self.to_server.clear()
        self.subscriptions.clear()

    def drop(self) -> None:
        self.connection = None
        self.sent_notifications = []
        self.to_client.clear()
        self.to_server.clear()
        self.subscriptions.clear()

    def send(self, message: dict[str, Any]) -> None:
        frame = json.dumps(message)
        if message["type"] == "notification":
            self.sent_notifications.append(frame)
            self.notifications += 1
        self.to_client.append(frame)

    # --- the database ---------------------------------------------------------------------

    def commit(self, old: dict[str, int] | None, new: dict[str, int] | None) -> None:
        self.log.append(len(self.log) + 1)
        seq = self.last
        self.changes.append((seq, old, new))
        for sid, kind in self.subscriptions.items():
            self.notify(sid, kind, seq, old, new)

    def notify(
        self,
        sid: str,
        kind: str,
        seq: int,
        old: dict[str, int] | None,
        new: dict[str, int] | None,
    ) -> None:
        was = old is not None and FILTERS[kind](old)
        now = new is not None and FILTERS[kind](new)
        if not (was or now):
            return
        change = "modified" if was and now else "added" if now else "removed"
        data = new if now else old
        operation = "create" if old is None else "delete" if new is None else "update"
        self.send(
            {
                "type": "notification",
                "operation": operation,
                "change": change,
                "seq": seq,
                "subscription_id": sid,
                "schema": "public",
                "entity": "t",
                "data": data,
                "timestamp": "t",
            }
        )

    # --- client frames --------------------------------------------------------------------

    def receive(self, frame: str) -> None:
        message = json.loads(frame)
        if message["type"] == "ping":
            self.send(
                {
                    "type": "pong",
                    "id": message.get("id"),
                    "timestamp": "t",
                    "data": {"epoch": self.epoch, "seq": self.last},
                }
            )
        elif message["type"] == "request":
            data: Any = []
            if message["operation"] == "create":
                data = {"id": self.next_row, "v": 0}
            self.send({"id": message["id"], "type": "response", "success": True, "data": data})
            if message["operation"] == "create":
                self.rows[self.next_row] = {"id": self.next_row, "v": 0}
                self.next_row += 1
                self.commit(None, dict(data))
        elif message["operation"] == "unsubscribe":
            self.subscriptions.pop(message["subscription_id"], None)
            self.send({"id": message["id"], "type": "response", "success": True, "data": {}})
        else:
            self.subscribe(message)

    def subscribe(self, message: dict[str, Any]) -> None:
        if self.refuse_next_subscribe:
            self.refuse_next_subscribe = False
            error = {"code": "subscribe_error", "message": "the log was reset meanwhile"}
            self.send({"id": message["id"], "type": "response", "success": False, "error": error})
            return
        kind = message["options"]["kind"]
        self.next_sid += 1
        sid = f"sub-{self.next_sid}"
        data: dict[str, Any] = {"subscription_id": sid, "schema": "public", "entity": "t"}
        data["epoch"] = self.epoch
        resume = message.get("resume")
        replay = []
        if resume is not None:
            start = resume["seq"]
            recovered = resume["epoch"] == self.epoch and self.trimmed_through <= start <= self.last
            data["recovered"] = recovered
            if recovered:
                data["seq"] = start
                replay = [c for c in self.changes if c[0] > start]
        if "seq" not in data:
            data["seq"] = self.last
            if message.get("snapshot"):
                data["rows"] = list(self.matching(kind).values())
        # Not protocol: what a subscriber without a snapshot starts from, for the check.
        data["test_baseline"] = list(self.matching(kind).values())
        self.send({"id": message["id"], "type": "response", "success": True, "data": data})
        for seq, old, new in replay:
            self.notify(sid, kind, seq, old, new)
        self.subscriptions[sid] = kind


class AppSubscription:
    """What the application holds for one subscription."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows: dict[int, dict[str, int]] | None = None
        self.epoch: str | None = None
        self.seq: int | None = None  # the last seq received, or the resync/confirm seq
        self.floor: int | None = None  # changes since the last (re)start must exceed it
        #: The seqs received since the last (re)start.
        self.received: list[int] = []
        #: After each item: (epoch, seq, rows, len(received)), to go back to.
        self.history: list[tuple[str | None, int | None, dict[int, dict[str, int]], int]] = []
        self.ended = False

    def restart(self, rows: list[dict[str, int]], epoch: str | None, seq: int | None) -> None:
        self.rows = {r["id"]: dict(r) for r in rows}
        self.epoch, self.seq, self.floor = epoch, seq, seq
        self.received = []
        self.remember()

    def remember(self) -> None:
        assert self.rows is not None
        rows = {k: dict(v) for k, v in self.rows.items()}
        self.history.append((self.epoch, self.seq, rows, len(self.received)))


class ClientAgainstModelServer(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = wc.ClientEngine(
            wc.ClientConfig(
                reconnect_initial=0.5,
                reconnect_max=4.0,
                connect_timeout=3.0,
                ping_interval=5.0,
                pong_timeout=5.0,
                retry_first_connect=True,
            )
        )
        self.server = ModelServer()
        self.now = 0.0
        self.attempt: int | None = None
        self.calls: dict[int, float] = {}  # unanswered call -> deadline
        self.answered: set[int] = set()
        self.next_call = 0
        self.subs: dict[int, AppSubscription] = {}
        self.next_sub = 0
        self.pings = 0

    # --- plumbing -----------------------------------------------------------------------

    def feed(self, event: wc.Event) -> None:
        for action in self.engine.handle(event):
            self.carry_out(action)

    def carry_out(self, action: wc.Action) -> None:
        server = self.server
        if isinstance(action, wc.OpenConnection):
            self.attempt = action.connection_id
        elif isinstance(action, wc.SendFrame):
            if '"type":"ping"' in action.frame:
                self.pings += 1
            if action.connection_id == server.connection:
                server.to_server.append(action.frame)
        elif isinstance(action, wc.CloseConnection):
            if action.connection_id == server.connection:
                server.drop()
            if action.connection_id == self.attempt:
                self.attempt = None
        elif isinstance(action, wc.CompleteCall | wc.FailCall):
            call_id = action.call_id
            assert isinstance(call_id, int)
            assert call_id not in self.answered, "a call answered twice"
            self.answered.add(call_id)
            del self.calls[call_id]
        elif isinstance(action, wc.ConfirmSubscription):
            sub = self.subs[action.key]  # type: ignore[index]
            assert sub.rows is None, "confirmed twice"
            rows = action.rows if action.rows is not None else action.reply["data"]["test_baseline"]
            sub.restart(rows, action.epoch, action.seq)
        elif isinstance(action, wc.DeliverResync):
            sub = self.subs[action.key]  # type: ignore[index]
            assert not sub.ended and sub.rows is not None
            assert action.resync.rows is not None  # this server always sends rows
            sub.restart(action.resync.rows, action.resync.epoch, action.resync.seq)
        elif isinstance(action, wc.DeliverChange):
            sub = self.subs[action.key]  # type: ignore[index]
            assert not sub.ended, "a change for an ended subscription"
            assert sub.rows is not None, "a change before the confirmation"
            seq = action.change.seq
            assert seq is not None
            # At most once, in order: beyond everything delivered since the (re)start.
            assert sub.seq is None or seq > sub.seq, (seq, sub.seq)
            assert sub.floor is None or seq > sub.floor
            sub.seq = seq
            sub.received.append(seq)
            row = action.change.data
            if action.change.change == "removed":
                sub.rows.pop(row["id"], None)
            else:
                sub.rows[row["id"]] = dict(row)
            sub.remember()
        elif isinstance(action, wc.EndSubscription):
            sub = self.subs[action.key]  # type: ignore[index]
            assert not sub.ended
            sub.ended = True
        elif isinstance(action, wc.Stop):
            raise AssertionError(f"stopped: {action.failure}")

    def tick(self, seconds: float, jitter: float) -> None:
        self.now += seconds
        self.feed(wc.TimePassed(now=self.now, jitter=jitter))

    # --- rules ----------------------------------------------------------------------------

    @initialize(snapshot=st.booleans())
    def start(self, snapshot: bool) -> None:
        """Two subscriptions from the start, so that every run is about changes."""
        for kind in sorted(FILTERS):
            self.application_subscribes(kind, snapshot)
        self.feed(wc.ConnectRequested(now=self.now))

    @precondition(lambda self: self.attempt is not None)
    @rule(
        outcome=st.sampled_from(["open", "open", "open", "refused", "503"]), jitter=st.floats(0, 1)
    )
    def answer_attempt(self, outcome: str, jitter: float) -> None:
        attempt, self.attempt = self.attempt, None
        assert attempt is not None
        if outcome == "open":
            self.server.open(attempt)
            self.feed(wc.ConnectionOpened(connection_id=attempt, now=self.now))
        else:
            status = 503 if outcome == "503" else None
            self.feed(
                wc.ConnectFailed(
                    connection_id=attempt, now=self.now, jitter=jitter, reason="no", status=status
                )
            )

    @precondition(lambda self: self.server.to_client)
    @rule(count=st.integers(1, 6))
    def frames_reach_client(self, count: int) -> None:
        server = self.server
        for _ in range(count):
            if not server.to_client or server.connection is None:
                return
            frame = server.to_client.popleft()
            self.feed(wc.FrameReceived(connection_id=server.connection, data=frame, now=self.now))

    @precondition(lambda self: self.server.to_server)
    @rule(count=st.integers(1, 6))
    def frames_reach_server(self, count: int) -> None:
        for _ in range(count):
            if not self.server.to_server:
                return
            self.server.receive(self.server.to_server.popleft())

    @precondition(lambda self: self.server.connection is not None)
    @rule(jitter=st.floats(0, 1))
    def connection_breaks(self, jitter: float) -> None:
        connection = self.server.connection
        assert connection is not None
        self.server.drop()
        self.feed(
            wc.ConnectionLost(connection_id=connection, now=self.now, jitter=jitter, reason="x")
        )

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0, 6.0]), jitter=st.floats(0, 1))
    def time_passes(self, seconds: float, jitter: float) -> None:
        self.tick(seconds, jitter)

    @rule(
        changes=st.lists(
            st.tuples(st.sampled_from(["create", "update", "delete"]), st.integers(0, 5)),
            min_size=1,
            max_size=4,
        )
    )
    def database_changes(self, changes: list[tuple[str, int]]) -> None:
        for what, v in changes:
            self.database_change(what, v)

    def database_change(self, what: str, v: int) -> None:
        server = self.server
        if what == "create" or not server.rows:
            row = {"id": server.next_row, "v": v}
            server.next_row += 1
            server.rows[row["id"]] = row
            server.commit(None, dict(row))
            return
        key = sorted(server.rows)[v % len(server.rows)]
        old = dict(server.rows[key])
        if what == "update":
            server.rows[key]["v"] = v
            server.commit(old, dict(server.rows[key]))
        else:
            del server.rows[key]
            server.commit(old, None)

    @precondition(lambda self: self.server.sent_notifications)
    @rule(back=st.integers(1, 4))
    def server_repeats_a_notification(self, back: int) -> None:
        """One of the last notifications sent on this connection comes again."""
        sent = self.server.sent_notifications
        self.server.to_client.append(sent[-min(back, len(sent))])

    @rule(incident=st.sampled_from(["log reset", "log trimmed", "subscribe refused"]))
    def server_incident(self, incident: str) -> None:
        """The log is reset (a new epoch, seq from 1), trimmed to its end (retention), or
        the next subscribe is refused with ``subscribe_error`` (a transient failure)."""
        server = self.server
        if incident == "log reset":
            server.epochs += 1
            server.epoch = f"E{server.epochs}"
            server.log = []
            server.changes = []
            server.trimmed_through = 0
        elif incident == "log trimmed":
            server.trimmed_through = server.last
        else:
            server.refuse_next_subscribe = True

    @precondition(lambda self: len(self.calls) < 3)
    @rule(
        operation=st.sampled_from(["read", "create"]),
        timeout=st.sampled_from([0.5, 3.0, 20.0]),
        when=st.sampled_from([wc.WAIT, wc.FAIL]),
    )
    def application_calls(self, operation: str, timeout: float, when: str) -> None:
        self.next_call += 1
        self.calls[self.next_call] = self.now + timeout
        self.feed(
            wc.CallRequested(
                call_id=self.next_call,
                operation=operation,
                entity="t",
                deadline=self.now + timeout,
                when_disconnected=when,
                now=self.now,
            )
        )

    @precondition(lambda self: len(self.subs) < 4)
    @rule(kind=st.sampled_from(sorted(FILTERS)), snapshot=st.booleans())
    def application_subscribes(self, kind: str, snapshot: bool) -> None:
        self.next_sub += 1
        self.subs[self.next_sub] = AppSubscription(kind)
        self.feed(
            wc.SubscribeRequested(
                key=self.next_sub,
                entity="t",
                options={"kind": kind},
                snapshot=snapshot,
                deadline=self.now + 300,
                now=self.now,
            )
        )

    @precondition(lambda self: any(not s.ended for s in self.subs.values()))
    @rule(index=st.integers(0, 100))
    def application_unsubscribes(self, index: int) -> None:
        live = [k for k, s in self.subs.items() if not s.ended]
        key = live[index % len(live)]
        self.subs[key].ended = True
        self.feed(wc.UnsubscribeRequested(key=key, now=self.now))

    @precondition(lambda self: any(s.history and not s.ended for s in self.subs.values()))
    @rule(index=st.integers(0, 100), back=st.integers(0, 100))
    def application_falls_behind(self, index: int, back: int) -> None:
        """The adapter's buffer overflowed: the application's state goes back to an earlier
        item, and the engine is told to resume from there."""
        live = [k for k, s in self.subs.items() if s.history and not s.ended]
        key = live[index % len(live)]
        sub = self.subs[key]
        keep = len(sub.history) - 1 - back % len(sub.history)
        epoch, seq, rows, received = sub.history[keep]
        del sub.history[keep + 1 :]
        del sub.received[received:]
        sub.rows = {k: dict(v) for k, v in rows.items()}
        sub.epoch, sub.seq = epoch, seq
        self.feed(wc.SubscriptionLagged(key=key, epoch=epoch, seq=seq, now=self.now))

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def no_call_outlives_its_deadline(self) -> None:
        for deadline in self.calls.values():
            assert deadline > self.now
        deadline = self.engine.next_deadline()
        if self.calls:
            assert deadline is not None and deadline <= min(self.calls.values())

    # --- the end --------------------------------------------------------------------------

    def settle(self) -> None:
        """Let the network work without faults until nothing moves."""
        for _ in range(200):
            if self.attempt is not None:
                self.answer_attempt("open", 0.5)
            elif self.engine.phase is wc.Phase.WAITING:
                deadline = self.engine.next_deadline()
                assert deadline is not None
                self.tick(max(0.0, deadline - self.now), 0.5)
            elif self.server.to_server or self.server.to_client:
                while self.server.to_server or self.server.to_client:
                    self.frames_reach_server(100)
                    self.frames_reach_client(100)
            else:
                return
        raise AssertionError("the network did not settle")

    def ping_round(self) -> None:
        """Move the clock from deadline to deadline until the client pings, and settle
        (the pong also reveals a reset log)."""
        pings = self.pings
        for _ in range(50):
            self.settle()
            if self.pings > pings:
                return
            deadline = self.engine.next_deadline()
            assert deadline is not None
            self.tick(max(0.0, deadline - self.now), 0.5)
        raise AssertionError("no ping")

    def teardown(self) -> None:
        # Until a whole ping round moves nothing but the ping itself (no resubscribe, no
        # notification): what each subscription holds is then final.
        for _ in range(5):
            before = self.server.notifications, self.engine._next_wire_id
            self.ping_round()
            after = self.server.notifications, self.engine._next_wire_id
            if after == (before[0], before[1] + 1):
                break
        else:
            raise AssertionError("still moving after five ping rounds")
        # Every call was answered (the network settled: none waits for anything).
        assert self.calls == {}, self.calls
        server = self.server
        for key, sub in self.subs.items():
            if sub.ended or sub.rows is None:
                continue
            # The stream since the last (re)start is exactly the log's matching changes
            # after it (the log of the server's current epoch: a reset must have been
            # noticed by now), and the state rebuilt from it is the server's.
            assert sub.epoch == server.epoch, (key, sub.epoch, server.epoch)
            match = FILTERS[sub.kind]
            expected = [
                seq
                for seq, old, new in server.changes
                if (sub.floor is None or seq > sub.floor)
                and ((old is not None and match(old)) or (new is not None and match(new)))
            ]
            assert sub.received == expected, (key, sub.received, expected)
            assert sub.rows == server.matching(sub.kind), (key, sub.kind)


#: 200 examples take about 5 s; WSSPEC_CLIENT_EXAMPLES=3000 for a deeper local search.
EXAMPLES = int(os.environ.get("WSSPEC_CLIENT_EXAMPLES", "200"))

ClientAgainstModelServer.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClientAgainstModelServer = ClientAgainstModelServer.TestCase
