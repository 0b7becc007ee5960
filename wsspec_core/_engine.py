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

import collections
from collections.abc import Callable, Hashable
from typing import Any

import orjson

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
from ._codec import decode, decode_parsed, encode, encode_success, format_timestamp, plain_read
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
    MessageReceived,
    PongReceived,
    ShutdownRequested,
    StorageCompleted,
    StorageFailed,
    TimePassed,
)
from ._filters import compile_filters, matches
from ._hooks import OPERATION_HOOKS, HookContext, HookRegistry, HookType
from ._messages import (
    CHANGE_ADDED,
    CHANGE_MODIFIED,
    CHANGE_REMOVED,
    WRITE_OPERATIONS,
    DecodeError,
    ErrorInfo,
    InboundMessage,
    MessageId,
    Notification,
    Operation,
    Ping,
    Pong,
    QueryOptions,
    RecordId,
    Request,
    Response,
    Subscribe,
    Unsubscribe,
    quick_new,
)
from ._options import coerce_change_row, compile_read
from ._pipeline import PENDING_PONG, Connection, ConnState, Pipeline, Run, RunKind, read_run
from ._query import (
    InvalidRequest,
    ListResult,
    LogEntry,
    ReadList,
    ReadOne,
    Row,
    StorageOperation,
    SubscribeRead,
    SubscribeReadResult,
    resumable,
)
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

