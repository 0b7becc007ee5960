"""Snapshot and resume on subscribe, in the core (issue 9 item 6; PROTOCOL.md "Change
feed"): the engine with ``MemoryStorage``'s change log as the database, a tailer the test
drives by hand (so it can lag), and storage reads completed when the test says."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from engine_driver import Driver
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_change_feed import REGISTRY, USERS, eq

import wsspec_core as ws

EPOCH = "E1"
ACTIVE = [eq("status", "active")]


class Feed:
    """One engine, one in-memory database with a change log, a hand-driven tailer."""

    def __init__(
        self,
        *,
        max_replay: int = 100,
        hooks: ws.HookRegistry | None = None,
        storage: ws.MemoryStorage | None = None,
    ) -> None:
        self.storage = (
            storage if storage is not None else ws.MemoryStorage(REGISTRY, change_log_epoch=EPOCH)
        )
        engine = ws.Engine(
            REGISTRY,
            hooks=hooks,
            limits=ws.Limits(keepalive_interval=None, max_replay=max_replay),
            change_feed=True,
        )
        self.d = Driver(engine, self.storage, auto=False)
        self.d.feed(ws.ChangesLogged(epoch=EPOCH, entries=(), through=0, now=self.d.now))
        self.d.connect("c")

    # --- the database, written by "another program" ---------------------------------------

    def create(self, key: int, status: str = "active", name: str = "x") -> None:
        row = {"id": key, "name": name, "status": status, "age": 1}
        self.storage.execute(ws.Create(entity=USERS, rows=(row,)))

    def update(self, key: int, **changes: Any) -> None:
        self.storage.execute(
            ws.Update(entity=USERS, key=key, changes=changes, filters=ws.NO_FILTERS)
        )

    def delete(self, key: int) -> None:
        self.storage.execute(ws.Delete(entity=USERS, key=key, filters=ws.NO_FILTERS))

    def tail(self, limit: int = 1_000_000) -> None:
        """The tailer hands over up to ``limit`` entries after the engine's position."""
        entries = self.storage.read_changes(self.d.engine.position, limit)
        self.d.feed(ws.ChangesLogged(epoch=EPOCH, entries=tuple(entries), now=self.d.now))

    # --- the client -----------------------------------------------------------------------

    def subscribe(
        self,
        conn: str = "c",
        *,
        snapshot: bool = False,
        resume: tuple[str, int] | None = None,
        filters: list[dict[str, Any]] | None = None,
        message_id: str = "s",
    ) -> None:
        message: dict[str, Any] = {
            "id": message_id,
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "options": {"filters": ACTIVE if filters is None else filters},
        }
        if snapshot:
            message["snapshot"] = True
        if resume is not None:
            message["resume"] = {"epoch": resume[0], "seq": resume[1]}
        self.d.send(conn, message)

    def finish_reads(self) -> None:
        self.d.run_pending()

    def received(self, conn: str = "c") -> list[dict[str, Any]]:
        return self.d.take(conn)


def reply_and_changes(
    messages: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[tuple[int, str, int]]]:
    """The subscribe reply first, then (seq, change, id) of each notification after it."""
    assert messages and messages[0]["type"] == "response", messages
    reply = messages[0]
    assert reply["success"] is True, reply
    changes = []
    for message in messages[1:]:
        assert message["type"] == "notification", message
        assert message["subscription_id"] == reply["data"]["subscription_id"]
        changes.append((message["seq"], message["change"], message["data"]["id"]))
    return reply["data"], changes


# --- wire ------------------------------------------------------------------------------


def test_snapshot_and_resume_decode_as_top_level_fields() -> None:
    raw = (
        '{"id":"s","type":"subscription","operation":"subscribe","entity":"users",'
        '"snapshot":true,"resume":{"epoch":"E","seq":7}}'
    )
    assert ws.decode(raw) == ws.Subscribe(
        id="s", entity="users", snapshot=True, resume=ws.ResumePosition(epoch="E", seq=7)
    )


