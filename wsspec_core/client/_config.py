"""The client's limits and timings, in one place, each with its default and why."""

from __future__ import annotations

import math
from typing import Any

import attrs


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Timings of :class:`~wsspec_core.client.ClientEngine` (docs/client.md "Configuration").

    Every duration is in seconds on the adapter's monotonic clock."""

    #: The reconnect backoff: after the n-th consecutive failure (n = 0, 1, ...) the client
    #: waits ``jitter * min(reconnect_max, reconnect_initial * 2**n)`` ("full jitter": a
    #: uniform draw over the whole window, so that a thousand clients dropped by one server
    #: restart do not come back in lockstep). 0.1 s makes a lost connection to a healthy
    #: server cost about 50 ms on average.
    reconnect_initial: float = attrs.field(default=0.1, validator=_positive)
    #: The largest window: a server that is down for long is probed about every 15 s on
    #: average, not every hour.
    reconnect_max: float = attrs.field(default=30.0, validator=_positive)
    #: A connection attempt (TCP connect, TLS, WebSocket handshake) that takes longer is
    #: abandoned and counts as a failure: a SYN into a black hole must not stall reconnection.
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: How often the client sends the protocol's ``{"type": "ping"}`` while connected. Its
    #: pong carries the log position (PROTOCOL.md "Idle positions"), which keeps a quiet
    #: subscription's resume position inside the server's retention, and proves the server
    #: is alive. ``None``: never (dead connections are then found only by TCP).
    ping_interval: float | None = attrs.field(default=15.0, validator=_positive)
    #: A ping unanswered, and nothing else received, for this long means the connection is
    #: dead: it is closed and the client reconnects. Generous, because a pong queues behind
    #: the responses before it (docs/protocol.md "Order"): a slow write delays it.
    pong_timeout: float = attrs.field(default=20.0, validator=_positive)
    #: What a request waits by default, connection included, before it fails with
    #: ``timeout`` (the adapter turns it into each request's deadline). No request waits
    #: forever: every one has a deadline.
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: HTTP statuses of a refused handshake that are final: retrying cannot help (the
    #: server's ``before_connect`` hook refuses with 403, docs/protocol.md "Hooks"), so the
    #: client stops instead of knocking forever. Any other refusal is retried with backoff.
    final_statuses: frozenset[int] = frozenset({401, 403})
    #: Whether the very first connection attempt is retried like a lost connection. Off:
    #: a wrong URL or a server that is not running fails at once, where the caller can see
    #: it; once connected, the client reconnects whatever happens (except a final refusal).
    retry_first_connect: bool = False

    def __attrs_post_init__(self) -> None:
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("reconnect_max must be at least reconnect_initial")


def backoff_delay(config: ClientConfig, failures: int, jitter: float) -> float:
    """Seconds to wait before the next attempt after ``failures`` consecutive failures,
    for the uniform draw ``jitter`` in [0, 1] ("full jitter", see ``reconnect_initial``)."""
    # min() before the power: 2**failures grows without bound over a long outage.
    window = config.reconnect_max
    if failures < 64:
        window = min(window, config.reconnect_initial * 2.0**failures)
    return jitter * window
