"""Actions: what :meth:`ClientEngine.handle` asks the adapter to do, in order.

The connection actions (``OpenConnection``, ``SendFrame``, ``CloseConnection``) are IO;
the others hand results to the application (complete a call, deliver a change). The
adapter carries each one out without awaiting between ``handle()`` and the last of them.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._events import CallId, SubscriptionKey
from ._values import Change, Failure, Resync


@attrs.frozen(kw_only=True)
class OpenConnection:
    """Connect (TCP, TLS, WebSocket handshake) and report ``ConnectionOpened`` or
    ``ConnectFailed`` with this id; once open, ``FrameReceived`` for each message and
    ``ConnectionLost`` once when it ends. The engine enforces ``connect_timeout`` itself
    (with a ``CloseConnection``)."""

    connection_id: int


@attrs.frozen(kw_only=True)
class SendFrame:
    """Send ``frame`` (one JSON text) as one text frame, after those before it."""

    connection_id: int
    frame: str


@attrs.frozen(kw_only=True)
class CloseConnection:
    """Close (or abandon, if still connecting) this connection. The engine already counts
    it as gone: report nothing more about it."""

    connection_id: int
    reason: str


@attrs.frozen(kw_only=True)
class CompleteCall:
    """The call succeeded: ``response`` is the server's success response as received
    (``data``, ``metadata``)."""

    call_id: CallId
    response: dict[str, Any]


@attrs.frozen(kw_only=True)
class FailCall:
    call_id: CallId
    failure: Failure


@attrs.frozen(kw_only=True)
class ConfirmSubscription:
    """The subscription is live. ``rows``: the snapshot, if one was asked for (and the
    server sent it); ``epoch``/``seq``: the position it starts after (``None`` from a
    server without the change feed)."""

    key: SubscriptionKey
    rows: list[Any] | None
    epoch: str | None
    seq: int | None
    reply: dict[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class DeliverChange:
    key: SubscriptionKey
    change: Change


@attrs.frozen(kw_only=True)
class DeliverResync:
    key: SubscriptionKey
    resync: Resync


@attrs.frozen(kw_only=True)
class EndSubscription:
    """The subscription is over: refused by the server (at first or when resubscribing),
    not confirmed by its deadline, or the client stopped. Nothing more comes for ``key``."""

    key: SubscriptionKey
    failure: Failure


@attrs.frozen(kw_only=True)
class Stop:
    """The client has stopped for good (closed, or a final refusal such as HTTP 403):
    every call and subscription has already been failed or ended with ``failure``."""

    failure: Failure


@attrs.frozen(kw_only=True)
class Log:
    """Something for the application's log, never an error of a call: a frame that is not
    a protocol message, a reconnection. ``level`` is a :mod:`logging` level number."""

    level: int
    message: str


Action = (
    OpenConnection
    | SendFrame
    | CloseConnection
    | CompleteCall
    | FailCall
    | ConfirmSubscription
    | DeliverChange
    | DeliverResync
    | EndSubscription
    | Stop
    | Log
)
