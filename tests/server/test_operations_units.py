"""The operations pieces without sockets: what the runtime reads from the frames it handles
for its metrics (a request's operation, a response's outcome, on frames the engine's own
codec writes), and what the ASGI routes answer while no runtime runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from wsserver_support import memory_app
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


async def test_asgi_routes_without_a_running_runtime(tmp_path: Path) -> None:
    """Mounted without its lifespan, the ASGI app is not alive for /healthz, not ready, and
    still serves its (empty) metrics; other paths are 404."""
    app = memory_app(tmp_path)
    answers: dict[str, tuple[int, bytes]] = {}

    for path in ("/healthz", "/readyz", "/metrics", "/elsewhere"):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "headers": []}
        await app.asgi(scope, receive, send)
        answers[path] = (sent[0]["status"], sent[1]["body"])
    assert answers["/healthz"] == (503, b"not running\n")
    assert answers["/readyz"][0] == 503
    assert orjson.loads(answers["/readyz"][1]) == {"ready": False, "status": "not running"}
    assert answers["/metrics"][0] == 200 and b"wsspec_connections 0.0" in answers["/metrics"][1]
    assert answers["/elsewhere"][0] == 404
