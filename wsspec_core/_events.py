"""Events: what happened, reported to :meth:`wsspec_core.Engine.handle` by an adapter.

Every event carries two readings of the adapter's clocks, because the engine never reads
a clock itself (docs/core.md "Time"):

* ``now``: seconds on a *monotonic* clock (``time.monotonic()``, ``trio.current_time()``,
  ``loop.time()``). Keepalive, timers and the request rate run on it, so a step of the
  wall clock (NTP, a suspended laptop) never fires or delays them.
* ``wall``: seconds since the Unix epoch (``time.time()``), read only for the
  ``timestamp`` of responses and notifications. ``None`` (the default) means "the same
  as ``now``", which suits drivers whose one clock is the wall clock, and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import attrs

from ._hooks import RequestInfo
from ._messages import ErrorInfo, Operation, quick_init
from ._query import LogEntry, StorageError

#: Chosen by the adapter, unique among its open connections (an int counter is typical).
ConnectionId = Hashable


@quick_init
@attrs.frozen(kw_only=True)
class ConnectionOpened:
    """A client asked to open a WebSocket. The engine answers with ``AcceptConnection``
    or ``RejectConnection`` (after ``before_connect`` hooks, if any)."""

    connection_id: ConnectionId
    request: RequestInfo
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class MessageReceived:
    """One complete WebSocket message (text or binary frame payload)."""

    connection_id: ConnectionId
    data: str | bytes
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The connection is gone (either side closed it, or it broke)."""

    connection_id: ConnectionId
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class StorageCompleted:
    """The storage operation of ``RunStorage(operation_id=...)`` finished.

    ``result`` is as documented on the operation class (``ListResult``, a row, ``None``
    for not found, or a list of rows for a create)."""

    operation_id: int
    result: Any
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class StorageFailed:
    operation_id: int
    error: StorageError
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class HooksCompleted:
    """Every hook of ``RunHooks(call_id=...)`` returned. Changes they made to the
    context object are read from that same object."""

    call_id: int
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class HooksFailed:
    """A hook raised; ``error`` is :func:`wsspec_core.hook_failure` of the exception.
    ``status`` is the HTTP status for a refused ``before_connect`` (403 by default)."""

    call_id: int
    error: ErrorInfo
    now: float
    wall: float | None = None
    status: int = 403


@quick_init
@attrs.frozen(kw_only=True)
class FramesWritten:
    """``count`` frames of this connection's ``Send`` actions were written to its socket
    (in order). The engine keeps each connection's backlog (frames asked for and not yet
    written) from these reports, and decides pause, resume and the slow-consumer close
    from it; report at least once per batch written."""

    connection_id: ConnectionId
    count: int
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class PongReceived:
    """The client answered a keepalive ping (a WebSocket control frame)."""

    connection_id: ConnectionId
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class TimePassed:
    """Call at (or after) :meth:`Engine.next_deadline`; the engine runs due timers."""

    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class ChangeCommitted:
    """A write made outside the engine (another process, a batch job) committed; the
    engine notifies matching subscriptions as if one of its own writes had.

    The row is coerced to the entity's column types like written data (``"7"`` on an
    integer column is 7); columns the entity does not have are dropped. A change naming an
    unknown entity, or a row that cannot be coerced, is logged (a ``Log`` action) and
    skipped: it comes from outside and must not stop the engine. An engine with a change
    feed logs and ignores it: the log has every committed change already, with its
    ``seq``."""

    schema: str | None
    entity: str
    operation: Operation
    #: The full row after the write; for a delete, the full row as it was.
    row: dict[str, Any]
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class ChangesLogged:
    """Changes a tailer read from the change log, in ``seq`` order (only for an
    ``Engine(change_feed=True)``; docs/core.md "Change feed").

    The engine routes each entry whose ``seq`` is larger than its position to the
    subscriptions it adds to, modifies in, or removes from (docs/protocol.md "Change
    feed"), then takes its ``seq`` as the position. Rows are coerced like those of
    :class:`ChangeCommitted`. An entry the engine cannot use (an unknown entity, a row
    that cannot be coerced, a ``seq`` not beyond the position) is logged and skipped: it
    comes from outside and must not stop the engine. An ``epoch`` other than the one the
    engine knew means the log was reset: logged, adopted, and the position starts again
    from 0.

    ``through``, if given, is the ``seq`` the tailer has read the log up to (at least the
    last entry's): an entry-free event with it moves the position, for a tailer that
    starts at the log's end or read entries of tables it does not hand over."""

    epoch: str
    entries: tuple[LogEntry, ...]
    now: float
    wall: float | None = None
    through: int | None = None


@quick_init
@attrs.frozen(kw_only=True)
class BroadcastRequested:
    """Send ``frame`` to every open connection, or to those whose connection metadata
    (the dictionary hooks see) ``predicate`` accepts. A predicate that raises skips
    that connection (and is logged). Counted against each backlog like any ``Send``."""

    frame: str
    predicate: Callable[[dict[str, Any]], bool] | None = None
    now: float
    wall: float | None = None


@quick_init
@attrs.frozen(kw_only=True)
class ShutdownRequested:
    """Stop taking new requests; finish every accepted one, then close every connection
    with 1001 (going away)."""

    now: float
    wall: float | None = None


Event = (
    ConnectionOpened
    | MessageReceived
    | ConnectionClosed
    | StorageCompleted
    | StorageFailed
    | HooksCompleted
    | HooksFailed
    | FramesWritten
    | PongReceived
    | TimePassed
    | ChangeCommitted
    | ChangesLogged
    | BroadcastRequested
    | ShutdownRequested
)
