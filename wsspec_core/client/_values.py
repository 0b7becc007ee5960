"""What a client application receives: changes, resyncs and failures, as frozen values."""

from __future__ import annotations

from typing import Any

import attrs

#: Failure codes the client itself reports (``Failure.origin == "client"``); a server's
#: error keeps its own code (docs/protocol.md "Errors").
TIMEOUT = "timeout"
CONNECTION_LOST = "connection_lost"
NOT_CONNECTED = "not_connected"
CLOSED = "closed"
HANDSHAKE_REJECTED = "handshake_rejected"
CONNECT_FAILED = "connect_failed"
INVALID_REPLY = "invalid_reply"

ORIGIN_SERVER = "server"
ORIGIN_CLIENT = "client"


@attrs.frozen(kw_only=True)
class Failure:
    """Why a request or subscription failed.

    ``origin`` is ``"server"`` for an error response (``code``, ``message``, ``details``
    exactly as the server sent them) and ``"client"`` for the client's own verdicts
    (``timeout``, ``connection_lost``, ``not_connected``, ``closed``,
    ``handshake_rejected`` with the HTTP ``status``, ``connect_failed``,
    ``invalid_reply``), so a hook's code can never be mistaken for one of these."""

    code: str
    message: str
    origin: str = ORIGIN_CLIENT
    details: dict[str, Any] | None = None
    #: The HTTP status of a refused handshake.
    status: int | None = None
    #: The error response as received (``origin == "server"`` only).
    response: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_response(cls, response: dict[str, Any]) -> Failure:
        """The failure an error response describes; a malformed ``error`` is described as
        such rather than raising (the server is a peer: its mistakes are data)."""
        error = response.get("error")
        if not isinstance(error, dict):
            return cls(
                code=INVALID_REPLY,
                message="an error response without an error object",
                response=response,
            )
        code, message, details = error.get("code"), error.get("message"), error.get("details")
        return cls(
            code=code if isinstance(code, str) else INVALID_REPLY,
            message=message if isinstance(message, str) else "",
            origin=ORIGIN_SERVER,
            details=details if isinstance(details, dict) else None,
            response=response,
        )


@attrs.frozen(kw_only=True)
class Change:
    """One notification of a subscription, delivered once, in ``seq`` order.

    ``change`` is the effect on the subscription's result set (``"added"``,
    ``"modified"``, ``"removed"``) and ``seq`` the change's position in the log; both are
    ``None`` from a server without the change feed. ``message`` is the notification as
    received (its ``subscription_id`` is the server's id on the connection it came by)."""

    operation: str
    change: str | None
    seq: int | None
    data: Any
    schema: str
    entity: str
    timestamp: str | None
    message: dict[str, Any] = attrs.field(eq=False, repr=False)

    @classmethod
    def from_notification(cls, message: dict[str, Any], seq: int | None) -> Change:
        def text(key: str) -> str:
            value = message.get(key)
            return value if isinstance(value, str) else ""

        change, timestamp = message.get("change"), message.get("timestamp")
        return cls(
            operation=text("operation"),
            change=change if isinstance(change, str) else None,
            seq=seq,
            data=message.get("data"),
            schema=text("schema"),
            entity=text("entity"),
            timestamp=timestamp if isinstance(timestamp, str) else None,
            message=message,
        )


#: ``Resync.reason`` values.
NOT_RECOVERED = "not_recovered"  # the server answered ``recovered: false``
RESUME_UNSUPPORTED = "resume_unsupported"  # the server answered without ``recovered``
NO_POSITION = "no_position"  # no position to resume from (a server without a change feed)


@attrs.frozen(kw_only=True)
class Resync:
    """The subscription could not be resumed without a gap: changes may have been missed.
    Replace everything known about the subscription with ``rows`` (the matching rows
    consistent with ``seq``; ``None`` when the server sent none: a subscription without
    a snapshot on a server without the change feed). Changes after it have larger
    ``seq``."""

    rows: list[Any] | None
    epoch: str | None
    seq: int | None
    reason: str
    #: The subscribe reply as received.
    reply: dict[str, Any] = attrs.field(eq=False, repr=False)
