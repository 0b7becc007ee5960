"""The WebSocketSpec engine: events in, actions out.

Theory of operation
-------------------
Each connection keeps its received messages as a list of *runs*, in arrival order. A run
is one request working its way through its steps (``before_handle`` hooks, the operation's
before-hooks, one storage operation, its after-hooks, the response). Every step that needs
IO is an action with an id the engine allocated (``RunStorage.operation_id``,
``RunHooks.call_id``); the matching ``...Completed``/``...Failed`` event resumes the run.
When no hook is registered for a step, the step is skipped within the same ``handle``.

Scheduling (docs/protocol.md "Order"): consecutive reads of a connection run together, up to
``Limits.max_in_flight``; a write or a subscription change starts only when every run before
it has finished, and nothing after it starts until it has. Responses leave strictly in
arrival order: a finished run waits for the runs before it. So a client that pipelines a
create and a read of the same row sees the row, and each client's responses come back in
request order.

Notifications are routed when a write *commits* (its ``StorageCompleted`` arrives), to the
subscriptions live at that moment, so every subscription sees changes in commit order.
The writing connection's own notifications are held back until its response has gone out
(docs/protocol.md "Subscriptions and notifications").

An exception escaping :meth:`Engine.handle` is a bug in wsspec_core (or an adapter handing
it an event that names an id it never issued); every mistake of a client becomes an error
response or a close action.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import attrs

from ._actions import (
    LOG_ERROR,
    LOG_WARNING,
    AcceptConnection,
    Action,
    CloseConnection,
    Log,
    PauseReading,
    RejectConnection,
    ResumeReading,
    RunHooks,
    RunStorage,
    Send,
    SendPing,
)
from ._codec import decode, encode, format_timestamp
from ._config import Limits
from ._entities import Entity, EntityRegistry, ResolutionError
from ._events import (
    BroadcastRequested,
    ChangeCommitted,
    ConnectionClosed,
    ConnectionOpened,
    Event,
    FramesWritten,
    HooksCompleted,
    HooksFailed,
    MessageReceived,
    PongReceived,
    ShutdownRequested,
    StorageCompleted,
    StorageFailed,
    TimePassed,
)
from ._filters import compile_filters
from ._hooks import OPERATION_HOOKS, HookContext, HookRegistry, HookType, RequestInfo
from ._messages import (
    WRITE_OPERATIONS,
    DecodeError,
    ErrorInfo,
    MessageId,
    Notification,
    Operation,
    Ping,
    Pong,
    QueryOptions,
    Request,
    Response,
    Subscribe,
    Unsubscribe,
)
from ._options import (
    coerce_change_row,
    coerce_key,
    coerce_record,
    compile_read,
    compile_selection,
)
from ._query import (
    Create,
    Delete,
    InvalidRequest,
    ListResult,
    ReadList,
    ReadOne,
    Row,
    StorageError,
    StorageErrorKind,
    StorageOperation,
    Update,
)
from ._subscriptions import Subscription, SubscriptionIndex

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

#: The error code of a failed storage operation, by operation (docs/protocol.md "Errors").
_STORAGE_ERROR_CODES: dict[Operation, str] = {
    Operation.READ: "read_error",
    Operation.CREATE: "create_error",
    Operation.UPDATE: "update_error",
    Operation.DELETE: "delete_error",
}


class _ConnState(enum.Enum):
    OPENING = "opening"  # before_connect hooks running
    OPEN = "open"
    CLOSING = "closing"  # we sent CloseConnection; waiting for ConnectionClosed


_NO_OPTIONS = QueryOptions()


class _RunKind(enum.Enum):
    DONE = "done"  # answered on arrival (errors, ping)
    SHARED = "shared"  # reads and meta: may run alongside other shared runs
    EXCLUSIVE = "exclusive"  # writes and subscription changes: run alone


class _Run:
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
        "hooks_ran",
        "key",
        "kind",
        "message",
        "options",
        "record_id",
        "response",
        "result",
        "started",
        "subscription_id",
    )

    def __init__(
        self,
        conn: _Connection,
        kind: _RunKind,
        message: Request | Subscribe | Unsubscribe | None = None,
        entity: Entity | None = None,
        *,
        response: str | None = None,
        options: QueryOptions = _NO_OPTIONS,
    ) -> None:
        self.conn = conn
        self.kind = kind
        self.message = message
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
        #: Set when a write of this run committed: its response releases held notifications.
        self.committed = False


@attrs.define(eq=False)
class _Connection:
    id: Hashable
    request: RequestInfo
    state: _ConnState
    metadata: dict[str, Any] = attrs.Factory(dict)
    runs: list[_Run] = attrs.Factory(list)
    #: Runs started and not finished.
    in_flight: int = 0
    #: Runs received and not yet started, oldest first (every run before them started).
    waiting: collections.deque[_Run] = attrs.Factory(collections.deque)
    #: A write or subscription change is running: nothing else may start.
    exclusive_running: bool = False
    paused: bool = False
    #: Re-entrancy guard of `Engine._pump` (a run may finish while runs are being started).
    pumping: bool = False
    repump: bool = False
    subscriptions: dict[str, Subscription] = attrs.Factory(dict)
    #: Notification frames held until this connection's pending write response is sent.
    held: list[str] | None = None
    #: Frames sent and not yet reported written (``FramesWritten``).
    backlog: int = 0
    #: Room beyond Limits.outbound_queue for a burst of held notifications just released:
    #: the client could not have read them while they were held. Shrinks as frames are
    #: written.
    burst_allowance: int = 0
    #: Why the connection is to be closed as a slow consumer, once this event is done.
    overflow: str | None = None
    last_seen: float = 0.0
    ping_sent_at: float | None = None
    tokens: float = 0.0
    tokens_at: float = 0.0


_Continuation = Callable[[], None]
_T = TypeVar("_T")

#: Compiled queries kept per engine; the cache is cleared when it reaches this size.
_COMPILED_CACHE_SIZE = 1024


class Engine:
    """The sans-IO WebSocketSpec server engine. See docs/core.md.

    ``handle(event)`` returns the complete list of actions the event causes, with the
    engine's state already updated. Not thread-safe: call it from one thread (the event
    loop's); storage operations and hooks may run anywhere and report back through it.
    """

    def __init__(
        self,
        registry: EntityRegistry,
        *,
        hooks: HookRegistry | None = None,
        limits: Limits | None = None,
    ) -> None:
        registry.validate()
        self.registry = registry
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.limits = limits if limits is not None else Limits()
        self._connections: dict[Hashable, _Connection] = {}
        self._subscriptions = SubscriptionIndex()
        self._next_id = 0
        self._storage_pending: dict[int, _Run] = {}
        self._hooks_pending: dict[int, tuple[_Run | None, HookContext, _Continuation]] = {}
        self._out: list[Action] = []
        #: Connections found slow consumers during this event (their ``overflow`` says why).
        self._overflowed: list[_Connection] = []
        self._now = 0.0
        self._wall = 0.0
        self._shutting_down = False
        self._next_sweep: float | None = None
        self._timestamp_of: tuple[int, str] = (-1, "")
        self._compiled_cache: dict[tuple[str, str, QueryOptions, tuple[Any, ...]], Any] = {}

    # --- public surface ----------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections accepted and not yet closed."""
        return sum(1 for c in self._connections.values() if c.state is _ConnState.OPEN)

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def connection_metadata(self, connection_id: Hashable) -> dict[str, Any] | None:
        """The metadata dictionary hooks see for this connection, if it is open."""
        conn = self._connections.get(connection_id)
        return conn.metadata if conn is not None else None

    def next_deadline(self) -> float | None:
        """When to send ``TimePassed`` next (same clock as the events' ``now``), or None."""
        return self._next_sweep

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event``; return the actions it causes, in the order to carry them out."""
        self._out = []
        self._now = event.now
        self._wall = event.now if event.wall is None else event.wall
        handler = self._HANDLERS[type(event)]
        handler(self, event)
        if self._overflowed:
            self._close_slow_consumers()
        out, self._out = self._out, []
        return out

    # --- connection lifecycle ----------------------------------------------------

    def _on_opened(self, event: ConnectionOpened) -> None:
        if event.connection_id in self._connections:
            raise ValueError(f"connection id {event.connection_id!r} is already open")
        if self._shutting_down:
            self._out.append(
                RejectConnection(
                    connection_id=event.connection_id, status=503, reason="server shutting down"
                )
            )
            return
        conn = _Connection(id=event.connection_id, request=event.request, state=_ConnState.OPENING)
        conn.last_seen = conn.tokens_at = event.now
        conn.tokens = float(self.limits.rate_burst)
        self._connections[conn.id] = conn
        context = self._connection_context(conn, HookType.BEFORE_CONNECT)
        self._call_hooks(None, HookType.BEFORE_CONNECT, context, lambda: self._accept(conn))

    def _accept(self, conn: _Connection) -> None:
        if conn.state is not _ConnState.OPENING:  # closed while before_connect ran
            return
        conn.state = _ConnState.OPEN
        conn.last_seen = self._now
        self._out.append(AcceptConnection(connection_id=conn.id))
        self._schedule_sweep()
        context = self._connection_context(conn, HookType.AFTER_CONNECT)
        self._call_hooks(None, HookType.AFTER_CONNECT, context, lambda: None)

    def _timestamp(self) -> str:
        """The RFC 3339 form of the current event's wall-clock time, formatted once per
        millisecond (the precision timestamps carry): a busy server formats it once for
        many events."""
        millis = round(self._wall * 1000)
        known, text = self._timestamp_of
        if known != millis:
            text = format_timestamp(self._wall)
            self._timestamp_of = (millis, text)
        return text

    def _compiled(
        self, kind: str, entity: Entity, options: QueryOptions, build: Callable[[], _T]
    ) -> _T:
        """``build()``, remembered per ``(kind, entity, options)``.

        Compiling options depends only on them, the entity and the engine's fixed registry
        and limits, so clients repeating a query shape skip validation. Options holding
        lists (``in`` values) are not hashable and are simply compiled each time.
        """
        try:
            # Python equates 1, 1.0 and True (and 0.0 with -0.0), which coerce differently
            # (True is refused on an integer column; 5.0 is "5.0" on a text column): the
            # key tells the values apart by type, and floats by their exact text.
            values = []
            for spec in options.filters:
                value = spec.value
                kind_of = type(value)
                values.append((kind_of, repr(value)) if kind_of is float else (kind_of, value))
            key = (kind, entity.qualified_name, options, tuple(values))
            found = self._compiled_cache.get(key)
        except TypeError:
            return build()
        if found is None:
            found = build()
            if len(self._compiled_cache) >= _COMPILED_CACHE_SIZE:
                self._compiled_cache.clear()
            self._compiled_cache[key] = found
        return found

    def _connection_context(self, conn: _Connection, hook_type: HookType) -> HookContext:
        return HookContext(
            hook_type=hook_type,
            connection_id=conn.id,
            metadata=conn.metadata,
            request_info=conn.request,
        )

    def _on_closed(self, event: ConnectionClosed) -> None:
        conn = self._connections.pop(event.connection_id, None)
        if conn is None:
            return
        was_open = conn.state is not _ConnState.OPENING
        self._drop(conn)
        if was_open:
            context = self._connection_context(conn, HookType.BEFORE_DISCONNECT)
            after = self._connection_context(conn, HookType.AFTER_DISCONNECT)
            self._call_hooks(
                None,
                HookType.BEFORE_DISCONNECT,
                context,
                lambda: self._call_hooks(None, HookType.AFTER_DISCONNECT, after, lambda: None),
            )
        self._schedule_sweep()

    def _drop(self, conn: _Connection) -> None:
        """Forget everything of a connection that is closing or closed.

        Runs already executing keep their storage operation: a write still commits and is
        still notified to others; only the answer to this connection is dropped.
        """
        conn.state = _ConnState.CLOSING
        for subscription_id in list(conn.subscriptions):
            self._subscriptions.remove(subscription_id)
        conn.subscriptions.clear()
        conn.runs = [run for run in conn.runs if run.started and run.response is None]
        conn.waiting.clear()
        conn.held = None

    def _close(
        self, conn: _Connection, code: int, reason: str, *, discard_queued: bool = False
    ) -> None:
        if conn.state is _ConnState.CLOSING:
            return
        if not discard_queued:
            self._flush(conn)
        self._drop(conn)
        self._out.append(
            CloseConnection(
                connection_id=conn.id, code=code, reason=reason, discard_queued=discard_queued
            )
        )

    # --- the outbound side (docs/core.md "Flow control") ---------------------------

    def _send(self, conn: _Connection, frame: str) -> None:
        """Ask for ``frame`` to be sent, and count it in the connection's backlog.

        A backlog past ``Limits.outbound_queue`` (plus the allowance of a burst of held
        notifications) means the client is not reading what it is sent: the connection is
        closed once this event's actions are complete (closing here would change the runs
        being flushed)."""
        self._out.append(Send(connection_id=conn.id, frame=frame))
        conn.backlog += 1
        if conn.backlog > self.limits.outbound_queue + conn.burst_allowance:
            self._slow_consumer(conn, "outbound queue full: client is not reading")

    def _hold(self, conn: _Connection, frame: str) -> None:
        """Hold a notification behind the connection's own write response; more than
        ``Limits.outbound_queue`` of them is a client that cannot keep up (its own write's
        hooks take that long) and closes it like a full queue: held frames are memory too."""
        assert conn.held is not None
        conn.held.append(frame)
        if len(conn.held) > self.limits.outbound_queue:
            self._slow_consumer(conn, "notifications backed up: client is not keeping up")

    def _slow_consumer(self, conn: _Connection, reason: str) -> None:
        if conn.overflow is None:
            conn.overflow = reason
            self._overflowed.append(conn)

    def _close_slow_consumers(self) -> None:
        overflowed, self._overflowed = self._overflowed, []
        for conn in overflowed:
            if conn.state is _ConnState.OPEN and conn.overflow is not None:
                # Its queued frames cannot reach it before the close frame: drop them.
                self._close(conn, CLOSE_POLICY_VIOLATION, conn.overflow, discard_queued=True)

    def _on_frames_written(self, event: FramesWritten) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is None:
            return
        conn.backlog = max(0, conn.backlog - event.count)
        conn.burst_allowance = max(0, conn.burst_allowance - event.count)
        if conn.paused:
            self._update_reading(conn)

    def _update_reading(self, conn: _Connection) -> None:
        """Pause reading a connection's requests at either high-water mark (requests read
        and not answered; frames not yet written), resume below half of both. The
        backlog mark leaves room for the replies owed to requests already read, so a
        client that reads what it is sent never overflows (``Limits`` checks this)."""
        if conn.state is not _ConnState.OPEN or self._shutting_down:
            return
        limits = self.limits
        if conn.paused:
            if (
                len(conn.runs) <= limits.requests_read_ahead // 2
                and conn.backlog <= limits.backlog_high_water // 2
            ):
                conn.paused = False
                self._out.append(ResumeReading(connection_id=conn.id))
        elif (
            len(conn.runs) >= limits.requests_read_ahead
            or conn.backlog >= limits.backlog_high_water
        ):
            conn.paused = True
            self._out.append(PauseReading(connection_id=conn.id))

    def _on_broadcast(self, event: BroadcastRequested) -> None:
        for conn in list(self._connections.values()):
            if conn.state is not _ConnState.OPEN:
                continue
            if event.predicate is not None:
                try:
                    wanted = event.predicate(conn.metadata)
                except Exception as exc:
                    self._log(LOG_ERROR, f"broadcast predicate raised {exc!r}; skipped {conn.id!r}")
                    continue
                if not wanted:
                    continue
            self._send(conn, event.frame)

    def _log(self, level: int, message: str) -> None:
        self._out.append(Log(level=level, message=message))

    def _on_pong(self, event: PongReceived) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is not None:
            conn.last_seen = event.now
            conn.ping_sent_at = None

    def _on_time(self, event: TimePassed) -> None:
        if self._next_sweep is None or event.now < self._next_sweep:
            return
        interval = self.limits.keepalive_interval
        if interval is not None:
            for conn in list(self._connections.values()):
                if conn.state is not _ConnState.OPEN:
                    continue
                if conn.ping_sent_at is not None:
                    if event.now - conn.ping_sent_at >= self.limits.keepalive_timeout:
                        self._close(conn, CLOSE_INTERNAL_ERROR, "keepalive timeout")
                elif event.now - conn.last_seen >= interval:
                    conn.ping_sent_at = event.now
                    self._out.append(SendPing(connection_id=conn.id))
        self._next_sweep = None
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        """Keepalive runs as a periodic sweep: precise to half the shorter period, and
        one timer for the whole engine rather than one per connection."""
        interval = self.limits.keepalive_interval
        if interval is None or not self._connections:
            self._next_sweep = None
            return
        if self._next_sweep is None:
            period = min(interval, self.limits.keepalive_timeout) / 2
            self._next_sweep = self._now + period

    def _on_shutdown(self, event: ShutdownRequested) -> None:
        self._shutting_down = True
        for conn in list(self._connections.values()):
            if conn.state is _ConnState.OPENING:
                conn.state = _ConnState.CLOSING
                self._out.append(
                    RejectConnection(
                        connection_id=conn.id, status=503, reason="server shutting down"
                    )
                )
            elif conn.state is _ConnState.OPEN:
                if not conn.paused:
                    conn.paused = True
                    self._out.append(PauseReading(connection_id=conn.id))
                self._close_if_idle(conn)

    def _close_if_idle(self, conn: _Connection) -> None:
        if self._shutting_down and conn.state is _ConnState.OPEN and not conn.runs:
            self._close(conn, CLOSE_GOING_AWAY, "server shutting down")

    # --- receiving requests ------------------------------------------------------

    def _on_message(self, event: MessageReceived) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is None or conn.state is not _ConnState.OPEN or self._shutting_down:
            return  # late frames of a closing connection, or after shutdown: not taken
        conn.last_seen = event.now
        conn.ping_sent_at = None
        limit = self.limits.max_message_bytes
        if len(event.data) * 4 > limit and _size_in_bytes(event.data, limit) > limit:
            self._close(conn, CLOSE_MESSAGE_TOO_BIG, "message too big")
            return
        run = self._admit(conn, event.data)
        conn.runs.append(run)
        if run.kind is not _RunKind.DONE:
            conn.waiting.append(run)
        if not conn.paused:
            self._update_reading(conn)
        self._pump(conn)

    def _rate_limited(self, conn: _Connection) -> bool:
        rate = self.limits.rate_limit
        if rate is None:
            return False
        burst = float(self.limits.rate_burst)
        conn.tokens = min(burst, conn.tokens + (self._now - conn.tokens_at) * rate)
        conn.tokens_at = self._now
        if conn.tokens < 1.0:
            return True
        conn.tokens -= 1.0
        return False

    def _admit(self, conn: _Connection, data: str | bytes) -> _Run:
        """Decode and validate a message into a run; mistakes become finished runs."""
        message = decode(data)
        if isinstance(message, DecodeError):
            error = message.error
            if message.entity_ref is not None:
                resolved = self.registry.resolve(*message.entity_ref)
                if isinstance(resolved, ResolutionError):
                    error = _not_found_error(resolved)
            return self._answered(conn, message.id, error)
        if isinstance(message, Ping):
            return _Run(
                conn,
                _RunKind.DONE,
                response=encode(Pong(id=message.id, timestamp=self._timestamp())),
            )
        if self._rate_limited(conn):
            return self._answered(
                conn, message.id, ErrorInfo(code="rate_limited", message="too many requests")
            )
        try:
            return self._validate(conn, message)
        except InvalidRequest as exc:
            return self._answered(conn, message.id, exc.error)

    def _answered(self, conn: _Connection, message_id: MessageId, error: ErrorInfo) -> _Run:
        return _Run(
            conn,
            _RunKind.DONE,
            response=self._encode_response(self._error_response(message_id, error)),
        )

    def _resolve(self, schema: str | None, name: str) -> Entity:
        resolved = self.registry.resolve(schema, name)
        if isinstance(resolved, ResolutionError):
            error = _not_found_error(resolved)
            raise InvalidRequest(error.code, error.message, error.details)
        return resolved

    def _validate(self, conn: _Connection, message: Request | Subscribe | Unsubscribe) -> _Run:
        if isinstance(message, Unsubscribe):
            run = _Run(conn, _RunKind.EXCLUSIVE, message)
            run.subscription_id = message.subscription_id
            return run
        if isinstance(message, Subscribe):
            entity = self._resolve(message.schema, message.entity)
            compile_filters(entity, message.options.filters)
            return _Run(conn, _RunKind.EXCLUSIVE, message, entity, options=message.options)
        if message.operation is Operation.META and not message.entity:
            return _Run(conn, _RunKind.SHARED, message)
        entity = self._resolve(message.schema, message.entity)
        run = _Run(conn, _RunKind.SHARED, message, entity, options=message.options)
        if message.operation in WRITE_OPERATIONS:
            run.kind = _RunKind.EXCLUSIVE
            run.data = _copy_data(message.data)
        run.record_id = message.record_id
        self._check(run)
        return run

    def _check(self, run: _Run) -> None:
        """Validate what the steps will use; raises InvalidRequest. Runs on arrival and
        again after before-hooks (which may have changed options, data or record id)."""
        assert isinstance(run.message, Request) and run.entity is not None
        entity = run.entity
        operation = run.message.operation
        if operation is Operation.META:
            return
        options = run.options
        if operation is Operation.READ and run.record_id is None:
            run.key = self._compiled(
                "read",
                entity,
                options,
                lambda: compile_read(entity, options, self.registry, self.limits),
            )
            return
        filters = self._compiled(
            "filters", entity, options, lambda: compile_filters(entity, options.filters)
        )
        if operation is Operation.CREATE:
            records = run.data if isinstance(run.data, list) else [run.data]
            if not records:
                raise InvalidRequest("invalid_message", "create needs at least one record")
            if len(records) > self.limits.max_batch_size:
                raise InvalidRequest(
                    "invalid_message",
                    f"a batch create holds at most {self.limits.max_batch_size} records",
                )
            rows = tuple(coerce_record(entity, record, partial=False) for record in records)
            run.key = Create(entity=entity, rows=rows)
            return
        key = coerce_key(entity, run.record_id)
        if operation is Operation.READ:
            selection = self._compiled(
                "selection",
                entity,
                options,
                lambda: compile_selection(entity, options, self.registry),
            )
            run.key = ReadOne(entity=entity, key=key, filters=filters, selection=selection)
        elif operation is Operation.UPDATE:
            changes = coerce_record(entity, run.data, partial=True)
            run.key = Update(entity=entity, key=key, changes=changes, filters=filters)
        else:
            run.key = Delete(entity=entity, key=key, filters=filters)

    # --- scheduling --------------------------------------------------------------

    def _pump(self, conn: _Connection) -> None:
        """Start every run that may start now, in order; then send what is finished.

        Starting a run can finish it at once (no hooks to call), which asks for another
        pump; that request is noted and served by the loop here instead of recursing.
        """
        if conn.pumping:
            conn.repump = True
            return
        conn.pumping = True
        try:
            while conn.state is _ConnState.OPEN:
                conn.repump = False
                if conn.waiting:
                    self._start_waiting(conn)
                self._flush(conn)
                if not conn.repump:
                    break
        finally:
            conn.pumping = False

    def _start_waiting(self, conn: _Connection) -> None:
        """Start waiting runs in arrival order while the rules of docs/protocol.md "Order"
        allow: shared runs up to ``max_in_flight``; an exclusive run only when nothing runs
        (every run before it has finished), and nothing beside it."""
        limit = self.limits.max_in_flight
        waiting = conn.waiting
        while waiting and not conn.exclusive_running:
            run = waiting[0]
            if run.kind is _RunKind.EXCLUSIVE:
                if conn.in_flight:
                    return
                conn.exclusive_running = True
            elif conn.in_flight >= limit:
                return
            waiting.popleft()
            run.started = True
            conn.in_flight += 1
            self._start(run)
            if conn.state is not _ConnState.OPEN:
                return

    def _flush(self, conn: _Connection) -> None:
        """Send the finished responses at the head of the connection's runs, in order."""
        if conn.state is not _ConnState.OPEN:
            return
        sent = 0
        for run in conn.runs:
            if run.response is None:
                break
            sent += 1
            self._send(conn, run.response)
            if run.committed and conn.held is not None:
                held, conn.held = conn.held, None
                conn.burst_allowance += len(held)
                for frame in held:
                    self._send(conn, frame)
        if sent:
            del conn.runs[:sent]
            self._update_reading(conn)
            self._close_if_idle(conn)

    def _encode_response(self, response: Response, *, hooks_ran: bool = False) -> str:
        """``response`` as its frame. A value the codec cannot write (an after-hook's
        result, a ``Decimal`` from storage) costs this one request an error response,
        never an exception (docs/protocol.md "Hooks")."""
        try:
            return encode(response)
        except Exception as exc:
            self._log(
                LOG_ERROR,
                f"the response to request {response.id!r} cannot be encoded ({exc}); "
                f"answered {'hook_error' if hooks_ran else 'internal_error'}",
            )
            error = (
                ErrorInfo(code="hook_error", message="a server hook failed")
                if hooks_ran
                else ErrorInfo(code="internal_error", message="the result could not be encoded")
            )
            return encode(
                Response(id=response.id, success=False, timestamp=response.timestamp, error=error)
            )

    def _finish(self, run: _Run, response: Response) -> None:
        run.response = self._encode_response(response, hooks_ran=run.hooks_ran)
        conn = run.conn
        if run.started:
            conn.in_flight -= 1
            if run.kind is _RunKind.EXCLUSIVE:
                conn.exclusive_running = False
        if conn.state is _ConnState.OPEN:
            self._pump(conn)

    def _succeed(self, run: _Run, data: Any, metadata: dict[str, Any] | None = None) -> None:
        assert run.message is not None
        response = Response(
            id=run.message.id,
            success=True,
            timestamp=self._timestamp(),
            data=data,
            metadata=metadata,
        )
        self._finish(run, response)

    def _fail(self, run: _Run, error: ErrorInfo) -> None:
        assert run.message is not None
        self._finish(run, self._error_response(run.message.id, error))

    def _error_response(self, message_id: MessageId, error: ErrorInfo) -> Response:
        return Response(id=message_id, success=False, timestamp=self._timestamp(), error=error)

    # --- hooks -------------------------------------------------------------------

    def _call_hooks(
        self,
        run: _Run | None,
        hook_type: HookType,
        context: HookContext,
        then: _Continuation,
    ) -> None:
        hooks = self.hooks.get(hook_type)
        if not hooks:
            then()
            return
        self._next_id += 1
        call_id = self._next_id
        context.hook_type = hook_type
        self._hooks_pending[call_id] = (run, context, then)
        self._out.append(
            RunHooks(call_id=call_id, hook_type=hook_type, hooks=hooks, context=context)
        )

    def _run_hooks(self, run: _Run, hook_type: HookType, then: _Continuation) -> None:
        """Call the hooks of ``hook_type`` for a request run, with its context in sync."""
        if hook_type not in self.hooks.registered:  # the common case: no hook, no context
            then()
            return
        context = run.context
        if context is None:
            assert run.message is not None
            operation = (
                run.message.operation
                if isinstance(run.message, Request)
                else Operation.SUBSCRIBE
                if isinstance(run.message, Subscribe)
                else Operation.UNSUBSCRIBE
            )
            context = run.context = HookContext(
                hook_type=hook_type,
                connection_id=run.conn.id,
                metadata=run.conn.metadata,
                request_info=run.conn.request,
                message_id=run.message.id,
                operation=operation,
                entity=run.entity,
            )
        context.options = run.options
        context.data = run.data
        context.record_id = run.record_id
        context.result = run.result
        context.subscription_id = run.subscription_id
        run.hooks_ran = True

        def resume() -> None:
            if run.conn.state is not _ConnState.OPEN and not run.committed:
                return  # the client left while its hooks ran: stop before any write
            if not isinstance(context.options, QueryOptions):
                self._hook_broke(
                    run,
                    f"a {hook_type.value} hook set options to a "
                    f"{type(context.options).__name__}, not a QueryOptions",
                )
                return
            run.options = context.options
            run.data = context.data
            run.record_id = context.record_id
            run.result = context.result
            then()

        self._call_hooks(run, hook_type, context, resume)

    def _hook_broke(self, run: _Run, why: str) -> None:
        """A hook left a value the request cannot use: ``hook_error`` for this request,
        the reason for the operator only (docs/protocol.md "Hooks")."""
        assert run.message is not None
        self._log(LOG_ERROR, f"request {run.message.id!r}: {why}")
        self._fail(run, ErrorInfo(code="hook_error", message="a server hook failed"))

    def _on_hooks_completed(self, event: HooksCompleted) -> None:
        _run, _context, then = self._hooks_pending.pop(event.call_id)
        then()

    def _on_hooks_failed(self, event: HooksFailed) -> None:
        run, context, _then = self._hooks_pending.pop(event.call_id)
        if run is not None:
            self._fail(run, event.error)
            return
        if context.hook_type is HookType.BEFORE_CONNECT:
            conn = self._connections.get(context.connection_id)
            if conn is not None and conn.state is _ConnState.OPENING:
                del self._connections[conn.id]
                self._out.append(
                    RejectConnection(
                        connection_id=conn.id, status=event.status, reason=event.error.message
                    )
                )
                self._schedule_sweep()
        # after_connect and disconnect hooks cannot change anything any more: their
        # failures are the adapter's to log.

    # --- running requests --------------------------------------------------------

    def _start(self, run: _Run) -> None:
        self._run_hooks(run, HookType.BEFORE_HANDLE, lambda: self._before_operation(run))

    def _before_operation(self, run: _Run) -> None:
        message = run.message
        if isinstance(message, Unsubscribe):
            if message.subscription_id not in run.conn.subscriptions:
                self._fail(
                    run,
                    ErrorInfo(
                        code="subscription_not_found",
                        message=f"Subscription not found: {message.subscription_id}",
                    ),
                )
                return
            self._run_hooks(run, HookType.BEFORE_UNSUBSCRIBE, lambda: self._unsubscribe(run))
            return
        if isinstance(message, Subscribe):
            if len(run.conn.subscriptions) >= self.limits.max_subscriptions_per_connection:
                limit = self.limits.max_subscriptions_per_connection
                self._fail(
                    run,
                    ErrorInfo(
                        code="subscription_limit",
                        message=f"a connection may hold at most {limit} subscriptions",
                        details={"limit": limit},
                    ),
                )
                return
            self._run_hooks(run, HookType.BEFORE_SUBSCRIBE, lambda: self._subscribe(run))
            return
        assert isinstance(message, Request)
        if message.operation is Operation.META:
            self._meta(run)
            return
        before, _after = OPERATION_HOOKS[message.operation]
        self._run_hooks(run, before, lambda: self._storage(run))

    def _storage(self, run: _Run) -> None:
        if run.conn.state is not _ConnState.OPEN:
            return
        if run.hooks_ran:
            # Before-hooks may have changed options, data or the record id: validate them
            # again. Values no client could send (wrong types) are the hook's fault.
            try:
                self._check(run)
            except InvalidRequest as exc:
                self._fail(run, exc.error)
                return
            except Exception as exc:
                self._hook_broke(run, f"hooks left values that cannot be used: {exc!r}")
                return
        operation: StorageOperation = run.key
        self._next_id += 1
        self._storage_pending[self._next_id] = run
        self._out.append(RunStorage(operation_id=self._next_id, operation=operation))

    def _on_storage_completed(self, event: StorageCompleted) -> None:
        run = self._storage_pending.pop(event.operation_id)
        assert isinstance(run.message, Request) and run.entity is not None
        operation = run.message.operation
        entity = run.entity
        result = event.result
        problem = _result_problem(run.key, result)
        if problem is not None:
            # A storage backend's bug must cost one request, not the server.
            self._log(LOG_ERROR, f"request {run.message.id!r}: storage returned {problem}")
            self._fail(
                run,
                ErrorInfo(code=_STORAGE_ERROR_CODES[operation], message="internal storage error"),
            )
            return
        if operation is Operation.READ:
            if run.conn.state is not _ConnState.OPEN:
                return
            if isinstance(result, ListResult):
                query = run.key
                assert isinstance(query, ReadList)
                metadata = {
                    "total": result.total,
                    "count": len(result.rows),
                    "limit": query.limit,
                    "offset": query.offset,
                }
                self._after(run, result.rows, metadata)
            elif result is None:
                self._fail(run, _record_not_found(run))
            else:
                self._after(run, result, {"total": 1})
            return
        if result is None:  # update or delete of a row that is not there
            self._fail(run, _record_not_found(run))
            return
        # The write committed: notify now, in commit order (docs/protocol.md "Order").
        run.committed = True
        if run.conn.state is _ConnState.OPEN:
            run.conn.held = []
        if operation is Operation.CREATE:
            rows: list[Row] = result
            for row in rows:
                self._notify(entity, Operation.CREATE, row)
            data: Any = rows if isinstance(run.data, list) else rows[0]
        elif operation is Operation.UPDATE:
            self._notify(entity, Operation.UPDATE, result)
            data = result
        else:
            self._notify(entity, Operation.DELETE, result)
            data = {"deleted": True, "id": result[entity.primary_key.name]}
        if run.conn.state is not _ConnState.OPEN:
            return  # nobody to answer; the notifications went out
        self._after(run, data, None)

    def _on_storage_failed(self, event: StorageFailed) -> None:
        run = self._storage_pending.pop(event.operation_id)
        assert isinstance(run.message, Request)
        self._fail(run, _storage_error(run.message.operation, event.error))

    def _after(self, run: _Run, data: Any, metadata: dict[str, Any] | None) -> None:
        assert isinstance(run.message, Request)
        run.result = data
        _before, after = OPERATION_HOOKS[run.message.operation]
        self._run_hooks(run, after, lambda: self._succeed(run, run.result, metadata))

    def _meta(self, run: _Run) -> None:
        if run.entity is None:
            entities = sorted(self.registry.entities(), key=lambda e: (e.schema, e.name))
            self._succeed(run, [{"schema": e.schema, "entity": e.name} for e in entities])
        else:
            self._succeed(run, _describe(run.entity))

    def _subscribe(self, run: _Run) -> None:
        assert run.entity is not None
        try:
            filters = compile_filters(run.entity, run.options.filters)
        except InvalidRequest as exc:
            self._fail(run, exc.error)
            return
        except Exception as exc:  # only hooks can make filters no client could send
            self._hook_broke(run, f"hooks left filters that cannot be used: {exc!r}")
            return
        self._next_id += 1
        subscription = Subscription(
            id=f"sub-{self._next_id}",
            connection_id=run.conn.id,
            entity=run.entity,
            filters=filters,
            sequence=self._next_id,
        )
        run.subscription_id = subscription.id
        run.result = {
            "subscription_id": subscription.id,
            "schema": run.entity.schema,
            "entity": run.entity.name,
        }

        def activate() -> None:
            # Live from the moment its acknowledgement goes out, not before: a client
            # never sees a notification for a subscription id it has not been told.
            if run.conn.state is _ConnState.OPEN:
                self._subscriptions.add(subscription)
                run.conn.subscriptions[subscription.id] = subscription
            self._succeed(run, run.result)

        self._run_hooks(run, HookType.AFTER_SUBSCRIBE, activate)

    def _unsubscribe(self, run: _Run) -> None:
        subscription_id = run.subscription_id
        assert subscription_id is not None
        if run.conn.subscriptions.pop(subscription_id, None) is not None:
            self._subscriptions.remove(subscription_id)
        run.result = {"unsubscribed": True, "subscription_id": subscription_id}
        self._run_hooks(run, HookType.AFTER_UNSUBSCRIBE, lambda: self._succeed(run, run.result))

    # --- notifications -----------------------------------------------------------

    def _notify(self, entity: Entity, operation: Operation, row: Row) -> None:
        try:
            subscriptions = self._subscriptions.route(entity, row)
        except Exception as exc:  # a value of a type its column does not have
            self._log(LOG_ERROR, f"{entity.qualified_name} change not routable ({exc!r}): {row!r}")
            return
        if not subscriptions:
            return
        timestamp = self._timestamp()
        data = dict(row)  # one copy for all: after-hooks may change the response's row
        for subscription in subscriptions:
            conn = self._connections.get(subscription.connection_id)
            if conn is None or conn.state is not _ConnState.OPEN:
                continue
            notification = Notification(
                operation=operation,
                subscription_id=subscription.id,
                schema=entity.schema,
                entity=entity.name,
                data=data,
                timestamp=timestamp,
            )
            try:
                frame = encode(notification)
            except Exception as exc:
                self._log(
                    LOG_ERROR,
                    f"{entity.qualified_name} {operation.value} not notified: its row cannot "
                    f"be encoded ({exc})",
                )
                return
            if conn.held is not None:
                self._hold(conn, frame)
            else:
                self._send(conn, frame)

    def _on_change(self, event: ChangeCommitted) -> None:
        # The change comes from outside: whatever is wrong with it is logged and skipped.
        try:
            resolved = self.registry.resolve(event.schema, event.entity)
        except Exception as exc:
            resolved = ResolutionError(message=f"unusable entity name ({exc!r})")
        if isinstance(resolved, ResolutionError):
            self._log(LOG_WARNING, f"change skipped: {resolved.message}")
            return
        if event.operation not in WRITE_OPERATIONS:
            self._log(LOG_WARNING, f"change skipped: {event.operation!r} is not a write")
            return
        try:
            row = coerce_change_row(resolved, event.row)
        except InvalidRequest as exc:
            self._log(
                LOG_WARNING,
                f"{resolved.qualified_name} change skipped: {exc.error.message}: {event.row!r}",
            )
            return
        except Exception as exc:
            self._log(LOG_WARNING, f"{resolved.qualified_name} change skipped ({exc!r})")
            return
        self._notify(resolved, event.operation, row)

    _HANDLERS: dict[type, Callable[[Engine, Any], None]] = {
        ConnectionOpened: _on_opened,
        MessageReceived: _on_message,
        ConnectionClosed: _on_closed,
        StorageCompleted: _on_storage_completed,
        StorageFailed: _on_storage_failed,
        HooksCompleted: _on_hooks_completed,
        HooksFailed: _on_hooks_failed,
        FramesWritten: _on_frames_written,
        BroadcastRequested: _on_broadcast,
        PongReceived: _on_pong,
        TimePassed: _on_time,
        ChangeCommitted: _on_change,
        ShutdownRequested: _on_shutdown,
    }


