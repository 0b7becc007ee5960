"""Time-driven decisions: the keepalive sweep and the per-connection rate limit.

Theory of operation
-------------------
The core never reads a clock: time arrives as the ``now`` of each event, and the engine
says when it next wants a ``TimePassed`` (``Engine.next_deadline``, which is
:attr:`Keepalive.next_sweep`).

Keepalive (docs/core.md) is one periodic sweep for the whole engine rather than a timer
per connection, precise to half the shorter of ``keepalive_interval`` and
``keepalive_timeout``. Anything heard from a client (a message, a pong) marks it alive. A
sweep pings each client silent for ``keepalive_interval``, and times out a client whose
ping has gone unanswered for ``keepalive_timeout``; the engine carries out both verdicts.

The rate limit is a token bucket per connection (``Connection.tokens``, refilled at
``Limits.rate_limit`` per second up to ``Limits.rate_burst``): a request that finds no
token is answered ``rate_limited``.
"""

from __future__ import annotations

import enum

from ._config import Limits
from ._pipeline import Connection


class KeepaliveVerdict(enum.Enum):
    PING = "ping"  # silent for keepalive_interval: send a ping
    TIMED_OUT = "timed out"  # its ping went unanswered for keepalive_timeout: close it


def heard_from(conn: Connection, now: float) -> None:
    """The client showed it is alive (it sent a message or a pong)."""
    conn.last_seen = now
    conn.ping_sent_at = None


class Keepalive:
    """The keepalive sweep's schedule and its verdict on each open connection."""

    __slots__ = ("interval", "next_sweep", "timeout")

    def __init__(self, limits: Limits) -> None:
        self.interval = limits.keepalive_interval
        self.timeout = limits.keepalive_timeout
        #: When the next sweep is due (the clock of the events' ``now``), or None.
        self.next_sweep: float | None = None

    def schedule(self, now: float, *, any_connections: bool) -> None:
        """Keep a sweep due while there are connections to watch, and none otherwise."""
        if self.interval is None or not any_connections:
            self.next_sweep = None
            return
        if self.next_sweep is None:
            period = min(self.interval, self.timeout) / 2
            self.next_sweep = now + period

    def due(self, now: float) -> bool:
        return self.next_sweep is not None and now >= self.next_sweep

    def verdict(self, conn: Connection, now: float) -> KeepaliveVerdict | None:
        """What the sweep at ``now`` does to ``conn``; a ping is noted as sent."""
        if self.interval is None:
            return None
        if conn.ping_sent_at is not None:
            if now - conn.ping_sent_at >= self.timeout:
                return KeepaliveVerdict.TIMED_OUT
        elif now - conn.last_seen >= self.interval:
            conn.ping_sent_at = now
            return KeepaliveVerdict.PING
        return None

    def swept(self, now: float, *, any_connections: bool) -> None:
        """The sweep due is done: schedule the next one."""
        self.next_sweep = None
        self.schedule(now, any_connections=any_connections)


class RateLimit:
    """The token bucket of ``Limits.rate_limit`` and ``Limits.rate_burst``."""

    __slots__ = ("burst", "rate")

    def __init__(self, limits: Limits) -> None:
        self.rate = limits.rate_limit
        self.burst = float(limits.rate_burst)

    def fill(self, conn: Connection, now: float) -> None:
        """A new connection starts with a full bucket."""
        conn.tokens = self.burst
        conn.tokens_at = now

    def allows(self, conn: Connection, now: float) -> bool:
        """Take a token for one request of ``conn``, if there is one."""
        rate = self.rate
        if rate is None:
            return True
        conn.tokens = min(self.burst, conn.tokens + (now - conn.tokens_at) * rate)
        conn.tokens_at = now
        if conn.tokens < 1.0:
            return False
        conn.tokens -= 1.0
        return True
