"""The runtime: carries out the engine's actions on any event loop anyio runs on.

Theory of operation.  One :class:`Runtime` per running server owns the engine and is the
only code that calls ``engine.handle()``.  Everything that happens (a handshake, a message,
frames written, a storage result, a hook outcome, a pong, a timer) becomes an event passed
to :meth:`Runtime.feed`, which calls ``handle()`` and hands each returned action to its
handler through a ``{type: handler}`` table.  Handlers never ``await``: they start a task,
append a frame to a queue or set an event (STYLE.md principle 9; mitmproxy ``server.py``:
"No ``await`` beyond this point").  The runtime decides no protocol question: size limits,
ordering, backpressure, keepalive, the slow-consumer close and errors are the engine's.

A transport (``wsspec.transports``) only moves bytes: it hands each accepted handshake to
:meth:`Runtime.run_connection` with a :class:`Transport` object, and that coroutine runs the
connection to its end: one reader (paused while the engine says so) and one writer that
drains the connection's queue, sending the frames queued together and reporting them
written (``FramesWritten``), from which the engine keeps the backlog it bounds.

Storage runs in the lanes of :mod:`.storage_lanes`; hooks run as tasks of the runtime's own
task group; a timer task feeds ``TimePassed`` at the engine's deadlines.  Along the way the
runtime counts what it carries out into the app's :mod:`.metrics`, and it can close
connections the application selects (revocation: :meth:`Runtime.close_where`).  Time is the
loop's monotonic clock (``anyio.current_time``: trio's ``MockClock`` drives it in tests);
response timestamps use the wall clock.  Background work reports failures into the engine
as events; nothing raises into the caller's task group.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from wsspec_core import (
    AcceptConnection,
    BroadcastRequested,
    ChangesLogged,
    CloseConnection,
    ConnectionOpened,
    Create,
    Delete,
    Engine,
    Event,
    FramesWritten,
    HookError,
    HooksCompleted,
    HooksFailed,
    Log,
    LogEntry,
    MessageId,
    MessageReceived,
    PauseReading,
    PongReceived,
    RejectConnection,
    RequestInfo,
    ResumeReading,
    RunHooks,
    RunStorage,
    Send,
    SendPing,
    ShutdownRequested,
    StorageCompleted,
    StorageFailed,
    StorageOperation,
    TimePassed,
    Update,
    hook_failure,
)
from wsspec_core import ConnectionClosed as ConnectionClosedEvent

from .loop import LoopClosed, Schedule, current_clock, current_scheduler
from .metrics import (
    FOLD_AT,
    KEEP_TEXT,
    NOTIFICATION_PREFIX,
    PONG_OUTCOME,
    PONG_PREFIX,
    RESPONSE_PREFIX,
    request_label,
    response_label,
)
from .storage_lanes import Outcome, StorageLanes, execute_operation
from .tailer import tailer_for

if TYPE_CHECKING:
    from wsspec_core import Action

    from .app import App

logger = logging.getLogger("wsspec.server")

#: Seconds a connection gets to flush its queue and finish the closing handshake once the
#: engine asked to close it; after that the socket is dropped (a client that never reads
#: cannot receive a close frame either).
CLOSE_TIMEOUT = 10.0
#: Seconds a graceful shutdown may take before the remaining connections are dropped.
SHUTDOWN_TIMEOUT = 30.0
#: Most frames handed to a transport at once (one system call where it can).
WRITE_BATCH = 64
#: Messages at hand (this one included) from which the reader holds the storage's reads
#: by key in one read transaction (PeeweeStorage.hold_reads): its BEGIN and COMMIT cost
#: about what two reads save in it (docs/storage.md "Read holds").
HOLD_READS_FROM = 3
#: Seconds a call from another thread (App.connections, App.close_connections) waits for
#: the event loop to run it; the loop answers in microseconds unless something blocks it.
CALL_TIMEOUT = 30.0
#: WebSocket close codes an application may close with (RFC 6455 section 7.4): the
#: registered ones an endpoint may send, and 3000-4999 (registered or private use).
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
#: A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 section 5.5: 125 bytes
#: of payload, two of them the code).
MAX_CLOSE_REASON = 123
#: The close code of a slow consumer (docs/core.md "Flow control").
_POLICY_VIOLATION = 1008

_T = TypeVar("_T")


class TransportClosed(Exception):
    """Raised by a :class:`Transport` when the peer is gone: the connection ends."""


class Transport(Protocol):
    """One WebSocket as a transport gives it to the runtime. Every method may raise
    :class:`TransportClosed`."""

    async def accept(self) -> None:
        """Complete the handshake."""

    async def reject(self, status: int, reason: str) -> None:
        """Refuse the handshake: HTTP ``status`` where the server allows it, else a close
        before accepting."""

    async def receive(self) -> str | bytes | None:
        """The next message, or ``None`` once the peer has closed."""

    async def send(self, frames: Sequence[str]) -> None:
        """Send each frame as one text message, in order."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (and finish the closing handshake where the library does)."""

    async def ping(self) -> None:
        """Send a ping and return when its pong arrives (at once, where the server keeps
        the connection alive by itself)."""

    def closed_by_peer(self) -> str:
        """How the peer ended the connection, for the log (``code 1000``, ``dropped``)."""

    # Optional, found with getattr (the runtime works without them, writing each reply
    # as soon as it is queued):
    #
    # def receive_nowait(self) -> str | bytes | None:
    #     """A message already received, without waiting or yielding; ``None`` when none is
    #     at hand (receive() then waits for the next one, or reports the close)."""
    #
    # def buffered(self) -> int:
    #     """Non-zero when receive() will return without waiting (a message or the close
    #     is already there)."""