_OPEN = ConnState.OPEN
#: The metadata of a read by id answered with its row, shared: it is encoded at once, and
#: no hook sees a response's metadata.
_ONE_ROW: dict[str, Any] = {"total": 1}
_new_run_storage = quick_new(RunStorage)
#: ``Send.answers`` of the success response to a read.
_READ_SUCCESS = ("read", "success")
_loads = orjson.loads


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
        #: The registry's entities by name and by qualified name (its own dicts, which
        #: registering adds to): the direct read path resolves an entity there.
        self._by_name = registry.by_name
        self._by_qualified = registry.by_qualified
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.limits = limits if limits is not None else Limits()
        self._compiler = RequestCompiler(registry, self.limits)
        self._change_feed = change_feed
        #: The change log's epoch (``None`` until the first ``ChangesLogged``), and the
        #: ``seq`` of the last entry routed (docs/core.md "Change feed").
        self._epoch: str | None = None
        self._position = 0
        #: Entries handed over and not yet routed (paced: docs/core.md "Pacing the change
        #: feed"), and the largest ``through`` handed over with them.
        self._feed: collections.deque[LogEntry] = collections.deque()
        self._feed_through = 0
        self._pipeline = Pipeline(
            self.limits,
            start=self._start,
            drained=self._close_if_idle,
            pong=self._pong_frame if change_feed else None,
        )
        self._keepalive = Keepalive(self.limits)
        self._rate_limit = RateLimit(self.limits)
        #: Whether requests are rate limited at all (off by default): the direct read path
        #: skips the bucket when they are not.
        self._rate_limited = self.limits.rate_limit is not None
        self._connections: dict[Hashable, Connection] = {}
        self._subscriptions = SubscriptionIndex()
        self._next_id = 0
        self._storage_pending: dict[int, Run] = {}
        #: Subscriptions with ``snapshot`` or ``resume`` between their start and their
        #: reply, by id: their live notifications are kept until the reply goes out.
        self._starting: dict[str, _Start] = {}
        self._hooks_pending: dict[int, tuple[Run | None, HookContext, _Continuation]] = {}
        #: The actions of the event being handled; the pipeline appends to the same list.
        self._out: list[Action] = []
        #: Outcomes ``run_inline`` returned during the event being handled, handled in
        #: the same ``handle()`` call after the event's own steps, in the order run.
        self._outcomes: collections.deque[StorageCompleted | StorageFailed] = collections.deque()
        #: Optional: the adapter's way to run a read at once, on this thread (docs/core.md
        #: "Inline storage"). Called with (operation id, operation, request id) where a
        #: direct read would ask for ``RunStorage``; returns the ``StorageCompleted`` or
        #: ``StorageFailed`` the adapter would have fed for it, or ``None`` when the
        #: operation has to go the usual way (then the ``RunStorage`` is returned).
        self.run_inline: (
            Callable[
                [int, StorageOperation, MessageId | None],
                StorageCompleted | StorageFailed | None,
            ]
            | None
        ) = None
        self._now = 0.0
        self._wall = 0.0
        self._timestamp_of: tuple[int, str] = (-1, "")
        #: ``_read_at_once`` answers only below this backlog: one frame more stays under
        #: the high-water mark, so the answer changes nothing about reading (nor does
        #: the run it stands for: ``requests_read_ahead`` is at least 2).
        self._answer_at_once_below = self.limits.backlog_high_water - 1

    # --- public surface ----------------------------------------------------------

    @property
    def hooks(self) -> HookRegistry:
        """The hooks this engine calls (hooks registered on it later are called too)."""
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: HookRegistry) -> None:
        self._hooks = hooks
        #: The registry's hook types that have hooks: its own mapping, which registering
        #: adds to; empty is the common case, where every hook step is skipped.
        self._hook_types = hooks.registered

    #: The hooks a read runs: with none of them registered (other hooks may be, such as
    #: ``before_connect``), reads take the direct path. The tests set it to every hook
    #: type on an engine whose reads they want to see take the general path.
    _read_hook_types: frozenset[HookType] = frozenset(
        {HookType.BEFORE_HANDLE, HookType.BEFORE_READ, HookType.AFTER_READ}
    )

    def _no_read_hooks(self) -> bool:
        """Whether no hook a read runs is registered (connection hooks, say, are no
        business of a read's): then reads take the direct paths."""
        hooks = self._hook_types
        return not hooks or hooks.keys().isdisjoint(self._read_hook_types)

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

    @property
    def feed_backlog(self) -> int:
        """Change-log entries handed over and not yet routed: a tailer hands over more
        only when this is small (docs/core.md "Pacing the change feed")."""
        return len(self._feed)

    def next_deadline(self) -> float | None:
        """When to send ``TimePassed`` next (same clock as the events' ``now``), or None."""
        sweep = self._keepalive.next_sweep
        congested = self._pipeline.congested
        if not (self._feed and congested):
            return sweep
        stall = min(congested.values()) + self.limits.feed_stall_timeout
        return stall if sweep is None else min(sweep, stall)

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event``; return the actions it causes, in the order to carry them out."""
        pipeline = self._pipeline
        out: list[Action] = []
        self._out = pipeline.out = out
        self._now = pipeline.now = event.now
        self._wall = event.now if event.wall is None else event.wall
        self._HANDLERS[type(event)](self, event)
        self._settle()
        # ``out`` stays the engine's list until the next event replaces it: nothing
        # appends to it outside ``handle``.
        return out

    def message_received(
        self, connection_id: Hashable, data: str | bytes, now: float, wall: float | None = None
    ) -> list[Action]:
        """``handle(MessageReceived(connection_id=..., data=..., now=..., wall=...))``
        without the event object: the same actions (docs/core.md "Entry points for the
        hot events"). An adapter's reader calls it once per message."""
        pipeline = self._pipeline
        out: list[Action] = []
        self._out = pipeline.out = out
        self._now = pipeline.now = now
        self._wall = now if wall is None else wall
        self._message(connection_id, data, now)
        if pipeline.overflowed or self._feed or self._outcomes:
            self._settle()
        return out

    def frames_written(
        self, connection_id: Hashable, count: int, now: float, wall: float | None = None
    ) -> list[Action]:
        """``handle(FramesWritten(connection_id=..., count=..., now=..., wall=...))``
        without the event object: the same actions (usually none)."""
        pipeline = self._pipeline
        out: list[Action] = []
        self._out = pipeline.out = out
        self._now = pipeline.now = now
        self._wall = now if wall is None else wall
        conn = self._connections.get(connection_id)
        if conn is not None:
            pipeline.written(conn, count)
        if pipeline.overflowed or self._feed or self._outcomes:
            self._settle()
        return out

    def _settle(self) -> None:
        """What follows an event's own step (``handle()`` and the entry points that take
        an event's fields): the flow-control and change-feed checks, then the outcomes
        ``run_inline`` returned, each handled as if fed next (its clocks, its steps, the
        checks again; its steps may run more reads inline: they queue behind)."""
        pipeline = self._pipeline
        outcomes = self._outcomes
        handlers = self._HANDLERS
        while True:
            if pipeline.overflowed:
                self._close_slow_consumers()
            if self._feed and not pipeline.congested:
                self._route_feed()
                if pipeline.overflowed:
                    self._close_slow_consumers()
            if not outcomes:
                return
            event = outcomes.popleft()
            self._now = pipeline.now = event.now
            self._wall = event.now if event.wall is None else event.wall
            handlers[type(event)](self, event)

    def _read_storage(self, run: Run, query: ReadOne | ReadList, request_id: MessageId) -> None:
        """Ask for a direct read's storage operation: run at once through ``run_inline``
        if the adapter can (its outcome handled at the end of this ``handle()``), else as
        a ``RunStorage``."""
        self._next_id += 1
        operation_id = self._next_id
        self._storage_pending[operation_id] = run
        run_inline = self.run_inline
        if run_inline is not None:
            outcome = run_inline(operation_id, query, request_id)
            if outcome is not None:
                self._outcomes.append(outcome)
                return
        self._out.append(_new_run_storage(operation_id, query, request_id))

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
            self._starting.pop(subscription_id, None)
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
        if self._feed and self._pipeline.congested:
            self._close_stalled(event.now)
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

    def _close_stalled(self, now: float) -> None:
        """Close the clients that have held the change feed back for
        ``Limits.feed_stall_timeout``: the others must not wait for them any longer."""
        limit = self.limits.feed_stall_timeout
        for connection_id, since in list(self._pipeline.congested.items()):
            if now - since < limit:
                continue
            conn = self._connections.get(connection_id)
            self._pipeline.congested.pop(connection_id, None)
            if conn is not None and conn.state is ConnState.OPEN:
                self._close(
                    conn,
                    CLOSE_POLICY_VIOLATION,
                    "client is not keeping up with the change feed",
                    discard_queued=True,
                )

    def _schedule_sweep(self) -> None:
        self._keepalive.schedule(self._now, any_connections=bool(self._connections))

    # --- receiving requests ------------------------------------------------------

    def _on_message(self, event: MessageReceived) -> None:
        self._message(event.connection_id, event.data, event.now)

    def _message(self, connection_id: Hashable, data: str | bytes, now: float) -> None:
        conn = self._connections.get(connection_id)
        if conn is None or conn.state is not _OPEN or self._pipeline.draining:
            return  # late frames of a closing connection, or after shutdown: not taken
        # heard_from(conn, now), written out: every message passes here.
        conn.last_seen = now
        conn.ping_sent_at = None
        limit = self.limits.max_message_bytes
        if len(data) * 4 > limit and size_in_bytes(data, limit) > limit:
            self._close(conn, CLOSE_MESSAGE_TOO_BIG, "message too big")
            return
        plain = self._no_read_hooks()
        options_cache = self._compiler.options_cache
        try:
            parsed = _loads(data)
        except Exception:  # not JSON text: decode() answers it
            message = decode(data, options_cache=options_cache)
        else:
            if (
                plain
                and type(parsed) is dict
                and parsed.get("type") == "request"
                and parsed.get("operation") == "read"
                and not self._rate_limited
                and self._read_parsed(conn, parsed)
            ):
                return
            message = decode_parsed(parsed, options_cache=options_cache)
        if plain and type(message) is Request and message.operation is Operation.READ:
            self._read(conn, message)
            return
        self._pipeline.receive(conn, self._admit(conn, message))

    def _read_parsed(self, conn: Connection, obj: dict[str, Any]) -> bool:
        """The most common request again, straight from the parsed frame, when no hook a
        read runs is registered, requests are not rate limited, and the read's shape has
        been compiled before (the first of each shape takes ``_read``): what
        ``_read`` does with the ``Request`` ``decode`` would return, without building
        it (``_request`` builds it if a later step needs it). ``False``, with nothing
        done, for anything else: the caller decodes it as usual. Checked against the
        general path by tests/core/test_fast_paths.py."""
        parts = plain_read(obj, self._compiler.options_cache)
        if parts is None:
            return False
        message_id, name, schema, record_id, options = parts
        if schema is None:
            candidates = self._by_name.get(name)
            if candidates is None or len(candidates) != 1:
                return False
            entity = candidates[0]
        else:
            # What resolve() finds first for a schema; its fallback (a qualified name
            # given as the entity) is left to it, and so is a name that is not the
            # entity's own: the Request built later must be the one decode() returns.
            found = self._by_qualified.get(f"{schema}.{name}")
            if found is None or found.schema != schema or found.name != name:
                return False
            entity = found
        try:
            query = self._compiler.known_read(entity, options, record_id)
        except InvalidRequest:
            return False
        if query is None:
            return False
        if (
            record_id is not None
            and self.run_inline is not None
            and not conn.runs
            and not conn.paused
            and conn.backlog < self._answer_at_once_below
            and not self._feed
        ):
            self._read_at_once(conn, entity, options, message_id, record_id, query, schema)
            return True
        run = read_run(conn, entity, options, message_id, record_id, query, schema)
        if self._pipeline.start_at_once(conn, run):
            self._read_storage(run, query, message_id)
        else:
            self._pipeline.receive(conn, run)  # queued: _start asks for its storage
        return True

    def _read_at_once(
        self,
        conn: Connection,
        entity: Entity,
        options: QueryOptions,
        message_id: MessageId,
        record_id: RecordId,
        query: ReadOne | ReadList,
        schema: str | None,
    ) -> None:
        """A direct read by key of an idle connection, run through ``run_inline`` and,
        when it finds its row, answered here: the one ``Send`` that the run, its start,
        its ``StorageCompleted`` handled next, ``_succeed`` and ``Pipeline.finish`` would
        produce, without them. The caller checked what makes that exact: nothing of the
        connection runs or waits (so its answer goes out at once), reading is not paused
        and the frame cannot reach the backlog's high-water mark (so neither the start
        nor the answer changes reading), and no change waits to be routed (``_settle``
        would route it between the message and the outcome, were the feed not paced;
        the message's own step leaves no outcome before this one and no overflow, which
        a ``Send`` before it would need). Anything else (the operation goes to the
        threads, a failure, no row, an odd result, a frame that cannot be sent as it is)
        continues as the run would have: started, its outcome handled next.
        tests/core/test_fast_paths.py compares the two."""
        self._next_id += 1
        operation_id = self._next_id
        assert self.run_inline is not None
        outcome = self.run_inline(operation_id, query, message_id)
        if type(outcome) is StorageCompleted and conn.state is _OPEN:
            row = outcome.result
            if type(row) is dict:
                pipeline = self._pipeline
                now = self._now = pipeline.now = outcome.now
                self._wall = now if outcome.wall is None else outcome.wall
                try:
                    frame = encode_success(message_id, row, _ONE_ROW, self._timestamp())
                except Exception:
                    frame = None
                if frame is not None and len(frame) <= self.limits.max_reply_bytes:
                    pipeline.send(conn, frame, _READ_SUCCESS)
                    return
        run = read_run(conn, entity, options, message_id, record_id, query, schema)
        started = self._pipeline.start_at_once(conn, run)
        assert started, "an idle connection starts a read at once"
        self._storage_pending[operation_id] = run
        if outcome is None:
            self._out.append(_new_run_storage(operation_id, query, message_id))
        else:
            self._outcomes.append(outcome)

    @staticmethod
    def _request(run: Run) -> Request:
        """The ``Request`` of a run, built now for a read that took ``_read_parsed``
        (once a step needs it: a hook, a failure, an odd result):
        the one ``decode`` returns for its frame (the schema it named, if any, and its
        entity's own name)."""
        message = run.message
        if message is None:
            assert run.message_id is not None and run.entity is not None
            message = run.message = Request(
                id=run.message_id,
                operation=Operation.READ,
                entity=run.entity.name,
                schema=run.schema,
                record_id=run.record_id,
                options=run.options,
            )
        assert isinstance(message, Request)
        return message

    def _read(self, conn: Connection, message: Request) -> None:
        """The most common request, a read, when no hook a read runs is registered: what
        ``_admit``, ``Pipeline.receive``, ``_start``, ``_before_operation`` and ``_storage``
        do for it, without the steps that have nothing to do (no hook to call, no write
        to hold notifications for, no second check). tests/core/test_fast_paths.py checks
        it sends what the general path sends."""
        if self._rate_limited and not self._rate_limit.allows(conn, self._now):
            run = self._answered(
                conn, message.id, ErrorInfo(code="rate_limited", message="too many requests")
            )
        else:
            try:
                run = self._compiler.read(conn, message)
            except InvalidRequest as exc:
                run = self._answered(conn, message.id, exc.error)
            else:
                if self._pipeline.start_at_once(conn, run):
                    self._read_storage(run, run.key, message.id)
                    return
        self._pipeline.receive(conn, run)

    def _admit(self, conn: Connection, message: InboundMessage | DecodeError) -> Run:
        """Validate a decoded message into a run; mistakes become finished runs."""
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
        if (
            isinstance(message, Subscribe)
            and (message.snapshot or message.resume is not None)
            and not self._change_feed
        ):
            return self._answered(
                conn,
                message.id,
                ErrorInfo(
                    code="change_feed_required",
                    message="snapshot and resume need the server's change feed "
                    "(wsspec serve --change-feed)",
                ),
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
        message_id = run.message_id
        assert message_id is not None
        timestamp = self._timestamp()
        try:
            frame = encode_success(message_id, data, metadata, timestamp)
        except Exception:
            frame = None
        if frame is None or len(frame) > self.limits.max_reply_bytes:
            if run.message is None:
                self._request(run)  # _finish reads the operation: read_error
            response = Response(
                id=message_id, success=True, timestamp=timestamp, data=data, metadata=metadata
            )
            self._finish(run, response)
            return
        # The Send's hint for the adapter's metrics: a direct read (no Request built).
        self._pipeline.finish(run, frame, _READ_SUCCESS if run.message is None else None)

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
        if hook_type not in self._hook_types:  # the common case: no hook, no context
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
        if run.message is None:
            # A read from _read_parsed that had to wait its turn. Still no hook a read
            # runs: all the steps below would do is ask for its storage operation.
            if self._no_read_hooks():
                assert run.message_id is not None
                self._read_storage(run, run.key, run.message_id)
                return
            self._request(run)  # a hook registered meanwhile: the general steps
        if self._change_feed and run.kind is RunKind.EXCLUSIVE:
            message = run.message
            if isinstance(message, Request) and message.operation in WRITE_OPERATIONS:
                # Its log entry may arrive before its StorageCompleted: hold from now.
                self._pipeline.hold_notifications(run)
        if HookType.BEFORE_HANDLE not in self._hook_types:
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
        if before not in self._hook_types:  # no hook: no continuation to build
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
        query = run.key
        kind = type(query)
        if (
            (kind is ReadOne or kind is ReadList)
            and self._no_read_hooks()
            and run.conn.state is ConnState.OPEN
        ):
            # A read answered with a result of the documented shape, no hook a read runs
            # registered: what the general path below does for it (result_problem,
            # _after) in a few checks. Anything else (None, a subclass, a wrong shape)
            # goes the general way.
            result = event.result
            if kind is ReadOne:
                if type(result) is dict:
                    run.result = result
                    self._succeed(run, result, _ONE_ROW)
                    return
            elif type(result) is ListResult:
                found = result.rows
                for row in found:
                    if type(row) is not dict:
                        break
                else:
                    run.result = found
                    self._succeed(run, found, _list_metadata(query, result))
                    return
        if run.message is None:
            self._request(run)  # a direct read's result goes the general way
        if run.kind is RunKind.EXCLUSIVE and isinstance(run.message, Subscribe):
            self._subscribe_read(run, event.result)
            return
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
                assert isinstance(query, ReadList)
                self._after(run, result.rows, _list_metadata(query, result))
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
        if run.message is None:
            self._request(run)
        if isinstance(run.message, Subscribe):
            self._abandon_start(run, ErrorInfo(code="subscribe_error", message=event.error.message))
            return
        assert isinstance(run.message, Request)
        self._fail(run, storage_error(run.message.operation, event.error))

    def _after(self, run: Run, data: Any, metadata: dict[str, Any] | None) -> None:
        assert isinstance(run.message, Request)
        run.result = data
        _before, after = OPERATION_HOOKS[run.message.operation]
        if after not in self._hook_types:  # no hook: no continuation to build
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
        message = run.message
        assert isinstance(message, Subscribe)
        if message.snapshot or message.resume is not None:
            self._start_subscription(run, subscription, message)
            return

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

    # --- snapshot and resume (PROTOCOL.md "Change feed") ------------------------------

    def _start_subscription(self, run: Run, subscription: Subscription, message: Subscribe) -> None:
        """Start a subscription with ``snapshot`` or ``resume``: it is routed to from now,
        its notifications kept (:class:`_Start`) until its reply, while the storage reads
        the rows or missed changes in one database snapshot. The reply's position then
        decides which kept notifications follow the rows or the replay (docs/core.md
        "Snapshot and resume")."""
        conn = run.conn
        if self._epoch is None:
            self._fail(
                run,
                ErrorInfo(
                    code="subscribe_error",
                    message="the server has not read the change log yet; subscribe again",
                ),
            )
            return
        assert run.entity is not None
        snapshot: ReadList | None = None
        if message.snapshot:
            try:
                snapshot = compile_read(run.entity, run.options, self.registry, self.limits)
            except InvalidRequest as exc:
                self._fail(run, exc.error)
                return
            except Exception as exc:  # only hooks can make options no client could send
                self._hook_broke(run, f"hooks left options that cannot be used: {exc!r}")
                return
        start = _Start(subscription, self._epoch, self._position)
        self._starting[subscription.id] = start
        self._subscriptions.add(subscription)
        conn.subscriptions[subscription.id] = subscription
        resume = message.resume
        if resume is not None and resume.epoch == self._epoch and resume.seq == self._position:
            # The client is exactly where this server is: nothing to read, nothing missed.
            self._started(
                run, start, recovered=True, after=resume.seq, through=resume.seq, entries=()
            )
            return
        operation = SubscribeRead(
            entity=run.entity,
            snapshot=snapshot,
            resume=resume,
            replay_limit=self.limits.max_replay,
        )
        run.key = operation
        self._next_id += 1
        self._storage_pending[self._next_id] = run
        self._out.append(
            RunStorage(operation_id=self._next_id, operation=operation, request_id=message.id)
        )

    def _subscribe_read(self, run: Run, result: Any) -> None:
        """The storage read of a starting subscription is in: decide ``recovered``."""
        assert isinstance(run.message, Subscribe) and run.subscription_id is not None
        start = self._starting.get(run.subscription_id)
        if start is None or run.conn.state is not ConnState.OPEN:
            return  # the client left meanwhile (_drop forgot the start)
        message = run.message
        operation = run.key
        assert isinstance(operation, SubscribeRead)
        problem = None
        if not isinstance(result, SubscribeReadResult):
            problem = f"storage returned {type(result).__name__}, not a SubscribeReadResult"
        elif result.seq < start.position:
            # The read's snapshot predates changes this server already routed: a backend
            # that does not read in one snapshot, or another database.
            problem = f"storage read seq {result.seq}, behind the routed position {start.position}"
        if problem is not None:
            self._log(LOG_ERROR, f"subscribe {message.id!r}: {problem}")
            self._abandon_start(
                run, ErrorInfo(code="subscribe_error", message="internal storage error")
            )
            return
        assert isinstance(result, SubscribeReadResult)
        if result.epoch != start.epoch:
            self._abandon_start(run, _LOG_RESET)
            return
        resume = message.resume
        entries = result.entries
        recovered = (
            resume is not None
            and entries is not None
            and len(entries) <= self.limits.max_replay
            and resumable(resume, result.epoch, result.trimmed_through, result.seq)
        )
        rows: ListResult | None = None
        if message.snapshot and not recovered:
            rows = result.rows
            problem = (
                "no rows for a snapshot"
                if rows is None or operation.snapshot is None
                else result_problem(operation.snapshot, rows)
            )
            if problem is not None:
                self._log(LOG_ERROR, f"subscribe {message.id!r}: storage returned {problem}")
                self._abandon_start(
                    run, ErrorInfo(code="subscribe_error", message="internal storage error")
                )
                return
        if recovered:
            assert resume is not None and entries is not None
            self._started(
                run, start, recovered=True, after=resume.seq, through=result.seq, entries=entries
            )
        else:
            self._started(
                run,
                start,
                recovered=False if resume is not None else None,
                after=result.seq,
                through=result.seq,
                rows=rows,
            )

    def _started(
        self,
        run: Run,
        start: _Start,
        *,
        recovered: bool | None,
        after: int,
        through: int,
        entries: tuple[LogEntry, ...] = (),
        rows: ListResult | None = None,
    ) -> None:
        """The read is in: the subscription receives exactly the matching changes after
        ``after``: the replayed ``entries`` (those up to ``through``, the read's end),
        then the live ones after ``through``. The rows go in the reply before the
        after-subscribe hooks (they may redact them), the position after them (they
        cannot change it)."""
        start.frames = self._replay_frames(start.subscription, entries)
        start.live_after = through
        result = run.result
        assert isinstance(result, dict)
        if rows is not None:
            result["rows"] = rows.rows
            result["total"] = rows.total
            if not rows.total_exact:  # as a read's metadata (Limits.max_count)
                result["total_exact"] = False

        def activate() -> None:
            subscription = start.subscription
            if subscription.id not in self._starting:
                return  # the client left while the hooks ran
            if start.epoch != self._epoch:
                self._abandon_start(run, _LOG_RESET)
                return
            if start.overflowed:
                self._abandon_start(run, _START_OVERFLOW)
                return
            reply = run.result
            if isinstance(reply, dict):
                reply = {**reply, "epoch": start.epoch, "seq": after}
                if recovered is not None:
                    reply["recovered"] = recovered
            frames = start.frames
            frames.extend(frame for seq, frame in start.kept if seq > through)
            start.frames, start.kept = [], []
            if self._position >= through:
                del self._starting[subscription.id]
            else:
                # The read went beyond this server's position: the changes up to its end
                # will still arrive live, and are in the rows or the replay already.
                start.live = True
            # Held until the reply has gone out, then sent right behind it.
            self._pipeline.hold_burst(run, frames)
            self._succeed(run, reply)

        self._run_hooks(run, HookType.AFTER_SUBSCRIBE, activate)

    def _abandon_start(self, run: Run, error: ErrorInfo) -> None:
        """A starting subscription cannot be answered as asked: forget it, answer ``error``."""
        subscription_id = run.subscription_id
        if subscription_id is not None and self._starting.pop(subscription_id, None) is not None:
            self._subscriptions.remove(subscription_id)
            run.conn.subscriptions.pop(subscription_id, None)
        if run.conn.state is ConnState.OPEN:
            self._fail(run, error)

    def _replay_frames(
        self, subscription: Subscription, entries: tuple[LogEntry, ...]
    ) -> list[str]:
        """The notifications of replayed log entries for one subscription, by the rules of
        live ones (``_route_change``): its filters on the rows before and after."""
        frames: list[str] = []
        if not entries:
            return frames
        timestamp = self._timestamp()
        filters = subscription.filters
        for entry in entries:
            change = self._entry_change(entry)
            if change is None:
                continue
            entity, seq, operation, old, new = change
            if entity is not subscription.entity:
                self._log(
                    LOG_WARNING,
                    f"replayed change log entry {seq} skipped: it is of "
                    f"{entity.qualified_name}, not {subscription.entity.qualified_name}",
                )
                continue
            try:
                before = old is not None and matches(filters, old)
                after = new is not None and matches(filters, new)
            except Exception as exc:
                self._log(LOG_ERROR, f"replayed change log entry {seq} not routable ({exc!r})")
                continue
            if before:
                effect, data = (CHANGE_MODIFIED, new) if after else (CHANGE_REMOVED, old)
            elif after:
                effect, data = CHANGE_ADDED, new
            else:
                continue
            try:
                frames.append(
                    self._notification_frame(
                        entity, operation, subscription.id, data, effect, seq, timestamp
                    )
                )
            except Exception as exc:
                self._log(
                    LOG_ERROR,
                    f"replayed change log entry {seq} not notified: its row cannot be "
                    f"encoded ({exc})",
                )
        return frames

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
        order; a row the codec cannot write is logged and not notified to anyone.

        The frames of one change differ only in ``subscription_id`` (and in ``data`` and
        ``change`` between added/modified and removed): each distinct frame is encoded
        once, and each subscription's frame spliced from its two halves around the id.
        The id comes before ``data`` in the frame (``encode`` writes a notification's
        keys in a fixed order), so the first ``"subscription_id":""`` is the key's; ids
        are the engine's ``sub-N``, which JSON writes as they are."""
        timestamp = self._timestamp()
        starting = self._starting
        halves: dict[tuple[int, str | None], tuple[str, str]] = {}
        for subscription, data, change in deliveries:
            conn = self._connections.get(subscription.connection_id)
            if conn is None or conn.state is not ConnState.OPEN:
                continue
            key = (id(data), change)
            parts = halves.get(key)
            if parts is None:
                try:
                    frame = self._notification_frame(
                        entity, operation, "", data, change, seq, timestamp
                    )
                except Exception as exc:
                    self._log(LOG_ERROR, f"{what} not notified: its row cannot be encoded ({exc})")
                    return
                cut = frame.index(_EMPTY_SUBSCRIPTION_ID) + _ID_VALUE_OFFSET
                parts = halves[key] = (frame[:cut], frame[cut:])
            frame = parts[0] + subscription.id + parts[1]
            if starting:
                start = starting.get(subscription.id)
                if start is not None:
                    assert seq is not None  # only a change feed starts subscriptions
                    if not start.live:
                        start.keep(seq, frame, self.limits.max_replay)
                        continue
                    if seq <= start.live_after:
                        continue  # in its snapshot or replay already
            self._pipeline.notify(conn, frame)

    @staticmethod
    def _notification_frame(
        entity: Entity,
        operation: Operation,
        subscription_id: str,
        data: Row | None,
        change: str | None,
        seq: int | None,
        timestamp: str,
    ) -> str:
        return encode(
            Notification(
                operation=operation,
                subscription_id=subscription_id,
                schema=entity.schema,
                entity=entity.name,
                data=data,
                timestamp=timestamp,
                seq=seq,
                change=change,
            )
        )

    def _on_change(self, event: ChangeCommitted) -> None:
        if self._change_feed:
            # The log already has every committed change, with its seq; one notified
            # beside it would carry none, and clients de-duplicate and resume by seq.
            self._log(
                LOG_WARNING,
                "ChangeCommitted ignored: with the change feed, changes come from the log",
            )
            return
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
            if self._feed:
                self._log(
                    LOG_WARNING,
                    f"{len(self._feed)} change log entries of the old epoch not routed",
                )
                self._feed.clear()
            self._feed_through = 0
        self._feed.extend(event.entries)
        through = event.through
        if isinstance(through, int) and not isinstance(through, bool):
            self._feed_through = max(self._feed_through, through)
        self._route_feed()

    def _route_feed(self) -> None:
        """Route the entries handed over, in order, while no subscribing client is too far
        behind (``Pipeline.congested``); the rest wait for its frames to be written, or
        for it to be closed after ``Limits.feed_stall_timeout``."""
        feed = self._feed
        congested = self._pipeline.congested
        while feed and not congested:
            self._route_entry(feed.popleft())
        if feed:
            return
        if self._feed_through > self._position:
            self._position = self._feed_through
        if self._starting:
            # Subscriptions whose start read beyond the position are fully live once the
            # position has caught up with it.
            position = self._position
            for subscription_id, start in list(self._starting.items()):
                if start.live and start.live_after <= position:
                    del self._starting[subscription_id]

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
        change = self._entry_change(entry)
        if change is not None:
            self._route_change(*change)

    def _entry_change(
        self, entry: LogEntry
    ) -> tuple[Entity, int, Operation, Row | None, Row | None] | None:
        """The entity, ``seq``, operation and coerced rows before and after of a log
        entry; ``None`` (logged) when the entry cannot be used."""
        seq = entry.seq
        try:
            resolved = self.registry.resolve(entry.schema, entry.entity)
        except Exception as exc:
            resolved = ResolutionError(message=f"unusable entity name ({exc!r})")
        if isinstance(resolved, ResolutionError):
            self._log(LOG_WARNING, f"change log entry {seq} skipped: {resolved.message}")
            return None
        operation = entry.operation
        needs_old = operation is Operation.UPDATE or operation is Operation.DELETE
        needs_new = operation is Operation.UPDATE or operation is Operation.CREATE
        if not (needs_old or needs_new):
            self._log(LOG_WARNING, f"change log entry {seq} skipped: {operation!r} is not a write")
            return None
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
                return None
            try:
                rows.append(coerce_change_row(resolved, raw))
            except InvalidRequest as exc:
                self._log(
                    LOG_WARNING,
                    f"change log entry {seq} ({resolved.qualified_name}) skipped: "
                    f"{exc.error.message}: {raw!r}",
                )
                return None
            except Exception as exc:
                self._log(
                    LOG_WARNING,
                    f"change log entry {seq} ({resolved.qualified_name}) skipped ({exc!r})",
                )
                return None
        old, new = rows
        return resolved, seq, operation, old, new

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


def _list_metadata(query: ReadList, result: ListResult) -> dict[str, Any]:
    """The ``metadata`` of a list read's response (docs/protocol.md "Paging")."""
    metadata: dict[str, Any] = {
        "total": result.total,
        "count": len(result.rows),
        "limit": query.limit,
        "offset": query.offset,
    }
    if not result.total_exact:  # counted up to Limits.max_count only
        metadata["total_exact"] = False
    return metadata


#: Where a notification frame written with an empty ``subscription_id`` is cut in two.
_EMPTY_SUBSCRIPTION_ID = '"subscription_id":""'
_ID_VALUE_OFFSET = len('"subscription_id":"')

_LOG_RESET = ErrorInfo(
    code="subscribe_error",
    message="the change log was reset while subscribing; subscribe again",
)
_START_OVERFLOW = ErrorInfo(
    code="subscribe_error",
    message="too many changes arrived while the subscription started; subscribe again",
)


class _Start:
    """A subscription between its start and its reply (``snapshot`` or ``resume``).

    ``kept`` holds its live notifications from the start, ``(seq, frame)``, in order; at
    the reply those after the read's end follow the replay (``frames``), the others are
    in the rows or the replay already. When the read went beyond the engine's position,
    the start stays (``live``) until the position catches up, to drop the live changes
    the read already had. More than ``Limits.max_replay`` kept drops them and
    fails the subscribe: memory stays bounded whatever the storage's delay.
    """

    __slots__ = (
        "epoch",
        "frames",
        "kept",
        "live",
        "live_after",
        "overflowed",
        "position",
        "subscription",
    )

    def __init__(self, subscription: Subscription, epoch: str, position: int) -> None:
        self.subscription = subscription
        #: The log's epoch and the engine's position when it started.
        self.epoch = epoch
        self.position = position
        self.kept: list[tuple[int, str]] = []
        self.overflowed = False
        self.frames: list[str] = []
        self.live_after = position
        #: Replied to, but the read went beyond the engine's position: live changes up to
        #: ``live_after`` are dropped (they were in the rows or the replay).
        self.live = False

    def keep(self, seq: int, frame: str, limit: int) -> None:
        if self.overflowed:
            return
        if len(self.kept) >= limit:
            self.overflowed = True
            self.kept.clear()
            return
        self.kept.append((seq, frame))
