"""The change feed's figures (issue 9; docs/changefeed.md): latency from a commit to the
notification on *another* server, and the speed of a resume that replays 10,000 missed
changes against the same 10,000 changes delivered live, same run.

Real ``wsspec serve --change-feed`` processes on 127.0.0.1 (the demo app), on a SQLite
file and on PostgreSQL (skipped when ``pg_isready`` fails), stopped by PID at the end.

    python benchmarks/bench_feed.py [--changes 200] [--replay 10000] [--databases sqlite postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).parent))
from _wsspec_process import (
    database,
    install_changelog,
    machine,
    postgres_available,
    serve,
    sqlite_path,
)

ACTIVE = {"filters": [{"column": "status", "operator": "eq", "value": "active"}]}


class Ws:
    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=10, max_size=None)
        )
        self.ids = 0

    def close(self) -> None:
        self._stack.close()

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return found

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        message = {"id": str(self.ids), **message}
        self.ws.send(json.dumps(message))
        reply = self.recv()
        assert reply.get("id") == message["id"] and reply["success"], reply
        return reply


def subscribe(ws: Ws, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = ws.call(
        {"type": "subscription", "operation": "subscribe", "entity": "users", **extra}
    )["data"]
    return data


@contextlib.contextmanager
def plain_sql(kind: str, url: str) -> Iterator[Callable[[str, tuple[Any, ...]], None]]:
    """A third program's connection: run one statement and commit."""
    if kind == "sqlite":
        conn: Any = sqlite3.connect(sqlite_path(url), timeout=30)

        def run_sqlite(statement: str, params: tuple[Any, ...] = ()) -> None:
            conn.execute(statement, params)
            conn.commit()

        try:
            yield run_sqlite
        finally:
            conn.close()
        return
    import psycopg

    pg = psycopg.connect(url, autocommit=True)

    def run_pg(statement: str, params: tuple[Any, ...] = ()) -> None:
        pg.execute(statement.replace("?", "%s"), params)

    try:
        yield run_pg
    finally:
        pg.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def measure_latency(kind: str, url: str, logs: Path, changes: int) -> dict[str, Any]:
    """Commit on server A or by plain SQL; the notification on server B."""
    install_changelog(url)
    a = serve(url, logs / f"{kind}-a.log", change_feed=True, log_level="warning")
    b = serve(url, logs / f"{kind}-b.log", change_feed=True, log_level="warning")
    try:
        watcher, writer = Ws(b.url), Ws(a.url)
        try:
            subscribe(watcher, options=ACTIVE)
            figures: dict[str, Any] = {}
            with plain_sql(kind, url) as sql:
                samples = []
                for n in range(changes):
                    sql("INSERT INTO users (name, status) VALUES (?, 'active')", (f"sql{n}",))
                    committed = time.perf_counter()
                    note = watcher.recv()
                    samples.append(time.perf_counter() - committed)
                    assert note["data"]["name"] == f"sql{n}", note
                figures["plain SQL by a third program (from its commit)"] = percentiles(samples)
            samples = []
            for n in range(changes):
                writer.call(
                    {
                        "type": "request",
                        "operation": "create",
                        "entity": "users",
                        "data": {"name": f"api{n}", "status": "active"},
                    }
                )
                answered = time.perf_counter()
                note = watcher.recv()
                samples.append(time.perf_counter() - answered)
                assert note["data"]["name"] == f"api{n}", note
            figures["a create on server A (from its response)"] = percentiles(samples)
            return figures
        finally:
            watcher.close()
            writer.close()
    finally:
        a.stop()
        b.stop()


def measure_replay(kind: str, url: str, logs: Path, count: int) -> dict[str, Any]:
    """``count`` changes missed, then replayed by a resume; against the same number of
    changes delivered live to a subscriber, same server, same run."""
    install_changelog(url)
    server = serve(url, logs / f"{kind}-replay.log", change_feed=True, log_level="warning")
    try:
        live = Ws(server.url)
        try:
            first = subscribe(live)
            epoch, start = first["epoch"], first["seq"]
            rows = [(f"r{n}", "active") for n in range(count)]
            began = time.perf_counter()
            with plain_sql(kind, url) as sql:
                if kind == "sqlite":
                    conn = sqlite3.connect(sqlite_path(url), timeout=30)
                    conn.executemany("INSERT INTO users (name, status) VALUES (?, ?)", rows)
                    conn.commit()
                    conn.close()
                else:
                    values = ", ".join(["(?, ?)"] * count)
                    sql(
                        f"INSERT INTO users (name, status) VALUES {values}",
                        tuple(v for row in rows for v in row),
                    )
                committed = time.perf_counter()
            for _ in range(count):
                note = live.recv(timeout=60)
                assert note["type"] == "notification", note
            live_seconds = time.perf_counter() - committed
        finally:
            live.close()
        resuming = Ws(server.url)
        try:
            sent = time.perf_counter()
            reply = subscribe(resuming, resume={"epoch": epoch, "seq": start})
            assert reply["recovered"] is True, reply
            replied = time.perf_counter()
            last = None
            for _ in range(count):
                last = resuming.recv(timeout=60)
            replay_seconds = time.perf_counter() - sent
            assert last is not None and last["data"]["name"] == f"r{count - 1}", last
        finally:
            resuming.close()
        return {
            "changes": count,
            "insert_seconds": committed - began,
            "live_seconds": live_seconds,
            "live_per_second": count / live_seconds,
            "replay_reply_ms": (replied - sent) * 1000,
            "replay_seconds": replay_seconds,
            "replay_per_second": count / replay_seconds,
            "replay_vs_live": live_seconds / replay_seconds,
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=200, help="changes timed one by one")
    parser.add_argument("--replay", type=int, default=10_000, help="changes a resume replays")
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    print(json.dumps(machine()))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wsspec-bench-feed") as tmp:
        logs = Path(tmp)
        for kind in args.databases:
            if kind == "postgresql" and not postgres_available():
                print("postgresql: skipped (pg_isready failed)")
                continue
            with database(kind, "wsspec_bench_feed") as url:
                latency = measure_latency(kind, url, logs, args.changes)
            for what, figures in latency.items():
                print(
                    f"{kind:10} latency, {what}: p50 {figures['p50_ms']:.1f} ms, "
                    f"p90 {figures['p90_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                    f"max {figures['max_ms']:.1f} ms ({args.changes} changes)"
                )
            with database(kind, "wsspec_bench_feed") as url:
                replay = measure_replay(kind, url, logs, args.replay)
            print(
                f"{kind:10} replay of {replay['changes']} missed changes: "
                f"{replay['replay_seconds']:.2f} s ({replay['replay_per_second']:.0f}/s, reply "
                f"after {replay['replay_reply_ms']:.0f} ms); the same changes live: "
                f"{replay['live_seconds']:.2f} s ({replay['live_per_second']:.0f}/s); "
                f"replay/live speed {replay['replay_vs_live']:.2f}x"
            )
            results[kind] = {"latency": latency, "replay": replay}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