class _Close:
    """The close sentinel in a connection's outbound queue."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionInfo:
    """An open connection as :meth:`App.connections` lists it (the Go handler's
    ``GetConnection``)."""

    #: The id the runtime gave it (``ctx.connection_id`` in hooks; logged on open/close).
    id: Hashable
    #: ``HOST:PORT`` of the peer, as the transport saw it.
    remote_address: str | None
    #: When the handshake was accepted (UTC).
    connected_at: datetime.datetime
    #: A copy of what hooks stored in ``ctx.metadata`` (``before_connect`` typically puts
    #: the user or the token there).
    metadata: Mapping[str, Any]
    #: The handshake: path, query, headers.
    request: RequestInfo


class Connection:
    """The runtime's state of one client."""

    __slots__ = (
        "accepted",
        "close_code",
        "closing",
        "connected_at",
        "decided",
        "engine_closed",
        "holding",
        "id",
        "info",
        "may_read",
        "outbound",
        "rejection",
        "requests",
        "scope",
        "tasks",
        "transport",
        "writer_wakeup",
    )

    def __init__(self, connection_id: int, info: RequestInfo, transport: Transport) -> None:
        self.id = connection_id
        self.info = info
        self.transport = transport
        #: Frames to write, and at most one close sentinel last. Unbounded here: the engine
        #: bounds it (Limits.outbound_queue) from the FramesWritten reports.
        self.outbound: collections.deque[str | _Close] = collections.deque()
        #: Set by a Send for a writer waiting on an empty queue: not None exactly while the
        #: writer waits on it (and no write-through is under way: Runtime._write_through).
        self.writer_wakeup: anyio.Event | None = None
        #: The reader is feeding one of this connection's messages: frames queued
        #: meanwhile do not wake the writer, the reader writes them itself before it next
        #: waits (Runtime._reader).
        self.holding = False
        #: Set once the engine decided on the handshake.
        self.decided = anyio.Event()
        self.rejection: tuple[int, str] | None = None
        self.accepted = False
        #: Set while the reader may read; replaced by a fresh unset event on PauseReading.
        self.may_read = anyio.Event()
        self.may_read.set()
        #: The engine sent CloseConnection: no more events from this connection but its end.
        self.closing = False
        self.close_code: int | None = None
        self.scope = anyio.CancelScope()
        #: The task group of the connection's own tasks (writer, pings), once accepted.
        self.tasks: anyio.abc.TaskGroup | None = None
        #: Wall-clock time of the accept.
        self.connected_at = 0.0
        #: The engine was told it closed (a revocation tells it before the socket ends).
        self.engine_closed = False
        #: (time read, metrics.request_label()) of each request read and not yet answered,
        #: oldest first: responses leave in that order, so the next response answers the
        #: first (metrics). A list, not a deque: an empty deque costs 10 times the memory
        #: per idle connection, and the engine keeps it short (max_in_flight + max_queued).
        self.requests: list[tuple[float, Any]] = []


