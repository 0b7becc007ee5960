"""A keepalive ping that lands on a connection its client is closing must not take the
server down. Found by benchmarks/soak.py: 1,000 connections silent past the keepalive
interval, closed at once, crashed ``wsspec serve`` ("Nursery is closed to new arrivals"
raised out of the runtime's timer). A real server process, as there."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from pathlib import Path

from websockets.asyncio.client import connect

WSSPEC = str(Path(sys.executable).with_name("wsspec"))

APP = """
import attrs
from wsspec import App
from wsspec.demo import build_app as build_demo_app


def build_app(db_url=None):
    demo = build_demo_app(db_url)
    # Sweeps every 0.25 s, so that they run while the connections' tasks wind down.
    limits = attrs.evolve(demo.limits, keepalive_interval=0.5, keepalive_timeout=5.0)
    return App(demo.storage, registry=demo.registry, limits=limits)
"""


async def storm(url: str, count: int) -> None:
    clients = []
    for start in range(0, count, 100):
        clients += await asyncio.gather(
            *(
                connect(url, compression=None, proxy=None, open_timeout=30, ping_interval=None)
                for _ in range(min(100, count - start))
            )
        )
    await asyncio.sleep(1.0)  # silent past the keepalive interval: the sweeps ping them
    await asyncio.gather(*(c.close() for c in clients))


def test_a_close_storm_during_keepalive_sweeps_leaves_the_server_serving(tmp_path: Path) -> None:
    (tmp_path / "short_keepalive.py").write_text(APP)
    # warning: a line per connection would fill the stderr pipe nobody reads meanwhile
    command = [WSSPEC, "serve", "short_keepalive:build_app", "--db", "sqlite:///x.db"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--log-level", "warning"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(30)
        assert line and line[0], "the server did not start"
        url = line[0].split()[-1]
        for _ in range(3):
            asyncio.run(storm(url, 500))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1.0)  # a crash shows within this second
            assert process.poll() is None, "the server died during the close storm"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        stderr = process.stderr.read() if process.stderr is not None else ""
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert "Nursery is closed" not in stderr and "Traceback" not in stderr, stderr
