"""Latency under concurrency: p50 and p99 of request latency against the number of
concurrent clients (1, 10, 100, 1,000), wsspec on trio-websocket serving the demo app on a
SQLite file, next to a plain trio-websocket echo server answering the very same frames, in
the same run.

    .venv/bin/python benchmarks/bench_latency.py                    # about 60 s
    .venv/bin/python benchmarks/bench_latency.py --clients 1,100 --seconds 1

Both servers are the processes ``bench_server.py`` starts (``--serve trio wsspec|echo``),
started by this script and stopped by their PID.  The client is one process
(``_wire_many``: plain non-blocking sockets in one selector loop); each of the N clients is
a connection that sends a request, waits for its reply and sends the next (a closed loop:
N requests are outstanding at any time), for ``--seconds`` after ``--warmup`` seconds whose
latencies are not counted.  Latency is measured by the client, from writing the request to
reading the whole reply.  Workloads:

* ``read by id``: ``read`` of a ``users`` row by id, ids cycling over the seeded rows (on
  SQLite it runs on the event loop: ``PeeweeStorage.never_blocks``);
* ``mixed``: of every 10 requests, 8 reads by id, 1 list read (``status eq active``,
  ``limit 10``, in a storage thread) and 1 update of a user's ``status`` (the write lane,
  one SQLite commit each).

Absolute figures vary by machine; compare wsspec with the echo floor of the same run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench_wire as wire
import _wire_many as many
import bench_server

CLIENTS = (1, 10, 100, 1000)
FAILED = b'"success":false'


def read_by_id(i: int, rows: int) -> str:
    return bench_server.read_request(i, rows)


def mixed(i: int, rows: int) -> str:
    kind = i % 10
    if kind == 8:
        return json.dumps(
            {
                "id": f"l{i}",
                "type": "request",
                "operation": "read",
                "entity": "users",
                "options": {
                    "filters": [{"column": "status", "operator": "eq", "value": "active"}],
                    "limit": 10,
                    "offset": (i * 7) % max(1, rows - 10),
                },
            }
        )
    if kind == 9:
        return json.dumps(
            {
                "id": f"u{i}",
                "type": "request",
                "operation": "update",
                "entity": "users",
                "record_id": (i * 13) % rows + 1,
                "data": {"status": "active"},
            }
        )
    return read_by_id(i, rows)


WORKLOADS: dict[str, Callable[[int, int], str]] = {"read by id": read_by_id, "mixed": mixed}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def closed_loop(
    url: str, pid: int, clients: int, frames: list[bytes], seconds: float, warmup: float
) -> dict[str, Any]:
    """``clients`` connections, each with one request outstanding, for ``warmup + seconds``;
    returns the latencies (ms) of the requests sent in the ``seconds`` after the warm-up
    (each waited for), the replies per second received in that time, and the CPU time the
    server (``pid``) and this client spent per request over the whole run."""
    connections = many.open_connections(url, clients)
    total = 0
    loop = many.Loop(connections)
    latencies: list[float] = []
    failed = 0
    try:
        position = {}
        sent_at: dict[many.Connection, float] = {}
        for index, conn in enumerate(connections):
            position[conn] = index * 17 % len(frames)
        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + seconds
        outstanding = 0
        server_cpu = bench_server.cpu_seconds(pid)[0]
        client_cpu = time.process_time()
        for conn in connections:
            sent_at[conn] = time.perf_counter()
            loop.send(conn, frames[position[conn]])
            outstanding += 1
        perf_counter = time.perf_counter
        sending = True
        answered_in_window = 0
        while outstanding:
            for conn, payloads in loop.poll(5.0):
                for payload in payloads:
                    now = perf_counter()
                    outstanding -= 1
                    total += 1
                    began = sent_at[conn]
                    if measure_from <= now < stop_at:
                        answered_in_window += 1
                    if measure_from <= began < stop_at:
                        latencies.append((now - began) * 1000)
                        if FAILED in payload:
                            failed += 1
                    if sending:
                        position[conn] = (position[conn] + 1) % len(frames)
                        sent_at[conn] = now
                        loop.send(conn, frames[position[conn]])
                        outstanding += 1
            if sending and perf_counter() >= stop_at:
                sending = False
            if perf_counter() > stop_at + 60:
                raise TimeoutError(f"{outstanding} replies missing 60 s after the end")
        server_cpu = bench_server.cpu_seconds(pid)[0] - server_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        loop.close()
        many.close_connections(connections)
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "per_second": answered_in_window / seconds,
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "failed": failed,
        "server_cpu_us": server_cpu / total * 1e6,
        "client_cpu_us": client_cpu / total * 1e6,
    }


def run(
    clients: tuple[int, ...] = CLIENTS,
    workloads: tuple[str, ...] = tuple(WORKLOADS),
    seconds: float = 3.0,
    warmup: float = 1.0,
    rows: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every (workload, clients) on both servers; returns the figures."""
    bench_server.raise_fd_limit(max(clients) * 2 + 256)
    figures: dict[str, Any] = {"seconds": seconds, "warmup": warmup, "rows": rows, "series": {}}
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'latency.db'}"
        bench_server.seed(db_url, rows)
        with bench_server.servers("trio", db_url, None) as started:
            for server in started:
                bench_server.check(server)
            log(", ".join(f"{s.role} pid {s.pid} at {s.url}" for s in started))
            for workload in workloads:
                frames = [wire.client_frame(WORKLOADS[workload](i, rows)) for i in range(2000)]
                series: dict[str, list[dict[str, Any]]] = {"wsspec": [], "echo": []}
                for count in clients:
                    for server in started:
                        point = closed_loop(server.url, server.pid, count, frames, seconds, warmup)
                        if point["failed"]:
                            raise RuntimeError(
                                f"{server.role}: {point['failed']} requests failed ({workload})"
                            )
                        series[server.role].append(point)
                        log(
                            f"{workload:<10} {server.role:<6} {count:>5} clients: "
                            f"p50 {point['p50_ms']:7.2f} ms  p99 {point['p99_ms']:7.2f} ms  "
                            f"max {point['max_ms']:7.1f} ms  {point['per_second']:8,.0f} req/s  "
                            f"CPU/request: server {point['server_cpu_us']:4.0f} us, "
                            f"client {point['client_cpu_us']:3.0f} us"
                        )
                figures["series"][workload] = series
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = []
    for workload, series in figures["series"].items():
        lines.append(f"{workload}: latency (ms) and requests/s, wsspec vs trio-websocket echo")
        lines.append(
            f"{'clients':>7}  {'wsspec p50':>10} {'p99':>8} {'req/s':>8}   "
            f"{'echo p50':>8} {'p99':>8} {'req/s':>8}   {'p99 ratio':>9}"
        )
        for ours, floor in zip(series["wsspec"], series["echo"], strict=True):
            lines.append(
                f"{ours['clients']:>7,}  {ours['p50_ms']:>10.2f} {ours['p99_ms']:>8.2f} "
                f"{ours['per_second']:>8,.0f}   {floor['p50_ms']:>8.2f} {floor['p99_ms']:>8.2f} "
                f"{floor['per_second']:>8,.0f}   {ours['p99_ms'] / floor['p99_ms']:>8.1f}x"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=3.0, help="measured, per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="not measured, per point")
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, bench_server._interrupted)
    figures = run(
        tuple(int(c) for c in args.clients.split(",")),
        tuple(w.strip() for w in args.workloads.split(",")),
        args.seconds,
        args.warmup,
        args.rows,
    )
    print()
    print(report(figures))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as interrupt:
        sys.exit(f"interrupted ({interrupt}); servers stopped")
