"""What a running server counts, and its Prometheus exposition (docs/operations.md "Metrics").

Theory of operation.  The runtime counts what it already handles, on the event loop
thread, into plain integers and bucket lists of :class:`ServerMetrics`: a message read
(``MessageReceived``), the frame that answers it (a ``Send`` whose frame is a response or
a pong), a notification, a storage operation from its ``RunStorage`` to its outcome, a
``CloseConnection``.  Responses leave strictly in the order their requests arrived
(docs/protocol.md "Order"), so each connection keeps a queue of its requests' arrival times
and operations, and the next response frame answers the oldest; the response frame itself
says the outcome (``"success":true``, or the error's ``code``).

Nothing here takes a lock: only the loop thread writes, and a scrape reads copies.  That is
why the counters are not ``prometheus_client.Counter`` / ``Histogram`` objects, which take
a lock on every update (0.8 and 2.4 us on the machine of docs/server.md "Performance",
against 0.2 and 0.35 us for a dict increment and a bisected bucket): a custom collector
turns the plain values into metric families when Prometheus scrapes.  The gauges
(connections, subscriptions, outbound queue depth, change-feed position and lag) are read
from the live runtime at that moment and cost nothing in between.

Per request, the runtime only notes what it has at hand: the request's text (or, for a
long one, its label at once), the response frame (or, for a long one, its outcome) and the
latency, one tuple appended to :attr:`ServerMetrics.pending`; storage operations likewise
to :attr:`ServerMetrics.storage_pending`.  :meth:`ServerMetrics.fold` turns those into the
counters and buckets in one tight loop, on the loop thread: once ``FOLD_AT`` entries are
pending (checked after each batch of frames written, and each batch of storage outcomes),
when the runtime stops, and before every scrape (a scrape from another thread asks the
loop to fold first).  So a scrape sees exactly what it saw when each request was counted
on its own, and the operation label costs one ``orjson.loads`` in that loop instead of a
chain of calls per message.  The texts held are short (``KEEP_TEXT``) and few (about
``FOLD_AT``, plus the replies of one write).

Each :class:`~wsspec.App` has a registry of its own (:attr:`ServerMetrics.registry`), not
``prometheus_client``'s global one, so several apps in one process, and the tests, never
collide.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from wsspec_core import Create, Delete, ReadList, ReadOne, Update

if TYPE_CHECKING:
    from .runtime import Runtime

#: Upper bounds, in seconds, of the latency histograms' buckets: from a SQLite read by key
#: (tens of microseconds, all in the first bucket) to a request stuck behind a slow query.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BUCKET_LABELS = [repr(float(bound)) for bound in LATENCY_BUCKETS] + ["+Inf"]

#: The ``operation`` label of requests: the protocol's operations, ``ping``, and
#: ``invalid`` for a message that names none of them (not JSON, no operation, unknown).
REQUEST_OPERATIONS = frozenset(
    {"read", "create", "update", "delete", "meta", "subscribe", "unsubscribe"}
)
INVALID = "invalid"
#: Most distinct ``outcome`` labels: the engine's error codes are a small fixed set, but a
#: ``HookError`` may carry any code an application chooses; more become ``other``.
MAX_OUTCOMES = 64

#: The ``operation`` label of storage operations.
STORAGE_OPERATIONS: dict[type, str] = {
    ReadOne: "read_one",
    ReadList: "read_list",
    Create: "create",
    Update: "update",
    Delete: "delete",
}

#: How frames the engine sends begin (the codec writes keys in a fixed order): a response
#: starts with its ``id``, a pong and a notification with their ``type``.
RESPONSE_PREFIX = '{"id":'
PONG_PREFIX = '{"type":"pong"'
NOTIFICATION_PREFIX = '{"type":"notification"'
_SUCCESS_KEY = '"type":"response","success":'
_CODE_KEY = '"code":"'

#: Entries :attr:`ServerMetrics.pending` (and ``storage_pending``) collect before a fold.
FOLD_AT = 256
#: Longest request text (and response frame) kept until the fold; a longer one is labelled
#: at once, so that the pending entries never hold much memory (and for such a message
#: the label's cost is small beside the engine's).
KEEP_TEXT = 512


def request_operation(data: str | bytes) -> str:
    """The ``operation`` label of a message a client sent, decoded once more with orjson
    (the engine keeps what it decoded): about a microsecond for a typical request, less
    than scanning the text for the key in Python (measured)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return INVALID
    if not isinstance(message, dict):
        return INVALID
    if message.get("type") == "ping":
        return "ping"
    operation = message.get("operation")
    if isinstance(operation, str) and operation in REQUEST_OPERATIONS:
        return operation
    return INVALID