class Runtime:
    """The running server of one :class:`~wsspec.App`. See the module docstring."""

    def __init__(
        self,
        app: App,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        self.app = app
        self.metrics = app.metrics
        #: The metrics' lists of answered requests and finished storage operations, which
        #: the runtime appends to and ServerMetrics.fold() empties (never replaces).
        self._metrics_pending = app.metrics.pending
        self._storage_pending = app.metrics.storage_pending
        change_feed = bool(getattr(app, "change_feed", False))
        # Without a feed the engine is built exactly as before the feed existed.
        feed_option = {"change_feed": True} if change_feed else {}
        self.engine = Engine(app.registry, hooks=app.hooks, limits=app.limits, **feed_option)
        self.close_timeout = close_timeout
        self.shutdown_timeout = shutdown_timeout
        self.connections: dict[Hashable, Connection] = {}
        self.lanes = StorageLanes(app.storage, app.storage_threads, self._report_storage)
        #: The engine's entry points for the two per-message events, or None for an
        #: engine without them (a test's stand-in with only handle()): then events.
        self._message_received: Callable[..., list[Any]] | None = getattr(
            self.engine, "message_received", None
        )
        self._engine_frames_written: Callable[..., list[Any]] | None = getattr(
            self.engine, "frames_written", None
        )
        if not app.storage_threads or hasattr(app.storage, "never_blocks"):
            # Reads the storage runs on the loop are run by the engine itself, in the
            # handle() call that asks for them: no RunStorage, no second event.
            self.engine.run_inline = self._run_inline
        #: The storage's read holds (PeeweeStorage.hold_reads / release_reads), for the
        #: reads it runs inline; None without either.
        hold: Callable[[], None] | None = getattr(app.storage, "hold_reads", None)
        release: Callable[[], None] | None = getattr(app.storage, "release_reads", None)
        inline = getattr(self.engine, "run_inline", None) is not None
        self._hold_reads = hold if inline and release is not None else None
        self._release_reads = release if inline and release is not None else _nothing
        #: With a change feed: the change-log reader, and the writes whose completion
        #: wakes it (their log entries are there by then).
        self.tailer = (
            tailer_for(
                app.storage,
                self._changes_logged,
                app.retention,
                backlog=lambda: self.engine.feed_backlog,
            )
            if change_feed
            else None
        )
        self._writes_running: set[int] = set()
        #: operation id -> (time submitted, operation class), for the storage latency.
        self._storage_started: dict[int, tuple[float, type]] = {}
        #: The frame of the broadcast being fed: its Sends are not the engine's frames.
        self._broadcast_frame: str | None = None
        #: Set by run(): the loop's thread and its thread-safe scheduler, so that other
        #: threads can hand it work (revocation).
        self._loop_thread: int | None = None
        self._schedule: Schedule | None = None
        #: For the operations endpoints (wsspec.operations.endpoints): one database probe
        #: at a time, and the last readiness problem logged (None: ready).
        self.probe_limiter: anyio.CapacityLimiter | None = None
        self.readiness_problem: str | None = None
        self.running = False
        self._services: anyio.abc.TaskGroup | None = None
        self._connection_ended = anyio.Event()
        self._ids = itertools.count(1)
        self._pending: collections.deque[Event] = collections.deque()
        self._feeding = False
        self._sends = 0
        self._timer_deadline: float | None = None
        self._timer_wakeup = anyio.Event()
        self._shutdown_started = False
        #: The loop's monotonic clock, known once run() runs on it.
        self._clock: Callable[[], float] = time.monotonic
        self._dispatch: dict[type, Callable[[Any], None]] = {
            AcceptConnection: self._on_accept,
            RejectConnection: self._on_reject,
            Send: self._on_send,
            RunStorage: self._on_run_storage,
            RunHooks: self._on_run_hooks,
            CloseConnection: self._on_close,
            PauseReading: self._on_pause,
            ResumeReading: self._on_resume,
            SendPing: self._on_send_ping,
            Log: self._on_log,
        }

    # --- the one place that talks to the engine ------------------------------------------

    def feed(self, event: Event) -> None:
        """Hand ``event`` to the engine and carry out its actions, without awaiting.

        An event raised while carrying them out (an inline storage result) is queued and
        fed after the current action list, so actions are always carried out in order.
        """
        self._pending.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            self._drain()
        finally:
            self._feeding = False
        self._check_deadline()

    def _drain(self) -> None:
        """Feed the queued events, carrying out each one's actions (inside feed)."""
        # Locals: this loop runs for every event of every connection.
        pending = self._pending
        handle = self.engine.handle
        dispatch = self._dispatch
        while pending:
            event = pending.popleft()
            try:
                actions = handle(event)
            except Exception:
                # A bug in wsspec_core (docs/core.md "Peer errors, careless hooks and
                # our bugs"). Raised here it would end a connection's task group, or
                # the whole event loop from a storage callback; log it, keep serving.
                logger.exception("bug: the engine raised on %s", type(event).__name__)
                continue
            for action in actions:
                dispatch[type(action)](action)

    def _feed_message(
        self, connection_id: Hashable, data: str | bytes, now: float, wall: float
    ) -> None:
        """``feed(MessageReceived(...))`` through the engine's ``message_received``: the
        same actions carried out, without the event object. Once per message read."""
        message_received = self._message_received
        if self._feeding or message_received is None:  # not from a reader's task
            self.feed(MessageReceived(connection_id=connection_id, data=data, now=now, wall=wall))
        else:
            self._enter(message_received, "MessageReceived", connection_id, data, now, wall)

    def _frames_written(self, connection_id: Hashable, count: int) -> None:
        """``feed(FramesWritten(...))`` through the engine's ``frames_written``: the same
        actions (usually none), without the event object. Once per batch written."""
        now = self._clock()
        wall = time.time()
        frames_written = self._engine_frames_written
        if self._feeding or frames_written is None:  # not from a writer's task
            self.feed(FramesWritten(connection_id=connection_id, count=count, now=now, wall=wall))
        else:
            self._enter(frames_written, "FramesWritten", connection_id, count, now, wall)

    def _enter(self, entry: Callable[..., list[Action]], event_name: str, *fields: Any) -> None:
        """What feed() does, through one of the engine's entry points that take an event's
        fields (``entry(*fields)``): carry out its actions, then the events they queued."""
        self._feeding = True
        try:
            try:
                actions = entry(*fields)
            except Exception:
                # As in _drain: a bug in wsspec_core is logged, the server keeps serving.
                logger.exception("bug: the engine raised on %s", event_name)
            else:
                dispatch = self._dispatch
                for action in actions:
                    dispatch[type(action)](action)
            if self._pending:
                self._drain()
        finally:
            self._feeding = False
        self._check_deadline()

    def now(self) -> dict[str, float]:
        """The two clocks every event carries (docs/core.md "Time")."""
        return {"now": self._clock(), "wall": time.time()}

    def _check_deadline(self) -> None:
        # Wake the timer only when the deadline moved earlier; a later or vanished one is
        # noticed when the timer wakes and re-checks.
        deadline = self.engine.next_deadline()
        current = self._timer_deadline
        if deadline is not None and (current is None or deadline < current):
            self._timer_wakeup.set()

    # --- the services: run, shut down -----------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the storage lanes, the timer and the hooks' tasks until :meth:`shutdown`
        has finished (or the caller cancels)."""
        self._clock = current_clock()
        self._schedule = current_scheduler()
        self._loop_thread = threading.get_ident()
        self.metrics.attach(self)
        async with anyio.create_task_group() as services:
            self._services = services
            await services.start(self.lanes.run)
            if self.tailer is not None:
                # Feeds the log's position before any client is accepted (running is
                # still False), so every subscribe reply carries it.
                await services.start(self.tailer.run)
            services.start_soon(self._timer)
            self.running = True
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self.running = False
                self._services = None
                self.metrics.fold()
                self.metrics.attach(None)

    @property
    def shutting_down(self) -> bool:
        """A graceful shutdown has started (readiness says no from then on)."""
        return self._shutdown_started

    async def shutdown(self) -> None:
        """Graceful shutdown: the engine finishes the requests it accepted and closes every
        connection with 1001; connections still open after ``shutdown_timeout`` are
        dropped; then the services stop."""
        if self._shutdown_started:
            return
        self._shutdown_started = True
        logger.info("shutting down: %d connections open", len(self.connections))
        with anyio.CancelScope(shield=True):
            self.feed(ShutdownRequested(**self.now()))
            with anyio.move_on_after(self.shutdown_timeout):
                while self.connections:
                    self._connection_ended = anyio.Event()
                    await self._connection_ended.wait()
            for conn in list(self.connections.values()):
                conn.scope.cancel()
            while self.connections:
                self._connection_ended = anyio.Event()
                await self._connection_ended.wait()
            if self._services is not None:
                self._services.cancel_scope.cancel()

    async def _timer(self) -> None:
        """Feeds ``TimePassed`` when the engine's next deadline passes."""
        while True:
            self._timer_wakeup = anyio.Event()
            deadline = self._timer_deadline = self.engine.next_deadline()
            if deadline is None:
                await self._timer_wakeup.wait()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._timer_wakeup.wait()
                continue  # re-check: the deadline may have moved meanwhile
            self.feed(TimePassed(**self.now()))
            if self.engine.next_deadline() == deadline:
                # The engine did not move its deadline on (it should have): don't spin.
                await anyio.sleep(0.05)
            else:
                await anyio.sleep(0)

    # --- what the App offers while running ------------------------------------------------

    def broadcast(self, frame: str, predicate: Callable[[dict[str, Any]], bool] | None) -> int:
        before = self._sends
        self._broadcast_frame = frame
        try:
            self.feed(BroadcastRequested(frame=frame, predicate=predicate, **self.now()))
        finally:
            self._broadcast_frame = None
        return self._sends - before

    def outbound_depth(self) -> tuple[int, int]:
        """Frames queued for clients and not yet handed to a transport: in all, and the
        longest queue (metrics)."""
        total = deepest = 0
        for conn in list(self.connections.values()):
            depth = len(conn.outbound)
            total += depth
            deepest = max(deepest, depth)
        return total, deepest

    # --- revocation: listing and closing connections (loop thread) ----------------------

    def call_soon_and_wait(self, function: Callable[[], _T]) -> _T:
        """``function()`` on the loop thread, from any thread: at once when called there
        (a task, a hook), else handed to the loop, waiting for its result up to
        ``CALL_TIMEOUT`` seconds."""
        if threading.get_ident() == self._loop_thread or self._schedule is None:
            return function()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run(_: object) -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        try:
            self._schedule(run, None)
        except LoopClosed:
            raise RuntimeError("the app is not being served") from None
        return future.result(timeout=CALL_TIMEOUT)

    def connection_infos(self) -> list[ConnectionInfo]:
        """The open connections (accepted, not closing), on the loop thread."""
        return [self._info(conn) for conn in list(self.connections.values()) if _listed(conn)]

    def connection_info(self, connection_id: Hashable) -> ConnectionInfo | None:
        conn = self.connections.get(connection_id)
        return self._info(conn) if conn is not None and _listed(conn) else None

    def close_where(
        self, predicate: Callable[[ConnectionInfo], bool], code: int, reason: str
    ) -> int:
        """Close every open connection ``predicate`` selects with ``code`` and ``reason``;
        on the loop thread. Returns how many. ``predicate`` runs for every connection
        before any is closed, so one that raises closes none."""
        check_close(code, reason)
        chosen = [
            conn
            for conn in list(self.connections.values())
            if _listed(conn) and predicate(self._info(conn))
        ]
        for conn in chosen:
            self._close_from_server(conn, code, reason)
        if chosen:
            logger.info(
                "closed %d connection(s) with %d %r: %s",
                len(chosen),
                code,
                reason,
                ", ".join(str(conn.id) for conn in chosen),
            )
        return len(chosen)

    def _info(self, conn: Connection) -> ConnectionInfo:
        metadata = self.engine.connection_metadata(conn.id)
        return ConnectionInfo(
            id=conn.id,
            remote_address=conn.info.remote_address,
            connected_at=datetime.datetime.fromtimestamp(conn.connected_at, datetime.UTC),
            metadata=dict(metadata) if metadata is not None else {},
            request=conn.info,
        )

    def _close_from_server(self, conn: Connection, code: int, reason: str) -> None:
        """Close ``conn`` as the engine closes a slow consumer: what is queued for it is
        dropped (a revoked client gets nothing more), the close frame leaves at once, no
        further request is read.

        The engine has no event for a close the application asks for, so it is told the
        connection is gone (``ConnectionClosed``) now rather than when the closing
        handshake ends: it drops the subscriptions and runs the disconnect hooks at once,
        as for any end, and no frame of this connection, which will never be reported
        written, holds back the change feed it paces by its slowest subscriber
        (docs/core.md) while a client takes its time to answer the close."""
        if conn.closing:
            return
        self._start_close(conn, code, reason, discard_queued=True, slow_consumer=False)
        conn.engine_closed = True
        self.feed(ConnectionClosedEvent(connection_id=conn.id, **self.now()))

    # --- action handlers: none of them awaits ----------------------------------------------

    def _on_accept(self, action: AcceptConnection) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None:
            conn.decided.set()

    def _on_reject(self, action: RejectConnection) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None:
            conn.rejection = (action.status, action.reason)
            conn.decided.set()

    def _on_send(self, action: Send) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is None or conn.closing:
            return
        self._sends += 1
        frame = action.frame
        conn.outbound.append(frame)
        # _wake_writer(conn), inlined: this runs for every frame sent. Not while the
        # connection's reader holds its frames: it writes them itself (write-through).
        if not conn.holding:
            wakeup = conn.writer_wakeup
            if wakeup is not None:
                conn.writer_wakeup = None
                wakeup.set()
        # Metrics, from the frame's first bytes (metrics.py, "theory of operation"): noted
        # here, counted at the next fold.
        answers = action.answers
        if answers is not None:
            # The engine says what the frame answers (a read's success): the fold takes
            # the operation and the outcome from it, decoding neither text.
            if conn.requests:
                read_at = conn.requests.pop(0)[0]
                self._metrics_pending.append((answers, answers, self._clock() - read_at))
            return
        if frame is self._broadcast_frame:
            return
        if frame.startswith(RESPONSE_PREFIX):
            if conn.requests:
                read_at, request = conn.requests.pop(0)
                self._metrics_pending.append(
                    (
                        request,
                        frame if len(frame) <= KEEP_TEXT else response_label(frame),
                        self._clock() - read_at,
                    )
                )
        elif frame.startswith(NOTIFICATION_PREFIX):
            self.metrics.notifications_sent += 1
        elif frame.startswith(PONG_PREFIX) and conn.requests:
            read_at, request = conn.requests.pop(0)
            self._metrics_pending.append((request, PONG_OUTCOME, self._clock() - read_at))

    def _on_run_storage(self, action: RunStorage) -> None:
        operation = action.operation
        lanes = self.lanes
        if (not lanes.read_threads or lanes.never_blocks(operation)) and (
            self.tailer is None or not isinstance(operation, Create | Update | Delete)
        ):
            # Inline (a SQLite read by key, or storage_threads=0), once per such read:
            # what lanes.submit() and _report_storage() do for it, without their calls,
            # the outcome list, and the started-at entry. Its event is queued behind the
            # current actions, as feed() would queue it: this runs inside feed().
            self._pending.append(
                self._execute_inline(action.operation_id, operation, action.request_id)
            )
            return
        self._storage_started[action.operation_id] = (self._clock(), type(operation))
        if self.tailer is not None and isinstance(operation, Create | Update | Delete):
            # With a change feed: remember writes, whose completion wakes the tailer.
            self._writes_running.add(action.operation_id)
        self.lanes.submit(action)

    def _run_inline(
        self, operation_id: int, operation: StorageOperation, request_id: MessageId | None
    ) -> StorageCompleted | StorageFailed | None:
        """The engine's ``run_inline``, for its direct reads (never a write, so the
        tailer has nothing to do with them): what _on_run_storage does inline, the outcome
        returned to the engine instead of queued; ``None`` for an operation that goes to
        the threads."""
        lanes = self.lanes
        if lanes.read_threads and not lanes.never_blocks(operation):
            return None
        return self._execute_inline(operation_id, operation, request_id)

    def _execute_inline(
        self, operation_id: int, operation: StorageOperation, request_id: MessageId | None
    ) -> StorageCompleted | StorageFailed:
        """Run a storage operation on the loop: its latency noted for the metrics, its
        outcome as the event the lanes would have reported."""
        clock = self._clock
        started = clock()
        storage = self.lanes.storage
        _, result, error = execute_operation(storage, operation_id, operation, request_id)
        now = clock()
        stored = self._storage_pending
        stored.append((type(operation), now - started, error is not None))
        if len(stored) >= FOLD_AT:
            self.metrics.fold()
        if error is None:
            return StorageCompleted(
                operation_id=operation_id, result=result, now=now, wall=time.time()
            )
        return StorageFailed(operation_id=operation_id, error=error, now=now, wall=time.time())

    def _on_run_hooks(self, action: RunHooks) -> None:
        self._spawn(self._run_hooks, action)

    def _on_close(self, action: CloseConnection) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is None or conn.closing:
            return
        # The engine's one close that drops the queue is the slow consumer's (1008).
        slow_consumer = action.code == _POLICY_VIOLATION and action.discard_queued
        self._start_close(
            conn,
            action.code,
            action.reason,
            discard_queued=action.discard_queued,
            slow_consumer=slow_consumer,
        )

    def _start_close(
        self, conn: Connection, code: int, reason: str, *, discard_queued: bool, slow_consumer: bool
    ) -> None:
        conn.closing = True
        conn.close_code = code
        conn.may_read.set()
        conn.decided.set()
        if discard_queued:
            conn.outbound.clear()
        conn.outbound.append(_Close(code, reason))
        _wake_writer(conn)
        self._spawn(self._close_watchdog, conn)
        self.metrics.closed_by_server(code, slow_consumer=slow_consumer)

    def _spawn(self, function: Callable[[Any], Coroutine[Any, Any, None]], argument: Any) -> None:
        """Start a task of the runtime's own; once the services have stopped (the very end
        of a shutdown) there is nothing left for it to do."""
        if self._services is not None:
            self._services.start_soon(function, argument)

    def _on_pause(self, action: PauseReading) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None and not conn.closing and conn.may_read.is_set():
            conn.may_read = anyio.Event()

    def _on_resume(self, action: ResumeReading) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None:
            conn.may_read.set()

    def _on_send_ping(self, action: SendPing) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None and not conn.closing and conn.tasks is not None:
            # In the connection's task group: a pong that never comes must not outlive it.
            conn.tasks.start_soon(self._ping, conn)

    def _on_log(self, action: Log) -> None:
        logger.log(action.level, "%s", action.message)

    # --- background work: it reports into the engine, never raises ------------------------

    def _report_storage(self, outcomes: list[Outcome]) -> None:
        """On the loop thread: the outcomes of one lane's batch, in the order run (so
        writes, which have one lane, in commit order)."""
        # The two clocks as plain arguments, not now()'s dict spread into each event:
        # with SQLite reads by key run inline this runs once per read.
        now = self._clock()
        wall = time.time()
        if self.tailer is not None and self._writes_running:
            wrote = False
            for operation_id, _, _ in outcomes:
                if operation_id in self._writes_running:
                    self._writes_running.discard(operation_id)
                    wrote = True
            if wrote:
                # Committed: the tailer reads its log entries now rather than at its next
                # poll; the engine holds them until this write's response has been sent.
                self.tailer.wake()
        started = self._storage_started
        stored = self._storage_pending
        for operation_id, _, error in outcomes:
            submitted = started.pop(operation_id, None)
            if submitted is not None:
                stored.append((submitted[1], now - submitted[0], error is not None))
        if len(stored) >= FOLD_AT:
            self.metrics.fold()
        feed = self.feed
        for operation_id, result, error in outcomes:
            feed(
                StorageCompleted(operation_id=operation_id, result=result, now=now, wall=wall)
                if error is None
                else StorageFailed(operation_id=operation_id, error=error, now=now, wall=wall)
            )

    def _changes_logged(self, epoch: str, entries: tuple[LogEntry, ...], through: int) -> None:
        """On the loop thread: what the tailer read from the change log."""
        self.feed(ChangesLogged(epoch=epoch, entries=entries, through=through, **self.now()))

    async def _run_hooks(self, action: RunHooks) -> None:
        try:
            for hook in action.hooks:
                outcome = hook(action.context)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception as exc:
            if not isinstance(exc, HookError):
                logger.exception("%s hook raised", action.hook_type.value)
            status = exc.status if isinstance(exc, HookError) else 403
            self.feed(
                HooksFailed(
                    call_id=action.call_id, error=hook_failure(exc), status=status, **self.now()
                )
            )
            return
        self.feed(HooksCompleted(call_id=action.call_id, **self.now()))

    async def _ping(self, conn: Connection) -> None:
        try:
            await conn.transport.ping()
        except TransportClosed:
            return
        if conn.id in self.connections and not conn.closing:
            self.feed(PongReceived(connection_id=conn.id, **self.now()))

    async def _close_watchdog(self, conn: Connection) -> None:
        await anyio.sleep(self.close_timeout)
        conn.scope.cancel()

    # --- connections ------------------------------------------------------------------------

    async def run_connection(self, transport: Transport, info: RequestInfo) -> None:
        """Run one client's connection from its handshake to its end; a transport calls
        this for each WebSocket handshake on the configured path."""
        if not self.running or self._shutdown_started:
            await transport.reject(503, "server not running")
            return
        conn = Connection(next(self._ids), info, transport)
        self.connections[conn.id] = conn
        try:
            self.feed(ConnectionOpened(connection_id=conn.id, request=info, **self.now()))
            await conn.decided.wait()
            if conn.rejection is not None:
                status, reason = conn.rejection
                self.metrics.connections_refused += 1
                logger.info(
                    "connection %s from %s refused: %s %s",
                    conn.id,
                    info.remote_address,
                    status,
                    reason,
                    extra=_log_fields(conn, status=status),
                )
                await transport.reject(status, reason)
                return
            with conn.scope:
                await transport.accept()
                conn.accepted = True
                conn.connected_at = time.time()
                self.metrics.connections_opened += 1
                logger.info(
                    "connection %s opened from %s",
                    conn.id,
                    info.remote_address,
                    extra=_log_fields(conn),
                )
                async with anyio.create_task_group() as tasks:
                    conn.tasks = tasks
                    try:
                        tasks.start_soon(self._writer, conn)
                        await self._reader(conn)
                    finally:
                        # The group winds down from here: a keepalive ping the timer
                        # sends meanwhile must not join it ("closed to new arrivals"
                        # raised out of the timer and took the whole server down).
                        conn.tasks = None
                    if not conn.closing:
                        tasks.cancel_scope.cancel()
        except TransportClosed:
            pass
        finally:
            del self.connections[conn.id]
            if not conn.engine_closed:
                self.feed(ConnectionClosedEvent(connection_id=conn.id, **self.now()))
            if conn.accepted:
                how = (
                    f"code {conn.close_code}"
                    if conn.close_code is not None
                    else transport.closed_by_peer()
                )
                logger.info(
                    "connection %s closed (%s)", conn.id, how, extra=_log_fields(conn, close=how)
                )
            self._connection_ended.set()

    async def _reader(self, conn: Connection) -> None:
        """Reads the connection's messages into the engine, and writes their replies itself
        when the writer is idle (write-through): one task switch less per request.

        The frames the engine queues while one of this connection's messages is fed are
        held (``conn.holding``: they do not wake the writer); the reader writes them before
        it next waits, for a message or for the engine to resume reading, or once a batch
        (``WRITE_BATCH``) is held. So a reply leaves no later than the writer would have
        sent it, and replies to messages already at hand leave together."""
        # Locals, and the clocks as plain arguments rather than now()'s dict: the loop
        # below runs once per message. (run() has set the clock before any connection.)
        transport = conn.transport
        receive = transport.receive
        receive_nowait: Callable[[], str | bytes | None] | None = getattr(
            transport, "receive_nowait", None
        )
        buffered: Callable[[], int] | None = getattr(transport, "buffered", None)
        outbound = conn.outbound
        requests = conn.requests
        connection_id = conn.id
        clock = self._clock
        feed_message = self._feed_message
        wall_clock = time.time
        # The reads by key the storage runs on this thread (inline) for the messages
        # already at hand share one read transaction (PeeweeStorage.hold_reads): from the
        # second message of a batch, released before anything is awaited, so that no read
        # sees a state older than the moment its request was received, and no other task
        # (another connection's reader) ever runs inside the hold.
        hold_reads = self._hold_reads
        release_reads = self._release_reads
        holding = False
        try:
            while True:
                if not conn.may_read.is_set():
                    if holding:
                        release_reads()
                        holding = False
                    if outbound:
                        await self._write_through(conn)
                    # Not Event.wait() unconditionally: on a set event it still yields to
                    # the scheduler, which made two run-loop rounds per message, not one.
                    await conn.may_read.wait()
                data = receive_nowait() if receive_nowait is not None else None
                if data is None:
                    if holding:
                        release_reads()
                        holding = False
                    if outbound and (
                        buffered is None or len(outbound) >= WRITE_BATCH or not buffered()
                    ):
                        await self._write_through(conn)
                    try:
                        data = await receive()
                    except TransportClosed:
                        return
                    if data is None:
                        if outbound:
                            # What the writer would have written had it run first.
                            await self._write_through(conn)
                        return
                else:
                    if len(outbound) >= WRITE_BATCH:
                        if holding:
                            release_reads()
                            holding = False
                        await self._write_through(conn)
                    # A hold costs two statements, so it pays from about three reads:
                    # this message and at least two more at hand, where the transport
                    # can tell (a transport without buffered() may hold for fewer).
                    if (
                        not holding
                        and hold_reads is not None
                        and (buffered is None or buffered() >= HOLD_READS_FROM - 1)
                    ):
                        hold_reads()
                        holding = True
                if not conn.closing:
                    now = clock()
                    # The text itself (labelled at the metrics' next fold) unless long.
                    requests.append((now, data if len(data) <= KEEP_TEXT else request_label(data)))
                    conn.holding = True
                    try:
                        feed_message(connection_id, data, now, wall_clock())
                    finally:
                        conn.holding = False
        except _WriteFailed:
            return
        finally:
            if holding:
                release_reads()

    async def _write_through(self, conn: Connection) -> None:
        """Write a batch of the queued frames from the reader's task, if the writer is idle
        (waiting on an empty queue, as the queue was when these frames arrived); else
        the writer, busy or woken, writes them itself. Exactly what the writer does with a
        batch (one transport.send, then FramesWritten), while the writer stays asleep:
        ``conn.writer_wakeup`` is cleared meanwhile, so that nothing wakes it, and set
        afterwards if frames (or a close) were queued during the write.
        Raises _WriteFailed when the transport is closed (the writer's ending too)."""
        wakeup = conn.writer_wakeup
        if wakeup is None:
            return
        conn.writer_wakeup = None
        outbound = conn.outbound
        if conn.closing:
            # A close is the writer's to carry out (the close frame after the frames).
            wakeup.set()
            return
        try:
            frames: list[str] = []
            while outbound and len(frames) < WRITE_BATCH:
                item = outbound[0]
                if isinstance(item, _Close):  # none while not closing; to be safe
                    break
                outbound.popleft()
                frames.append(item)
            if frames:
                await conn.transport.send(frames)
                if not conn.closing:
                    self._frames_written(conn.id, len(frames))
                if len(self._metrics_pending) >= FOLD_AT:
                    self.metrics.fold()
        except TransportClosed:
            # As the writer: the connection ends.
            conn.scope.cancel()
            raise _WriteFailed from None
        finally:
            if outbound:
                wakeup.set()
            else:
                conn.writer_wakeup = wakeup

    async def _writer(self, conn: Connection) -> None:
        outbound = conn.outbound
        transport = conn.transport
        # anyio.Event() asks sniffio for the running library on each call; one at a time,
        # the writer makes one per message: make its backend's class directly, the very
        # class anyio.Event() returns.
        new_event = type(anyio.Event())
        try:
            while True:
                if not outbound:
                    conn.writer_wakeup = wakeup = new_event()
                    await wakeup.wait()
                    continue
                frames: list[str] = []
                close: _Close | None = None
                while outbound and len(frames) < WRITE_BATCH:
                    item = outbound.popleft()
                    if isinstance(item, _Close):
                        close = item
                        break
                    frames.append(item)
                if frames:
                    await transport.send(frames)
                    if not conn.closing:
                        self._frames_written(conn.id, len(frames))
                    if len(self._metrics_pending) >= FOLD_AT:
                        self.metrics.fold()
                if close is not None:
                    await transport.close(close.code, close.reason)
                    break
        except TransportClosed:
            pass
        conn.scope.cancel()


class _WriteFailed(Exception):
    """A write-through found the transport closed; the connection's scope is cancelled."""


def _nothing() -> None:
    """Release reads never held."""


def _listed(conn: Connection) -> bool:
    """Whether App.connections shows ``conn``: accepted, and not closing."""
    return conn.accepted and not conn.closing


def _log_fields(conn: Connection, **more: Any) -> dict[str, Any]:
    """Extra fields of a connection's log lines (``--log-format json`` writes them)."""
    return {"connection_id": conn.id, "remote_address": conn.info.remote_address, **more}


def check_close(code: int, reason: str) -> None:
    """``ValueError`` unless ``code`` and ``reason`` can go in a close frame."""
    if code not in CLOSE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"close code {code} is not one an application may send (RFC 6455 7.4)")
    if len(reason.encode()) > MAX_CLOSE_REASON:
        raise ValueError(f"a close reason is at most {MAX_CLOSE_REASON} bytes of UTF-8")


def _wake_writer(conn: Connection) -> None:
    """Wake the connection's writer if it waits on an empty queue."""
    wakeup = conn.writer_wakeup
    if wakeup is not None:
        conn.writer_wakeup = None
        wakeup.set()
