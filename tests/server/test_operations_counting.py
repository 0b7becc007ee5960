"""What the runtime reads from the frames it handles, for its metrics: a request's
operation, a response's outcome (wsspec.runtime.metrics), on frames the engine's own codec
writes."""

from __future__ import annotations

from wsspec.runtime.metrics import (
    NOTIFICATION_PREFIX,
    PONG_PREFIX,
    RESPONSE_PREFIX,
    ServerMetrics,
    request_operation,
    response_outcome,
)

from wsspec_core import ErrorInfo, Notification, Operation, Pong, Response, encode


def test_request_operation_labels() -> None:
    assert request_operation('{"id":"1","type":"request","operation":"read"}') == "read"
    assert request_operation(b'{"operation":"delete","type":"request","id":1}') == "delete"
    assert request_operation('{"type":"subscription","operation":"subscribe"}') == "subscribe"
    assert request_operation('{"type":"ping","id":"p"}') == "ping"
    # A nested "operation" (a column of that name) is not the request's.
    nested = '{"type":"request","data":{"operation":"delete"},"operation":"create"}'
    assert request_operation(nested) == "create"
    for invalid in ("not json", "[1,2]", '{"operation":"drop"}', '{"operation":["read"]}', "{}"):
        assert request_operation(invalid) == "invalid", invalid


def test_response_outcome_of_engine_frames() -> None:
    stamp = "2025-01-01T00:00:00.000Z"
    ok = encode(Response(id="r1", success=True, timestamp=stamp, data={"id": 1}))
    assert ok.startswith(RESPONSE_PREFIX) and response_outcome(ok) == "success"
    failed = encode(
        Response(
            id="r2",
            success=False,
            timestamp=stamp,
            error=ErrorInfo(code="validation_error", message='bad "success":true'),
        )
    )
    assert response_outcome(failed) == "validation_error"
    # An id can hold anything; its quotes are escaped, so it never looks like the key.
    tricky = encode(
        Response(
            id='x","type":"response","success":true',
            success=False,
            timestamp=stamp,
            error=ErrorInfo(code="not_found", message="no"),
        )
    )
    assert response_outcome(tricky) == "not_found"
    assert encode(Pong(id="p", timestamp=stamp)).startswith(PONG_PREFIX)
    note = Notification(
        operation=Operation.CREATE,
        subscription_id="s",
        schema="public",
        entity="users",
        data={"id": 1},
        timestamp=stamp,
    )
    assert encode(note).startswith(NOTIFICATION_PREFIX)


def test_outcome_labels_are_bounded() -> None:
    metrics = ServerMetrics()
    for n in range(100):
        metrics.answered("read", f"code_{n}", 0.001)
    outcomes = metrics.requests["read"].outcomes
    assert len(outcomes) == 65 and outcomes["other"] == 36
    assert sum(metrics.requests["read"].latency.counts) == 100