@given(
    field=st.sampled_from(["snapshot", "resume"]),
    value=st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=3),
        st.just({"epoch": 1, "seq": 1}),
        st.just({"epoch": "E"}),
        st.just({"epoch": "E", "seq": -1}),
        st.just({"epoch": "E", "seq": True}),
        st.just({"epoch": "E", "seq": 1.5}),
        st.lists(st.integers(0, 9), max_size=2),
    ),
)
def test_malformed_snapshot_or_resume_is_invalid_message(field: str, value: Any) -> None:
    frame = {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
    frame[field] = value
    feed = Feed()
    feed.d.send("c", frame)
    (reply,) = feed.received()
    assert reply["success"] is False
    assert reply["error"]["code"] == "invalid_message"
    assert field in reply["error"]["message"]


def test_without_the_change_feed_snapshot_and_resume_are_refused_clearly() -> None:
    d = Driver(ws.Engine(REGISTRY, limits=ws.Limits(keepalive_interval=None)))
    d.connect("c")
    for extra in ({"snapshot": True}, {"resume": {"epoch": "E", "seq": 1}}):
        reply = d.request(
            "c",
            {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
            | extra,
        )
        assert reply["success"] is False
        assert reply["error"]["code"] == "change_feed_required"
    assert d.engine.subscription_count == 0


# --- snapshot ----------------------------------------------------------------------------


def test_snapshot_returns_the_matching_rows_with_the_seq_they_are_consistent_with() -> None:
    feed = Feed()
    feed.create(1)
    feed.create(2, "away")
    feed.create(3)
    feed.tail()
    feed.subscribe(snapshot=True)
    feed.finish_reads()
    data, changes = reply_and_changes(feed.received())
    assert [row["id"] for row in data["rows"]] == [1, 3]
    assert data["total"] == 2
    assert data["seq"] == 3 and data["epoch"] == EPOCH
    assert "recovered" not in data
    assert changes == []


def test_snapshot_honours_sort_limit_and_columns_as_a_read() -> None:
    feed = Feed()
    for key in (1, 2, 3):
        feed.create(key, name=f"n{4 - key}")
    feed.tail()
    feed.d.send(
        "c",
        {
            "id": "s",
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "snapshot": True,
            "options": {
                "filters": ACTIVE,
                "sort": [{"column": "name", "direction": "asc"}],
                "limit": 2,
                "columns": ["id", "name"],
            },
        },
    )
    feed.finish_reads()
    data, _ = reply_and_changes(feed.received())
    assert data["rows"] == [{"id": 3, "name": "n1"}, {"id": 2, "name": "n2"}]
    assert data["total"] == 3


def test_snapshot_with_an_invalid_read_option_is_refused_before_anything_runs() -> None:
    feed = Feed()
    feed.subscribe(snapshot=True, filters=[eq("nope", 1)])
    (reply,) = feed.received()
    assert reply["success"] is False and reply["error"]["code"] == "invalid_column"
    assert feed.d.storage_pending == deque_empty()


def deque_empty() -> Any:
    from collections import deque

    return deque()


def test_changes_routed_while_the_snapshot_is_read_follow_it_once() -> None:
    # The tailer hands over changes between the subscribe and the read (they are in the
    # read's rows: not sent again) and after the read (sent once, after the reply).
    feed = Feed()
    feed.create(1)
    feed.tail()
    feed.subscribe(snapshot=True)  # the read is pending
    feed.create(2)
    feed.tail()  # routed while starting: kept
    feed.finish_reads()  # reads the state with 1 and 2, seq 2
    feed.create(3)
    feed.tail()
    data, changes = reply_and_changes(feed.received())
    assert [row["id"] for row in data["rows"]] == [1, 2]
    assert data["seq"] == 2
    assert changes == [(3, "added", 3)]


def test_a_snapshot_ahead_of_the_tailer_does_not_repeat_what_it_holds() -> None:
    # The read sees commits the tailer has not handed over yet: when they arrive they are
    # already in the rows, so the subscription must not receive them.
    feed = Feed()
    feed.subscribe(snapshot=True)
    feed.create(1)
    feed.create(2)
    feed.finish_reads()  # seq 2; the engine's position is still 0
    data, changes = reply_and_changes(feed.received())
    assert [row["id"] for row in data["rows"]] == [1, 2] and data["seq"] == 2
    assert changes == []
    feed.tail(limit=1)
    feed.update(1, status="away")
    feed.tail()
    assert [(m["seq"], m["change"]) for m in feed.received()] == [(3, "removed")]


def test_snapshot_rows_honour_a_filter_the_before_subscribe_hook_added() -> None:
    hooks = ws.HookRegistry()

    def only_name_a(ctx: ws.HookContext) -> None:
        ctx.options = ws.QueryOptions(
            filters=(*ctx.options.filters, ws.FilterSpec(column="name", operator="eq", value="a"))
        )

    hooks.register(ws.HookType.BEFORE_SUBSCRIBE, only_name_a)
    feed = Feed(hooks=hooks)
    feed.create(1, name="a")
    feed.create(2, name="b")
    feed.tail()
    feed.subscribe(snapshot=True)
    feed.finish_reads()
    data, _ = reply_and_changes(feed.received())
    assert [row["id"] for row in data["rows"]] == [1]


def test_after_subscribe_hooks_may_redact_snapshot_rows_but_not_the_position() -> None:
    hooks = ws.HookRegistry()

    def redact(ctx: ws.HookContext) -> None:
        for row in ctx.result["rows"]:
            row["name"] = "***"
        ctx.result["seq"] = -1  # ignored: the position is the engine's

    hooks.register(ws.HookType.AFTER_SUBSCRIBE, redact)
    feed = Feed(hooks=hooks)
    feed.create(1, name="secret")
    feed.tail()
    feed.subscribe(snapshot=True)
    feed.finish_reads()
    data, _ = reply_and_changes(feed.received())
    assert data["rows"][0]["name"] == "***"
    assert data["seq"] == 1


def test_too_many_changes_while_starting_fail_the_subscribe_and_keep_memory_bounded() -> None:
    feed = Feed(max_replay=3)
    feed.subscribe(snapshot=True)
    for key in range(1, 6):
        feed.create(key)
    feed.tail()
    feed.finish_reads()
    (reply,) = feed.received()
    assert reply["success"] is False and reply["error"]["code"] == "subscribe_error"
    assert feed.d.engine.subscription_count == 0
    feed.create(9)
    feed.tail()
    assert feed.received() == []


def test_a_failed_read_fails_the_subscribe_and_forgets_the_subscription() -> None:
    feed = Feed()
    feed.subscribe(snapshot=True)
    (action,) = feed.d.storage_pending
    feed.d.storage_pending.clear()
    error = ws.StorageError(kind=ws.StorageErrorKind.UNAVAILABLE, message="database unavailable")
    feed.d.feed(ws.StorageFailed(operation_id=action.operation_id, error=error, now=feed.d.now))
    (reply,) = feed.received()
    assert reply["error"] == {"code": "subscribe_error", "message": "database unavailable"}
    assert feed.d.engine.subscription_count == 0


def test_a_client_leaving_while_its_snapshot_is_read_leaves_nothing_behind() -> None:
    feed = Feed()
    feed.subscribe(snapshot=True)
    feed.d.disconnect("c")
    feed.finish_reads()
    feed.create(1)
    feed.tail()
    assert feed.d.engine.subscription_count == 0


# --- resume ------------------------------------------------------------------------------


def test_resume_replays_the_missed_matching_changes_then_goes_live() -> None:
    feed = Feed()
    feed.create(1)
    feed.tail()
    position = feed.d.engine.position  # the client saw up to here, then left
    feed.create(2)  # added
    feed.create(3, "away")  # not its business
    feed.update(1, name="y")  # modified
    feed.update(1, status="away")  # removed, with the row as it matched
    feed.update(3, status="active")  # added
    feed.tail()
    feed.subscribe(resume=(EPOCH, position))
    feed.finish_reads()
    feed.create(7)
    feed.tail()
    messages = feed.received()
    data, changes = reply_and_changes(messages)
    assert data["recovered"] is True
    assert data["seq"] == position and "rows" not in data
    assert changes == [
        (2, "added", 2),
        (4, "modified", 1),
        (5, "removed", 1),
        (6, "added", 3),
        (7, "added", 7),
    ]
    removed = messages[3]
    assert removed["data"]["status"] == "active"


def test_resume_at_the_servers_position_needs_no_read() -> None:
    feed = Feed()
    feed.create(1)
    feed.tail()
    feed.subscribe(resume=(EPOCH, 1), snapshot=True)
    assert not feed.d.storage_pending
    data, changes = reply_and_changes(feed.received())
    assert data == data | {"recovered": True, "seq": 1}
    assert "rows" not in data and changes == []


def test_resume_ahead_of_this_servers_tailer_is_honoured_from_the_database() -> None:
    # The client saw seq 2 on another server; this one has routed only seq 1.
    feed = Feed()
    feed.create(1)
    feed.tail()
    feed.create(2)
    feed.create(3)
    feed.subscribe(resume=(EPOCH, 2))
    feed.finish_reads()
    feed.tail()  # 2 and 3 arrive live: 2 was seen, 3 was replayed
    data, changes = reply_and_changes(feed.received())
    assert data["recovered"] is True and data["seq"] == 2
    assert changes == [(3, "added", 3)]


def test_resume_replay_honours_a_filter_the_hook_added() -> None:
    hooks = ws.HookRegistry()

    def only_name_a(ctx: ws.HookContext) -> None:
        ctx.options = ws.QueryOptions(
            filters=(*ctx.options.filters, ws.FilterSpec(column="name", operator="eq", value="a"))
        )

    hooks.register(ws.HookType.BEFORE_SUBSCRIBE, only_name_a)
    feed = Feed(hooks=hooks)
    feed.create(1, name="a")
    feed.create(2, name="b")
    feed.update(1, name="b")  # leaves the hook's filter: removed, with name "a"
    feed.tail()
    feed.subscribe(resume=(EPOCH, 0))
    feed.finish_reads()
    messages = feed.received()
    _, changes = reply_and_changes(messages)
    assert changes == [(1, "added", 1), (3, "removed", 1)]
    assert messages[-1]["data"]["name"] == "a"


def resume_verdict(
    feed: Feed, position: tuple[str, int], *, snapshot: bool = True
) -> dict[str, Any]:
    feed.subscribe(resume=position, snapshot=snapshot)
    feed.finish_reads()
    data, _ = reply_and_changes(feed.received())
    return data


def test_resume_from_another_epoch_is_not_recovered_and_sends_the_snapshot() -> None:
    feed = Feed()
    feed.create(1)
    feed.tail()
    data = resume_verdict(feed, ("old-epoch", 0))
    assert data["recovered"] is False
    assert [row["id"] for row in data["rows"]] == [1] and data["seq"] == 1


def test_resume_from_before_the_retention_is_not_recovered() -> None:
    feed = Feed()
    for key in (1, 2, 3):
        feed.create(key)
    feed.tail()
    feed.storage.trim(keep_last=1)  # removes 1 and 2
    assert resume_verdict(feed, (EPOCH, 1))["recovered"] is False
    assert resume_verdict(feed, (EPOCH, 2))["recovered"] is True


def test_resume_beyond_the_logs_end_is_not_recovered() -> None:
    feed = Feed()
    feed.create(1)
    feed.tail()
    data = resume_verdict(feed, (EPOCH, 99))
    assert data["recovered"] is False and data["seq"] == 1


def test_resume_past_the_replay_limit_is_not_recovered() -> None:
    feed = Feed(max_replay=3)
    for key in range(1, 5):
        feed.create(key)
    feed.tail()
    assert resume_verdict(feed, (EPOCH, 0))["recovered"] is False
    assert resume_verdict(feed, (EPOCH, 1))["recovered"] is True
    feed.d.take("c")


def test_resume_without_snapshot_not_recovered_has_no_rows() -> None:
    feed = Feed()
    feed.create(1)
    feed.tail()
    data = resume_verdict(feed, ("other", 0), snapshot=False)
    assert data["recovered"] is False and "rows" not in data and data["seq"] == 1


def test_a_pong_after_a_resume_covers_the_replay() -> None:
    feed = Feed()
    feed.create(1)
    feed.create(2)
    feed.tail()
    feed.subscribe(resume=(EPOCH, 0))
    feed.d.send("c", {"type": "ping", "id": "p"})
    feed.finish_reads()
    messages = feed.received()
    assert [m["type"] for m in messages] == ["response", "notification", "notification", "pong"]
    assert messages[-1]["data"] == {"epoch": EPOCH, "seq": 2}


# --- any interleaving --------------------------------------------------------------------


class ResumingSubscriber(RuleBasedStateMachine):
    """Two servers on one database, writes from "other programs", each server's tailer
    lagging as it likes, storage reads completed late, a client that disconnects and comes
    back to either server with ``resume`` (and ``snapshot``), retention trimming the log:
    the client's view, rows plus notifications, always equals the database once everything
    is delivered; it never receives a change twice or out of order; and ``recovered:
    false`` comes exactly when the log cannot prove the resume."""

    MAX_REPLAY = 4

    def __init__(self) -> None:
        super().__init__()
        self.storage = ws.MemoryStorage(REGISTRY, change_log_epoch=EPOCH)
        self.servers = [Feed(max_replay=self.MAX_REPLAY, storage=self.storage) for _ in (0, 1)]
        for server in self.servers:
            server.d.disconnect("c")
        self.server = self.servers[0]
        self.connection = 0
        self.conn: str | None = None
        self.position: tuple[str, int] | None = None
        self.view: dict[int, dict[str, Any]] = {}
        self.subscription_id: str | None = None
        #: The verdict the log dictates for the pending resume, computed when the read runs.
        self.expected_recovered: bool | None = None
        self.pending_resume: tuple[str, int] | None = None
        self.asked_snapshot = False
        #: A resume failed without a snapshot: the client must re-read before its view
        #: means anything (the next rows it gets).
        self.resync_pending = False

    # --- the database and the tailers -----------------------------------------------------

    @rule(key=st.integers(1, 4), status=st.sampled_from(["active", "away"]))
    def write(self, key: int, status: str) -> None:
        feed = self.servers[0]
        exists = any(row["id"] == key for row in self.storage.rows("public.users"))
        if not exists:
            feed.create(key, status)
        elif status == "away" and key % 2:
            feed.delete(key)
        else:
            feed.update(key, status=status, age=self.storage.last_seq)

    @rule(server=st.integers(0, 1), limit=st.integers(1, 3))
    def tail(self, server: int, limit: int) -> None:
        self.servers[server].tail(limit)
        self.receive()

    @rule(keep=st.integers(1, 3))
    def trim(self, keep: int) -> None:
        # Never entries a tailer has not read yet: a server that falls behind the
        # retention loses changes by definition (the real tailer logs it as an error).
        behind = min(server.d.engine.position for server in self.servers)
        self.storage.trim(keep_last=max(keep, self.storage.last_seq - behind))

    # --- the client -----------------------------------------------------------------------

    @precondition(lambda self: self.conn is None)
    @rule(server=st.integers(0, 1), snapshot=st.booleans())
    def connect_and_subscribe(self, server: int, snapshot: bool) -> None:
        self.server = self.servers[server]
        self.connection += 1
        self.conn = f"c{self.connection}"
        self.server.d.connect(self.conn)
        # Without a position the client needs the rows; with one it asks for them in
        # case the resume fails (the usual client), or not (then it must re-read later).
        self.asked_snapshot = snapshot or self.position is None
        self._subscribe()
        self.receive()

    def _subscribe(self) -> None:
        assert self.conn is not None
        self.server.subscribe(self.conn, snapshot=self.asked_snapshot, resume=self.position)
        self.pending_resume = self.position
        self.expected_recovered = None
        if self.position is not None and self.position[1] == self.server.d.engine.position:
            self.expected_recovered = True  # the engine's fast path

    @precondition(lambda self: any(server.d.storage_pending for server in self.servers))
    @rule(data=st.data())
    def complete_read(self, data: st.DataObject) -> None:
        server = data.draw(st.sampled_from([s for s in self.servers if s.d.storage_pending]))
        self._complete(server)

    def _complete(self, server: Feed) -> None:
        action = server.d.storage_pending.popleft()
        if self.pending_resume is not None and server is self.server:
            storage = self.storage
            missed = len(storage.read_changes(self.pending_resume[1], 1000))
            self.expected_recovered = (
                storage.trimmed_through <= self.pending_resume[1] <= storage.last_seq
                and missed <= self.MAX_REPLAY
            )
        server.d.finish_storage(action)
        self.receive()

    @precondition(lambda self: self.conn is not None)
    @rule()
    def disconnect(self) -> None:
        assert self.conn is not None
        self.receive()
        self.server.d.disconnect(self.conn)
        self.pending_resume = None  # its read, if still running, is answered to nobody
        self.conn = None
        self.subscription_id = None
        self.expected_recovered = None

    def receive(self) -> None:
        if self.conn is None:
            return
        for message in self.server.d.take(self.conn):
            if message["type"] == "response" and not message["success"]:
                # Too many changes while it started (bounded memory): subscribe again,
                # as a client does.
                assert message["error"]["code"] == "subscribe_error", message
                self._subscribe()
                continue
            if message["type"] == "response":
                data = message["data"]
                self.subscription_id = data["subscription_id"]
                if self.pending_resume is not None:
                    assert data["recovered"] is self.expected_recovered, (
                        data,
                        self.expected_recovered,
                    )
                    if not data["recovered"] and not self.asked_snapshot:
                        # A real client re-reads; here the test knows the truth at seq.
                        self.view = {}
                        self.resync_pending = True
                if "rows" in data:
                    self.view = {row["id"]: row for row in data["rows"]}
                    self.resync_pending = False
                self.position = (data["epoch"], data["seq"])
                self.pending_resume = None
                continue
            assert message["type"] == "notification", message
            assert message["subscription_id"] == self.subscription_id
            assert self.position is not None
            assert message["seq"] > self.position[1], "a change twice or out of order"
            self.position = (self.position[0], message["seq"])
            if self.resync_pending:
                continue  # the view is unknown until the client reads the rows again
            row = message["data"]
            if message["change"] == "removed":
                assert self.view.pop(row["id"], None) is not None, message
            else:
                assert (message["change"] == "added") is (row["id"] not in self.view), message
                self.view[row["id"]] = row

    @rule()
    def deliver_everything(self) -> None:
        """Catch every server up and check the view against the database."""
        for server in self.servers:
            server.tail()
            while server.d.storage_pending:
                self._complete(server)
        self.receive()
        if self.conn is None or self.subscription_id is None or self.resync_pending:
            return
        truth = {
            row["id"]: row for row in self.storage.rows("public.users") if row["status"] == "active"
        }
        assert self.view == truth

    @invariant()
    def nothing_for_closed_connections(self) -> None:
        # Each driver asserts no action names a closed connection; here: nothing queued
        # for a connection the client no longer reads.
        for server in self.servers:
            for conn, frames in server.d.sent.items():
                if conn != self.conn:
                    assert not frames, (conn, frames)


ResumingSubscriber.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_resuming_subscriber = ResumingSubscriber.TestCase
