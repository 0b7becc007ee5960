"""Throughput and memory of the trio adapter, next to a plain trio-websocket echo server.

    .venv/bin/python benchmarks/bench_server.py            # about 15 seconds

Each server runs in its own process (so the client and the server do not share a core);
the client is the same trio-websocket code for both.  Measured:

* read-by-id and create over SQLite (PeeweeStorage, WAL), one client, pipelined (send N,
  then read N) and one at a time (send, wait for the reply, repeat);
* the echo server answering the very same frames: the ceiling the transport allows, and
  the ratio wsspec / echo (target: at least 0.7x on reads);
* the CPU time each server process spent per message (from /proc): steadier than the
  rates when other work shares the machine;
* reads again with ``App(storage_threads=0)`` (SQLite on the event loop): what the worker
  thread hop costs;
* resident memory per idle connection: the server's RSS (from /proc) before and after
  another process opened 1,000 connections (target: at most 40 KiB per connection).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio
import trio_websocket

PIPELINED = 5000
ONE_AT_A_TIME = 2000
CREATES_PIPELINED = 2000
CREATES_ONE_AT_A_TIME = 500
IDLE_CONNECTIONS = 1000
SEED_USERS = 1000
WARM_UP = 1000


# --- the servers (run as subprocesses of this script) ---------------------------------


def serve_wsspec(db_path: str, storage_threads: int) -> None:
    from wsspec import App, serve
    from wsspec.demo import make_models
    from wsspec.storage.peewee import PeeweeStorage

    storage = PeeweeStorage.from_url(f"sqlite:///{db_path}")
    user, post = make_models(storage.database)
    with storage.database.connection_context():
        storage.database.create_tables([user, post], safe=True)
    storage.register("public.users", user)
    storage.register("public.posts", post)
    app = App(storage, storage_threads=storage_threads)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, "127.0.0.1", 0)
            print(url, flush=True)

    trio.run(main)


def serve_echo() -> None:
    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, echo, "127.0.0.1", 0, None)
            print(f"ws://127.0.0.1:{server.port}/ws", flush=True)

    trio.run(main)


def hold_connections(url: str, count: int) -> None:
    """Open ``count`` idle connections, say "ready", keep them until stdin closes."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            opened = 0
            done = trio.Event()

            async def one(task_status: trio.TaskStatus[None]) -> None:
                async with trio_websocket.open_websocket_url(url) as ws:
                    await ws.send_message('{"type":"ping","id":1}')
                    await ws.get_message()
                    task_status.started()
                    await done.wait()

            while opened < count:
                async with trio.open_nursery() as batch:
                    for _ in range(min(100, count - opened)):
                        batch.start_soon(nursery.start, one)
                opened = min(count, opened + 100)
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            done.set()

    trio.run(main)


# --- the client --------------------------------------------------------------------------


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def pipelined(url: str, frames: list[str]) -> float:
    async with trio_websocket.open_websocket_url(url, message_queue_size=len(frames) + 1) as ws:
        started = time.perf_counter()
        for frame in frames:
            await ws.send_message(frame)
        for _ in frames:
            await ws.get_message()
        return len(frames) / (time.perf_counter() - started)


async def one_at_a_time(url: str, frames: list[str]) -> float:
    async with trio_websocket.open_websocket_url(url) as ws:
        started = time.perf_counter()
        for frame in frames:
            await ws.send_message(frame)
            await ws.get_message()
        return len(frames) / (time.perf_counter() - started)


def reads(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "id": f"r{i}",
                "type": "request",
                "operation": "read",
                "entity": "users",
                "record_id": i % SEED_USERS + 1,
            }
        )
        for i in range(n)
    ]


def creates(n: int, tag: str) -> list[str]:
    return [
        json.dumps(
            {
                "id": f"c{i}",
                "type": "request",
                "operation": "create",
                "entity": "users",
                "data": {"name": f"{tag}{i}", "email": f"{tag}{i}@example.com", "status": "active"},
            }
        )
        for i in range(n)
    ]


