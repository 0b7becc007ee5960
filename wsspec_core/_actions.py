"""Actions: what :meth:`wsspec_core.Engine.handle` asks the adapter to do, in order.

An adapter carries out each action of a returned list before it hands the engine its next
event, or at least starts it (storage operations and hooks run concurrently and report back
with an event carrying the same id).
"""

from __future__ import annotations

import attrs

from ._events import ConnectionId
from ._hooks import Hook, HookContext, HookType
from ._messages import MessageId, quick_init
from ._query import StorageOperation


@quick_init
@attrs.frozen(kw_only=True)
class AcceptConnection:
    """Complete the WebSocket handshake."""

    connection_id: ConnectionId


@quick_init
@attrs.frozen(kw_only=True)
class RejectConnection:
    """Refuse the handshake with this HTTP status (403 for a ``before_connect`` refusal)."""

    connection_id: ConnectionId
    status: int
    reason: str


@quick_init
@attrs.frozen(kw_only=True)
class Send:
    """Queue ``frame`` (one JSON text, already encoded) for the client as one text frame.

    The adapter's queue needs no bound of its own: the engine counts the frames it asked
    for against the ``FramesWritten`` reports, and closes a client whose backlog passes
    ``Limits.outbound_queue`` (docs/core.md "Flow control")."""

    connection_id: ConnectionId
    frame: str
    #: What the frame answers, when the engine knows it at no cost: ``(operation,
    #: outcome)`` of the request it answers, ``("read", "success")`` for a read answered
    #: on the direct path; ``None`` otherwise (the frame says it all the same). A hint
    #: for an adapter's metrics, which need not decode the request again: left out of
    #: equality and ``repr``, as two engines may note it for different frames.
    answers: tuple[str, str] | None = attrs.field(default=None, eq=False, repr=False)


@quick_init
@attrs.frozen(kw_only=True)
class RunStorage:
    """Run ``operation`` and report ``StorageCompleted`` / ``StorageFailed`` with
    ``operation_id``. Writes must be reported in the order they committed.
    ``request_id`` is the id of the client's request it serves, for the operator's log when
    it fails (the client is told no internals; the log should say which request it was)."""

    operation_id: int
    operation: StorageOperation
    request_id: MessageId | None = None


@quick_init
@attrs.frozen(kw_only=True)
class RunHooks:
    """Call ``hooks`` in order with ``context`` (awaiting the async ones), stop at the
    first exception, and report ``HooksCompleted`` / ``HooksFailed`` with ``call_id``."""

    call_id: int
    hook_type: HookType
    hooks: tuple[Hook, ...]
    context: HookContext


@quick_init
@attrs.frozen(kw_only=True)
class CloseConnection:
    """Send a close frame with ``code`` and ``reason`` (after the frames already queued,
    unless ``discard_queued``: then drop them, the client is not reading them anyway), then
    drop the connection. No further action will name it."""

    connection_id: ConnectionId
    code: int
    reason: str
    discard_queued: bool = False


@quick_init
@attrs.frozen(kw_only=True)
class PauseReading:
    """Stop reading this client's messages: its requests, or the replies not yet written
    to it, have reached their high-water mark (backpressure)."""

    connection_id: ConnectionId


@quick_init
@attrs.frozen(kw_only=True)
class ResumeReading:
    connection_id: ConnectionId


@quick_init
@attrs.frozen(kw_only=True)
class SendPing:
    """Send a WebSocket ping control frame; report ``PongReceived`` when the pong comes."""

    connection_id: ConnectionId


@quick_init
@attrs.frozen(kw_only=True)
class Log:
    """Something the operator should know and the client must not see (an unencodable hook
    result, a change row that cannot be coerced): log ``message`` at ``level``, a
    :mod:`logging` level number (``30`` warning, ``40`` error)."""

    level: int
    message: str


#: The ``Log.level`` values the engine uses (equal to :mod:`logging`'s).
LOG_WARNING = 30
LOG_ERROR = 40


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
    | Log
)
