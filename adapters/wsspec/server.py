"""The trio + trio-websocket adapter: runs a :class:`wsspec_core.Engine` over real sockets.

Theory of operation.  One :class:`_Runtime` per :func:`serve` call owns the engine and is the
only code that calls ``engine.handle()``.  Everything that happens (a handshake, a message,
a storage result, a hook outcome, a pong, a timer) becomes an event passed to
:meth:`_Runtime.feed`, which calls ``handle()`` and hands each returned action to its handler
through a ``{type: handler}`` table.  Handlers never ``await``: they start a task, put a frame
on a bounded channel, or set a ``trio.Event`` (STYLE.md principle 9; mitmproxy ``server.py``:
"No ``await`` beyond this point").  The adapter decides no protocol question: size limits,
ordering, backpressure, keepalive, timeouts and errors are the engine's.

Per connection: one reader task that drains the socket and reports ``MessageReceived`` (it
waits on a ``trio.Event`` while the engine has paused reading, and while the replies already
queued leave no room for those of the requests the engine may still hold), and one writer
task that drains a bounded outbound channel (``Limits.outbound_queue``), writing the frames
queued together with one system call.  A frame that does not fit is reported as
``OutboundQueueFull`` and the engine decides what to do (it closes the slow consumer).
``CloseConnection`` travels through the same channel, so frames queued before it are sent
first.

Storage runs in the runtime's own worker threads, started once per :func:`serve` (not
``trio.to_thread``, whose hop costs more than a cached SQLite query).  ``storage_threads``
read threads share one queue, so a slow query occupies one of them while the others keep
serving; one write thread has a queue of its own, so that write completions reach the engine
in commit order (docs/DESIGN-NOTES.md, decision 10).  A thread takes every operation queued
(up to ``STORAGE_BATCH``) and hands their events back with one
``TrioToken.run_sync_soon`` call, whose callback feeds them to the engine on the trio thread
(no task per operation).  Background tasks report failures into the engine as events;
nothing they do raises into the caller's nursery.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from wsproto.events import TextMessage

from wsspec_core import (
    AcceptConnection,
    ChangeCommitted,
    CloseConnection,
    ConnectionOpened,
    Create,
    Delete,
    Engine,
    EntityRegistry,
    Event,
    Hook,
    HookError,
    HookRegistry,
    HooksCompleted,
    HooksFailed,
    HookType,
    Limits,
    MessageReceived,
    Operation,
    FramesWritten,
    Log,
    BroadcastRequested,
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
    StorageError,
    StorageErrorKind,
    StorageFailed,
    StorageFailure,
    StorageOperation,
    TimePassed,
    Update,
    encode,
    encode_json,
    hook_failure,
)
from wsspec_core import (
    ConnectionClosed as ConnectionClosedEvent,
)

__all__ = ["App", "Storage", "serve"]

logger = logging.getLogger("wsspec.server")

#: Seconds a connection gets to flush its queue and finish the closing handshake once the
#: engine asked to close it; after that the socket is dropped (a client that never reads
#: cannot receive a close frame either).
CLOSE_TIMEOUT = 10.0
#: Seconds a graceful shutdown may take before the remaining connections are dropped.
SHUTDOWN_TIMEOUT = 30.0
#: Worker threads running read operations (writes have one thread of their own).  They
#: share one queue, so a slow query occupies one thread while the others keep serving.
STORAGE_THREADS = 8
#: Most operations a worker thread takes from its queue at once and reports together:
#: handing results back to the trio thread costs more than a cached SQLite query.
STORAGE_BATCH = 16
#: Most frames written to one client with one system call.
WRITE_BATCH = 64


class Storage(Protocol):
    """What :class:`App` needs from a storage backend (``PeeweeStorage``, ``MemoryStorage``):
    a synchronous, thread-safe ``execute(operation) -> result`` that raises
    ``wsspec_core.StorageFailure`` for expected failures.  (``entities()`` too, unless the
    App is given a ``registry``.)  Optionally ``never_blocks(operation) -> bool``: True
    for operations cheap enough to run on the event loop (``PeeweeStorage`` says so of
    SQLite reads by key); the others go to the worker threads."""

    def execute(self, operation: StorageOperation) -> Any: ...


def _always_blocks(operation: StorageOperation) -> bool:
    return False


class App:
    """A wsspec server: storage, the entities it exposes, hooks and limits.

    >>> app = App(PeeweeStorage.from_url("sqlite:///app.db"))   # doctest: +SKIP
    >>> @app.hook("before_read")                                 # doctest: +SKIP
    ... def only_mine(ctx): ctx.add_filter("user_id", "eq", ctx.metadata["user_id"])

    The entities default to ``storage.entities()``.  Storage operations run in worker
    threads: reads on ``storage_threads`` threads, writes on one thread of their own;
    ``storage_threads=0`` runs them inline on the event loop instead, which is faster and
    only right for storage that never blocks (``MemoryStorage``).  While :func:`serve` runs, the
    counters, :meth:`broadcast`, :meth:`notify_change` and :meth:`request_shutdown` act on
    the running server; they must be called from the trio thread that runs it.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        registry: EntityRegistry | None = None,
        hooks: HookRegistry | None = None,
        limits: Limits | None = None,
        storage_threads: int = STORAGE_THREADS,
    ) -> None:
        self.storage = storage
        if registry is None:
            entities = getattr(storage, "entities", None)
            if entities is None:
                raise TypeError("this storage has no entities(): pass App(..., registry=...)")
            registry = EntityRegistry(entities())
        registry.validate()
        self.registry = registry
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.limits = limits if limits is not None else Limits()
        if storage_threads < 0:
            raise ValueError("storage_threads must be 0 (inline) or more")
        self.storage_threads = storage_threads
        self._runtime: _Runtime | None = None

    def hook(self, hook_type: HookType | str) -> Callable[[Hook], Hook]:
        """Decorator: ``@app.hook("before_connect")``. Hooks may be plain or ``async``."""
        return self.hooks.on(hook_type)

    @property
    def connection_count(self) -> int:
        """Open connections as the engine counts them (0 when not serving)."""
        return self._runtime.engine.connection_count if self._runtime is not None else 0

    @property
    def subscription_count(self) -> int:
        return self._runtime.engine.subscription_count if self._runtime is not None else 0

    def broadcast(
        self,
        payload: Mapping[str, Any],
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> int:
        """Queue ``payload`` (one JSON text frame) for every open connection, or for those
        whose connection metadata (the dict hooks see as ``ctx.metadata``) ``predicate``
        accepts.  Returns how many connections it was queued for.  A connection whose
        outbound queue is full is reported to the engine, which closes it as a slow
        consumer."""
        runtime = self._require_runtime()
        return runtime.broadcast(encode_json(payload), predicate)

    def notify_change(
        self,
        entity: str,
        operation: Operation | str,
        row: dict[str, Any],
        *,
        schema: str | None = None,
    ) -> None:
        """Report a write made outside the server (another process, a batch job) so that
        matching subscribers are notified.  ``row`` is the full row after the write, or
        for a delete the full row as it was."""
        runtime = self._require_runtime()
        runtime.feed(
            ChangeCommitted(
                schema=schema,
                entity=entity,
                operation=Operation(operation.lower() if isinstance(operation, str) else operation),
                row=row,
                now=time.time(),
            )
        )

    def request_shutdown(self) -> None:
        """Start a graceful shutdown: stop accepting, let the engine finish in-flight work
        and close every connection with 1001; :func:`serve` then returns.  Does nothing
        when the app is not being served."""
        if self._runtime is not None:
            self._runtime.shutdown_requested.set()

    def _require_runtime(self) -> _Runtime:
        if self._runtime is None:
            raise RuntimeError("the app is not being served")
        return self._runtime


@attrs.frozen
class _Close:
    """The close sentinel on a connection's outbound channel."""

    code: int
    reason: str


@attrs.define(eq=False)
class _Connection:
    id: int
    request: WebSocketRequest
    info: RequestInfo
    outbound_send: trio.MemorySendChannel[str | _Close]
    outbound_recv: trio.MemoryReceiveChannel[str | _Close]
    #: Set once the engine decided on the handshake.
    decided: trio.Event = attrs.Factory(trio.Event)
    rejection: tuple[int, str] | None = None
    ws: WebSocketConnection | None = None
    accepted: trio.Event = attrs.Factory(trio.Event)
    #: Set while the reader may read; replaced by a fresh unset event on PauseReading.
    may_read: trio.Event = attrs.Factory(trio.Event)
    #: Set by the writer when the outbound backlog is low again (the reader waits on it).
    drained: trio.Event | None = None
    #: The engine sent CloseConnection: no more events from this connection but its end.
    closing: bool = False
    close_code: int | None = None
    overflowed: bool = False
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    #: The nursery of the connection's own tasks (reader, writer, pings), once accepted.
    nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        self.may_read.set()


def _backlog(conn: _Connection) -> int:
    """Frames waiting in the connection's outbound queue."""
    return conn.outbound_send.statistics().current_buffer_used


def _request_info(request: WebSocketRequest) -> RequestInfo:
    path, _, query = request.path.partition("?")
    headers = tuple(
        (
            name.decode("latin-1") if isinstance(name, bytes) else str(name),
            value.decode("latin-1") if isinstance(value, bytes) else str(value),
        )
        for name, value in request.headers
    )
    remote = request.remote
    address = getattr(remote, "address", None)
    port = getattr(remote, "port", None)
    if address is not None and port is not None:
        remote_address: str | None = f"{address}:{port}"
    else:
        remote_address = str(remote) if remote else None
    return RequestInfo(path=path, query=query, headers=headers, remote_address=remote_address)


class _Runtime:
    """The running server of one :func:`serve` call. See the module docstring."""

    services: trio.Nursery

    def __init__(self, app: App, path: str | None, close_timeout: float) -> None:
        self.app = app
        self.engine = Engine(app.registry, hooks=app.hooks, limits=app.limits)
        self.path = path
        self.close_timeout = close_timeout
        self.connections: dict[Hashable, _Connection] = {}
        self.shutdown_requested = trio.Event()
        self._connection_ended = trio.Event()
        self._ids = itertools.count(1)
        self._pending: collections.deque[Event] = collections.deque()
        self._sends = 0
        self._feeding = False
        # The worker threads' queues (None stops a thread).  Unbounded on purpose: the engine
        # bounds them. It runs at most max_in_flight reads and one write per connection at a
        # time (docs/DESIGN-NOTES.md decision 6).
        self._reads: queue.SimpleQueue[RunStorage | None] = queue.SimpleQueue()
        self._writes: queue.SimpleQueue[RunStorage | None] = queue.SimpleQueue()
        self._never_blocks: Callable[[StorageOperation], bool] = getattr(
            app.storage, "never_blocks", _always_blocks
        )
        # Set once the worker threads are stopped: results that arrive later are dropped.
        self._storage_stopped = False
        # A bug raised while feeding a storage result (see _report_storage).
        self._storage_bug: Exception | None = None
        self._storage_bug_found = trio.Event()
        self._timer_deadline: float | None = None
        self._timer_wakeup = trio.Event()
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
        """Hand ``event`` to the engine and dispatch its actions, without awaiting.

        An event raised while dispatching (a full outbound queue) is queued and fed after
        the current action list, so actions are always carried out in the order given.
        """
        self._pending.append(event)
        if self._feeding:
            return
        self._feeding = True
        try:
            while self._pending:
                actions = self.engine.handle(self._pending.popleft())
                for action in actions:
                    self._dispatch[type(action)](action)
        finally:
            self._feeding = False
        self._check_deadline()

    def _check_deadline(self) -> None:
        # Wake the timer only when the deadline moved earlier; a later or vanished one is
        # noticed when the timer wakes and re-checks.
        deadline = self.engine.next_deadline()
        current = self._timer_deadline
        if deadline is not None and (current is None or deadline < current):
            self._timer_wakeup.set()

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
            logger.debug("dropping a send to closed connection %s", action.connection_id)
            return
        self._sends += 1
        conn.outbound_send.send_nowait(action.frame)

    def _on_log(self, action: Log) -> None:
        logger.log(action.level, "%s", action.message)

    def _on_run_storage(self, action: RunStorage) -> None:
        if self.app.storage_threads == 0 or self._never_blocks(action.operation):
            # Inline: App(storage_threads=0) for storage that never blocks (MemoryStorage),
            # or an operation the storage says cannot block (a SQLite read by key), for
            # which a thread round trip would cost several times the query itself.
            # The completion is fed after the current action list (feed()).
            for event in self._execute_batch([action]):
                self.feed(event)
            return
        if isinstance(action.operation, Create | Update | Delete):
            self._writes.put(action)
        else:
            self._reads.put(action)

    def _on_run_hooks(self, action: RunHooks) -> None:
        self.services.start_soon(self._run_hooks, action)

    def _on_close(self, action: CloseConnection) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is None or conn.closing:
            return
        conn.closing = True
        conn.close_code = action.code
        conn.may_read.set()
        conn.decided.set()
        sentinel = _Close(action.code, action.reason)
        if action.discard_queued:
            while True:
                try:
                    conn.outbound_recv.receive_nowait()
                except trio.WouldBlock:
                    break
        conn.outbound_send.send_nowait(sentinel)
        self.services.start_soon(self._close_watchdog, conn)

    def _on_pause(self, action: PauseReading) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None and not conn.closing and conn.may_read.is_set():
            conn.may_read = trio.Event()

    def _on_resume(self, action: ResumeReading) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None:
            conn.may_read.set()

    def _on_send_ping(self, action: SendPing) -> None:
        conn = self.connections.get(action.connection_id)
        if conn is not None and not conn.closing and conn.nursery is not None:
            # In the connection's nursery: a pong that never comes must not outlive it.
            conn.nursery.start_soon(self._ping, conn)

    # --- background tasks: they report into the engine, never raise ------------------------

    def _execute_batch(self, batch: list[RunStorage]) -> list[Event]:
        """Runs in a worker thread: each operation of ``batch`` in turn, as events."""
        events: list[Event] = []
        for action in batch:
            try:
                result = self.app.storage.execute(action.operation)
            except StorageFailure as exc:
                events.append(
                    StorageFailed(
                        operation_id=action.operation_id, error=exc.error, now=time.time()
                    )
                )
            except Exception:
                logger.exception("storage operation %s failed", type(action.operation).__name__)
                error = StorageError(kind=StorageErrorKind.OTHER, message="internal storage error")
                events.append(
                    StorageFailed(operation_id=action.operation_id, error=error, now=time.time())
                )
            else:
                events.append(
                    StorageCompleted(
                        operation_id=action.operation_id, result=result, now=time.time()
                    )
                )
        return events

    def _storage_worker(
        self, operations: queue.SimpleQueue[RunStorage | None], token: trio.lowlevel.TrioToken
    ) -> None:
        """A worker thread: takes the operations queued (up to STORAGE_BATCH), runs them and
        hands their events to the trio thread in one callback, until it takes a None."""
        running = True
        while running:
            batch: list[RunStorage] = []
            operation = operations.get()
            while operation is not None:
                batch.append(operation)
                if len(batch) == STORAGE_BATCH:
                    break
                try:
                    operation = operations.get_nowait()
                except queue.Empty:
                    break
            else:
                running = False  # took the None: run what it took, then stop
            if batch:
                try:
                    token.run_sync_soon(self._report_storage, self._execute_batch(batch))
                except trio.RunFinishedError:
                    return

    def _report_storage(self, events: list[Event]) -> None:
        """Runs in the trio thread.  ``run_sync_soon`` runs its calls in FIFO order, so the
        engine hears of one thread's operations in the order it ran them: writes (one
        thread) in commit order (docs/DESIGN-NOTES.md decision 10)."""
        if self._storage_stopped:
            return
        try:
            for event in events:
                self.feed(event)
        except Exception as exc:
            # A bug. Raised here it would end the whole trio.run as a TrioInternalError;
            # relay it to run_storage_threads, which raises it out of serve().
            self._storage_bug = exc
            self._storage_bug_found.set()

    async def run_storage_threads(self) -> None:
        """Runs ``storage_threads`` read threads and one write thread until cancelled; then
        drops the operations not started and waits for those running."""
        if not self.app.storage_threads:
            return
        token = trio.lowlevel.current_trio_token()
        queues = [self._reads] * self.app.storage_threads + [self._writes]
        threads = [
            threading.Thread(
                target=self._storage_worker,
                args=(operations, token),
                name=f"wsspec-storage-{'write' if operations is self._writes else 'read'}",
                # Joined below; daemon only so that a storage call that never returns
                # cannot keep the interpreter alive after trio.run ended some other way.
                daemon=True,
            )
            for operations in queues
        ]
        for thread in threads:
            thread.start()
        try:
            await self._storage_bug_found.wait()
            assert self._storage_bug is not None
            raise self._storage_bug
        finally:
            for operations in (self._reads, self._writes):
                while True:
                    try:
                        operations.get_nowait()
                    except queue.Empty:
                        break
            for operations in queues:
                operations.put(None)
            # Like trio.to_thread.run_sync, wait for the operations running (and feed their
            # results: the engine may still be finishing a connection).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_join_all, threads)
            self._storage_stopped = True

    async def _run_hooks(self, action: RunHooks) -> None:
        try:
            for hook in action.hooks:
                outcome = hook(action.context)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception as exc:
            if not isinstance(exc, HookError):
                logger.exception("%s hook %r raised", action.hook_type.value, hook)
            self.feed(
                HooksFailed(
                    call_id=action.call_id,
                    error=hook_failure(exc),
                    status=getattr(exc, "status", 403),
                    now=time.time(),
                )
            )
            return
        self.feed(HooksCompleted(call_id=action.call_id, now=time.time()))

    async def _ping(self, conn: _Connection) -> None:
        assert conn.ws is not None
        try:
            await conn.ws.ping()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if conn.id in self.connections and not conn.closing:
            self.feed(PongReceived(connection_id=conn.id, now=time.time()))

    async def _close_watchdog(self, conn: _Connection) -> None:
        await trio.sleep(self.close_timeout)
        conn.cancel_scope.cancel()

    async def timer(self) -> None:
        """Feeds ``TimePassed`` when the engine's next deadline passes."""
        while True:
            self._timer_wakeup = trio.Event()
            deadline = self._timer_deadline = self.engine.next_deadline()
            if deadline is None:
                await self._timer_wakeup.wait()
                continue
            delay = deadline - time.time()
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._timer_wakeup.wait()
                continue  # re-check: the deadline may have moved meanwhile
            self.feed(TimePassed(now=time.time()))
            if self.engine.next_deadline() == deadline:
                # The engine did not move its deadline on (it should have): don't spin.
                await trio.sleep(0.05)
            else:
                await trio.sleep(0)

    # --- connections ------------------------------------------------------------------------

    async def handle_request(self, request: WebSocketRequest) -> None:
        """trio-websocket's handler: one call per handshake, returns when it is over."""
        info = _request_info(request)
        if self.path is not None and info.path != self.path:
            await request.reject(404, body=b"not found")
            return
        send, recv = trio.open_memory_channel[str | _Close](float("inf"))
        conn = _Connection(next(self._ids), request, info, send, recv)
        self.connections[conn.id] = conn
        try:
            self.feed(ConnectionOpened(connection_id=conn.id, request=info, now=time.time()))
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
                await request.reject(status, body=reason.encode())
                return
            conn.ws = await request.accept()
            conn.accepted.set()
            logger.info("connection %s opened from %s", conn.id, info.remote_address)
            with conn.cancel_scope:
                async with trio.open_nursery() as nursery:
                    conn.nursery = nursery
                    nursery.start_soon(self._writer, conn)
                    await self._reader(conn)
                    if not conn.closing:
                        nursery.cancel_scope.cancel()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            del self.connections[conn.id]
            self.feed(ConnectionClosedEvent(connection_id=conn.id, now=time.time()))
            if conn.rejection is None:
                logger.info(
                    "connection %s closed (%s)",
                    conn.id,
                    conn.close_code if conn.close_code is not None else _peer_close(conn),
                )
            self._connection_ended.set()

    async def wait_all_closed(self) -> None:
        while self.connections:
            self._connection_ended = trio.Event()
            await self._connection_ended.wait()

    async def _reader(self, conn: _Connection) -> None:
        assert conn.ws is not None
        while True:
            if not conn.may_read.is_set():
                # Not Event.wait() unconditionally: on a set event it still yields to the
                # scheduler, which made two run-loop rounds per message instead of one.
                await conn.may_read.wait()
            try:
                data = await conn.ws.get_message()
            except ConnectionClosed:
                return
            if not conn.closing:
                self.feed(MessageReceived(connection_id=conn.id, data=data, now=time.time()))

    async def _writer(self, conn: _Connection) -> None:
        assert conn.ws is not None
        recv = conn.outbound_recv
        try:
            async for first in recv:
                # Take every frame already queued and write them together: one system call
                # (and one wake-up of the client) instead of one per frame.
                frames: list[str] = []
                item: str | _Close = first
                while isinstance(item, str):
                    frames.append(item)
                    if len(frames) == WRITE_BATCH:
                        break
                    try:
                        item = recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                if frames:
                    await _send_frames(conn.ws, frames)
                    if not conn.closing:
                        self.feed(
                            FramesWritten(connection_id=conn.id, count=len(frames), now=time.time())
                        )
                if isinstance(item, _Close):
                    await conn.ws.aclose(item.code, item.reason)
                    break
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        conn.cancel_scope.cancel()

    def broadcast(self, frame: str, predicate: Callable[[dict[str, Any]], bool] | None) -> int:
        before = self._sends
        self.feed(BroadcastRequested(frame=frame, predicate=predicate, now=time.time()))
        return self._sends - before


async def _send_frames(ws: WebSocketConnection, frames: list[str]) -> None:
    """Send ``frames`` as separate WebSocket text messages, written with one ``send_all``.

    trio-websocket has no call for several messages at once, so this does what its
    ``send_message`` does for each frame (``_send``: the same lock, the same error mapping)
    with the frames' bytes joined.  Without those internals it falls back to
    ``send_message`` per frame.
    """
    if len(frames) == 1 or not _CAN_COALESCE:
        for frame in frames:
            await ws.send_message(frame)
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    data = b"".join(ws._wsproto.send(TextMessage(data=frame)) for frame in frames)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason) from None


