"""Actions: what :meth:`wsspec_core.Engine.handle` asks the adapter to do, in order.

An adapter carries out each action of a returned list before it hands the engine its next
event, or at least starts it (storage operations and hooks run concurrently and report back
with an event carrying the same id).
"""

from __future__ import annotations

import attrs

from ._events import ConnectionId
from ._hooks import Hook, HookContext, HookType
from ._messages import OutboundMessage
from ._query import StorageOperation


@attrs.frozen(kw_only=True)
class AcceptConnection:
    """Complete the WebSocket handshake."""

    connection_id: ConnectionId


@attrs.frozen(kw_only=True)
class RejectConnection:
    """Refuse the handshake with this HTTP status (403 for a ``before_connect`` refusal)."""

    connection_id: ConnectionId
    status: int
    reason: str


@attrs.frozen(kw_only=True)
class Send:
    """Queue ``message`` for the client: one JSON text frame, ``wsspec_core.encode(message)``.
    If the connection's outbound queue is full, report ``OutboundQueueFull`` instead."""

    connection_id: ConnectionId
    message: OutboundMessage


@attrs.frozen(kw_only=True)
class RunStorage:
    """Run ``operation`` and report ``StorageCompleted`` / ``StorageFailed`` with
    ``operation_id``. Writes must be reported in the order they committed."""

    operation_id: int
    operation: StorageOperation


@attrs.frozen(kw_only=True)
class RunHooks:
    """Call ``hooks`` in order with ``context`` (awaiting the async ones), stop at the
    first exception, and report ``HooksCompleted`` / ``HooksFailed`` with ``call_id``."""

    call_id: int
    hook_type: HookType
    hooks: tuple[Hook, ...]
    context: HookContext


@attrs.frozen(kw_only=True)
class CloseConnection:
    """Send a close frame with ``code`` and ``reason`` (after the messages already queued),
    then drop the connection. No further action will name it."""

    connection_id: ConnectionId
    code: int
    reason: str


@attrs.frozen(kw_only=True)
class PauseReading:
    """Stop reading this client's messages: its request queue is full (backpressure)."""

    connection_id: ConnectionId


@attrs.frozen(kw_only=True)
class ResumeReading:
    connection_id: ConnectionId


@attrs.frozen(kw_only=True)
class SendPing:
    """Send a WebSocket ping control frame; report ``PongReceived`` when the pong comes."""

    connection_id: ConnectionId


Action = (
    AcceptConnection
    | RejectConnection
    | Send
    | RunStorage
    | RunHooks
    | CloseConnection
    | PauseReading
    | ResumeReading
    | SendPing
)
