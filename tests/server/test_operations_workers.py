"""``--workers`` with real processes (docs/operations.md "Workers"): two workers share the
port, connections land on both (each worker's own metrics endpoint counts its
connections), with the change feed a write through one worker reaches a subscriber on the
other, SIGTERM stops them all; a worker that dies makes the parent stop the other and
fail; workers do not outlive a parent killed with SIGKILL. Every process is stopped by
PID, every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import trio
from operations_support import Command, command, scrape, value
from wsserver_support import TIMEOUT, Client, client
from wsspec.demo import build_app, with_change_feed

APP = "wsspec.demo:build_app"
#: Connections opened at most while looking for one on each worker.
MAX_TRIES = 40


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited and been reaped (a zombie counts as gone too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.05)


def workers_of(started: Command) -> list[tuple[int, str]]:
    """(pid, metrics URL) of each worker, from the parent's announcement."""
    found = []
    for line in started.lines[1:]:
        words = line.split()
        assert words[2] == "worker" and words[4] == "pid", line
        found.append((int(words[5]), words[-1]))
    return found


@pytest.mark.parametrize("server", ["trio", "uvicorn", "hypercorn"])
async def test_two_workers_share_the_port_and_the_change_feed(tmp_path: Path, server: str) -> None:
    db = f"sqlite:///{tmp_path / 'workers.db'}"
    # What `wsspec changelog install` does, without starting one more interpreter.
    with_change_feed(build_app(db))
    args = ["serve", APP, "--db", db, "--port", "0", "--change-feed", "--server", server]
    args += ["--workers", "2", "--metrics-port", "0"]
    with command(args, tmp_path, lines=3) as parent:
        url = parent.lines[0].split()[-1]
        assert parent.lines[0].startswith("wsspec serve listening on ws://127.0.0.1:")
        (pid_a, metrics_a), (pid_b, metrics_b) = workers_of(parent)
        assert pid_a != pid_b
        assert parent_of(pid_a) == parent_of(pid_b) == parent.process.pid
        with trio.fail_after(TIMEOUT):
            async with contextlib.AsyncExitStack() as stack:
                # Open connections one by one; each worker's metrics say where it landed.
                on: dict[str, list[Client]] = {metrics_a: [], metrics_b: []}
                for _ in range(MAX_TRIES):
                    opened = await stack.enter_async_context(client(url))
                    counts = {m: value(await scrape(m), "wsspec_connections") for m in on}
                    (landed,) = [m for m in on if counts[m] > len(on[m])]
                    on[landed].append(opened)
                    if on[metrics_a] and on[metrics_b]:
                        break
                assert on[metrics_a] and on[metrics_b], "every connection went to one worker"
                watcher, writer = on[metrics_a][0], on[metrics_b][0]
                assert (await watcher.request("subscribe", "users"))["success"]
                created = await writer.request("create", "users", data={"name": "Wendy"})
                assert created["success"]
                # Through the other worker's write and the change log, within 2 s.
                with trio.fail_after(2):
                    note = await watcher.recv()
                assert note["type"] == "notification" and note["data"] == created["data"]
        assert parent.stop() == 0
    wait_gone([pid_a, pid_b], timeout=5)
    assert "Traceback" not in parent.stderr, parent.stderr
    assert "without the change feed" not in parent.stderr


def test_a_worker_that_dies_stops_the_other_and_fails(tmp_path: Path) -> None:
    # wsspec serve without --change-feed (wsspec demo turns it on by itself).
    args = ["serve", APP, "--port", "0", "--db", "sqlite:///demo.db", "--workers", "2"]
    with command(args, tmp_path, lines=3) as parent:
        (pid_a, _), (pid_b, _) = workers_of(parent)
        os.kill(pid_a, signal.SIGKILL)
        status = parent.process.wait(TIMEOUT)
        parent.finish()
    assert status == 1
    wait_gone([pid_a, pid_b], timeout=5)
    assert f"worker 0 (pid {pid_a}) was killed by SIGKILL unexpectedly" in parent.stderr
    # The warning at start: without the change feed, no cross-worker notifications.
    assert "--workers 2 without the change feed" in parent.stderr


def test_workers_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    args = ["demo", "--port", "0", "--db", "sqlite:///demo.db", "--workers", "2"]
    started = Command(args, tmp_path, lines=3)
    pids: list[int] = []
    try:
        pids += [pid for pid, _ in workers_of(started)]
        os.kill(started.process.pid, signal.SIGKILL)
        started.process.wait(5)
        # Their lifeline pipe reads end-of-file: each stops gracefully by itself.
        wait_gone(pids, timeout=TIMEOUT)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        started.stop()
