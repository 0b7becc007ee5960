"""Every limit of the engine, in one place, each with its default and the reason for it
(docs/protocol.md "Limits")."""

from __future__ import annotations

from typing import Any

import attrs


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
    #: Messages queued for one client before it counts as not reading and is closed.
    #: Read by adapters, which own the queue.
    outbound_queue: int = attrs.field(default=1024, validator=_positive)
    #: Seconds of silence before the engine sends a keepalive ping, or ``None``.
    keepalive_interval: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    #: Seconds to wait for the pong before closing the connection with 1011.
    keepalive_timeout: float = attrs.field(default=20.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
