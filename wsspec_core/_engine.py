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

With a change feed (``Engine(change_feed=True)``, docs/core.md "Change feed") every
change, the engine's own writes included, arrives as a log entry (``ChangesLogged``) and
only those are routed: a ``StorageCompleted`` notifies nobody, so nothing is notified
twice. An entry carries the row before and after the write, so each subscription learns
the change's effect on its result set (added, modified, removed; PROTOCOL.md "Change
feed"). The engine keeps the log's ``epoch`` and its ``position`` (the last ``seq``
routed): a subscription goes live at the position, and a pong reports it. A writer's
notifications are held from the moment its write starts, because its own entry may
arrive before or after its ``StorageCompleted``.

Where each part lives:

- this module: :class:`Engine`, its public surface, ``handle()`` and its ``{event type:
  handler}`` table, and the transitions that tie the parts together: connection
  lifecycle (open, accept, close, shutdown), hooks, storage, subscriptions, notifications;
- ``_requests.py``: a message decoded and validated into a run (``RequestCompiler``, with
  the compiled-query cache), storage outcomes turned into answers, ``meta``;
- ``_pipeline.py``: runs, connections and the per-connection pipeline (``Pipeline``):
  scheduling of runs, responses in order, held notifications, the outbound backlog,
  slow-consumer detection, pause and resume of reading;
- ``_timers.py``: the keepalive sweep and the per-connection rate limit.