_CAN_COALESCE = all(
    hasattr(WebSocketConnection, name) for name in ("_abort_web_socket", "_send")
) and all(
    name in WebSocketConnection.__init__.__code__.co_names
    for name in ("_stream_lock", "_wsproto", "_stream", "_close_reason")
)


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


def _peer_close(conn: _Connection) -> str:
    reason = conn.ws.closed if conn.ws is not None else None
    if reason is None:
        return "dropped"
    return f"code {reason.code}"


async def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    path: str | None = "/ws",
    close_timeout: float = CLOSE_TIMEOUT,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``ws://host:port/path`` until :meth:`App.request_shutdown` is called
    or the calling scope is cancelled, then shut down gracefully.

    Use inside your own nursery: ``url = await nursery.start(serve, app, "127.0.0.1", 0)``
    returns the URL actually bound (port 0 picks a free port; :func:`port_of` reads it).
    ``path=None`` accepts any path; other paths are refused with HTTP 404.

    Shutdown: stop accepting, tell the engine, which finishes the requests it accepted and
    closes every connection with 1001 (going away); wait up to ``shutdown_timeout`` seconds
    for the connections to close, then drop the rest.  Cancellation starts the same
    graceful shutdown, shielded, so it can take up to ``shutdown_timeout`` seconds.
    """
    if app._runtime is not None:
        raise RuntimeError("this app is already being served")
    runtime = _Runtime(app, path, close_timeout)
    app._runtime = runtime
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                _run_server, runtime, host, port, path, close_timeout, shutdown_timeout
            )
            task_status.started(url)
            try:
                await runtime.shutdown_requested.wait()
            finally:
                # On cancellation too: _run_server is shielded and shuts down gracefully.
                runtime.shutdown_requested.set()
    finally:
        app._runtime = None


async def _run_server(
    runtime: _Runtime,
    host: str,
    port: int,
    path: str | None,
    close_timeout: float,
    shutdown_timeout: float,
    task_status: trio.TaskStatus[str],
) -> None:
    # Shielded: the caller's cancellation must not kill in-flight writes or connections
    # mid-message; it sets shutdown_requested instead, and the shutdown below is bounded.
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as services:
            runtime.services = services
            services.start_soon(runtime.timer)
            services.start_soon(runtime.run_storage_threads)
            async with trio.open_nursery() as handlers:
                listeners = await trio.open_tcp_listeners(port, host=host)
                server = trio_websocket.WebSocketServer(
                    runtime.handle_request,
                    listeners,
                    handler_nursery=handlers,
                    # So that trio-websocket never buffers a frame the engine would refuse.
                    max_message_size=runtime.app.limits.max_message_bytes,
                    disconnect_timeout=close_timeout,
                )
                listening = trio.CancelScope()

                async def listen(
                    task_status: trio.TaskStatus[trio_websocket.WebSocketServer],
                ) -> None:
                    with listening:
                        await server.run(task_status=task_status)

                await handlers.start(listen)
                bound_host, bound_port = listeners[0].socket.getsockname()[:2]
                url = f"ws://{_format_host(bound_host)}:{bound_port}{path or '/'}"
                logger.info("listening on %s", url)
                task_status.started(url)
                await runtime.shutdown_requested.wait()
                logger.info("shutting down: %d connections open", len(runtime.connections))
                listening.cancel()
                runtime.feed(ShutdownRequested(now=time.time()))
                with trio.move_on_after(shutdown_timeout):
                    await runtime.wait_all_closed()
                handlers.cancel_scope.cancel()
            services.cancel_scope.cancel()


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_of(url: str) -> int:
    """The port of a URL returned by :func:`serve`."""
    port = urlsplit(url).port
    assert port is not None
    return port
