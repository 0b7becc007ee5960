"""Every limit of the engine, in one place, each with its default and the reason for it
(docs/protocol.md "Limits")."""

from __future__ import annotations

from typing import Any

import attrs

#: Bound parameters one SQL statement may carry on the smallest shipped backend: SQLite's
#: default build takes 32,766 (PostgreSQL 65,535). ``max_in_values + 2 * max_filters``
#: (every other filter binds at most two values) must stay below it, with room for a key,
#: the changed columns of an update, ``LIMIT`` and ``OFFSET``.
MAX_FILTER_PARAMETERS = 30_000
#: The most filters one request may hold: SQLite refuses a ``WHERE`` whose expression tree
#: is more than 1,000 levels deep, and every ANDed or ORed filter adds a level.
MAX_FILTERS_CEILING = 500


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    #: Largest incoming message, in bytes. Bigger ones close the connection with 1009.
    #: 1 MiB holds a batch create of a few thousand ordinary rows.
    max_message_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    #: Subscriptions one connection may hold; more are answered ``subscription_limit``.
    #: Each costs memory and routing work on every write to its entity.
    max_subscriptions_per_connection: int = attrs.field(default=100, validator=_positive)
    #: Requests of one connection executing at once. Consecutive reads run together;
    #: writes and subscription changes run alone (docs/protocol.md "Order").
    max_in_flight: int = attrs.field(default=8, validator=_positive)
    #: Requests of one connection waiting their turn. When it is full the engine asks the
    #: adapter to stop reading that client (backpressure); it never rejects early requests.
    max_queued: int = attrs.field(default=64, validator=_positive)
    #: Requests per second per connection, or ``None`` (the default) for no limit.
    #: Requests over it are answered ``rate_limited``.
    rate_limit: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Requests a connection may send in a burst before ``rate_limit`` applies.
    rate_burst: int = attrs.field(default=20, validator=_positive)
    #: Rows a list read returns when the client gives no ``limit``.
    default_page_size: int = attrs.field(default=100, validator=_positive)
    #: Largest ``limit`` honoured; bigger ones are clamped (``metadata.limit`` says so).
    max_page_size: int = attrs.field(default=1000, validator=_positive)
    #: Records in one batch create.
    max_batch_size: int = attrs.field(default=1000, validator=_positive)
    #: Relations in one preload path (``"posts.user.posts"`` is 3). Every level can multiply
    #: the rows of a reply, and a cyclic path doubles it per level: deeper is
    #: ``invalid_options``.
    max_preload_depth: int = attrs.field(default=4, validator=_positive)
    #: Filters in one request (the client's and those its before-hooks add), at most
    #: ``MAX_FILTERS_CEILING`` (500). More is ``invalid_options`` naming the limit: each
    #: filter costs work on every notification, and SQLite refuses about 1,000 ANDed
    #: conditions with an internal error.
    max_filters: int = attrs.field(default=100, validator=_positive)
    #: Values in all ``in``/``not_in`` lists of one request together (counted as sent,
    #: before duplicates are removed). More is ``invalid_filter`` naming the column and the
    #: limit. Every value is a bound parameter of the SQL statement, and databases take a
    #: bounded number (SQLite 32,766, PostgreSQL 65,535): with ``2 * max_filters`` it must
    #: not exceed ``MAX_FILTER_PARAMETERS`` (30,000).
    max_in_values: int = attrs.field(default=10_000, validator=_positive)
    #: Rows a list read counts for ``metadata.total`` beyond its own page, or ``None`` to
    #: always count every matching row. A read counts at most ``offset + max(limit,
    #: max_count) + 1`` rows; when more match, ``total`` is that number (a lower bound
    #: that keeps ``offset + count < total`` while more rows exist, so pagers go on) and
    #: ``metadata.total_exact`` is ``false``. A full ``COUNT(*)`` of a large table costs
    #: time proportional to the table on every read.
    max_count: int | None = attrs.field(default=10_000, validator=_positive_or_none)
    #: Bytes of one response frame. A bigger reply (a huge preload, an after-hook's result)
    #: is answered with the operation's error naming the limit instead: the client cannot
    #: have meant it, and the server must not queue it. Keep it below what clients accept.
    max_reply_bytes: int = attrs.field(default=16 << 20, validator=_positive)
    #: Frames written for one client and not yet sent before it counts as not reading and
    #: is closed with 1008. The engine counts them (``Send`` minus ``FramesWritten``) and
    #: stops reading a client's requests while this backlog is above
    #: ``outbound_queue - requests_read_ahead``, so the replies owed to the requests
    #: already read always fit: a client that reads what it is sent is never closed.
    outbound_queue: int = attrs.field(default=1024, validator=_positive)
    #: Changes a ``resume`` may replay (PROTOCOL.md "Change feed"): a client further
    #: behind gets ``recovered: false`` and refreshes its state, which costs one read
    #: instead of a burst of notifications it would apply one by one. Also the most live
    #: changes kept for one subscription while its snapshot or replay is read; more fail
    #: that subscribe with ``subscribe_error`` (try again).
    max_replay: int = attrs.field(default=10_000, validator=_positive)
    #: Seconds a client may hold back the change feed (docs/core.md "Pacing the change
    #: feed"): log entries are routed only while every subscribing client has fewer than
    #: ``outbound_queue // 2`` frames unwritten, so a burst (a bulk ``UPDATE``) reaches
    #: clients at the pace they read; one that stays that far behind this long is closed
    #: with 1008, and the feed goes on. The entries wait in the database meanwhile.
    feed_stall_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Seconds of silence before the engine sends a keepalive ping, or ``None``.
    keepalive_interval: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    #: Seconds to wait for the pong before closing the connection with 1011.
    keepalive_timeout: float = attrs.field(default=20.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        if self.max_filters > MAX_FILTERS_CEILING:
            raise ValueError(
                f"max_filters ({self.max_filters}) may not exceed {MAX_FILTERS_CEILING}: "
                "SQLite refuses a WHERE clause about 1,000 conditions deep"
            )
        if self.max_in_values + 2 * self.max_filters > MAX_FILTER_PARAMETERS:
            raise ValueError(
                f"max_in_values + 2 * max_filters ({self.max_in_values + 2 * self.max_filters}) "
                f"may not exceed {MAX_FILTER_PARAMETERS}: every value is a bound parameter, "
                "and SQLite takes at most 32,766 in one statement"
            )
        read_ahead = self.requests_read_ahead
        if self.outbound_queue < 2 * read_ahead:
            raise ValueError(
                f"outbound_queue ({self.outbound_queue}) must be at least 2 * (max_in_flight + "
                f"max_queued) = {2 * read_ahead}: reading pauses when the backlog reaches "
                "outbound_queue - (max_in_flight + max_queued), and the replies owed to the "
                "requests already read must still fit, or a client that pipelines requests "
                "and reads every reply would be closed as a slow consumer"
            )

    @property
    def requests_read_ahead(self) -> int:
        """Requests of one connection read and not yet answered, at most: reading pauses
        there (``max_in_flight + max_queued``)."""
        return self.max_in_flight + self.max_queued

    @property
    def backlog_high_water(self) -> int:
        """Unwritten frames at which the engine stops reading a connection's requests."""
        return self.outbound_queue - self.requests_read_ahead