def _size_in_bytes(data: str | bytes, limit: int) -> int:
    """The UTF-8 size of a message, encoding text only when its length cannot settle the
    question (a character takes one to four bytes)."""
    if isinstance(data, bytes) or len(data) > limit:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _result_problem(operation: StorageOperation, result: Any) -> str | None:
    """What is wrong with a storage result for ``operation`` (the shapes documented on
    the operation classes), or ``None``."""
    if isinstance(operation, ReadList):
        if not isinstance(result, ListResult) or not all(isinstance(r, dict) for r in result.rows):
            return f"{type(result).__name__}, not a ListResult of rows, for a list read"
        return None
    if isinstance(operation, Create):
        if not isinstance(result, list) or len(result) != len(operation.rows):
            return (
                f"{type(result).__name__}, not a list of {len(operation.rows)} rows, for a create"
            )
        if not all(isinstance(row, dict) for row in result):
            return "a non-row in the rows of a create"
        return None
    if result is not None and not isinstance(result, dict):
        return f"{type(result).__name__}, not a row or None"
    if (
        isinstance(operation, Delete)
        and result is not None
        and operation.entity.primary_key.name not in result
    ):
        return "a deleted row without its primary key"
    return None


def _copy_data(data: Any) -> Any:
    """A copy hooks may mutate without touching the decoded message."""
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, list):
        return [dict(item) if isinstance(item, dict) else item for item in data]
    return data


