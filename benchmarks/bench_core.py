"""Core-only figures (issue: wsspec_core): run ``python benchmarks/bench_core.py``.

1. Throughput of one request through the engine on one core: decode a request, handle it,
   complete its storage operation with a canned result, encode the response, report the
   response frame written (``FramesWritten``). Two requests: a list read with two filters
   (ten rows), and a read by id (one row), the most common request. Baseline in the same
   run, its runs alternated with the engine's: the bare JSON round trip (orjson loads +
   dumps of the same frames), the floor any implementation pays; the ratio engine / floor
   is the figure to compare across machines. The read by id once more, driven as the
   server drives the engine for SQLite reads by key: the storage run inline
   (``Engine.run_inline``) and the hot events through the entry points taking their
   fields (``message_received``, ``frames_written``).
2. Routing one change to ``N`` equality-filtered subscriptions on one entity, N = 100 and
   N = 100,000: time per routed change, and the ratio (target: at most 2x).
3. Reads by id pipelined: 64 sent before any reply is read, so that most wait for
   ``Limits.max_in_flight``; time per read (with ``--baseline``, against another core).
4. Fan-out in the engine: one change notified to 1,000 connections of one subscription
   each (bench_fanout.py's 1000x1 layout without the sockets): time per notification of
   the ``StorageCompleted`` that routes the change and sends the frames.

``--baseline DIR`` measures another copy of the core in the same process, its runs
alternated with this one's, for an A/B that the machine's load moves less than two
separate runs: ``DIR`` holds that copy's ``wsspec_core`` package, e.g. from
``git archive 604b418 wsspec_core | tar -x -C /tmp/before`` (then ``--baseline
/tmp/before``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

import wsspec_core as ws


def _users(core: Any) -> Any:
    """The benchmark's entity, built by ``core`` (this wsspec_core or a baseline's)."""
    return core.Entity(
        schema="public",
        name="users",
        table_name="users",
        columns=[
            core.Column(name="id", type=core.ColumnType.INTEGER, nullable=False, primary_key=True),
            core.Column(name="name", type=core.ColumnType.TEXT),
            core.Column(name="status", type=core.ColumnType.TEXT),
            core.Column(name="age", type=core.ColumnType.INTEGER),
        ],
    )


USERS = _users(ws)
ROWS = [{"id": i, "name": f"user{i}", "status": "active", "age": 30 + i} for i in range(10)]


#: Each request benchmark runs its frames RUNS times, in runs of CHUNK frames alternated
#: with the JSON floor's (and a baseline's); the best run of each counts.
RUNS = 5
CHUNK = 1_000


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


def _engine(core: Any) -> Any:
    engine = core.Engine(
        core.EntityRegistry([_users(core)]), limits=core.Limits(keepalive_interval=None)
    )
    engine.handle(core.ConnectionOpened(connection_id=1, request=core.RequestInfo(), now=0.0))
    return engine


def _engine_run(core: Any, result: object) -> Callable[[list[str]], float]:
    """A run of frames through one engine of ``core``: seconds taken."""
    engine = _engine(core)
    handle = engine.handle
    received, completed, written = core.MessageReceived, core.StorageCompleted, core.FramesWritten
    run_storage, send_action = core.RunStorage, core.Send

    def run(frames: list[str]) -> float:
        start = time.perf_counter()
        for frame in frames:
            [run] = handle(received(connection_id=1, data=frame, now=1.0))
            assert isinstance(run, run_storage)
            [send] = handle(completed(operation_id=run.operation_id, result=result, now=1.0))
            assert isinstance(send, send_action)  # encoded by the engine itself
            handle(written(connection_id=1, count=1, now=1.0))
        return time.perf_counter() - start

    return run


def _engine_run_inline(core: Any, result: object) -> Callable[[list[str]], float]:
    """A run of frames through one engine of ``core`` driven as the server drives it when
    its storage answers a read at once (SQLite reads by key): ``run_inline`` builds the
    ``StorageCompleted`` with a canned result, the entry points taking the hot events'
    fields (``message_received``, ``frames_written``). A core without them (before
    issue 11) is driven through ``handle`` as its server drove it."""
    if not hasattr(core.Engine, "message_received"):
        return _engine_run(core, result)
    engine = _engine(core)
    completed = core.StorageCompleted

    def run_inline(operation_id: int, operation: object, request_id: object) -> object:
        return completed(operation_id=operation_id, result=result, now=1.0, wall=1.0)

    engine.run_inline = run_inline
    message_received, frames_written, send_action = (
        engine.message_received,
        engine.frames_written,
        core.Send,
    )

    def run(frames: list[str]) -> float:
        start = time.perf_counter()
        for frame in frames:
            [send] = message_received(1, frame, 1.0, 1.0)
            assert type(send) is send_action
            frames_written(1, 1, 1.0, 1.0)
        return time.perf_counter() - start

    return run


def _bench_frames(
    frames: list[str],
    result_of: Callable[[Any], object],
    response: dict[str, object],
    baseline: ModuleType | None = None,
    engine_run: Callable[[Any, object], Callable[[list[str]], float]] = _engine_run,
) -> tuple[float, float, float | None]:
    """Requests/s through one engine (decode, handle, storage completion with
    ``result_of(core)``, the ``FramesWritten`` report), the bare JSON round trip of the
    same frames in the same run (orjson loads of each request, dumps of ``response``),
    and requests/s through a ``baseline`` core's engine if one is given."""

    def json_run(chunk: list[str]) -> float:
        start = time.perf_counter()
        for frame in chunk:
            orjson.loads(frame)
            orjson.dumps(response)
        return time.perf_counter() - start

    runs: dict[str, Callable[[list[str]], float]] = {
        "engine": engine_run(ws, result_of(ws)),
        "json": json_run,
    }
    if baseline is not None:
        runs["baseline"] = engine_run(baseline, result_of(baseline))
    # Short runs of CHUNK frames, alternated, the best of each: on a shared machine they
    # all see the same spells of load, and some runs fall between them, so the ratios
    # move less than any one figure.
    chunks = [frames[i : i + CHUNK] for i in range(0, len(frames), CHUNK)]
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(RUNS):
        for chunk in chunks:
            for name, run in runs.items():
                best[name] = min(best[name], run(chunk) / len(chunk))
    return (
        1 / best["engine"],
        1 / best["json"],
        1 / best["baseline"] if baseline is not None else None,
    )


