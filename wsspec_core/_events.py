"""Events: what happened, reported to :meth:`wsspec_core.Engine.handle` by an adapter.

Every event that can carry the time carries ``now``: seconds since the Unix epoch as a
float, read from the adapter's clock. The engine never reads a clock itself; it uses
``now`` for response timestamps, request-rate accounting and keepalive timers.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import attrs

from ._hooks import RequestInfo
from ._messages import ErrorInfo, Operation
from ._query import StorageError

#: Chosen by the adapter, unique among its open connections (an int counter is typical).
ConnectionId = Hashable


@attrs.frozen(kw_only=True)
class ConnectionOpened:
    """A client asked to open a WebSocket. The engine answers with ``AcceptConnection``
    or ``RejectConnection`` (after ``before_connect`` hooks, if any)."""

    connection_id: ConnectionId
    request: RequestInfo
    now: float


@attrs.frozen(kw_only=True)
class MessageReceived:
    """One complete WebSocket message (text or binary frame payload)."""

    connection_id: ConnectionId
    data: str | bytes
    now: float


@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The connection is gone (either side closed it, or it broke)."""

    connection_id: ConnectionId
    now: float


@attrs.frozen(kw_only=True)
class StorageCompleted:
    """The storage operation of ``RunStorage(operation_id=...)`` finished.

    ``result`` is as documented on the operation class (``ListResult``, a row, ``None``
    for not found, or a list of rows for a create)."""

    operation_id: int
    result: Any
    now: float


@attrs.frozen(kw_only=True)
class StorageFailed:
    operation_id: int
    error: StorageError
    now: float


@attrs.frozen(kw_only=True)
class HooksCompleted:
    """Every hook of ``RunHooks(call_id=...)`` returned. Changes they made to the
    context object are read from that same object."""

    call_id: int
    now: float


@attrs.frozen(kw_only=True)
class HooksFailed:
    """A hook raised; ``error`` is :func:`wsspec_core.hook_failure` of the exception.
    ``status`` is the HTTP status for a refused ``before_connect`` (403 by default)."""

    call_id: int
    error: ErrorInfo
    now: float
    status: int = 403


@attrs.frozen(kw_only=True)
class OutboundQueueFull:
    """The adapter could not queue a message for this client: it is not reading.
    The engine closes the connection (docs/protocol.md "Limits")."""

    connection_id: ConnectionId
    now: float


@attrs.frozen(kw_only=True)
class PongReceived:
    """The client answered a keepalive ping (a WebSocket control frame)."""

    connection_id: ConnectionId
    now: float


@attrs.frozen(kw_only=True)
class TimePassed:
    """Call at (or after) :meth:`Engine.next_deadline`; the engine runs due timers."""

    now: float


@attrs.frozen(kw_only=True)
class ChangeCommitted:
    """A write made outside the engine (another process, a batch job) committed; the
    engine notifies matching subscriptions as if one of its own writes had."""

    schema: str | None
    entity: str
    operation: Operation
    #: The full row after the write; for a delete, the full row as it was.
    row: dict[str, Any]
    now: float


@attrs.frozen(kw_only=True)
class ShutdownRequested:
    """Stop taking new requests; finish every accepted one, then close every connection
    with 1001 (going away)."""

    now: float


Event = (
    ConnectionOpened
    | MessageReceived
    | ConnectionClosed
    | StorageCompleted
    | StorageFailed
    | HooksCompleted
    | HooksFailed
    | OutboundQueueFull
    | PongReceived
    | TimePassed
    | ChangeCommitted
    | ShutdownRequested
)