def _not_found_error(resolved: ResolutionError) -> ErrorInfo:
    details = {"candidates": list(resolved.candidates)} if resolved.candidates else None
    return ErrorInfo(code="model_not_found", message=resolved.message, details=details)


def _record_not_found(run: _Run) -> ErrorInfo:
    assert run.entity is not None
    return ErrorInfo(
        code="not_found",
        message=f"{run.entity.qualified_name} record {run.record_id!r} not found",
        details={"record_id": run.record_id},
    )


def _storage_error(operation: Operation, error: StorageError) -> ErrorInfo:
    if error.kind is StorageErrorKind.CONSTRAINT:
        details = {"column": error.column} if error.column else None
        return ErrorInfo(code="validation_error", message=error.message, details=details)
    return ErrorInfo(code=_STORAGE_ERROR_CODES[operation], message=error.message)


def _describe(entity: Entity) -> dict[str, Any]:
    return {
        "schema": entity.schema,
        "entity": entity.name,
        "table_name": entity.table_name,
        "primary_key": entity.primary_key.name,
        "columns": [
            {
                "name": c.name,
                "type": c.type.value,
                "nullable": c.nullable,
                "primary_key": c.primary_key,
                "has_default": c.has_default,
            }
            for c in entity.columns
        ],
        "relations": [
            {
                "name": r.name,
                "kind": r.kind.value,
                "target": r.target,
                "local_column": r.local_column,
                "remote_column": r.remote_column,
            }
            for r in entity.relations
        ],
    }