async def check_and_seed(url: str) -> None:
    async with trio_websocket.open_websocket_url(url) as ws:
        batch = [
            {"name": f"seed{i}", "email": f"s{i}@example.com", "status": "active"}
            for i in range(SEED_USERS)
        ]
        await ws.send_message(
            json.dumps(
                {
                    "id": "seed",
                    "type": "request",
                    "operation": "create",
                    "entity": "users",
                    "data": batch,
                }
            )
        )
        reply = json.loads(await ws.get_message())
        assert reply["success"], reply
        await ws.send_message(reads(1)[0])
        reply = json.loads(await ws.get_message())
        assert reply["success"] and reply["data"]["id"] == 1, reply


Server = tuple[subprocess.Popen[str], str]


def measure(
    name: str, count: int, run: Callable[[str], float], wsspec: Server, echo: Server
) -> None:
    """One row: each server's rate, and its CPU time per message, for the same frames."""
    rates, cpu = [], []
    for process, url in (wsspec, echo):
        before = cpu_seconds(process.pid)
        rates.append(run(url))
        cpu.append((cpu_seconds(process.pid) - before) / count * 1e6)
    print(
        f"{name:<34} {rates[0]:>9,.0f}/s {rates[1]:>9,.0f}/s {rates[0] / rates[1]:>6.2f}x"
        f" {cpu[0]:>6.0f} us {cpu[1]:>5.0f} us"
    )


def main() -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        wsspec = start("--wsspec-server", db, "8")
        inline = start("--wsspec-server", db, "0")
        echo = start("--echo-server")
        wsspec_process, wsspec_url = wsspec
        try:
            trio.run(check_and_seed, wsspec_url)
            for _, url in (wsspec, inline, echo):  # warm up: caches, first connections
                trio.run(pipelined, url, reads(WARM_UP))
            print(f"wsspec server pid {wsspec_process.pid}, echo server pid {echo[0].pid}")
            print(f"{'':<34} {'wsspec':>11} {'echo':>11} {'ratio':>7}   server CPU/message")
            measure(
                "read by id, pipelined",
                PIPELINED,
                lambda url: trio.run(pipelined, url, reads(PIPELINED)),
                wsspec,
                echo,
            )
            measure(
                "read by id, one at a time",
                ONE_AT_A_TIME,
                lambda url: trio.run(one_at_a_time, url, reads(ONE_AT_A_TIME)),
                wsspec,
                echo,
            )
            measure(
                "create, pipelined",
                CREATES_PIPELINED,
                lambda url: trio.run(pipelined, url, creates(CREATES_PIPELINED, "p")),
                wsspec,
                echo,
            )
            measure(
                "create, one at a time",
                CREATES_ONE_AT_A_TIME,
                lambda url: trio.run(one_at_a_time, url, creates(CREATES_ONE_AT_A_TIME, "o")),
                wsspec,
                echo,
            )

            print("for comparison, App(storage_threads=0): SQLite on the event loop, no thread hop")
            measure(
                "read by id, pipelined",
                PIPELINED,
                lambda url: trio.run(pipelined, url, reads(PIPELINED)),
                inline,
                echo,
            )
            measure(
                "read by id, one at a time",
                ONE_AT_A_TIME,
                lambda url: trio.run(one_at_a_time, url, reads(ONE_AT_A_TIME)),
                inline,
                echo,
            )

            time.sleep(0.5)
            before = rss_kib(wsspec_process.pid)
            holder, ready = start("--hold", wsspec_url, str(IDLE_CONNECTIONS))
            assert ready == "ready", ready
            time.sleep(0.5)
            after = rss_kib(wsspec_process.pid)
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
            per_connection = (after - before) / IDLE_CONNECTIONS
            print(
                f"server RSS {before:,} KiB idle, {after:,} KiB with {IDLE_CONNECTIONS:,} "
                f"connections: {per_connection:.1f} KiB per idle connection"
            )
        finally:
            for process, _ in (wsspec, inline, echo):
                process.terminate()
                process.wait(timeout=30)
    print(f"(benchmark took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--wsspec-server"]:
        serve_wsspec(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--echo-server"]:
        serve_echo()
    elif sys.argv[1:2] == ["--hold"]:
        hold_connections(sys.argv[2], int(sys.argv[3]))
    else:
        main()
