"""Events: what happened, reported to :meth:`ClientEngine.handle` by the adapter.

Two kinds: what the application asked for (``...Requested``, ``CallCancelled``,
``SubscriptionLagged``) and what the network did (a connection opened, failed, was lost;
a frame arrived; time passed). Each carries ``now``, the adapter's *monotonic* clock
(docs/core.md "Time"): the engine reads no clock. Events that may make the client wait
before reconnecting carry ``jitter``, a uniform draw in [0, 1] made by the adapter: the
engine draws no random numbers, so a test replays a run exactly.

``connection_id`` is the id of the engine's ``OpenConnection`` action; events naming a
connection the engine has given up (timed out, closed, superseded) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import attrs

#: Chosen by the adapter: any hashable, unique among the calls (or subscriptions) alive.
CallId = Hashable
SubscriptionKey = Hashable

#: ``CallRequested.when_disconnected``: wait for the connection (until the deadline), or
#: fail at once with ``not_connected`` (docs/client.md "While disconnected").
WAIT = "wait"
FAIL = "fail"


def _unit(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a uniform draw in [0, 1], not {value!r}")


def _finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, not {value!r}")


def _options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class ConnectRequested:
    """The application wants the client connected: the engine answers ``OpenConnection``."""

    now: float


@attrs.frozen(kw_only=True)
class ConnectionOpened:
    """The WebSocket handshake of ``OpenConnection(connection_id)`` completed."""

    connection_id: int
    now: float


@attrs.frozen(kw_only=True)
class ConnectFailed:
    """The attempt ``connection_id`` failed before the handshake completed. ``status`` is
    the HTTP status when the server refused the handshake (``None``: no answer at all, a
    refused TCP connection, a TLS failure)."""

    connection_id: int
    now: float
    jitter: float = attrs.field(validator=_unit)
    reason: str
    status: int | None = None


@attrs.frozen(kw_only=True)
class FrameReceived:
    """One complete message from the server (text or binary payload), undecoded."""

    connection_id: int
    data: str | bytes
    now: float


@attrs.frozen(kw_only=True)
class ConnectionLost:
    """The open connection ``connection_id`` is gone, whoever closed it."""

    connection_id: int
    now: float
    jitter: float = attrs.field(validator=_unit)
    reason: str


@attrs.frozen(kw_only=True)
class TimePassed:
    """``engine.next_deadline()`` has passed."""

    now: float
    jitter: float = attrs.field(validator=_unit)


@attrs.frozen(kw_only=True)
class CallRequested:
    """The application sends one ``request`` (read, create, update, delete, meta): the
    engine answers ``CompleteCall`` or ``FailCall`` with ``call_id``, by ``deadline`` at
    the latest (an absolute time on the ``now`` clock: no call waits forever)."""

    call_id: CallId
    operation: str
    entity: str | None = None
    schema: str | None = None
    record_id: str | int | None = None
    data: Any = None
    options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    deadline: float = attrs.field(validator=_finite)
    #: ``"wait"`` or ``"fail"``: what to do while there is no connection.
    when_disconnected: str = attrs.field(default=WAIT, validator=attrs.validators.in_((WAIT, FAIL)))
    now: float


@attrs.frozen(kw_only=True)
class CallCancelled:
    """The application no longer waits for ``call_id`` (its task was cancelled)."""

    call_id: CallId
    now: float


@attrs.frozen(kw_only=True)
class SubscribeRequested:
    """The application subscribes: the engine answers ``ConfirmSubscription`` (then
    ``DeliverChange`` / ``DeliverResync`` for as long as it lives) or ``EndSubscription``.
    ``deadline`` bounds the wait for the first confirmation only; once confirmed, a
    subscription lives until unsubscribed, across reconnections."""

    key: SubscriptionKey
    entity: str
    schema: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    snapshot: bool = False
    deadline: float = attrs.field(validator=_finite)
    now: float


@attrs.frozen(kw_only=True)
class UnsubscribeRequested:
    key: SubscriptionKey
    now: float


@attrs.frozen(kw_only=True)
class SubscriptionLagged:
    """The application dropped everything delivered for ``key`` after this position (its
    buffer overflowed): the engine resubscribes from it, so the server replays what was
    dropped (or the subscription gets a ``Resync``). ``epoch``/``seq`` ``None``: no
    usable position (changes without ``seq``)."""

    key: SubscriptionKey
    epoch: str | None
    seq: int | None
    now: float


@attrs.frozen(kw_only=True)
class CloseRequested:
    """The application closes the client: every call and subscription ends (``closed``)."""

    now: float


Event = (
    ConnectRequested
    | ConnectionOpened
    | ConnectFailed
    | FrameReceived
    | ConnectionLost
    | TimePassed
    | CallRequested
    | CallCancelled
    | SubscribeRequested
    | UnsubscribeRequested
    | SubscriptionLagged
    | CloseRequested
)
