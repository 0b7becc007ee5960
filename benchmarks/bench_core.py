"""Core-only figures (issue: wsspec_core): run ``python benchmarks/bench_core.py``.

1. Throughput of one request through the engine on one core: decode a request, handle it,
   complete its storage operation with a canned result, encode the response, report the
   response frame written (``FramesWritten``). Two requests: a list read with two filters
   (ten rows), and a read by id (one row), the most common request. Baseline in the same
   run: the bare JSON round trip (orjson loads + dumps of the same frames), the floor any
   implementation pays; the ratio engine / floor is the figure to compare across machines.
2. Routing one change to ``N`` equality-filtered subscriptions on one entity, N = 100 and
   N = 100,000: time per routed change, and the ratio (target: at most 2x).
"""

from __future__ import annotations

import time

import orjson

import wsspec_core as ws

USERS = ws.Entity(
    schema="public",
    name="users",
    table_name="users",
    columns=[
        ws.Column(name="id", type=ws.ColumnType.INTEGER, nullable=False, primary_key=True),
        ws.Column(name="name", type=ws.ColumnType.TEXT),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
        ws.Column(name="age", type=ws.ColumnType.INTEGER),
    ],
)
ROWS = [{"id": i, "name": f"user{i}", "status": "active", "age": 30 + i} for i in range(10)]


def best_of(runs: int, fn: object) -> float:
    assert callable(fn)
    return min(fn() for _ in range(runs))


def _engine() -> ws.Engine:
    engine = ws.Engine(ws.EntityRegistry([USERS]), limits=ws.Limits(keepalive_interval=None))
    engine.handle(ws.ConnectionOpened(connection_id=1, request=ws.RequestInfo(), now=0.0))
    return engine


def _bench_frames(
    frames: list[str], result: object, response: dict[str, object]
) -> tuple[float, float]:
    """Requests/s through one engine (decode, handle, storage completion with ``result``,
    the ``FramesWritten`` report), and the bare JSON round trip of the same frames in the
    same run (orjson loads of each request, dumps of ``response``)."""
    engine = _engine()
    n = len(frames)

    def engine_run() -> float:
        start = time.perf_counter()
        for frame in frames:
            [run] = engine.handle(ws.MessageReceived(connection_id=1, data=frame, now=1.0))
            assert isinstance(run, ws.RunStorage)
            [send] = engine.handle(
                ws.StorageCompleted(operation_id=run.operation_id, result=result, now=1.0)
            )
            assert isinstance(send, ws.Send)  # encoded by the engine itself
            engine.handle(ws.FramesWritten(connection_id=1, count=1, now=1.0))
        return time.perf_counter() - start

    def json_run() -> float:
        start = time.perf_counter()
        for frame in frames:
            orjson.loads(frame)
            orjson.dumps(response)
        return time.perf_counter() - start

    return n / best_of(5, engine_run), n / best_of(5, json_run)


def bench_requests(n: int = 20_000) -> tuple[float, float]:
    """A list read with two filters and a limit, answered with ten rows."""
    frames = [
        orjson.dumps(
            {
                "id": f"msg-{i}",
                "type": "request",
                "operation": "read",
                "entity": "users",
                "options": {
                    "filters": [
                        {"column": "status", "operator": "eq", "value": "active"},
                        {"column": "age", "operator": "gte", "value": 18},
                    ],
                    "limit": 10,
                },
            }
        ).decode()
        for i in range(n)
    ]
    response = {
        "id": "x",
        "type": "response",
        "success": True,
        "data": ROWS,
        "metadata": {"total": 10, "count": 10, "limit": 10, "offset": 0},
        "timestamp": "2025-01-01T00:00:00.000Z",
    }
    return _bench_frames(frames, ws.ListResult(rows=ROWS, total=10), response)


def bench_read_by_id(n: int = 20_000) -> tuple[float, float]:
    """A read by id (the most common request), answered with one row."""
    frames = [
        orjson.dumps(
            {
                "id": f"msg-{i}",
                "type": "request",
                "operation": "read",
                "entity": "users",
                "record_id": i % 10,
            }
        ).decode()
        for i in range(n)
    ]
    response = {
        "id": "x",
        "type": "response",
        "success": True,
        "data": ROWS[3],
        "metadata": {"total": 1},
        "timestamp": "2025-01-01T00:00:00.000Z",
    }
    return _bench_frames(frames, ROWS[3], response)


def bench_routing(subscriptions: int, changes: int = 2_000) -> float:
    """Seconds to route one change among ``subscriptions`` subscriptions, each filtered on
    its own ``id`` value; every change matches exactly one of them."""
    from wsspec_core._subscriptions import Subscription, SubscriptionIndex

    idx = SubscriptionIndex()
    for i in range(subscriptions):
        filters = ws.compile_filters(
            USERS,
            [
                ws.FilterSpec(column="id", operator="eq", value=i),
                ws.FilterSpec(column="status", operator="eq", value="active"),
            ],
        )
        idx.add(
            Subscription(id=f"s{i}", connection_id=i, entity=USERS, filters=filters, sequence=i)
        )
    rows = [
        {"id": i % subscriptions, "name": "x", "status": "active", "age": 1} for i in range(changes)
    ]

    def run() -> float:
        start = time.perf_counter()
        for row in rows:
            assert len(idx.route(USERS, row)) == 1
        return time.perf_counter() - start

    return best_of(3, run) / changes


def _print_requests(title: str, engine_rate: float, json_rate: float) -> None:
    print(title)
    print(f"  engine:            {engine_rate:10,.0f} requests/s")
    print(f"  json floor:        {json_rate:10,.0f} round trips/s")
    print(f"  engine / floor:    {engine_rate / json_rate:10.3f}x")
    print(
        f"  engine per request:{1e6 / engine_rate:10.1f} us (trio-websocket costs ~86 us/message)"
    )


def main() -> None:
    print("core throughput, one core (decode + handle + storage completion + encode + the")
    print("FramesWritten report), against the bare orjson round trip of the same frames")
    _print_requests("list read, two filters, ten rows", *bench_requests())
    _print_requests("read by id, one row", *bench_read_by_id())
    small = bench_routing(100)
    large = bench_routing(100_000)
    print("routing one change, equality-filtered subscriptions on one entity")
    print(f"  100 subscriptions:     {small * 1e6:8.2f} us")
    print(f"  100,000 subscriptions: {large * 1e6:8.2f} us")
    print(f"  ratio:                 {large / small:8.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
