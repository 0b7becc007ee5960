"""The client: :class:`wsspec_core.client.ClientEngine` carried out on anyio.

Three kinds of task run in one task group for the life of :func:`connect`: one per
connection attempt (connect, then read frames and write the queued ones), and one timer
that hands the engine ``TimePassed`` at its ``next_deadline()``. The application's
coroutines call in directly. Every path into the engine goes through ``_handle``, which
carries out all of the returned actions before anything can await (STYLE.md principle 9):
the engine's state and the adapter's never disagree. Errors of the network become events
(``ConnectFailed``, ``ConnectionLost``); nothing of the network raises into the
application except through a failed request.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from wsproto.utilities import ProtocolError

from wsspec_core import client as core

from ._errors import error_for
from ._subscription import Subscription
from ._websocket import (
    ConnectionClosed,
    HandshakeRejected,
    WebSocket,
    open_websocket,
    parse_url,
)

logger = logging.getLogger("wsspec.client")

#: A filter: ``(column, operator, value)``, ``(column, operator, value, logic_operator)``
#: or the protocol's own ``{"column", "operator", "value", "logic_operator"}``.
FilterLike = tuple[str, str, Any] | tuple[str, str, Any, str] | Mapping[str, Any]
#: A sort key: ``"name"`` (ascending), ``"-name"`` (descending), ``("name", "desc")`` or
#: ``{"column": "name", "direction": "desc"}``.
SortLike = str | tuple[str, str] | Mapping[str, Any]

#: Items a subscription holds for an application that has not taken them yet. Past it,
#: the client drops what comes until the application has taken them all, then resumes
#: from the last one kept (the server replays the rest from its log): a slow consumer
#: costs a replay, never memory without bound.
DEFAULT_MAX_BUFFERED = 10_000

_NETWORK_ERRORS = (
    OSError,
    ConnectionClosed,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
    ProtocolError,
)


def filter_dict(spec: FilterLike) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    if len(spec) == 3:
        column, operator, value = spec
        return {"column": column, "operator": operator, "value": value}
    if len(spec) == 4:
        column, operator, value, logic = spec
        return {"column": column, "operator": operator, "value": value, "logic_operator": logic}
    raise ValueError(f"a filter is (column, operator, value[, logic_operator]), not {spec!r}")


def sort_dict(spec: SortLike) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, str):
        if spec.startswith("-"):
            return {"column": spec[1:], "direction": "desc"}
        return {"column": spec, "direction": "asc"}
    column, direction = spec
    return {"column": column, "direction": direction}


def build_options(
    options: Mapping[str, Any] | None = None,
    *,
    filters: Iterable[FilterLike] | None = None,
    sort: Iterable[SortLike] | None = None,
    limit: int | None = None,
    offset: int | None = None,
    columns: Sequence[str] | None = None,
    omit_columns: Sequence[str] | None = None,
    preload: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The protocol's ``options`` object from keyword arguments (docs/protocol.md "Query
    options"); the keywords win over the same keys in ``options``."""
    built = dict(options or {})
    if filters is not None:
        built["filters"] = [filter_dict(f) for f in filters]
    if sort is not None:
        built["sort"] = [sort_dict(s) for s in sort]
    for key, value in (
        ("limit", limit),
        ("offset", offset),
        ("columns", columns),
        ("omit_columns", omit_columns),
        ("preload", preload),
    ):
        if value is not None:
            built[key] = list(value) if isinstance(value, Sequence | tuple) else value
    return built


class _Waiter:
    __slots__ = ("done", "failure", "response")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response: dict[str, Any] | None = None
        self.failure: core.Failure | None = None


class _Connection:
    def __init__(self, connection_id: int) -> None:
        self.id = connection_id
        self.scope = anyio.CancelScope()
        #: Frames to write, in order. Not bounded here: they are the application's own
        #: requests (each awaited by a caller), resubscribes and pings.
        self.outbox: deque[str] = deque()
        self.wakeup = anyio.Event()