def response_outcome(frame: str) -> str:
    """``success``, or the error code, of a response frame the engine encoded.

    The ``id`` comes first and is a JSON value, in which a quote is always escaped, so the
    first ``"type":"response","success":`` is the response's own."""
    at = frame.find(_SUCCESS_KEY)
    if at < 0:
        return "unknown"
    at += len(_SUCCESS_KEY)
    if frame.startswith("true", at):
        return "success"
    start = frame.find(_CODE_KEY, at)
    if start < 0:
        return "error"
    start += len(_CODE_KEY)
    end = frame.find('"', start)
    return frame[start:end] if end > start else "error"


def request_label(data: str | bytes) -> Any:
    """What the runtime keeps of a request until it is answered: the text itself when it
    is short (labelled at the next fold), else its label, as a 1-tuple so that it cannot be
    mistaken for a text."""
    return data if len(data) <= KEEP_TEXT else (request_operation(data),)


#: What :attr:`ServerMetrics.pending` holds for a pong: it always means success.
PONG_OUTCOME = ("success",)


def response_label(frame: str) -> Any:
    """What the runtime keeps of a response until the fold: the frame when it is short,
    else its outcome as a 1-tuple."""
    return frame if len(frame) <= KEEP_TEXT else (response_outcome(frame),)