An exception escaping :meth:`Engine.handle` is a bug in wsspec_core (or an adapter handing
it an event that names an id it never issued); every mistake of a client becomes an error
response or a close action.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ._actions import (
    LOG_ERROR,
    LOG_WARNING,
    AcceptConnection,
    Action,
    CloseConnection,
    Log,
    RejectConnection,
    RunHooks,
    RunStorage,
    SendPing,
)
from ._codec import decode, encode, encode_success, format_timestamp
from ._config import Limits
from ._entities import Entity, EntityRegistry, ResolutionError
from ._events import (
    BroadcastRequested,
    ChangeCommitted,
    ChangesLogged,
    ConnectionClosed,
    ConnectionOpened,
    Event,
    FramesWritten,
    HooksCompleted,
    HooksFailed,
    LogEntry,
    MessageReceived,
    PongReceived,
    ShutdownRequested,
    StorageCompleted,
    StorageFailed,
    TimePassed,
)
from ._filters import compile_filters
from ._hooks import OPERATION_HOOKS, HookContext, HookRegistry, HookType
from ._messages import (
    CHANGE_ADDED,
    CHANGE_MODIFIED,
    CHANGE_REMOVED,
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
from ._options import coerce_change_row
from ._pipeline import PENDING_PONG, Connection, ConnState, Pipeline, Run, RunKind
from ._query import InvalidRequest, ListResult, ReadList, Row, StorageOperation
from ._requests import (
    STORAGE_ERROR_CODES,
    RequestCompiler,
    record_not_found,
    result_problem,
    size_in_bytes,
    storage_error,
)
from ._subscriptions import Subscription, SubscriptionIndex
from ._timers import Keepalive, KeepaliveVerdict, RateLimit, heard_from

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_Continuation = Callable[[], None]


class Engine:
    """The sans-IO WebSocketSpec server engine. See docs/core.md.

    ``handle(event)`` returns the complete list of actions the event causes, with the
    engine's state already updated. Not thread-safe: call it from one thread (the event
    loop's); storage operations and hooks may run anywhere and report back through it.

    The engine is composed of a ``RequestCompiler`` (_requests.py), a ``Pipeline``
    (_pipeline.py), and a ``Keepalive`` sweep and ``RateLimit`` (_timers.py); the theory of
    operation at the top of this module says what each does.
    """

    def __init__(
        self,
        registry: EntityRegistry,
        *,
        hooks: HookRegistry | None = None,
        limits: Limits | None = None,
        change_feed: bool = False,
    ) -> None:
        registry.validate()
        self.registry = registry
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.limits = limits if limits is not None else Limits()
        self._compiler = RequestCompiler(registry, self.limits)
        self._change_feed = change_feed
        #: The change log's epoch (``None`` until the first ``ChangesLogged``), and the
        #: ``seq`` of the last entry routed (docs/core.md "Change feed").
        self._epoch: str | None = None
        self._position = 0
        self._pipeline = Pipeline(
            self.limits,
            start=self._start,
            drained=self._close_if_idle,
            pong=self._pong_frame if change_feed else None,
        )
        self._keepalive = Keepalive(self.limits)
        self._rate_limit = RateLimit(self.limits)
        self._connections: dict[Hashable, Connection] = {}
        self._subscriptions = SubscriptionIndex()
        self._next_id = 0
        self._storage_pending: dict[int, Run] = {}
        self._hooks_pending: dict[int, tuple[Run | None, HookContext, _Continuation]] = {}
        #: The actions of the event being handled; the pipeline appends to the same list.
        self._out: list[Action] = []
        self._now = 0.0
        self._wall = 0.0
        self._timestamp_of: tuple[int, str] = (-1, "")

    # --- public surface ----------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections accepted and not yet closed."""
        return sum(1 for c in self._connections.values() if c.state is ConnState.OPEN)

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    @property
    def change_feed(self) -> bool:
        """Whether changes reach subscribers only as ``ChangesLogged`` entries."""
        return self._change_feed

    @property
    def epoch(self) -> str | None:
        """The change log's epoch, as the last ``ChangesLogged`` said (``None`` before)."""
        return self._epoch

    @property
    def position(self) -> int:
        """The ``seq`` of the last change-log entry routed (0 before any)."""
        return self._position

    def connection_metadata(self, connection_id: Hashable) -> dict[str, Any] | None:
        """The metadata dictionary hooks see for this connection, if it is open."""
        conn = self._connections.get(connection_id)
        return conn.metadata if conn is not None else None

    def next_deadline(self) -> float | None:
        """When to send ``TimePassed`` next (same clock as the events' ``now``), or None."""
        return self._keepalive.next_sweep

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event``; return the actions it causes, in the order to carry them out."""
        pipeline = self._pipeline
        out: list[Action] = []
        self._out = pipeline.out = out
        self._now = event.now
        self._wall = event.now if event.wall is None else event.wall
        handler = self._HANDLERS[type(event)]
        handler(self, event)
        if pipeline.overflowed:
            self._close_slow_consumers()
        self._out = pipeline.out = []
        return out

    # --- connection lifecycle ----------------------------------------------------

    @property
    def _shutting_down(self) -> bool:
        """``ShutdownRequested`` arrived. Kept as the pipeline's ``draining`` flag, the one
        copy of it: the pipeline also reads it (reading stays paused; idle connections are
        closed as their last response goes out)."""
        return self._pipeline.draining

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
        conn = Connection(id=event.connection_id, request=event.request, state=ConnState.OPENING)
        conn.last_seen = event.now
        self._rate_limit.fill(conn, event.now)
        self._connections[conn.id] = conn
        context = self._connection_context(conn, HookType.BEFORE_CONNECT)
        self._call_hooks(None, HookType.BEFORE_CONNECT, context, lambda: self._accept(conn))

    def _accept(self, conn: Connection) -> None:
        if conn.state is not ConnState.OPENING:  # closed while before_connect ran
            return
        conn.state = ConnState.OPEN
        conn.last_seen = self._now
        self._out.append(AcceptConnection(connection_id=conn.id))
        self._schedule_sweep()
        context = self._connection_context(conn, HookType.AFTER_CONNECT)
        self._call_hooks(None, HookType.AFTER_CONNECT, context, lambda: None)

    def _connection_context(self, conn: Connection, hook_type: HookType) -> HookContext:
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
        was_open = conn.state is not ConnState.OPENING
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

    def _drop(self, conn: Connection) -> None:
        """Forget everything of a connection that is closing or closed.

        Runs already executing keep their storage operation: a write still commits and is
        still notified to others; only the answer to this connection is dropped.
        """
        conn.state = ConnState.CLOSING
        for subscription_id in list(conn.subscriptions):
            self._subscriptions.remove(subscription_id)
        conn.subscriptions.clear()
        self._pipeline.abandon(conn)

    def _close(
        self, conn: Connection, code: int, reason: str, *, discard_queued: bool = False
    ) -> None:
        if conn.state is ConnState.CLOSING:
            return
        if not discard_queued:
            self._pipeline.flush(conn)
        self._drop(conn)
        self._out.append(
            CloseConnection(
                connection_id=conn.id, code=code, reason=reason, discard_queued=discard_queued
            )
        )

    def _on_shutdown(self, event: ShutdownRequested) -> None:
        self._pipeline.draining = True
        for conn in list(self._connections.values()):
            if conn.state is ConnState.OPENING:
                conn.state = ConnState.CLOSING
                self._out.append(
                    RejectConnection(
                        connection_id=conn.id, status=503, reason="server shutting down"
                    )
                )
            elif conn.state is ConnState.OPEN:
                self._pipeline.stop_reading(conn)
                self._close_if_idle(conn)

    def _close_if_idle(self, conn: Connection) -> None:
        if self._shutting_down and conn.state is ConnState.OPEN and not conn.runs:
            self._close(conn, CLOSE_GOING_AWAY, "server shutting down")

    # --- the outbound side (_pipeline.py counts; the engine closes) ---------------

    def _close_slow_consumers(self) -> None:
        """Close the connections the pipeline found not reading (docs/core.md "Flow
        control"), now that the event's other actions are complete."""
        pipeline = self._pipeline
        overflowed, pipeline.overflowed = pipeline.overflowed, []
        for conn in overflowed:
            if conn.state is ConnState.OPEN and conn.overflow is not None:
                # Its queued frames cannot reach it before the close frame: drop them.
                self._close(conn, CLOSE_POLICY_VIOLATION, conn.overflow, discard_queued=True)

    def _on_frames_written(self, event: FramesWritten) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is not None:
            self._pipeline.written(conn, event.count)

    def _on_broadcast(self, event: BroadcastRequested) -> None:
        for conn in list(self._connections.values()):
            if conn.state is not ConnState.OPEN:
                continue
            if event.predicate is not None:
                try:
                    wanted = event.predicate(conn.metadata)
                except Exception as exc:
                    self._log(LOG_ERROR, f"broadcast predicate raised {exc!r}; skipped {conn.id!r}")
                    continue
                if not wanted:
                    continue
            self._pipeline.send(conn, event.frame)

    # --- keepalive (_timers.py decides; the engine carries it out) ----------------

    def _on_pong(self, event: PongReceived) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is not None:
            heard_from(conn, event.now)

    def _on_time(self, event: TimePassed) -> None:
        keepalive = self._keepalive
        if not keepalive.due(event.now):
            return
        for conn in list(self._connections.values()):
            if conn.state is not ConnState.OPEN:
                continue
            verdict = keepalive.verdict(conn, event.now)
            if verdict is KeepaliveVerdict.TIMED_OUT:
                self._close(conn, CLOSE_INTERNAL_ERROR, "keepalive timeout")
            elif verdict is KeepaliveVerdict.PING:
                self._out.append(SendPing(connection_id=conn.id))
        keepalive.swept(self._now, any_connections=bool(self._connections))

    def _schedule_sweep(self) -> None:
        self._keepalive.schedule(self._now, any_connections=bool(self._connections))

    # --- receiving requests ------------------------------------------------------

    def _on_message(self, event: MessageReceived) -> None:
        conn = self._connections.get(event.connection_id)
        if conn is None or conn.state is not ConnState.OPEN or self._pipeline.draining:
            return  # late frames of a closing connection, or after shutdown: not taken
        heard_from(conn, event.now)
        limit = self.limits.max_message_bytes
        if len(event.data) * 4 > limit and size_in_bytes(event.data, limit) > limit:
            self._close(conn, CLOSE_MESSAGE_TOO_BIG, "message too big")
            return
        self._pipeline.receive(conn, self._admit(conn, event.data))

    def _admit(self, conn: Connection, data: str | bytes) -> Run:
        """Decode and validate a message into a run; mistakes become finished runs."""
        message = decode(data, options_cache=self._compiler.options_cache)
        if isinstance(message, DecodeError):
            return self._answered(conn, message.id, self._compiler.decode_error(message))
        if isinstance(message, Ping):
            if self._change_feed:
                # The position goes in when the pong is sent (_pong_frame): notifications
                # routed while it waits behind other responses reach the client first.
                run = Run(conn, RunKind.DONE, response=PENDING_PONG)
                run.result = message.id
                return run
            return Run(
                conn,
                RunKind.DONE,
                response=encode(Pong(id=message.id, timestamp=self._timestamp())),
            )
        if not self._rate_limit.allows(conn, self._now):
            return self._answered(
                conn, message.id, ErrorInfo(code="rate_limited", message="too many requests")
            )
        try:
            return self._compiler.compile(conn, message)
        except InvalidRequest as exc:
            return self._answered(conn, message.id, exc.error)

    def _pong_frame(self, run: Run) -> str:
        """The pong of a ping run, as it is sent: with a change feed, every entry up to
        the position has been sent to this connection by now (none is held: a write that
        holds them started after the ping was answered, or its response went out first)."""
        return encode(
            Pong(
                id=run.result,
                timestamp=self._timestamp(),
                data={"epoch": self._epoch, "seq": self._position},
            )
        )

    def _answered(self, conn: Connection, message_id: MessageId, error: ErrorInfo) -> Run:
        return Run(
            conn,
            RunKind.DONE,
            response=self._encode_response(self._error_response(message_id, error)),
        )

    # --- answering ---------------------------------------------------------------

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

    def _encode_response(
        self,
        response: Response,
        *,
        hooks_ran: bool = False,
        operation_error_code: str = "internal_error",
    ) -> str:
        """``response`` as its frame. A value the codec cannot write (an after-hook's
        result, a ``Decimal`` from storage) costs this one request an error response,
        never an exception (docs/protocol.md "Hooks"); so does a frame larger than
        ``Limits.max_reply_bytes`` (``operation_error_code``, e.g. ``read_error``)."""
        try:
            frame = encode(response)
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
        limit = self.limits.max_reply_bytes
        if len(frame) > limit and len(frame.encode("utf-8", "surrogatepass")) > limit:
            self._log(LOG_WARNING, f"the reply to request {response.id!r} exceeds {limit} bytes")
            error = ErrorInfo(
                code=operation_error_code,
                message=f"the reply would be larger than the server's limit of {limit} bytes",
                details={"limit": limit},
            )
            return encode(
                Response(id=response.id, success=False, timestamp=response.timestamp, error=error)
            )
        return frame

    def _finish(self, run: Run, response: Response) -> None:
        message = run.message
        code = (
            STORAGE_ERROR_CODES.get(message.operation, "internal_error")
            if isinstance(message, Request)
            else "internal_error"
        )
        frame = self._encode_response(response, hooks_ran=run.hooks_ran, operation_error_code=code)
        self._pipeline.finish(run, frame)

    def _succeed(self, run: Run, data: Any, metadata: dict[str, Any] | None = None) -> None:
        """Answer ``run`` with a success. Most requests end here, so the frame is written
        straight from its parts (``encode_success``: the bytes of ``encode(Response(...))``)
        and the ``Response`` object is built only when the frame cannot be sent as it is
        (``_encode_response`` then answers with the error)."""
        message = run.message
        assert message is not None
        timestamp = self._timestamp()
        try:
            frame = encode_success(message.id, data, metadata, timestamp)
        except Exception:
            frame = None
        if frame is None or len(frame) > self.limits.max_reply_bytes:
            response = Response(
                id=message.id, success=True, timestamp=timestamp, data=data, metadata=metadata
            )
            self._finish(run, response)
            return
        self._pipeline.finish(run, frame)

    def _fail(self, run: Run, error: ErrorInfo) -> None:
        assert run.message is not None
        self._finish(run, self._error_response(run.message.id, error))

    def _error_response(self, message_id: MessageId, error: ErrorInfo) -> Response:
        return Response(id=message_id, success=False, timestamp=self._timestamp(), error=error)

    def _log(self, level: int, message: str) -> None:
        self._out.append(Log(level=level, message=message))

    # --- hooks -------------------------------------------------------------------

    def _call_hooks(
        self,
        run: Run | None,
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

    def _run_hooks(self, run: Run, hook_type: HookType, then: _Continuation) -> None:
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
            if run.conn.state is not ConnState.OPEN and not run.committed:
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

    def _hook_broke(self, run: Run, why: str) -> None:
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
            if conn is not None and conn.state is ConnState.OPENING:
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

    def _start(self, run: Run) -> None:
        if self._change_feed and run.kind is RunKind.EXCLUSIVE:
            message = run.message
            if isinstance(message, Request) and message.operation in WRITE_OPERATIONS:
                # Its log entry may arrive before its StorageCompleted: hold from now.
                self._pipeline.hold_notifications(run)
        if HookType.BEFORE_HANDLE not in self.hooks.registered:
            # The common case, no hook: what _run_hooks would do, without building the
            # continuation it would call at once.
            self._before_operation(run)
            return
        self._run_hooks(run, HookType.BEFORE_HANDLE, lambda: self._before_operation(run))

    def _before_operation(self, run: Run) -> None:
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
        if before not in self.hooks.registered:  # no hook: no continuation to build
            self._storage(run)
            return
        self._run_hooks(run, before, lambda: self._storage(run))

    def _storage(self, run: Run) -> None:
        if run.conn.state is not ConnState.OPEN:
            return
        if run.hooks_ran:
            # Before-hooks may have changed options, data or the record id: validate them
            # again. Values no client could send (wrong types) are the hook's fault.
            try:
                self._compiler.check(run)
            except InvalidRequest as exc:
                self._fail(run, exc.error)
                return
            except Exception as exc:
                self._hook_broke(run, f"hooks left values that cannot be used: {exc!r}")
                return
        operation: StorageOperation = run.key
        assert run.message is not None
        self._next_id += 1
        self._storage_pending[self._next_id] = run
        self._out.append(
            RunStorage(operation_id=self._next_id, operation=operation, request_id=run.message.id)
        )

    def _on_storage_completed(self, event: StorageCompleted) -> None:
        run = self._storage_pending.pop(event.operation_id)
        assert isinstance(run.message, Request) and run.entity is not None
        operation = run.message.operation
        entity = run.entity
        result = event.result
        problem = result_problem(run.key, result)
        if problem is not None:
            # A storage backend's bug must cost one request, not the server.
            self._log(LOG_ERROR, f"request {run.message.id!r}: storage returned {problem}")
            self._fail(
                run,
                ErrorInfo(code=STORAGE_ERROR_CODES[operation], message="internal storage error"),
            )
            return
        if operation is Operation.READ:
            if run.conn.state is not ConnState.OPEN:
                return
            if isinstance(result, ListResult):
                query = run.key
                assert isinstance(query, ReadList)
                metadata: dict[str, Any] = {
                    "total": result.total,
                    "count": len(result.rows),
                    "limit": query.limit,
                    "offset": query.offset,
                }
                if not result.total_exact:  # counted up to Limits.max_count only
                    metadata["total_exact"] = False
                self._after(run, result.rows, metadata)
            elif result is None:
                self._fail(run, record_not_found(run))
            else:
                self._after(run, result, {"total": 1})
            return
        if result is None:  # update or delete of a row that is not there
            self._fail(run, record_not_found(run))
            return
        # The write committed: notify now, in commit order (docs/protocol.md "Order").
        # With a change feed its changes arrive as log entries instead, like anyone's.
        run.committed = True
        notify = not self._change_feed
        if notify and run.conn.state is ConnState.OPEN:
            self._pipeline.hold_notifications(run)
        if operation is Operation.CREATE:
            rows: list[Row] = result
            if notify:
                for row in rows:
                    self._notify(entity, Operation.CREATE, row)
            data: Any = rows if isinstance(run.data, list) else rows[0]
        elif operation is Operation.UPDATE:
            if notify:
                self._notify(entity, Operation.UPDATE, result)
            data = result
        else:
            if notify:
                self._notify(entity, Operation.DELETE, result)
            data = {"deleted": True, "id": result[entity.primary_key.name]}
        if run.conn.state is not ConnState.OPEN:
            return  # nobody to answer; the notifications went out
        self._after(run, data, None)

    def _on_storage_failed(self, event: StorageFailed) -> None:
        run = self._storage_pending.pop(event.operation_id)
        assert isinstance(run.message, Request)
        self._fail(run, storage_error(run.message.operation, event.error))

    def _after(self, run: Run, data: Any, metadata: dict[str, Any] | None) -> None:
        assert isinstance(run.message, Request)
        run.result = data
        _before, after = OPERATION_HOOKS[run.message.operation]
        if after not in self.hooks.registered:  # no hook: no continuation to build
            self._succeed(run, data, metadata)
            return
        self._run_hooks(run, after, lambda: self._succeed(run, run.result, metadata))

    def _meta(self, run: Run) -> None:
        self._succeed(run, self._compiler.meta(run.entity))

    def _subscribe(self, run: Run) -> None:
        assert run.entity is not None
        try:
            filters = compile_filters(run.entity, run.options.filters, self.limits)
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
            if run.conn.state is ConnState.OPEN:
                self._subscriptions.add(subscription)
                run.conn.subscriptions[subscription.id] = subscription
            result = run.result
            if self._change_feed and isinstance(result, dict):
                # Live from here: it gets exactly the matching entries after this seq.
                result = {**result, "epoch": self._epoch, "seq": self._position}
            self._succeed(run, result)

        self._run_hooks(run, HookType.AFTER_SUBSCRIBE, activate)

    def _unsubscribe(self, run: Run) -> None:
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
        if subscriptions:
            data = dict(row)  # one copy for all: after-hooks may change the response's row
            self._deliver(
                entity,
                operation,
                [(subscription, data, None) for subscription in subscriptions],
                seq=None,
                what=f"{entity.qualified_name} {operation.value}",
            )

    def _deliver(
        self,
        entity: Entity,
        operation: Operation,
        deliveries: list[tuple[Subscription, Row | None, str | None]],
        *,
        seq: int | None,
        what: str,
    ) -> None:
        """Send each ``(subscription, data, change)`` its notification of one change, in
        order; a row the codec cannot write is logged and not notified to anyone."""
        timestamp = self._timestamp()
        for subscription, data, change in deliveries:
            conn = self._connections.get(subscription.connection_id)
            if conn is None or conn.state is not ConnState.OPEN:
                continue
            notification = Notification(
                operation=operation,
                subscription_id=subscription.id,
                schema=entity.schema,
                entity=entity.name,
                data=data,
                timestamp=timestamp,
                seq=seq,
                change=change,
            )
            try:
                frame = encode(notification)
            except Exception as exc:
                self._log(LOG_ERROR, f"{what} not notified: its row cannot be encoded ({exc})")
                return
            self._pipeline.notify(conn, frame)

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

    # --- the change feed (docs/core.md "Change feed") -----------------------------------

    def _on_changes_logged(self, event: ChangesLogged) -> None:
        if not self._change_feed:
            self._log(LOG_WARNING, "ChangesLogged ignored: the engine runs without change_feed")
            return
        if event.epoch != self._epoch:
            if self._epoch is not None:
                self._log(
                    LOG_WARNING,
                    f"change log epoch changed from {self._epoch!r} to {event.epoch!r} "
                    f"(the log was reset); positions start again from 0",
                )
                self._position = 0
            self._epoch = event.epoch
        for entry in event.entries:
            self._route_entry(entry)
        through = event.through
        if isinstance(through, int) and through > self._position:
            self._position = through

    def _route_entry(self, entry: LogEntry) -> None:
        """Route one log entry; whatever is wrong with it is logged and it is skipped."""
        seq = entry.seq
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= self._position:
            self._log(
                LOG_WARNING,
                f"change log entry skipped: seq {seq!r} is not beyond the position "
                f"{self._position}",
            )
            return
        # From here the entry is consumed, usable or not: the position moves past it.
        self._position = seq
        try:
            resolved = self.registry.resolve(entry.schema, entry.entity)
        except Exception as exc:
            resolved = ResolutionError(message=f"unusable entity name ({exc!r})")
        if isinstance(resolved, ResolutionError):
            self._log(LOG_WARNING, f"change log entry {seq} skipped: {resolved.message}")
            return
        operation = entry.operation
        needs_old = operation is Operation.UPDATE or operation is Operation.DELETE
        needs_new = operation is Operation.UPDATE or operation is Operation.CREATE
        if not (needs_old or needs_new):
            self._log(LOG_WARNING, f"change log entry {seq} skipped: {operation!r} is not a write")
            return
        rows: list[Row | None] = []
        for wanted, raw in ((needs_old, entry.old), (needs_new, entry.new)):
            if not wanted:
                rows.append(None)
                continue
            if not isinstance(raw, dict):
                self._log(
                    LOG_WARNING,
                    f"change log entry {seq} ({resolved.qualified_name} {operation.value}) "
                    f"skipped: its row is {raw!r}, not an object",
                )
                return
            try:
                rows.append(coerce_change_row(resolved, raw))
            except InvalidRequest as exc:
                self._log(
                    LOG_WARNING,
                    f"change log entry {seq} ({resolved.qualified_name}) skipped: "
                    f"{exc.error.message}: {raw!r}",
                )
                return
            except Exception as exc:
                self._log(
                    LOG_WARNING,
                    f"change log entry {seq} ({resolved.qualified_name}) skipped ({exc!r})",
                )
                return
        old, new = rows
        self._route_change(resolved, seq, operation, old, new)

    def _route_change(
        self, entity: Entity, seq: int, operation: Operation, old: Row | None, new: Row | None
    ) -> None:
        """Notify each subscription of ``entity`` of the change's effect on its result set
        (PROTOCOL.md "Change feed"): the filters, hook-added ones included, on the row
        before and after. A row leaving a subscription is sent as it was while it matched:
        a subscriber never receives values outside its filters."""
        index = self._subscriptions
        try:
            before = index.route(entity, old) if old is not None else []
            after = index.route(entity, new) if new is not None else []
        except Exception as exc:  # a value of a type its column does not have
            self._log(
                LOG_ERROR,
                f"change log entry {seq} ({entity.qualified_name}) not routable ({exc!r})",
            )
            return
        if not before and not after:
            return
        # route() gives each list in creation order; merged, they stay in it.
        matched_after = {subscription.id for subscription in after}
        matched_before = {subscription.id for subscription in before}
        effects: list[tuple[Subscription, str]] = [
            (subscription, CHANGE_MODIFIED if subscription.id in matched_after else CHANGE_REMOVED)
            for subscription in before
        ]
        added = [s for s in after if s.id not in matched_before]
        if added:
            effects.extend((subscription, CHANGE_ADDED) for subscription in added)
            if before:
                effects.sort(key=lambda effect: effect[0].sequence)
        # One copy of each row for all: the rows are not shared with anyone who may change them.
        old_data = dict(old) if old is not None else None
        new_data = dict(new) if new is not None else None
        self._deliver(
            entity,
            operation,
            [
                (subscription, old_data if change == CHANGE_REMOVED else new_data, change)
                for subscription, change in effects
            ],
            seq=seq,
            what=f"change log entry {seq} ({entity.qualified_name} {operation.value})",
        )

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
        ChangesLogged: _on_changes_logged,
        ShutdownRequested: _on_shutdown,
    }