class Client:
    """A connected WebSocketSpec client; made by :func:`connect`, not directly.

    Requests return the response's ``data`` (``request`` returns the whole response) or
    raise a :class:`~wsspec.client.ClientError`: :class:`~wsspec.client.RequestError`
    with the protocol's ``code`` and ``message`` when the server answered with an error.

    ``when_disconnected`` chooses what a request does while there is no connection:
    ``"wait"`` (the default) waits for the next one, within ``timeout``; ``"fail"`` fails
    at once with :class:`~wsspec.client.NotConnectedError`. Either way a write whose
    connection is lost before its response fails with
    :class:`~wsspec.client.ConnectionLostError` (it may or may not have happened), while a
    read is asked again on the next connection.
    """

    def __init__(
        self,
        url: str,
        task_group: anyio.abc.TaskGroup,
        *,
        config: core.ClientConfig,
        headers: Sequence[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        max_buffered: int,
        jitter: Callable[[], float],
    ) -> None:
        self.url = url
        self._task_group = task_group
        self._engine = core.ClientEngine(config)
        self._headers = list(headers)
        self._ssl_context = ssl_context
        self._max_buffered = max_buffered
        self._jitter = jitter
        self._ids = itertools.count(1)
        self._waiters: dict[Hashable, _Waiter] = {}
        self._subscriptions: dict[Hashable, Subscription] = {}
        self._connections: dict[int, _Connection] = {}
        self._phase = self._engine.phase
        self._phase_changed = anyio.Event()
        self._started = False
        self._timer_target = math.inf
        self._timer_wakeup = anyio.Event()
        self._actions: dict[type[Any], Callable[[Any], None]] = {
            core.OpenConnection: self._open_connection,
            core.SendFrame: self._send_frame,
            core.CloseConnection: self._close_connection,
            core.CompleteCall: self._complete_call,
            core.FailCall: self._fail_call,
            core.ConfirmSubscription: self._confirm_subscription,
            core.DeliverChange: self._deliver_change,
            core.DeliverResync: self._deliver_resync,
            core.EndSubscription: self._end_subscription,
            core.Stop: self._stop,
            core.Log: self._log,
        }

    # --- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._engine.phase is core.Phase.OPEN

    @property
    def config(self) -> core.ClientConfig:
        return self._engine.config

    # --- requests ----------------------------------------------------------------------

    async def request(
        self,
        operation: str,
        entity: str | None = None,
        *,
        schema: str | None = None,
        record_id: str | int | None = None,
        data: Any = None,
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        when_disconnected: str = core.WAIT,
    ) -> dict[str, Any]:
        """Send one ``request`` message and return the whole success response (``data``,
        ``metadata``, ``timestamp``)."""
        call_id = next(self._ids)
        waiter = _Waiter()
        self._waiters[call_id] = waiter
        now = anyio.current_time()
        try:
            self._handle(
                core.CallRequested(
                    call_id=call_id,
                    operation=operation,
                    entity=entity,
                    schema=schema,
                    record_id=record_id,
                    data=data,
                    options=dict(options or {}),
                    deadline=now + (self.config.request_timeout if timeout is None else timeout),
                    when_disconnected=when_disconnected,
                    now=now,
                )
            )
            await waiter.done.wait()
        except BaseException:
            if self._waiters.pop(call_id, None) is not None:
                self._handle(core.CallCancelled(call_id=call_id, now=anyio.current_time()))
            raise
        if waiter.failure is not None:
            raise error_for(waiter.failure)
        assert waiter.response is not None
        return waiter.response

    async def read(
        self,
        entity: str,
        record_id: str | int | None = None,
        *,
        schema: str | None = None,
        filters: Iterable[FilterLike] | None = None,
        sort: Iterable[SortLike] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        columns: Sequence[str] | None = None,
        omit_columns: Sequence[str] | None = None,
        preload: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        when_disconnected: str = core.WAIT,
    ) -> Any:
        """A list of records, or one record with ``record_id``."""
        built = build_options(
            options,
            filters=filters,
            sort=sort,
            limit=limit,
            offset=offset,
            columns=columns,
            omit_columns=omit_columns,
            preload=preload,
        )
        response = await self.request(
            "read",
            entity,
            schema=schema,
            record_id=record_id,
            options=built,
            timeout=timeout,
            when_disconnected=when_disconnected,
        )
        return response.get("data")

    async def create(
        self,
        entity: str,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        schema: str | None = None,
        timeout: float | None = None,
        when_disconnected: str = core.WAIT,
    ) -> Any:
        """The stored record (or records, for a list: one transaction)."""
        payload = dict(data) if isinstance(data, Mapping) else [dict(d) for d in data]
        response = await self.request(
            "create",
            entity,
            schema=schema,
            data=payload,
            timeout=timeout,
            when_disconnected=when_disconnected,
        )
        return response.get("data")

    async def update(
        self,
        entity: str,
        record_id: str | int,
        data: Mapping[str, Any],
        *,
        schema: str | None = None,
        timeout: float | None = None,
        when_disconnected: str = core.WAIT,
    ) -> Any:
        """The stored record after the (partial) update."""
        response = await self.request(
            "update",
            entity,
            schema=schema,
            record_id=record_id,
            data=dict(data),
            timeout=timeout,
            when_disconnected=when_disconnected,
        )
        return response.get("data")

    async def delete(
        self,
        entity: str,
        record_id: str | int,
        *,
        schema: str | None = None,
        timeout: float | None = None,
        when_disconnected: str = core.WAIT,
    ) -> Any:
        """``{"deleted": true, "id": ...}``."""
        response = await self.request(
            "delete",
            entity,
            schema=schema,
            record_id=record_id,
            timeout=timeout,
            when_disconnected=when_disconnected,
        )
        return response.get("data")

    async def meta(
        self,
        entity: str | None = None,
        *,
        schema: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """An entity's description, or the registered entities without one."""
        response = await self.request("meta", entity, schema=schema, timeout=timeout)
        return response.get("data")

    def subscribe(
        self,
        entity: str,
        *,
        schema: str | None = None,
        filters: Iterable[FilterLike] | None = None,
        options: Mapping[str, Any] | None = None,
        snapshot: bool = False,
        timeout: float | None = None,
    ) -> Subscription:
        """A subscription, to use as ``async with client.subscribe(...) as sub``: entering
        it subscribes (``sub.rows`` holds the snapshot when ``snapshot=True``), iterating
        it yields each :class:`~wsspec.client.Change` once and in order, or a
        :class:`~wsspec.client.Resync` when the server could not replay what a lost
        connection missed; leaving it unsubscribes. ``timeout`` bounds the first
        subscribe, connection waits included."""
        return Subscription(
            self,
            next(self._ids),
            entity=entity,
            schema=schema,
            options=build_options(options, filters=filters),
            snapshot=snapshot,
            timeout=self.config.request_timeout if timeout is None else timeout,
            max_buffered=self._max_buffered,
        )

    async def aclose(self) -> None:
        """Close the client: pending requests fail with
        :class:`~wsspec.client.ClientClosed`, subscriptions stop iterating."""
        self._handle(core.CloseRequested(now=anyio.current_time()))
        await anyio.lowlevel.checkpoint()

    # --- the engine ----------------------------------------------------------------------

    def _handle(self, event: core.Event) -> None:
        """Hand ``event`` to the engine and carry out every action; never awaits."""
        for action in self._engine.handle(event):
            self._actions[type(action)](action)
        if self._engine.phase is not self._phase:
            self._phase = self._engine.phase
            self._phase_changed.set()
            self._phase_changed = anyio.Event()
        deadline = self._engine.next_deadline()
        if deadline is not None and deadline < self._timer_target:
            self._timer_wakeup.set()

    async def _start(self) -> None:
        """Connect; return once connected, raise if the engine stopped first."""
        self._handle(core.ConnectRequested(now=anyio.current_time()))
        while self._engine.phase is not core.Phase.OPEN:
            if self._engine.stopped is not None:
                raise error_for(self._engine.stopped)
            await self._phase_changed.wait()
        self._started = True

    async def _run_timer(self) -> None:
        while True:
            deadline = self._engine.next_deadline()
            self._timer_target = math.inf if deadline is None else deadline
            self._timer_wakeup = anyio.Event()
            now = anyio.current_time()
            if deadline is not None and deadline <= now:
                self._handle(core.TimePassed(now=now, jitter=self._jitter()))
                await anyio.lowlevel.checkpoint()
                continue
            with anyio.move_on_after(self._timer_target - now):
                await self._timer_wakeup.wait()

    # --- connections --------------------------------------------------------------------

    async def _run_connection(self, connection: _Connection) -> None:
        try:
            with connection.scope:
                await self._use_connection(connection.id, connection)
        finally:
            self._connections.pop(connection.id, None)

    async def _use_connection(self, cid: int, connection: _Connection) -> None:
        try:
            ws = await open_websocket(
                self.url, headers=self._headers, ssl_context=self._ssl_context
            )
        except HandshakeRejected as exc:
            self._handle(
                core.ConnectFailed(
                    connection_id=cid,
                    now=anyio.current_time(),
                    jitter=self._jitter(),
                    reason=str(exc),
                    status=exc.status,
                )
            )
            return
        except _NETWORK_ERRORS as exc:
            self._handle(
                core.ConnectFailed(
                    connection_id=cid,
                    now=anyio.current_time(),
                    jitter=self._jitter(),
                    reason=_describe(exc),
                )
            )
            return
        reason: list[str] = []
        try:
            self._handle(core.ConnectionOpened(connection_id=cid, now=anyio.current_time()))
            if self._engine.connection_id != cid:
                return  # the engine had given up on this attempt: not ours to use
            async with anyio.create_task_group() as group:

                def ended(why: str) -> None:
                    reason.append(why)
                    group.cancel_scope.cancel()

                group.start_soon(self._write_frames, connection, ws, ended)
                group.start_soon(self._read_frames, connection, ws, ended)
        finally:
            await ws.close()
        self._handle(
            core.ConnectionLost(
                connection_id=cid,
                now=anyio.current_time(),
                jitter=self._jitter(),
                reason=reason[0] if reason else "closed",
            )
        )

    async def _read_frames(
        self, connection: _Connection, ws: WebSocket, ended: Callable[[str], None]
    ) -> None:
        try:
            while True:
                data = await ws.receive()
                self._handle(
                    core.FrameReceived(
                        connection_id=connection.id, data=data, now=anyio.current_time()
                    )
                )
        except _NETWORK_ERRORS as exc:
            ended(_describe(exc))

    async def _write_frames(
        self, connection: _Connection, ws: WebSocket, ended: Callable[[str], None]
    ) -> None:
        try:
            while True:
                if not connection.outbox:
                    connection.wakeup = anyio.Event()
                    await connection.wakeup.wait()
                    continue
                await ws.send(connection.outbox.popleft())
        except _NETWORK_ERRORS as exc:
            ended(_describe(exc))

    # --- actions ------------------------------------------------------------------------

    def _open_connection(self, action: core.OpenConnection) -> None:
        connection = _Connection(action.connection_id)
        self._connections[action.connection_id] = connection
        self._task_group.start_soon(self._run_connection, connection)

    def _send_frame(self, action: core.SendFrame) -> None:
        connection = self._connections.get(action.connection_id)
        if connection is not None:
            connection.outbox.append(action.frame)
            connection.wakeup.set()

    def _close_connection(self, action: core.CloseConnection) -> None:
        connection = self._connections.get(action.connection_id)
        if connection is not None:
            # A timeout is news; closing because the application closed the client is not.
            stopping = self._engine.phase is core.Phase.STOPPED
            logger.log(
                logging.DEBUG if stopping else logging.INFO,
                "closing the connection: %s",
                action.reason,
            )
            connection.scope.cancel()

    def _complete_call(self, action: core.CompleteCall) -> None:
        waiter = self._waiters.pop(action.call_id, None)
        if waiter is not None:
            waiter.response = action.response
            waiter.done.set()

    def _fail_call(self, action: core.FailCall) -> None:
        waiter = self._waiters.pop(action.call_id, None)
        if waiter is not None:
            waiter.failure = action.failure
            waiter.done.set()

    def _subscription(self, key: core.SubscriptionKey) -> Subscription | None:
        return self._subscriptions.get(key)

    def _confirm_subscription(self, action: core.ConfirmSubscription) -> None:
        sub = self._subscription(action.key)
        if sub is not None:
            sub._confirm(action.rows, action.epoch, action.seq, action.reply)

    def _deliver_change(self, action: core.DeliverChange) -> None:
        sub = self._subscription(action.key)
        if sub is not None and not sub._deliver(action.change):
            self._log_overflow(sub)

    def _deliver_resync(self, action: core.DeliverResync) -> None:
        sub = self._subscription(action.key)
        if sub is not None and not sub._deliver(action.resync):
            self._log_overflow(sub)

    def _log_overflow(self, sub: Subscription) -> None:
        logger.warning(
            "a subscription to %s has %d items not taken by the application: dropping "
            "what comes until it takes them, then resuming from the last one",
            sub.entity,
            self._max_buffered,
        )

    def _end_subscription(self, action: core.EndSubscription) -> None:
        sub = self._subscriptions.pop(action.key, None)
        if sub is not None:
            sub._end(action.failure)

    def _stop(self, action: core.Stop) -> None:
        # Before connect() returned, its exception tells the caller; later, a request may
        # not be waiting to tell anyone (a final 403 on reconnecting).
        if action.failure.code != core.CLOSED and self._started:
            logger.error("the client stopped: %s", action.failure.message)

    def _log(self, action: core.Log) -> None:
        logger.log(action.level, "%s", action.message)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    ssl_context: ssl.SSLContext | None = None,
    config: core.ClientConfig | None = None,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> AsyncIterator[Client]:
    """Connect to a WebSocketSpec server at ``url`` (``ws://`` or ``wss://``) and keep
    connected until the block ends, on asyncio or trio.

    Entering returns once the first connection is open, or raises
    :class:`~wsspec.client.ConnectError` / :class:`~wsspec.client.HandshakeRejected`
    (unless ``config.retry_first_connect``). After that the client reconnects by itself
    with backoff and resumes its subscriptions, except after a final refusal (HTTP 401 or
    403), when every request and subscription fails with
    :class:`~wsspec.client.HandshakeRejected`. ``headers`` go with every handshake (an
    ``Authorization`` header, say). ``config``: timings (:class:`ClientConfig`).
    """
    parse_url(url)  # a malformed URL is the caller's mistake: ValueError now
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    user_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            client = Client(
                url,
                group,
                config=config if config is not None else core.ClientConfig(),
                headers=pairs,
                ssl_context=ssl_context,
                max_buffered=max_buffered,
                jitter=random.random,
            )
            group.start_soon(client._run_timer)
            try:
                await client._start()
                yield client
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                client._handle(core.CloseRequested(now=anyio.current_time()))
                group.cancel_scope.cancel()
    except BaseExceptionGroup as group_error:
        # The task group wraps what the block raised; the background tasks raise nothing
        # of their own (their failures are events), so the caller gets its own exception
        # back, unwrapped. Anything else in the group is a bug and stays visible.
        if user_error is not None and _leaves(group_error) == [user_error]:
            raise user_error from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += _leaves(exc)
        else:
            found.append(exc)
    return found
