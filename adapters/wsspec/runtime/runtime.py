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
task group; a timer task feeds ``TimePassed`` at the engine's deadlines.  Time is the
loop's monotonic clock (``anyio.current_time``: trio's ``MockClock`` drives it in tests);
response timestamps use the wall clock.  Background work reports failures into the engine
as events; nothing raises into the caller's task group.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
    TimePassed,
    Update,
    hook_failure,
)
from wsspec_core import ConnectionClosed as ConnectionClosedEvent

from .loop import current_clock
from .storage_lanes import Outcome, StorageLanes
from .tailer import tailer_for

if TYPE_CHECKING:
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


class _Close:
    """The close sentinel in a connection's outbound queue."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    """The runtime's state of one client."""

    __slots__ = (
        "accepted",
        "close_code",
        "closing",
        "decided",
        "id",
        "info",
        "may_read",
        "outbound",
        "rejection",
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
        #: Set by a Send for a writer waiting on an empty queue.
        self.writer_wakeup: anyio.Event | None = None
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
        change_feed = bool(getattr(app, "change_feed", False))
        # Without a feed the engine is built exactly as before the feed existed.
        feed_option = {"change_feed": True} if change_feed else {}
        self.engine = Engine(app.registry, hooks=app.hooks, limits=app.limits, **feed_option)
        self.close_timeout = close_timeout
        self.shutdown_timeout = shutdown_timeout
        self.connections: dict[Hashable, Connection] = {}
        self.lanes = StorageLanes(app.storage, app.storage_threads, self._report_storage)
        #: With a change feed: the change-log reader, and the writes whose completion
        #: wakes it (their log entries are there by then).
        self.tailer = (
            tailer_for(app.storage, self._changes_logged, getattr(app, "retention", None))
            if change_feed
            else None
        )
        self._writes_running: set[int] = set()
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
            RunStorage: self._on_run_storage if change_feed else self.lanes.submit,
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
            while self._pending:
                event = self._pending.popleft()
                try:
                    actions = self.engine.handle(event)
                except Exception:
                    # A bug in wsspec_core (docs/core.md "Peer errors, careless hooks and
                    # our bugs"). Raised here it would end a connection's task group, or
                    # the whole event loop from a storage callback; log it, keep serving.
                    logger.exception("bug: the engine raised on %s", type(event).__name__)
                    continue
                for action in actions:
                    self._dispatch[type(action)](action)
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
        self.feed(BroadcastRequested(frame=frame, predicate=predicate, **self.now()))
        return self._sends - before

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
        conn.outbound.append(action.frame)
        _wake_writer(conn)

    def _on_run_storage(self, action: RunStorage) -> None:
        """With a change feed: remember writes, whose completion wakes the tailer."""
        if isinstance(action.operation, Create | Update | Delete):
            self._writes_running.add(action.operation_id)
        self.lanes.submit(action)

    def _on_run_hooks(self, action: RunHooks) -> None:
        self._spawn(self._run_hooks, action)

    def _on_close(self, action: CloseConnection) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is None or conn.closing:
            return
        conn.closing = True
        conn.close_code = action.code
        conn.may_read.set()
        conn.decided.set()
        if action.discard_queued:
            conn.outbound.clear()
        conn.outbound.append(_Close(action.code, action.reason))
        _wake_writer(conn)
        self._spawn(self._close_watchdog, conn)

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
        clocks = self.now()
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
        for operation_id, result, error in outcomes:
            self.feed(
                StorageCompleted(operation_id=operation_id, result=result, **clocks)
                if error is None
                else StorageFailed(operation_id=operation_id, error=error, **clocks)
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
                logger.info(
                    "connection %s from %s refused: %s %s",
                    conn.id,
                    info.remote_address,
                    status,
                    reason,
                )
                await transport.reject(status, reason)
                return
            with conn.scope:
                await transport.accept()
                conn.accepted = True
                logger.info("connection %s opened from %s", conn.id, info.remote_address)
                async with anyio.create_task_group() as tasks:
                    conn.tasks = tasks
                    tasks.start_soon(self._writer, conn)
                    await self._reader(conn)
                    if not conn.closing:
                        tasks.cancel_scope.cancel()
        except TransportClosed:
            pass
        finally:
            del self.connections[conn.id]
            self.feed(ConnectionClosedEvent(connection_id=conn.id, **self.now()))
            if conn.accepted:
                logger.info(
                    "connection %s closed (%s)",
                    conn.id,
                    conn.close_code if conn.close_code is not None else transport.closed_by_peer(),
                )
            self._connection_ended.set()

    async def _reader(self, conn: Connection) -> None:
        transport = conn.transport
        while True:
            if not conn.may_read.is_set():
                # Not Event.wait() unconditionally: on a set event it still yields to the
                # scheduler, which made two run-loop rounds per message instead of one.
                await conn.may_read.wait()
            try:
                data = await transport.receive()
            except TransportClosed:
                return
            if data is None:
                return
            if not conn.closing:
                self.feed(MessageReceived(connection_id=conn.id, data=data, **self.now()))

    async def _writer(self, conn: Connection) -> None:
        outbound = conn.outbound
        transport = conn.transport
        try:
            while True:
                if not outbound:
                    conn.writer_wakeup = wakeup = anyio.Event()
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
                        self.feed(
                            FramesWritten(connection_id=conn.id, count=len(frames), **self.now())
                        )
                if close is not None:
                    await transport.close(close.code, close.reason)
                    break
        except TransportClosed:
            pass
        conn.scope.cancel()


def _wake_writer(conn: Connection) -> None:
    """Wake the connection's writer if it waits on an empty queue."""
    wakeup = conn.writer_wakeup
    if wakeup is not None:
        conn.writer_wakeup = None
        wakeup.set()
