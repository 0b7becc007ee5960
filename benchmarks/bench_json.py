"""Stdlib ``json`` vs ``orjson`` on the frames wsspec really handles.

Decode: the inbound frames a client sends (a filtered read, a create, a ping), given as
UTF-8 bytes as most WebSocket libraries deliver them.  Encode: the outbound messages the
server writes for every request and notification (a 100-row list response with dates and
datetimes, a single-record response, a notification, a pong), with the options each
library needs to write dates as ``YYYY-MM-DD`` and naive-UTC datetimes with a ``Z``.

Run: ``python benchmarks/bench_json.py`` (takes a few seconds).  The figures chose the
JSON library of ``wsspec_core/_codec.py``.
"""

from __future__ import annotations

import datetime
import json
import timeit
from typing import Any

import orjson

NOW = datetime.datetime(2025, 12, 12, 10, 30, 0, 123000)


def _row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"User number {i}",
        "email": f"user{i}@example.com",
        "status": "active" if i % 3 else "pending",
        "age": 20 + i % 50,
        "score": i * 1.25,
        "verified": i % 2 == 0,
        "birthday": datetime.date(1990, 1 + i % 12, 1 + i % 28),
        "created_at": NOW,
        "notes": None,
    }


INBOUND: list[bytes] = [
    json.dumps(m).encode()
    for m in (
        {
            "id": "msg-2",
            "type": "request",
            "operation": "read",
            "schema": "public",
            "entity": "users",
            "options": {
                "filters": [
                    {"column": "status", "operator": "eq", "value": "active"},
                    {
                        "column": "status",
                        "operator": "eq",
                        "value": "pending",
                        "logic_operator": "OR",
                    },
                    {"column": "age", "operator": "gte", "value": 18},
                ],
                "columns": ["id", "name", "email"],
                "sort": [{"column": "name", "direction": "asc"}],
                "limit": 10,
                "offset": 0,
            },
        },
        {
            "id": "msg-1",
            "type": "request",
            "operation": "create",
            "schema": "public",
            "entity": "users",
            "data": {"name": "John Doe", "email": "john@example.com", "status": "active"},
        },
        {"id": "p-1", "type": "ping"},
    )
]

OUTBOUND: list[dict[str, Any]] = [
    {
        "id": "msg-2",
        "type": "response",
        "success": True,
        "data": [_row(i) for i in range(100)],
        "metadata": {"total": 1234, "count": 100, "limit": 100, "offset": 0},
        "timestamp": "2025-12-12T10:30:00.123Z",
    },
    {
        "id": "msg-1",
        "type": "response",
        "success": True,
        "data": _row(7),
        "timestamp": "2025-12-12T10:30:00.123Z",
    },
    {
        "type": "notification",
        "operation": "create",
        "subscription_id": "sub-17",
        "schema": "public",
        "entity": "users",
        "data": _row(8),
        "timestamp": "2025-12-12T10:30:00.123Z",
    },
    {"type": "pong", "id": "p-1", "timestamp": "2025-12-12T10:30:00.123Z"},
]


def _stdlib_default(value: object) -> str:
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="auto") + "Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_stdlib_default, allow_nan=False
)
_ORJSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def stdlib_decode() -> None:
    for frame in INBOUND:
        json.loads(frame.decode("utf-8"))


def orjson_decode() -> None:
    for frame in INBOUND:
        orjson.loads(frame)


def stdlib_encode() -> None:
    for message in OUTBOUND:
        _ENCODER.encode(message)


def orjson_encode() -> None:
    for message in OUTBOUND:
        orjson.dumps(message, option=_ORJSON_OPTIONS).decode()


def _best_us(func: Any, number: int) -> float:
    """Best of 5 runs, in microseconds per call (one call = every message once)."""
    return min(timeit.repeat(func, number=number, repeat=5)) / number * 1e6


def main() -> None:
    # Same output, so the comparison is fair.
    for message in OUTBOUND:
        assert json.loads(_ENCODER.encode(message)) == orjson.loads(
            orjson.dumps(message, option=_ORJSON_OPTIONS)
        )
    rows = [
        ("decode 3 inbound frames", stdlib_decode, orjson_decode, 20_000),
        ("encode 4 outbound messages (one 100-row list)", stdlib_encode, orjson_encode, 500),
    ]
    print(f"{'benchmark':48} {'json us':>10} {'orjson us':>10} {'ratio':>7}")
    for name, slow, fast, number in rows:
        s = _best_us(slow, number)
        o = _best_us(fast, number)
        print(f"{name:48} {s:10.2f} {o:10.2f} {s / o:6.1f}x")


if __name__ == "__main__":
    main()