class Latency:
    """One histogram's buckets (not cumulative: Prometheus' are summed at scrape time)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' ``le``).
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, running = [], 0
        for label, count in zip(_BUCKET_LABELS, list(self.counts), strict=True):
            running += count
            cumulative.append((label, float(running)))
        return cumulative


class _OperationStats:
    """The requests of one operation: counts by outcome, and their latency."""

    __slots__ = ("latency", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.latency = Latency()


class ServerMetrics:
    """The counters of one :class:`~wsspec.App`, across every time it is served, and the
    registry Prometheus scrapes (``generate_latest(app.metrics.registry)``; the servers
    answer ``GET /metrics`` with it)."""

    def __init__(self) -> None:
        self.connections_opened = 0
        self.connections_refused = 0
        #: Closes the server started (the engine's ``CloseConnection``, or a revocation),
        #: by close code.
        self.server_closes: dict[int, int] = {}
        self.slow_consumer_closes = 0
        #: Requests answered, by operation: outcome counts and latency.
        self.requests: dict[str, _OperationStats] = {}
        self.storage_latency: dict[str, Latency] = {}
        self.storage_failures: dict[str, int] = {}
        self.notifications_sent = 0
        #: The change log's last ``seq`` as last read (docs/operations.md: each scrape
        #: reads it, off the loop), for the lag; ``None`` before, or without a feed.
        self.change_log_end: int | None = None
        #: Requests answered since the last fold: (request_label() of the request,
        #: response_label() of the response, seconds), or, for a response whose ``Send``
        #: says what it answers, (``Send.answers``, ``Send.answers``, seconds): the
        #: operation is a tuple's first item, the outcome its last. Loop thread only.
        self.pending: list[tuple[Any, Any, float]] = []
        #: Storage operations finished since the last fold: (operation class, seconds,
        #: failed). Loop thread only.
        self.storage_pending: list[tuple[type, float, bool]] = []
        self._outcomes: set[str] = set()
        self._runtime: Runtime | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    # --- the runtime's side (loop thread) ---------------------------------------------------

    def attach(self, runtime: Runtime | None) -> None:
        """The runtime whose live state the gauges read (``None`` once it stopped)."""
        self._runtime = runtime

    def fold(self) -> None:
        """Count the pending entries into the counters and buckets (loop thread, or no loop
        running): each request labelled by request_operation() and each response by
        response_outcome(), unless a label (a tuple: ``(operation,)``, ``(outcome,)``, or a
        Send's ``(operation, outcome)``) stands in for the text, then counted by
        :meth:`answered`; each storage operation by :meth:`stored`."""
        pending = self.pending
        if pending:
            answered = self.answered
            for request, response, seconds in pending:
                answered(
                    request[0] if type(request) is tuple else request_operation(request),
                    response[-1] if type(response) is tuple else response_outcome(response),
                    seconds,
                )
            # Cleared, not replaced: the runtime keeps a reference to each list.
            pending.clear()
        stored = self.storage_pending
        if stored:
            record = self.stored
            labels = STORAGE_OPERATIONS
            for kind, seconds, failed in stored:
                record(labels.get(kind, "other"), seconds, failed)
            stored.clear()

    def fold_for_scrape(self) -> None:
        """:meth:`fold` before a scrape, on the loop thread: at once there (or when no loop
        runs), else handed to the loop, waiting for it."""
        runtime = self._runtime
        if runtime is None or threading.get_ident() == runtime._loop_thread:
            self.fold()
            return
        try:
            runtime.call_soon_and_wait(self.fold)
        except RuntimeError:
            # The loop has just finished: nothing writes any more.
            self.fold()

    def answered(self, operation: str, outcome: str, seconds: float) -> None:
        """A request of ``operation`` was answered (``success`` or an error code)
        ``seconds`` after it was read. On every response: kept to a few lookups."""
        stats = self.requests.get(operation)
        if stats is None:
            stats = self.requests[operation] = _OperationStats()
        outcomes = stats.outcomes
        count = outcomes.get(outcome)
        if count is None:
            outcome = self._admit(outcome)
            count = outcomes.get(outcome, 0)
        outcomes[outcome] = count + 1
        latency = stats.latency
        latency.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.total += seconds

    def _admit(self, outcome: str) -> str:
        """``outcome``, or ``other`` once MAX_OUTCOMES distinct ones were seen."""
        if outcome not in self._outcomes:
            if len(self._outcomes) >= MAX_OUTCOMES:
                return "other"
            self._outcomes.add(outcome)
        return outcome

    def stored(self, operation: str, seconds: float, failed: bool) -> None:
        latency = self.storage_latency.get(operation)
        if latency is None:
            latency = self.storage_latency[operation] = Latency()
        latency.observe(seconds)
        if failed:
            self.storage_failures[operation] = self.storage_failures.get(operation, 0) + 1

    def closed_by_server(self, code: int, *, slow_consumer: bool) -> None:
        self.server_closes[code] = self.server_closes.get(code, 0) + 1
        if slow_consumer:
            self.slow_consumer_closes += 1


class _Collector:
    """Turns :class:`ServerMetrics` and the live runtime into metric families, on scrape."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        m.fold_for_scrape()
        runtime = m._runtime
        yield _gauge(
            "wsspec_connections",
            "Open WebSocket connections (accepted, not yet closed).",
            runtime.engine.connection_count if runtime is not None else 0,
        )
        yield _counter(
            "wsspec_connections_opened", "WebSocket connections accepted.", m.connections_opened
        )
        yield _counter(
            "wsspec_connections_refused",
            "WebSocket handshakes refused (before_connect hooks, shutdown).",
            m.connections_refused,
        )
        closes = CounterMetricFamily(
            "wsspec_server_closes",
            "Connections the server closed, by close code (1001 shutdown, 1008 slow "
            "consumer or revocation, 1009 message too big, 1011 keepalive timeout).",
            labels=["code"],
        )
        for code, count in sorted(m.server_closes.copy().items()):
            closes.add_metric([str(code)], count)
        yield closes
        yield _counter(
            "wsspec_slow_consumer_closes",
            "Connections closed with 1008 because they did not read what they were sent.",
            m.slow_consumer_closes,
        )
        yield _gauge(
            "wsspec_subscriptions",
            "Live subscriptions.",
            runtime.engine.subscription_count if runtime is not None else 0,
        )
        requests = CounterMetricFamily(
            "wsspec_requests",
            "Requests answered, by operation and outcome (success or the error code).",
            labels=["operation", "outcome"],
        )
        by_operation = sorted(m.requests.copy().items())
        for operation, stats in by_operation:
            for outcome, count in sorted(stats.outcomes.copy().items()):
                requests.add_metric([operation, outcome], count)
        yield requests
        yield _histogram(
            "wsspec_request_duration_seconds",
            "From a request read to its response queued for the client.",
            {operation: stats.latency for operation, stats in by_operation},
        )
        yield _histogram(
            "wsspec_storage_duration_seconds",
            "From a storage operation submitted to its outcome back on the event loop "
            "(waiting for a worker thread included).",
            m.storage_latency,
        )
        failures = CounterMetricFamily(
            "wsspec_storage_failures",
            "Storage operations that failed (the log has the database's message).",
            labels=["operation"],
        )
        for operation, count in sorted(m.storage_failures.copy().items()):
            failures.add_metric([operation], count)
        yield failures
        yield _counter(
            "wsspec_notifications_sent",
            "Notification frames queued for subscribers.",
            m.notifications_sent,
        )
        queued, deepest = runtime.outbound_depth() if runtime is not None else (0, 0)
        yield _gauge(
            "wsspec_outbound_queue_frames",
            "Frames queued for clients and not yet handed to their sockets, all connections.",
            queued,
        )
        yield _gauge(
            "wsspec_outbound_queue_frames_max",
            "The longest of those queues (Limits.outbound_queue closes it with 1008).",
            deepest,
        )
        if runtime is not None and runtime.engine.change_feed:
            position = runtime.engine.position
            yield _gauge(
                "wsspec_change_feed_position",
                "The seq of the last change-log entry routed to subscribers.",
                position,
            )
            if m.change_log_end is not None:
                yield _gauge(
                    "wsspec_change_feed_lag_entries",
                    "Change-log entries committed and not yet routed (log end read at "
                    "this scrape minus the position).",
                    max(0, m.change_log_end - position),
                )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _histogram(
    name: str, documentation: str, latencies: dict[str, Latency]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["operation"])
    for operation, latency in sorted(latencies.copy().items()):
        family.add_metric([operation], latency.buckets(), latency.total)
    return family
