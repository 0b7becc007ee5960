"""A Hypothesis state machine over the engine: connections, subscriptions, writes, outside
changes, hooks and storage operations completing (or failing) in any order, and clients
that stop reading (docs/protocol.md "Order", "Subscriptions and notifications", "Limits").

The machine plays the adapter through the test driver (``auto=False``: it decides when each
storage operation and hook call finishes) and checks the engine against a reference model
built from what it observed, in order: the driver's ``trace`` holds every event fed and
the actions it caused.

Reference model. A subscription is live from the action that acknowledged it until its
connection closes, or its unsubscribe ran (the ``after_unsubscribe`` hooks are called on a
subscription already removed; without such hooks the acknowledgement goes out at once).
A change commits when its ``StorageCompleted`` (or ``ChangeCommitted``) is handled; it is
owed, in commit order, to every subscription live at that moment whose filters, those of
its message and those ``before_subscribe`` hooks added, match the row.
"""

from __future__ import annotations

import decimal
from collections import Counter
from collections.abc import Hashable
from typing import Any

from engine_driver import Driver
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from test_engine import POSTS, USERS

import wsspec_core as ws

STATUSES = ["active", "idle", None]
SECRET = "s3cr3t-internals"

#: A filter of the model: ("all", None), ("status", v) for eq, ("status_neq", v),
#: ("age_gt", n), ("age_lt", n). A subscription's filters are a list of them, ANDed.
Atom = tuple[str, Any]


def atom_matches(atom: Atom, row: dict[str, Any]) -> bool:
    kind, value = atom
    if kind == "all":
        return True
    if kind == "status":
        return bool(row["status"] == value)  # eq never matches NULL
    if kind == "status_neq":
        return bool(row["status"] != value)  # IS DISTINCT FROM: NULL is not "idle"
    age = row["age"]
    if age is None:
        return False
    return bool(age > value) if kind == "age_gt" else bool(age < value)


def wire_filter(atom: Atom) -> list[dict[str, Any]]:
    kind, value = atom
    if kind == "all":
        return []
    column, operator = {
        "status": ("status", "eq"),
        "status_neq": ("status", "neq"),
        "age_gt": ("age", "gt"),
        "age_lt": ("age", "lt"),
    }[kind]
    return [{"column": column, "operator": operator, "value": value}]


class FilterHook:
    """A ``before_subscribe`` hook that ANDs one more filter (``user_id = me`` in real
    life): every later notification of the subscription must satisfy it."""

    def __init__(self, atom: Atom) -> None:
        self.atom = atom

    def __call__(self, ctx: ws.HookContext) -> None:
        [spec] = wire_filter(self.atom)
        ctx.add_filter(spec["column"], spec["operator"], spec["value"])

    def __repr__(self) -> str:
        return f"FilterHook({self.atom!r})"


