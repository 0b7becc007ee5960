"""The per-connection pipeline: runs scheduled in, frames counted out.

Theory of operation
-------------------
Each connection keeps its received messages as a list of *runs* (:class:`Run`), in
arrival order, until each run's response has been sent. Runs not yet started also wait in
``Connection.waiting``. :meth:`Pipeline.pump` starts what the rules of docs/protocol.md
"Order" allow (consecutive shared runs up to ``Limits.max_in_flight``; an exclusive run
alone, once every run before it has finished) and then flushes: the finished runs at the
head of the list go out, in order, so responses leave strictly in arrival order.

Starting a run is the engine's business (hooks, storage): the pipeline calls back
``start(run)``, and the engine answers through :meth:`Pipeline.finish`, which may come
back in the same call (no hook to run). That re-entry is noted and served by the loop in
:meth:`Pipeline.pump` rather than by recursing.

The outbound side (docs/core.md "Flow control"): every frame asked for is counted in the
connection's ``backlog`` until ``FramesWritten`` reports it written. Reading is paused at
either high-water mark (runs read and not answered; frames not written) and resumed below
half of both. A backlog past ``Limits.outbound_queue`` means the client is not reading: the
connection is noted in ``overflowed`` and the engine closes it once the event's actions are
complete. A writer's own notifications are held behind its response (``Connection.held``)
and, once released, get room of their own (``burst_allowance``): the client could not read
them while they were held. Holding starts when the engine says so
(:meth:`Pipeline.hold_notifications`: when a write commits, or with a change feed when it
starts, since its log entry may arrive before its ``StorageCompleted``), and each holding
run releases what is held when its response is sent; ``Connection.holders`` counts the
holding runs not yet sent (a write may start in the event that finishes the one before it).

With a change feed, a pong says how far the connection has been notified, which is known
only when it is sent: its run finishes with :data:`PENDING_PONG`, and :meth:`Pipeline.flush`
asks the engine for the frame (``pong``) as it sends it. A subscribing connection whose
backlog reaches half of ``outbound_queue`` is *congested* (``Pipeline.congested``, with
the time it became so) until it falls to a quarter: the engine routes no change-log entry
meanwhile (docs/core.md "Pacing the change feed").

The pipeline never changes ``Connection.state``: opening and closing are the engine's.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Hashable
from typing import Any

import attrs

from ._actions import Action, PauseReading, ResumeReading, Send
from ._config import Limits
from ._entities import Entity
from ._hooks import HookContext, RequestInfo
from ._messages import QueryOptions, Request, Subscribe, Unsubscribe, quick_new
from ._subscriptions import Subscription


class ConnState(enum.Enum):
    OPENING = "opening"  # before_connect hooks running
    OPEN = "open"
    CLOSING = "closing"  # we sent CloseConnection; waiting for ConnectionClosed


_NO_OPTIONS = QueryOptions()
_new_send = quick_new(Send)

#: The response of a ping whose pong is written when it is sent (a change feed's
#: position): compared by identity, never sent as it is.
PENDING_PONG = "(pong written when sent)"


class RunKind(enum.Enum):
    DONE = "done"  # answered on arrival (errors, ping)
    SHARED = "shared"  # reads and meta: may run alongside other shared runs
    EXCLUSIVE = "exclusive"  # writes and subscription changes: run alone


class Run:
    """One received message on its way to a response.

    A plain slotted class rather than an attrs one: one is built per message, and a
    hand-written ``__init__`` costs a quarter of the generated one.
    """

    __slots__ = (
        "committed",
        "conn",
        "context",
        "data",
        "entity",
        "holds",
        "hooks_ran",
        "key",
        "kind",
        "message",
        "message_id",
        "options",
        "record_id",
        "response",
        "result",
        "schema",
        "started",
        "subscription_id",
    )

    def __init__(
        self,
        conn: Connection,
        kind: RunKind,
        message: Request | Subscribe | Unsubscribe | None = None,
        entity: Entity | None = None,
        *,
        response: str | None = None,
        options: QueryOptions = _NO_OPTIONS,
    ) -> None:
        self.conn = conn
        self.kind = kind
        #: ``None`` for a read on the engine's direct path until a step needs it
        #: (``Engine._request``): ``message_id`` and the fields below say all it would.
        self.message = message
        self.message_id = None if message is None else message.id
        #: The schema a direct read named, for the ``Request`` built later (``None``
        #: otherwise: a message carries its own).
        self.schema: str | None = None
        self.entity = entity
        #: The encoded response frame, once the run has finished.
        self.response = response
        self.started = False
        #: What the steps read and hooks may change.
        self.options = options
        self.data: Any = None
        self.record_id: Any = None
        self.result: Any = None
        self.subscription_id: str | None = None
        self.context: HookContext | None = None
        self.hooks_ran = False
        #: The validated storage operation of the run.
        self.key: Any = None
        #: Set when a write of this run committed.
        self.committed = False
        #: This run holds its connection's notifications: its response releases them.
        self.holds = False


_alloc = object.__new__


def read_run(
    conn: Connection,
    entity: Entity,
    options: QueryOptions,
    message_id: Any,
    record_id: Any,
    key: Any,
    schema: str | None,
) -> Run:
    """``Run(conn, RunKind.SHARED, None, entity, options=options)`` with its
    ``message_id``, ``record_id``, ``key`` and ``schema`` set: the run of a read on the
    engine's direct path, built without the type call (one per read; every slot is set,
    as ``Run.__init__`` sets them: tests/core/test_fast_paths.py compares the two)."""
    run: Run = _alloc(Run)
    run.conn = conn
    run.kind = RunKind.SHARED
    run.message = None
    run.message_id = message_id
    run.schema = schema
    run.entity = entity
    run.response = None
    run.started = False
    run.options = options
    run.data = None
    run.record_id = record_id
    run.result = None
    run.subscription_id = None
    run.context = None
    run.hooks_ran = False
    run.key = key
    run.committed = False
    run.holds = False
    return run


@attrs.define(eq=False)
class Connection:
    id: Hashable
    request: RequestInfo
    state: ConnState
    metadata: dict[str, Any] = attrs.Factory(dict)
    runs: list[Run] = attrs.Factory(list)
    #: Runs started and not finished.
    in_flight: int = 0
    #: Runs received and not yet started, oldest first (every run before them started).
    waiting: collections.deque[Run] = attrs.Factory(collections.deque)
    #: A write or subscription change is running: nothing else may start.
    exclusive_running: bool = False
    paused: bool = False
    #: Re-entrancy guard of `Pipeline.pump` (a run may finish while runs are being started).
    pumping: bool = False
    repump: bool = False
    subscriptions: dict[str, Subscription] = attrs.Factory(dict)
    #: Notification frames held until this connection's pending write response is sent.
    held: list[str] | None = None
    #: Runs holding notifications whose responses are not sent yet.
    holders: int = 0
    #: Frames sent and not yet reported written (``FramesWritten``).
    backlog: int = 0
    #: Room beyond Limits.outbound_queue for a burst of held notifications just released:
    #: the client could not have read them while they were held. Shrinks as frames are
    #: written.
    burst_allowance: int = 0
    #: Why the connection is to be closed as a slow consumer, once this event is done.
    overflow: str | None = None
    #: Keepalive and rate limit (wsspec_core/_timers.py).
    last_seen: float = 0.0
    ping_sent_at: float | None = None
    tokens: float = 0.0
    tokens_at: float = 0.0


class Pipeline:
    """Scheduling and the outbound side of every connection of one engine.

    ``out`` is the engine's action list for the event being handled (the engine sets it
    at the start of each ``handle``). ``start(run)`` begins a run's steps; ``drained(conn)``
    is told when a draining connection has answered everything.
    """

    __slots__ = (
        "_backlog_high_water",
        "_congested_above",
        "_drained",
        "_max_in_flight",
        "_outbound_queue",
        "_pong",
        "_read_ahead",
        "_relieved_below",
        "_start",
        "congested",
        "draining",
        "limits",
        "now",
        "out",
        "overflowed",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        start: Callable[[Run], None],
        drained: Callable[[Connection], None],
        pong: Callable[[Run], str] | None = None,
    ) -> None:
        self.limits = limits
        self.out: list[Action] = []
        #: Connections found slow consumers during this event (their ``overflow`` says why).
        self.overflowed: list[Connection] = []
        #: The server is shutting down: reading stays paused, and a connection whose runs
        #: are all answered is handed to ``drained``.
        self.draining = False
        self._start = start
        self._drained = drained
        self._pong = pong
        # The limits read on every request (Limits is frozen: they are fixed).
        self._read_ahead = limits.requests_read_ahead
        self._backlog_high_water = limits.backlog_high_water
        self._max_in_flight = limits.max_in_flight
        self._outbound_queue = limits.outbound_queue
        #: Subscribing connections too far behind for the change feed to go on, by id,
        #: with the time each became so (only tracked when the engine has a feed).
        self.congested: dict[Hashable, float] = {}
        self._congested_above = limits.outbound_queue // 2 if pong is not None else None
        self._relieved_below = limits.outbound_queue // 4
        #: The current event's ``now`` (the engine sets it).
        self.now = 0.0

    # --- runs in -------------------------------------------------------------------

    def receive(self, conn: Connection, run: Run) -> None:
        """Take a run just admitted from ``conn``: queue it, mind the read-ahead, and start
        or answer whatever may go now."""
        if run.kind is RunKind.SHARED and self.start_at_once(conn, run):
            self._start(run)
            return
        runs = conn.runs
        runs.append(run)
        if run.kind is not RunKind.DONE:
            conn.waiting.append(run)
        if not conn.paused and self._at_high_water(conn, len(runs)):
            self.update_reading(conn)
        self.pump(conn)

    def start_at_once(self, conn: Connection, run: Run) -> bool:
        """Take a shared run that may start now, as :meth:`receive` would, and mark it
        started: the caller starts its steps. ``False``, with nothing done, when it must
        wait (then hand it to :meth:`receive`).

        The common case, a read on a connection with room for it: what pump() would do
        for this one run, without its loop. Nothing waits before the run and it may start
        at once; the runs before it are all unfinished (every finish flushes the finished
        head), so there is nothing to send but what starting it may finish, and finishing
        it pumps by itself (we are not pumping)."""
        if (
            conn.waiting
            or conn.exclusive_running
            or conn.in_flight >= self._max_in_flight
            or conn.pumping
        ):
            return False
        runs = conn.runs
        runs.append(run)
        # _at_high_water, written out: every read passes here.
        if not conn.paused and (
            len(runs) >= self._read_ahead or conn.backlog >= self._backlog_high_water
        ):
            self.update_reading(conn)
        run.started = True
        conn.in_flight += 1
        return True

    def finish(self, run: Run, frame: str, answers: tuple[str, str] | None = None) -> None:
        """``run`` is answered with ``frame``: free its place and send what may go.
        ``answers`` is the ``Send``'s hint (what the frame answers), if sent at once."""
        run.response = frame
        conn = run.conn
        if run.started:
            conn.in_flight -= 1
            if run.kind is RunKind.EXCLUSIVE:
                conn.exclusive_running = False
        if conn.state is ConnState.OPEN:
            if conn.waiting or conn.pumping:
                self.pump(conn)
                return
            runs = conn.runs
            if (
                runs
                and runs[0] is run
                and (len(runs) == 1 or runs[1].response is None)
                and not run.holds
                and frame is not PENDING_PONG
                and not self.draining
            ):
                # The common case, the oldest run answered alone: what flush() does for
                # it, without its loop.
                self.send(conn, frame, answers)
                del runs[0]
                if (
                    conn.paused
                    or len(runs) >= self._read_ahead
                    or conn.backlog >= self._backlog_high_water
                ):
                    self.update_reading(conn)
                return
            # Nothing to start: all pump() would do is flush, and flushing never
            # finishes a run, so it cannot ask for another pump.
            self.flush(conn)

    def abandon(self, conn: Connection) -> None:
        """Forget the runs of a connection that is closing, except those executing: they
        keep their storage operation (a write still commits and is still notified to
        others); only the answer to this connection is dropped."""
        conn.runs = [run for run in conn.runs if run.started and run.response is None]
        conn.waiting.clear()
        conn.held = None
        conn.holders = 0
        self.congested.pop(conn.id, None)

    def pump(self, conn: Connection) -> None:
        """Start every run that may start now, in order; then send what is finished.

        Starting a run can finish it at once (no hooks to call), which asks for another
        pump; that request is noted and served by the loop here instead of recursing.
        """
        if conn.pumping:
            conn.repump = True
            return
        conn.pumping = True
        try:
            while conn.state is ConnState.OPEN:
                conn.repump = False
                if conn.waiting:
                    self._start_waiting(conn)
                self.flush(conn)
                if not conn.repump:
                    break
        finally:
            conn.pumping = False

    def _start_waiting(self, conn: Connection) -> None:
        """Start waiting runs in arrival order while the rules of docs/protocol.md "Order"
        allow: shared runs up to ``max_in_flight``; an exclusive run only when nothing runs
        (every run before it has finished), and nothing beside it."""
        limit = self.limits.max_in_flight
        waiting = conn.waiting
        start = self._start
        while waiting and not conn.exclusive_running:
            run = waiting[0]
            if run.kind is RunKind.EXCLUSIVE:
                if conn.in_flight:
                    return
                conn.exclusive_running = True
            elif conn.in_flight >= limit:
                return
            waiting.popleft()
            run.started = True
            conn.in_flight += 1
            start(run)
            if conn.state is not ConnState.OPEN:
                return

    def flush(self, conn: Connection) -> None:
        """Send the finished responses at the head of the connection's runs, in order; a
        holding write's response releases the notifications held behind it."""
        if conn.state is not ConnState.OPEN:
            return
        sent = 0
        for run in conn.runs:
            frame = run.response
            if frame is None:
                break
            sent += 1
            if frame is PENDING_PONG:
                assert self._pong is not None
                frame = self._pong(run)
            self.send(conn, frame)
            if run.holds:
                self._release(conn)
        if sent:
            runs = conn.runs
            del runs[:sent]
            # _at_high_water, written out: every response passes here.
            if (
                conn.paused
                or len(runs) >= self._read_ahead
                or conn.backlog >= self._backlog_high_water
            ):
                self.update_reading(conn)
            if self.draining:
                self._drained(conn)

    # --- frames out (docs/core.md "Flow control") ----------------------------------

    def send(self, conn: Connection, frame: str, answers: tuple[str, str] | None = None) -> None:
        """Ask for ``frame`` to be sent, and count it in the connection's backlog.

        A backlog past ``Limits.outbound_queue`` (plus the allowance of a burst of held
        notifications) means the client is not reading what it is sent: the connection is
        closed once this event's actions are complete (closing here would change the runs
        being flushed)."""
        self.out.append(_new_send(conn.id, frame, answers))
        conn.backlog += 1
        if conn.backlog > self._outbound_queue + conn.burst_allowance:
            self._slow_consumer(conn, "outbound queue full: client is not reading")
        above = self._congested_above
        if (
            above is not None
            and conn.backlog - conn.burst_allowance >= above
            and conn.subscriptions
            and conn.id not in self.congested
        ):
            self.congested[conn.id] = self.now

    def notify(self, conn: Connection, frame: str) -> None:
        """Send a notification, or hold it while the connection's own write response is
        pending (docs/protocol.md "Subscriptions and notifications")."""
        if conn.held is not None:
            self._hold(conn, frame)
        else:
            self.send(conn, frame)

    def hold_notifications(self, run: Run) -> None:
        """Hold the notifications of ``run``'s connection until ``run``'s response has
        gone out (the response releases them, in :meth:`flush`)."""
        if run.holds:
            return
        run.holds = True
        conn = run.conn
        conn.holders += 1
        if conn.held is None:
            conn.held = []

    def hold_burst(self, run: Run, frames: list[str]) -> None:
        """Hold ``frames`` behind ``run``'s response (a starting subscription's replay and
        kept notifications, PROTOCOL.md "Change feed"): sent right after it, with room of
        their own like any released burst. Their number is bounded by the engine
        (``Limits.max_replay``), not by ``outbound_queue``."""
        self.hold_notifications(run)
        held = run.conn.held
        assert held is not None
        held.extend(frames)

    def _release(self, conn: Connection) -> None:
        """A holding run's response went out: send what was held behind it. Notifications
        stay held if another holding run of the connection has started meanwhile (every
        frame held so far was routed before it started)."""
        conn.holders -= 1
        held = conn.held
        if held is None:
            return
        conn.held = [] if conn.holders else None
        if held:
            conn.burst_allowance += len(held)
            for frame in held:
                self.send(conn, frame)

    def _hold(self, conn: Connection, frame: str) -> None:
        """Hold a notification behind the connection's own write response; more than
        ``Limits.outbound_queue`` of them is a client that cannot keep up (its own write's
        hooks take that long) and closes it like a full queue: held frames are memory too."""
        assert conn.held is not None
        conn.held.append(frame)
        if len(conn.held) > self.limits.outbound_queue:
            self._slow_consumer(conn, "notifications backed up: client is not keeping up")

    def _slow_consumer(self, conn: Connection, reason: str) -> None:
        if conn.overflow is None:
            conn.overflow = reason
            self.overflowed.append(conn)

    def written(self, conn: Connection, count: int) -> None:
        """``count`` frames of ``conn`` reached its socket (``FramesWritten``)."""
        backlog = conn.backlog - count
        conn.backlog = backlog if backlog > 0 else 0
        if conn.burst_allowance:
            allowance = conn.burst_allowance - count
            conn.burst_allowance = allowance if allowance > 0 else 0
        if conn.paused:
            self.update_reading(conn)
        if self.congested and conn.backlog - conn.burst_allowance <= self._relieved_below:
            self.congested.pop(conn.id, None)

    def _at_high_water(self, conn: Connection, runs: int) -> bool:
        """Whether :meth:`update_reading` would pause a connection that is not paused: the
        hot paths ask this first and skip the call when the answer is no."""
        return runs >= self._read_ahead or conn.backlog >= self._backlog_high_water

    def update_reading(self, conn: Connection) -> None:
        """Pause reading a connection's requests at either high-water mark (requests read
        and not answered; frames not yet written), resume below half of both. The
        backlog mark leaves room for the replies owed to requests already read, so a
        client that reads what it is sent never overflows (``Limits`` checks this)."""
        if conn.state is not ConnState.OPEN or self.draining:
            return
        limits = self.limits
        if conn.paused:
            if (
                len(conn.runs) <= limits.requests_read_ahead // 2
                and conn.backlog <= limits.backlog_high_water // 2
            ):
                conn.paused = False
                self.out.append(ResumeReading(connection_id=conn.id))
        elif (
            len(conn.runs) >= limits.requests_read_ahead
            or conn.backlog >= limits.backlog_high_water
        ):
            conn.paused = True
            self.out.append(PauseReading(connection_id=conn.id))

    def stop_reading(self, conn: Connection) -> None:
        """Pause reading ``conn`` for good (the server is shutting down)."""
        if not conn.paused:
            conn.paused = True
            self.out.append(PauseReading(connection_id=conn.id))