def bench_requests(n: int = 20_000) -> tuple[float, float]:
    """Requests/s of a list read and of its JSON floor (benchmarks/run_all.py)."""
    engine, floor, _ = list_read_figures(n)
    return engine, floor


def bench_read_by_id(n: int = 20_000) -> tuple[float, float]:
    """Requests/s of a read by id and of its JSON floor (benchmarks/run_all.py)."""
    engine, floor, _ = read_by_id_figures(n)
    return engine, floor


def list_read_figures(
    n: int = 20_000, baseline: ModuleType | None = None
) -> tuple[float, float, float | None]:
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
    return _bench_frames(
        frames, lambda core: core.ListResult(rows=ROWS, total=10), response, baseline
    )


def _read_by_id_frames(n: int) -> list[str]:
    """``n`` reads by id, their ids cycling over the ten rows."""
    return [
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


def read_by_id_figures(
    n: int = 20_000,
    baseline: ModuleType | None = None,
    engine_run: Callable[[Any, object], Callable[[list[str]], float]] = _engine_run,
) -> tuple[float, float, float | None]:
    """A read by id (the most common request), answered with one row; ``engine_run``
    drives the engine (through ``handle()``, or as the server does for SQLite)."""
    response = {
        "id": "x",
        "type": "response",
        "success": True,
        "data": ROWS[3],
        "metadata": {"total": 1},
        "timestamp": "2025-01-01T00:00:00.000Z",
    }
    return _bench_frames(
        _read_by_id_frames(n), lambda core: ROWS[3], response, baseline, engine_run
    )


def read_by_id_inline_figures(
    n: int = 20_000, baseline: ModuleType | None = None
) -> tuple[float, float, float | None]:
    """The read by id again, driven as the server drives the engine when the storage
    answers reads by key at once (``_engine_run_inline``)."""
    return read_by_id_figures(n, baseline, _engine_run_inline)


def bench_read_by_id_inline(n: int = 20_000) -> tuple[float, float]:
    """Requests/s of a read by id run inline and of its JSON floor (run_all.py)."""
    engine, floor, _ = read_by_id_inline_figures(n)
    return engine, floor


#: Pipelined reads: requests a client sends before reading any reply (8 may run at once,
#: Limits' default, so most wait their turn).
PIPELINED = 64


def _pipelined_run(core: Any) -> Callable[[], float]:
    """A run of ``PIPELINED`` reads by id sent at once through one engine of ``core``,
    their storage operations completed in order as the engine asks for them, every reply
    then reported written: seconds per read."""
    engine = _engine(core)
    handle = engine.handle
    frames = _read_by_id_frames(PIPELINED)
    row = ROWS[3]
    received, completed = core.MessageReceived, core.StorageCompleted
    run_storage, send_action = core.RunStorage, core.Send

    def run() -> float:
        start = time.perf_counter()
        pending: list[int] = []
        for frame in frames:
            for action in handle(received(connection_id=1, data=frame, now=1.0)):
                if type(action) is run_storage:
                    pending.append(action.operation_id)
        sent = 0
        for operation_id in pending:  # grows as waiting reads start
            for action in handle(completed(operation_id=operation_id, result=row, now=1.0)):
                if type(action) is run_storage:
                    pending.append(action.operation_id)
                elif type(action) is send_action:
                    sent += 1
        handle(core.FramesWritten(connection_id=1, count=sent, now=1.0))
        assert sent == PIPELINED
        return (time.perf_counter() - start) / PIPELINED

    return run


def pipelined_figures(baseline: ModuleType | None = None) -> tuple[float, float | None]:
    """Seconds per pipelined read by id, in this engine and in a ``baseline`` core's,
    their runs alternated, the best of each."""
    return _best_alternated(_pipelined_run, baseline, RUNS * 40)


def _best_alternated(
    make_run: Callable[[Any], Callable[[], float]], baseline: ModuleType | None, rounds: int
) -> tuple[float, float | None]:
    """The best of ``rounds`` runs of ``make_run(ws)`` and, if given, of
    ``make_run(baseline)``, their runs alternated."""
    runs = {"engine": make_run(ws)}
    if baseline is not None:
        runs["baseline"] = make_run(baseline)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best["engine"], best["baseline"] if baseline is not None else None


#: Fan-out: connections subscribed (one subscription each, no filters) and changes timed.
FANOUT_CONNECTIONS = 1_000
FANOUT_CHANGES = 20


def _fanout_run(core: Any) -> Callable[[], float]:
    """A run of creates through one engine of ``core`` whose every change is notified to
    ``FANOUT_CONNECTIONS`` connections of one subscription each (bench_fanout.py's
    1000x1 layout): seconds per notification spent in the ``StorageCompleted`` that
    routes and sends them (the subscribers' ``FramesWritten`` are reported untimed)."""
    engine = core.Engine(
        core.EntityRegistry([_users(core)]), limits=core.Limits(keepalive_interval=None)
    )
    handle = engine.handle
    subscribe = orjson.dumps(
        {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
    ).decode()
    for c in range(FANOUT_CONNECTIONS + 1):
        handle(core.ConnectionOpened(connection_id=c, request=core.RequestInfo(), now=0.0))
        if c:
            handle(core.MessageReceived(connection_id=c, data=subscribe, now=0.0))
            handle(core.FramesWritten(connection_id=c, count=1, now=0.0))
    written = [
        core.FramesWritten(connection_id=c, count=1, now=1.0) for c in range(FANOUT_CONNECTIONS + 1)
    ]
    counter = iter(range(10**9))

    def run() -> float:
        spent = 0.0
        for _ in range(FANOUT_CHANGES):
            i = next(counter)
            row = {"id": i, "name": f"user{i}", "status": "active", "age": 30}
            create = orjson.dumps(
                {"id": i, "type": "request", "operation": "create", "entity": "users", "data": row}
            ).decode()
            [storage] = handle(core.MessageReceived(connection_id=0, data=create, now=1.0))
            completed = core.StorageCompleted(
                operation_id=storage.operation_id, result=[row], now=1.0
            )
            start = time.perf_counter()
            actions = handle(completed)
            spent += time.perf_counter() - start
            assert len(actions) == FANOUT_CONNECTIONS + 1
            for event in written:
                handle(event)
        return spent / (FANOUT_CHANGES * FANOUT_CONNECTIONS)

    return run


def fanout_figures(baseline: ModuleType | None = None) -> tuple[float, float | None]:
    """Seconds per notification of one change to 1,000 subscribers, in this engine and
    in a ``baseline`` core's, their runs alternated, the best of each."""
    return _best_alternated(_fanout_run, baseline, RUNS * 2)


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


def _print_requests(
    title: str, engine_rate: float, json_rate: float, baseline_rate: float | None
) -> None:
    print(title)
    print(f"  engine:            {engine_rate:10,.0f} requests/s")
    print(f"  json floor:        {json_rate:10,.0f} round trips/s")
    print(f"  engine / floor:    {engine_rate / json_rate:10.3f}x")
    print(
        f"  engine per request:{1e6 / engine_rate:10.1f} us (trio-websocket costs ~86 us/message)"
    )
    if baseline_rate is not None:
        print(
            f"  baseline:          {1e6 / baseline_rate:10.1f} us per request, "
            f"{baseline_rate / json_rate:.3f}x the floor; engine / baseline cost "
            f"{baseline_rate / engine_rate:.3f}x"
        )


def _load_baseline(directory: str) -> ModuleType:
    """The ``wsspec_core`` package in ``directory``, imported as ``wsspec_core_baseline``
    beside this one (its modules import each other relatively)."""
    package = Path(directory) / "wsspec_core"
    spec = importlib.util.spec_from_file_location(
        "wsspec_core_baseline", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None, f"no wsspec_core in {directory}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a directory holding another wsspec_core package, measured alternately",
    )
    args = parser.parse_args()
    baseline = _load_baseline(args.baseline) if args.baseline else None
    print("core throughput, one core (decode + handle + storage completion + encode + the")
    print("FramesWritten report), against the bare orjson round trip of the same frames")
    _print_requests("list read, two filters, ten rows", *list_read_figures(baseline=baseline))
    _print_requests("read by id, one row", *read_by_id_figures(baseline=baseline))
    _print_requests(
        "read by id, storage run inline (Engine.run_inline and the hot events' entry points,"
        " as the server runs SQLite reads by key)",
        *read_by_id_inline_figures(baseline=baseline),
    )
    engine, base = pipelined_figures(baseline)
    print(f"read by id, {PIPELINED} pipelined (most wait for max_in_flight)")
    print(f"  engine per request:{engine * 1e6:10.1f} us")
    if base is not None:
        print(
            f"  baseline:          {base * 1e6:10.1f} us; "
            f"engine / baseline cost {engine / base:.3f}x"
        )
    small = bench_routing(100)
    large = bench_routing(100_000)
    print("routing one change, equality-filtered subscriptions on one entity")
    print(f"  100 subscriptions:     {small * 1e6:8.2f} us")
    print(f"  100,000 subscriptions: {large * 1e6:8.2f} us")
    print(f"  ratio:                 {large / small:8.2f}x  (target <= 2x)")
    engine, base = fanout_figures(baseline)
    print(f"fan-out: one change to {FANOUT_CONNECTIONS:,} connections of one subscription each")
    print(f"  engine per notification: {engine * 1e9:6.0f} ns (routing, frame, Send)")
    if base is not None:
        print(
            f"  baseline:                {base * 1e9:6.0f} ns; "
            f"engine / baseline {engine / base:.3f}x"
        )


if __name__ == "__main__":
    main()