class AfterReadHook:
    """Replaces a read's result: with an empty list, or with one the codec cannot write
    (that read is answered hook_error)."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __call__(self, ctx: ws.HookContext) -> None:
        ctx.result = [] if self.how == "empty" else {"price": decimal.Decimal("1.10")}

    def __repr__(self) -> str:
        return f"AfterReadHook({self.how!r})"


def passthrough(ctx: ws.HookContext) -> None:
    """A hook that changes nothing: it makes the step an action the machine completes,
    fails, or leaves pending while other things happen."""


#: What a before_subscribe hook may AND onto a subscription's filters.
filter_atoms = st.one_of(
    st.tuples(st.just("age_lt"), st.integers(1, 4)),
    st.tuples(st.just("status_neq"), st.sampled_from(["active", "idle"])),
)


class EngineMachine(RuleBasedStateMachine):
    connections = Bundle("connections")

    @initialize(target=connections)
    def setup(self) -> MultipleResults[int]:
        self.limits = ws.Limits(
            max_in_flight=2,
            max_queued=3,
            max_subscriptions_per_connection=3,
            outbound_queue=10,  # the least allowed: 2 * (max_in_flight + max_queued)
        )
        self.hooks = ws.HookRegistry()
        self.engine = ws.Engine(
            ws.EntityRegistry([USERS, POSTS]), hooks=self.hooks, limits=self.limits
        )
        self.driver = Driver(self.engine, auto=False)
        self.next_conn = 0
        self.next_msg = 0
        self.next_name = 0
        self.seen = 0  # position in driver.trace
        # --- the model, built from the trace -------------------------------------
        self.accepted: set[Hashable] = set()
        self.gone: set[Hashable] = set()  # closed by the engine or by the client
        self.sent_ids: dict[Hashable, list[str]] = {}
        self.answered: dict[Hashable, list[str]] = {}
        self.pending_subs: dict[str, tuple[Hashable, list[Atom]]] = {}  # msg id -> ...
        self.hook_atoms: dict[str, list[Atom]] = {}  # msg id -> atoms hooks add
        self.pending_unsubs: dict[str, str] = {}  # msg id -> subscription id
        self.live: dict[str, tuple[Hashable, list[Atom]]] = {}  # sub id -> (conn, atoms)
        self.acked: set[str] = set()
        self.commits: list[tuple[str, dict[str, Any], Hashable | None]] = []
        self.commit_of: dict[tuple[str, Any, Any], int] = {}  # (op, id, name) -> index
        self.expected: dict[str, list[int]] = {}
        self.notified: dict[str, list[int]] = {}
        #: Commits of a connection's own write whose response it has not been sent yet.
        self.owed_response: dict[Hashable, set[int]] = {}
        self.backlog: Counter[Hashable] = Counter()
        #: The write response just sent released the notifications held behind it.
        self.ever_not_reading: set[Hashable] = set()
        self.storage_conn: dict[int, Hashable] = {}
        self.hook_calls: dict[int, ws.RunHooks] = {}
        self.operations: dict[int, ws.StorageOperation] = {}
        self.change_expected_log = False
        # Two clients, subscribed before anything else happens: most runs then have
        # changes owed to someone.
        first, second = self.open_connection(), self.open_connection()
        self.subscribe(first, ("all", None))
        self.subscribe(second, ("status", "active"))
        return multiple(first, second)

    # --- observing the engine --------------------------------------------------------

    def observe(self) -> None:
        """Fold the new part of the trace into the model, checking as it goes; then play
        the client side of every close the engine asked for."""
        closing: list[Hashable] = []
        current: Hashable | None = None
        trace = self.driver.trace
        while self.seen < len(trace):
            item = trace[self.seen]
            self.seen += 1
            if isinstance(item, ws.ConnectionOpened | ws.MessageReceived):
                current = item.connection_id
            elif isinstance(item, ws.HooksCompleted | ws.HooksFailed):
                current = self.hook_calls.pop(item.call_id).context.connection_id
            elif isinstance(item, ws.StorageCompleted):
                current = self.storage_conn.pop(item.operation_id)
                self.committed(item, current)
            elif isinstance(item, ws.StorageFailed):
                current = self.storage_conn.pop(item.operation_id)
            elif isinstance(item, ws.ChangeCommitted):
                current = None
                self.outside_committed(item)
            elif isinstance(item, ws.FramesWritten):
                current = None
                self.backlog[item.connection_id] -= item.count
                assert self.backlog[item.connection_id] >= 0
            elif isinstance(item, ws.ConnectionClosed):
                current = None
                self.forget(item.connection_id)
            elif isinstance(item, ws.Event):
                current = None
            else:
                self.action(item, current, closing)
        for conn in closing:  # the adapter closes the socket and says so
            self.driver.disconnect(conn)
        if closing:
            self.observe()

    def action(self, action: ws.Action, current: Hashable | None, closing: list[Hashable]) -> None:
        conn = getattr(action, "connection_id", None)
        if conn is not None and not isinstance(action, ws.AcceptConnection | ws.RejectConnection):
            assert conn in self.accepted and conn not in self.gone, f"{action} names {conn}"
        if isinstance(action, ws.Send):
            self.backlog[conn] += 1
            self.sent(conn, ws.decode_outbound(action.frame))
        elif isinstance(action, ws.AcceptConnection):
            self.accepted.add(conn)
        elif isinstance(action, ws.RejectConnection):
            self.gone.add(conn)
        elif isinstance(action, ws.CloseConnection):
            if action.code == 1008:
                assert action.discard_queued
                if action.reason.startswith("notifications backed up"):
                    # More than outbound_queue notifications held behind its own write's
                    # hooks (test_notifications_held_beyond_the_queue_close_the_connection).
                    if currently_in_test_context():
                        event("closed: notifications held beyond the queue")
                else:
                    # Closed as a slow consumer: only when its backlog really passed the
                    # limit, which a client that reads what it is sent never makes it do
                    # (a burst of held notifications just released has room of its own).
                    assert self.backlog[conn] > self.limits.outbound_queue, self.backlog[conn]
                    assert conn in self.ever_not_reading, "a reading client was closed 1008"
            self.forget(conn)
            closing.append(conn)
        elif isinstance(action, ws.RunStorage):
            assert current is not None, action
            self.storage_conn[action.operation_id] = current
        elif isinstance(action, ws.RunHooks):
            self.hook_calls[action.call_id] = action
            context = action.context
            if action.hook_type is ws.HookType.BEFORE_SUBSCRIBE:
                atoms = [hook.atom for hook in action.hooks if isinstance(hook, FilterHook)]
                self.hook_atoms[str(context.message_id)] = atoms
            elif action.hook_type is ws.HookType.AFTER_UNSUBSCRIBE:
                assert context.subscription_id is not None
                self.live.pop(context.subscription_id, None)
        elif isinstance(action, ws.Log):
            self.change_expected_log = False

    def sent(self, conn: Hashable, message: ws.OutboundMessage) -> None:
        if isinstance(message, ws.Notification):
            sub = message.subscription_id
            assert sub in self.acked, f"{sub} notified before its acknowledgement"
            if sub in self.live:
                assert self.live[sub][0] == conn
            key = (message.operation.value, message.data["id"], message.data["name"])
            commit = self.commit_of[key]
            assert commit not in self.owed_response.get(conn, set()), (
                f"notification of {key} before the writer's response"
            )
            self.notified.setdefault(sub, []).append(commit)
            return
        # A response or a pong, in request order: the first after a write is its own.
        self.owed_response.pop(conn, None)
        message_id = str(message.id)
        self.answered.setdefault(conn, []).append(message_id)
        if not isinstance(message, ws.Response):
            return
        pending = self.pending_subs.pop(message_id, None)
        if pending is not None and message.success:
            sub = message.data["subscription_id"]
            owner, atoms = pending
            self.live[sub] = (owner, atoms + self.hook_atoms.get(message_id, []))
            self.acked.add(sub)
        unsubscribed = self.pending_unsubs.pop(message_id, None)
        if unsubscribed is not None and message.success:
            self.live.pop(unsubscribed, None)

    def commit(self, kind: str, rows: list[dict[str, Any]], writer: Hashable | None) -> None:
        for row in rows:
            index = len(self.commits)
            self.commits.append((kind, row, writer))
            key = (kind, row["id"], row["name"])
            assert key not in self.commit_of, key
            self.commit_of[key] = index
            for sub, (_conn, atoms) in self.live.items():
                if all(atom_matches(atom, row) for atom in atoms):
                    self.expected.setdefault(sub, []).append(index)
            if writer is not None and writer not in self.gone:
                self.owed_response.setdefault(writer, set()).add(index)

    def committed(self, event: ws.StorageCompleted, writer: Hashable) -> None:
        operation = self.operations.pop(event.operation_id)
        result = event.result
        if isinstance(operation, ws.Create):
            self.commit("create", result, writer)
        elif isinstance(operation, ws.Update) and result is not None:
            self.commit("update", [result], writer)
        elif isinstance(operation, ws.Delete) and result is not None:
            self.commit("delete", [result], writer)

    def outside_committed(self, event: ws.ChangeCommitted) -> None:
        if event.operation.value not in ("create", "update", "delete"):
            self.change_expected_log = True  # cleared by the Log action that must follow
            return
        try:
            row = ws.coerce_change_row(USERS, event.row)
        except ws.InvalidRequest:
            self.change_expected_log = True  # cleared by the Log action that must follow
            return
        self.commit(event.operation.value, [{**row}], None)

    def forget(self, conn: Hashable) -> None:
        self.gone.add(conn)
        self.live = {s: v for s, v in self.live.items() if v[0] != conn}
        self.pending_subs = {m: v for m, v in self.pending_subs.items() if v[0] != conn}
        self.owed_response.pop(conn, None)

    def feed(self, event: ws.Event) -> None:
        self.driver.feed(event)
        self.observe()
        assert not self.change_expected_log, "an unusable change was not logged"

    # --- the client side -------------------------------------------------------------

    def usable(self, conn: Hashable) -> bool:
        """Open, and read by its adapter (which stops reading a paused connection)."""
        return conn in self.accepted and conn not in self.gone and conn not in self.driver.paused

    def msg_id(self) -> str:
        self.next_msg += 1
        return f"m{self.next_msg}"

    def name(self) -> str:
        self.next_name += 1
        return f"v{self.next_name}"

    def send(self, conn: Hashable, message: dict[str, Any]) -> None:
        self.sent_ids.setdefault(conn, []).append(message["id"])
        self.driver.send(conn, message)
        self.observe()

    @rule(target=connections)
    def another_connection(self) -> int:
        return self.open_connection()

    def open_connection(self) -> int:
        self.next_conn += 1
        conn = self.next_conn
        self.driver.connect(conn)
        self.observe()
        return conn

    @rule(conn=consumes(connections))
    def close_connection(self, conn: int) -> None:
        if conn in self.gone:
            return
        self.driver.disconnect(conn)
        self.observe()

    @rule(
        conn=connections,
        atom=st.one_of(
            st.just(("all", None)),
            st.tuples(st.just("status"), st.sampled_from(["active", "idle"])),
            st.tuples(st.just("age_gt"), st.integers(0, 3)),
        ),
    )
    def subscribe(self, conn: int, atom: Atom) -> None:
        if not self.usable(conn):
            return
        msg = self.msg_id()
        self.pending_subs[msg] = (conn, [atom])
        self.send(
            conn,
            {
                "id": msg,
                "type": "subscription",
                "operation": "subscribe",
                "entity": "users",
                "options": {"filters": wire_filter(atom)},
            },
        )

    @rule(conn=connections, data=st.data())
    def unsubscribe(self, conn: int, data: st.DataObject) -> None:
        mine = sorted(s for s, (c, _atoms) in self.live.items() if c == conn)
        if not self.usable(conn) or not mine:
            return
        sub = data.draw(st.sampled_from(mine))
        msg = self.msg_id()
        self.pending_unsubs[msg] = sub
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
        if not self.usable(conn):
            return
        message: dict[str, Any] = {
            "id": self.msg_id(),
            "type": "request",
            "operation": operation,
            "entity": "users",
        }
        # Every write gives its row a fresh name: a notification names its commit.
        if operation == "create":
            message["data"] = {"name": self.name(), "status": status, "age": age}
        else:
            message["record_id"] = record
            if operation == "update":
                message["data"] = {"name": self.name(), "status": status, "age": age}
        self.send(conn, message)

    @rule(conn=connections, ping=st.booleans())
    def read(self, conn: int, ping: bool) -> None:
        if not self.usable(conn):
            return
        message = {"id": self.msg_id(), "type": "request", "operation": "read", "entity": "users"}
        self.send(conn, {"id": message["id"], "type": "ping"} if ping else message)

    @rule(
        operation=st.sampled_from(list(ws.Operation)),
        record=st.integers(1, 6),
        status=st.sampled_from(STATUSES),
        age=st.none() | st.integers(0, 4) | st.sampled_from(["2", "3.0", "old"]),
    )
    def outside_change(
        self, operation: ws.Operation, record: int, status: str | None, age: Any
    ) -> None:
        """A write made by another program: notified like the engine's own, after its
        row was coerced (``"2"`` is 2 on an integer column); an unusable one is logged."""
        row = {"id": str(record), "name": self.name(), "status": status, "age": age}
        self.feed(
            ws.ChangeCommitted(
                schema="public", entity="users", operation=operation, row=row, now=self.driver.now
            )
        )

    # --- the adapter side: storage and hooks finish in any order ---------------------

    def take_storage(self, data: st.DataObject) -> ws.RunStorage:
        pending = self.driver.storage_pending
        index = data.draw(st.integers(0, len(pending) - 1))
        action = pending[index]
        del pending[index]
        return action

    def run_storage(self, action: ws.RunStorage) -> None:
        self.operations[action.operation_id] = action.operation
        try:
            result = self.driver.storage.execute(action.operation)
        except ws.StorageFailure as exc:
            self.operations.pop(action.operation_id)
            self.feed(
                ws.StorageFailed(
                    operation_id=action.operation_id, error=exc.error, now=self.driver.now
                )
            )
            return
        self.feed(
            ws.StorageCompleted(
                operation_id=action.operation_id, result=result, now=self.driver.now
            )
        )

    @precondition(lambda self: bool(self.driver.storage_pending))
    @rule(data=st.data(), failure=st.none() | st.none() | st.sampled_from(ws.StorageErrorKind))
    def finish_storage(self, data: st.DataObject, failure: ws.StorageErrorKind | None) -> None:
        """One pending storage operation, any of them, completes; or fails (the database
        refused or was not there): then nothing committed and nothing is notified."""
        action = self.take_storage(data)
        if failure is None:
            self.run_storage(action)
            return
        error = ws.StorageError(kind=failure, message="the database is unavailable")
        self.feed(
            ws.StorageFailed(operation_id=action.operation_id, error=error, now=self.driver.now)
        )

    def take_hooks(self, data: st.DataObject) -> ws.RunHooks:
        pending = self.driver.hooks_pending
        index = data.draw(st.integers(0, len(pending) - 1))
        action = pending[index]
        del pending[index]
        return action

    def run_hooks(self, action: ws.RunHooks) -> None:
        exc = ws.run_hooks_sync(action.hooks, action.context)
        if exc is None:
            self.feed(ws.HooksCompleted(call_id=action.call_id, now=self.driver.now))
        else:
            self.feed(
                ws.HooksFailed(
                    call_id=action.call_id, error=ws.hook_failure(exc), now=self.driver.now
                )
            )

    @precondition(lambda self: bool(self.driver.hooks_pending))
    @rule(data=st.data(), fail=st.sampled_from([False, False, True]))
    def finish_hooks(self, data: st.DataObject, fail: bool) -> None:
        """One pending hook call, any of them, completes; or a hook raised: the request is
        answered hook_error (a before_connect refusal refuses the handshake)."""
        action = self.take_hooks(data)
        if not fail:
            self.run_hooks(action)
            return
        error = ws.hook_failure(RuntimeError(SECRET))
        self.feed(ws.HooksFailed(call_id=action.call_id, error=error, now=self.driver.now))

    # --- hooks being registered while the server runs --------------------------------

    @precondition(lambda self: len(self.hooks.registered) < 6)
    @rule(
        hook=st.one_of(
            st.tuples(st.just(ws.HookType.BEFORE_SUBSCRIBE), st.builds(FilterHook, filter_atoms)),
            st.tuples(
                st.just(ws.HookType.AFTER_READ),
                st.builds(AfterReadHook, st.sampled_from(["empty", "unencodable"])),
            ),
            st.tuples(st.sampled_from(list(ws.HookType)), st.just(passthrough)),
        )
    )
    def register_hook(self, hook: tuple[ws.HookType, ws.Hook]) -> None:
        """A before_subscribe hook ANDing a filter, an after_read hook replacing the result,
        or a hook that changes nothing but makes its step one more action to finish."""
        hook_type, function = hook
        if len(self.hooks.get(hook_type)) < 2:
            self.hooks.register(hook_type, function)

    # --- clients that stop reading ---------------------------------------------------

    @precondition(lambda self: len(self.driver.not_reading - self.gone) < 2)
    @rule(conn=connections)
    def stop_reading(self, conn: int) -> None:
        if conn in self.accepted and conn not in self.gone:
            self.driver.not_reading.add(conn)
            self.ever_not_reading.add(conn)

    @rule(conn=connections, everything=st.booleans(), data=st.data())
    def catch_up(self, conn: int, everything: bool, data: st.DataObject) -> None:
        """The client reads again: all it was sent, or part of it."""
        if conn in self.gone or not self.backlog[conn]:
            return
        count = self.backlog[conn]
        if everything:
            self.driver.not_reading.discard(conn)
        else:
            count = data.draw(st.integers(1, count))
        self.feed(ws.FramesWritten(connection_id=conn, count=count, now=self.driver.now))

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def in_flight_within_limit(self) -> None:
        per_conn: dict[Hashable, list[ws.StorageOperation]] = {}
        for action in self.driver.storage_pending:
            conn = self.storage_conn[action.operation_id]
            per_conn.setdefault(conn, []).append(action.operation)
        for operations in per_conn.values():
            assert len(operations) <= self.limits.max_in_flight
            writes = [op for op in operations if not isinstance(op, ws.ReadList | ws.ReadOne)]
            assert not writes or len(operations) == 1  # a write runs alone

    @invariant()
    def subscriptions_as_modelled(self) -> None:
        per_conn = Counter(conn for conn, _atoms in self.live.values())
        assert all(n <= self.limits.max_subscriptions_per_connection for n in per_conn.values())
        assert self.engine.subscription_count == len(self.live)

    @invariant()
    def answers_in_request_order(self) -> None:
        for conn, answered in self.answered.items():
            assert answered == self.sent_ids.get(conn, [])[: len(answered)], conn

    @invariant()
    def notified_in_commit_order(self) -> None:
        """Each subscription has been sent a prefix of what it is owed, in commit order;
        all of it once its connection has been answered everything it asked."""
        for sub in set(self.expected) | set(self.notified):
            owed = self.expected.get(sub, [])
            got = self.notified.get(sub, [])
            assert got == owed[: len(got)], (sub, got, owed)

    def idle(self, conn: Hashable) -> bool:
        return self.answered.get(conn, []) == self.sent_ids.get(conn, [])

    @invariant()
    def idle_connections_were_sent_everything(self) -> None:
        for sub, (conn, _atoms) in self.live.items():
            if self.idle(conn):
                assert self.notified.get(sub, []) == self.expected.get(sub, []), sub

    def teardown(self) -> None:
        if not hasattr(self, "driver"):
            return
        while self.driver.hooks_pending or self.driver.storage_pending:
            if self.driver.hooks_pending:
                self.run_hooks(self.driver.hooks_pending.popleft())
            else:
                self.run_storage(self.driver.storage_pending.popleft())
        for conn in self.accepted - self.gone:
            assert self.idle(conn), conn
        closed_slow = sum(code == 1008 for code, _reason in self.driver.closed.values())
        notified = sum(map(len, self.notified.values()))
        event(f"commits: {'0' if not self.commits else '1-9' if len(self.commits) < 10 else '10+'}")
        event(f"notified: {'0' if not notified else '1-9' if notified < 10 else '10+'}")
        event(f"slow consumers closed: {bool(closed_slow)}")
        event(f"hooks registered: {bool(self.hooks.registered)}")
        for sub, (_conn, _atoms) in self.live.items():
            assert self.notified.get(sub, []) == self.expected.get(sub, []), sub


EngineMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_state_machine = EngineMachine.TestCase


def test_notifications_held_beyond_the_queue_close_the_connection() -> None:
    """The sequence the machine found when a released burst of held notifications still
    closed a reading client (Limits(max_in_flight=2, max_queued=3, outbound_queue=10), one
    after_create hook): connection 1 holds three subscriptions to every users change and
    creates a row; while its after_create hook runs, three rows are created elsewhere. Two
    outside changes (nine held frames) leave it open, however many frames the release then
    sends at once; the third (twelve held, more than outbound_queue) closes it, because
    held frames are memory the queue bound must cover too."""
    machine = EngineMachine()
    first, _second = machine.setup().values
    machine.subscribe(first, ("age_gt", 0))
    machine.subscribe(first, ("status", "idle"))
    machine.register_hook((ws.HookType.AFTER_CREATE, passthrough))
    machine.write(first, "create", 1, "idle", 2)
    machine.run_storage(machine.driver.storage_pending.popleft())
    for _ in range(2):
        machine.outside_change(ws.Operation.CREATE, 1, "idle", 2)
    assert first not in machine.driver.closed, machine.driver.closed[first]
    machine.outside_change(ws.Operation.CREATE, 1, "idle", 2)
    assert machine.driver.closed[first] == (
        1008,
        "notifications backed up: client is not keeping up",
    )
