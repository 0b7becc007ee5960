"""Fan-out: notifications delivered per second to 1,000 and 10,000 subscribers of one
change, wsspec against a plain trio-websocket server broadcasting the same frames to the
same sockets, in the same run.

    .venv/bin/python benchmarks/bench_fanout.py                   # about 2 minutes
    .venv/bin/python benchmarks/bench_fanout.py --layouts 100x10 --seconds 1 --rounds 1

Servers, each a process of its own started by this script and stopped by its PID:

* ``wsspec``: ``wsspec serve wsspec.demo:build_app --db sqlite:///...`` (trio +
  trio-websocket, default limits, ``--log-level warning``);
* ``plain`` (the floor): a trio-websocket server written for this benchmark.  It answers a
  ``subscribe`` with a subscription id and a ``create`` with the row (an id from a counter,
  no database), then puts the notification frame of every subscription, the same JSON as
  wsspec's with the row encoded once per change, on each connection's unbounded queue; a
  writer task per connection sends them with ``send_message``, one per frame, as a
  trio-websocket application is written;
* ``joined`` (the stronger floor): the same server, but each writer task sends every frame
  queued (up to 64) with one ``send_all``, as wsspec's trio transport does
  (``wsspec/transports/trio_websocket.py``, ``_send_joined``; the same private
  trio-websocket attributes).

Layouts ``CxS``: C connections of S subscriptions each to ``users`` without filters, so every
change is notified C*S times (100x10 and 1000x1: 1,000 subscribers; 100x100 and 1000x10:
10,000).  One more connection writes: it sends creates and keeps a window of changes not
yet delivered to every subscriber, at most 200 notifications outstanding per connection
(far from wsspec's ``outbound_queue`` of 1,024 frames) and 20,000 in all: 20 changes for
1,000 subscribers, 2 for 10,000.  Each server gets the
very same frames; runs alternate between the servers ``--rounds`` times, best kept.  The
client is one process (``_wire_many``) that counts the frames each connection receives and
checks, after each run, that every connection got exactly creates x S notifications.

Reported: notifications delivered per second (from the first create sent to the last
notification received), the ratio wsspec / floor, and each server's CPU time per
notification (from /proc, steadier than the rates on a shared machine).  Absolute rates
vary by machine; the ratios are the claim.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bench_wire as wire
import _wire_many as many
import bench_server
from _wsspec_process import WsspecProcess, serve

LAYOUTS = ((100, 10), (1000, 1), (100, 100), (1000, 10))
FLOORS = ("plain", "joined")
#: Notifications one connection may have outstanding (sent by the server, not yet counted
#: by the client), at most: far below wsspec's ``outbound_queue`` (1,024).
PER_CONNECTION_BACKLOG = 200
#: Notifications outstanding over all connections, at most, so that a run ends soon after
#: its ``--seconds``.
OUTSTANDING = 20_000


def writer_window(connections: int, per_connection: int) -> int:
    """Changes the writer keeps not yet delivered to every subscriber."""
    return max(
        1,
        min(
            PER_CONNECTION_BACKLOG // per_connection,
            OUTSTANDING // (connections * per_connection),
        ),
    )


# --- the floor: a plain trio-websocket broadcast server (runs as a subprocess) -----------


def serve_broadcast(mode: str) -> None:
    import itertools
    import math
    from datetime import UTC, datetime

    import orjson
    import trio
    import trio_websocket
    from trio_websocket import ConnectionClosed
    from wsproto.events import TextMessage

    bench_server.install_stop_handler()
    peers: dict[int, Peer] = {}
    row_ids = itertools.count(1)
    subscription_ids = itertools.count(1)
    peer_ids = itertools.count(1)

    class Peer:
        def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
            self.ws = ws
            self.subscriptions: list[str] = []
            self.send, self.receive = trio.open_memory_channel[str](math.inf)

    async def send_joined(ws: Any, frames: list[str]) -> None:
        # What wsspec's trio transport does (_send_joined): one send_all for the frames.
        data = b"".join(ws._wsproto.send(TextMessage(data=frame)) for frame in frames)
        async with ws._stream_lock:
            await ws._stream.send_all(data)

    async def writer(peer: Peer) -> None:
        async for frame in peer.receive:
            if mode == "joined":
                frames = [frame]
                while len(frames) < 64:
                    try:
                        frames.append(peer.receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await send_joined(peer.ws, frames)
            else:
                await peer.ws.send_message(frame)

    def now() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def on_message(peer: Peer, message: dict[str, Any]) -> None:
        if message.get("type") == "subscription":
            subscription = f"sub-{next(subscription_ids)}"
            peer.subscriptions.append(subscription)
            data: Any = {"subscription_id": subscription, "schema": "public", "entity": "users"}
        else:  # a create
            data = {"id": next(row_ids), "email": None, **message["data"]}
        timestamp = now()
        peer.send.send_nowait(
            orjson.dumps(
                {
                    "id": message["id"],
                    "type": "response",
                    "success": True,
                    "data": data,
                    "timestamp": timestamp,
                }
            ).decode()
        )
        if message.get("type") == "subscription":
            return
        row = orjson.dumps(data).decode()  # once per change, like a frame per subscription
        for other in peers.values():
            for subscription in other.subscriptions:
                other.send.send_nowait(
                    '{"type":"notification","operation":"create","subscription_id":"'
                    + subscription
                    + '","schema":"public","entity":"users","data":'
                    + row
                    + ',"timestamp":"'
                    + timestamp
                    + '"}'
                )

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        peer = Peer(ws)
        key = next(peer_ids)
        peers[key] = peer
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, peer)
                try:
                    while True:
                        on_message(peer, orjson.loads(await ws.get_message()))
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            del peers[key]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            servers = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            port = servers.port
            bench_server.announce(f"ws://127.0.0.1:{port}/ws")

    trio.run(main)


def start_floor(mode: str) -> bench_server.Server:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-broadcast", mode],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=bench_server._die_with_parent,
    )
    return bench_server.Server("trio", mode, process)


@contextlib.contextmanager
def servers(db_url: str, floors: tuple[str, ...], log_path: Path) -> Iterator[list[Any]]:
    """The wsspec server and the floors; each has ``role``, ``pid`` and ``url``."""
    ours: WsspecProcess | None = None
    started: list[bench_server.Server] = []
    try:
        ours = serve(db_url, log_path, log_level="warning")
        for mode in floors:
            started.append(start_floor(mode))
        for server in started:
            bench_server.wait_ready(server)
        yield [ours, *started]
    finally:
        for server in started:
            bench_server.stop_server(server)
        if ours is not None:
            ours.stop()
            problems = [
                line for line in ours.log().splitlines() if "WARNING" in line or "ERROR" in line
            ]
            if problems:
                print("wsspec server log:\n" + "\n".join(problems[:20]), file=sys.stderr)


# --- the client ---------------------------------------------------------------------------


def subscribe_frame(i: int) -> bytes:
    return wire.client_frame(
        json.dumps(
            {"id": f"s{i}", "type": "subscription", "operation": "subscribe", "entity": "users"}
        )
    )


def create_frame(i: int) -> bytes:
    return wire.client_frame(
        json.dumps(
            {
                "id": f"c{i}",
                "type": "request",
                "operation": "create",
                "entity": "users",
                "data": {"name": f"fan{i}", "status": "active"},
            }
        )
    )


class Audience:
    """C connections of S subscriptions each, plus a writer connection, on one server."""

    def __init__(self, url: str, connections: int, per_connection: int) -> None:
        self.per_connection = per_connection
        self.subscribers = many.open_connections(url, connections)
        self.writer = many.open_connections(url, 1)[0]
        loop = many.Loop(self.subscribers)
        try:
            frames = b"".join(subscribe_frame(i) for i in range(per_connection))
            for conn in self.subscribers:
                loop.send(conn, frames)
            answered = 0
            deadline = time.monotonic() + 120
            while answered < connections * per_connection:
                for _conn, payloads in loop.poll(1.0):
                    for payload in payloads:
                        if b'"success":true' not in payload:
                            raise RuntimeError(f"subscribe failed: {payload[:200]!r}")
                        answered += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{answered} subscriptions answered in 120 s")
        finally:
            loop.close()

    @property
    def subscriptions(self) -> int:
        return len(self.subscribers) * self.per_connection

    def close(self) -> None:
        many.close_connections([*self.subscribers, self.writer])

    def run(self, frames: list[bytes], window: int, seconds: float) -> tuple[int, int, float]:
        """Send creates for ``seconds`` keeping at most ``window`` changes not yet delivered
        to every subscriber; wait for every notification.  Returns (creates, notifications,
        seconds from the first create sent to the last notification received)."""
        total = self.subscriptions
        before = {conn: conn.received for conn in self.subscribers}
        writer = self.writer
        loop = many.Loop([*self.subscribers, writer])
        sent = delivered = answered = 0
        last = started = time.perf_counter()
        deadline = started + seconds
        sending = True
        try:
            while True:
                if sending:
                    complete = delivered // total
                    while sent - complete < window:
                        loop.send(writer, frames[sent % len(frames)])
                        sent += 1
                for conn, payloads in loop.poll(1.0):
                    if conn is writer:
                        for payload in payloads:
                            if b'"success":true' not in payload:
                                raise RuntimeError(f"create failed: {payload[:200]!r}")
                        answered += len(payloads)
                    elif payloads:
                        delivered += len(payloads)
                        last = time.perf_counter()
                now = time.perf_counter()
                if sending and now >= deadline:
                    sending = False
                if not sending and delivered >= sent * total and answered >= sent:
                    break
                if now > deadline + 60:
                    raise TimeoutError(
                        f"{sent * total - delivered} notifications missing 60 s after the end"
                    )
        finally:
            loop.close()
        for conn in self.subscribers:
            got = conn.received - before[conn]
            if got != sent * self.per_connection:
                raise RuntimeError(
                    f"a connection received {got} notifications, not {sent * self.per_connection}"
                )
        return sent, delivered, last - started


def measure(
    started: list[Any],
    connections: int,
    per_connection: int,
    seconds: float,
    rounds: int,
    log: Any = print,
) -> dict[str, Any]:
    window = writer_window(connections, per_connection)
    audiences = {}
    try:
        for server in started:
            audiences[server.role] = Audience(server.url, connections, per_connection)
        frames = [create_frame(i) for i in range(1000)]
        for server in started:  # warm up
            audiences[server.role].run(frames, window, min(0.5, seconds))
        best: dict[str, dict[str, Any]] = {}
        for _ in range(rounds):
            for server in started:
                cpu_before = bench_server.cpu_seconds(server.pid)[0]
                creates, delivered, elapsed = audiences[server.role].run(frames, window, seconds)
                cpu = bench_server.cpu_seconds(server.pid)[0] - cpu_before
                rate = delivered / elapsed
                previous = best.get(server.role)
                cpu_us = cpu / delivered * 1e6
                if previous is None or rate > previous["per_second"]:
                    best[server.role] = {
                        "per_second": rate,
                        "creates": creates,
                        "notifications": delivered,
                        "cpu_us": min(cpu_us, previous["cpu_us"]) if previous else cpu_us,
                    }
                else:
                    previous["cpu_us"] = min(previous["cpu_us"], cpu_us)
                log(
                    f"{connections}x{per_connection} {server.role:<7} {creates:>6,} creates, "
                    f"{delivered:>9,} notifications in {elapsed:5.2f} s: {rate:>9,.0f}/s, "
                    f"server CPU {cpu_us:5.1f} us/notification"
                )
    finally:
        for audience in audiences.values():
            audience.close()
    return {
        "connections": connections,
        "per_connection": per_connection,
        "subscribers": connections * per_connection,
        "window": window,
        "servers": best,
    }


def run(
    layouts: tuple[tuple[int, int], ...] = LAYOUTS,
    seconds: float = 3.0,
    rounds: int = 2,
    floors: tuple[str, ...] = FLOORS,
    log: Any = print,
) -> dict[str, Any]:
    most = max(c for c, _ in layouts)
    bench_server.raise_fd_limit((most + 1) * (1 + len(floors)) + 256)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'fanout.db'}"
        bench_server.seed(db_url, 10)
        with servers(db_url, floors, Path(tmp) / "wsspec.log") as started:
            log(", ".join(f"{s.role} pid {s.pid} at {s.url}" for s in started))
            for connections, per_connection in layouts:
                results.append(measure(started, connections, per_connection, seconds, rounds, log))
    return {"seconds": seconds, "rounds": rounds, "floors": list(floors), "layouts": results}


def report(figures: dict[str, Any]) -> str:
    floors = figures["floors"]
    head = f"{'subscribers':>11} {'layout':>9} {'wsspec':>11}"
    for floor in floors:
        head += f" {floor:>11} {'ratio':>6}"
    head += f"   {'CPU us/notification: wsspec':>27}" + "".join(f" {f:>7}" for f in floors)
    lines = ["notifications delivered per second", head]
    for layout in figures["layouts"]:
        found = layout["servers"]
        ours = found["wsspec"]["per_second"]
        shape = f"{layout['connections']}x{layout['per_connection']}"
        line = f"{layout['subscribers']:>11,} {shape:>9} {ours:>9,.0f}/s"
        for floor in floors:
            line += (
                f" {found[floor]['per_second']:>9,.0f}/s {ours / found[floor]['per_second']:>5.2f}x"
            )
        line += f"   {found['wsspec']['cpu_us']:>27.1f}" + "".join(
            f" {found[floor]['cpu_us']:>7.1f}" for floor in floors
        )
        lines.append(line)
    return "\n".join(lines)


def parse_layouts(text: str) -> tuple[tuple[int, int], ...]:
    layouts = []
    for part in text.split(","):
        connections, _, per_connection = part.strip().partition("x")
        layouts.append((int(connections), int(per_connection)))
    return tuple(layouts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layouts",
        default=",".join(f"{c}x{s}" for c, s in LAYOUTS),
        help="CONNECTIONSxSUBSCRIPTIONS, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server, best kept")
    parser.add_argument("--floors", default=",".join(FLOORS))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, bench_server._interrupted)
    signal.signal(signal.SIGINT, bench_server._interrupted)
    began = time.perf_counter()
    figures = run(
        parse_layouts(args.layouts),
        args.seconds,
        args.rounds,
        tuple(f.strip() for f in args.floors.split(",")),
    )
    print()
    print(report(figures))
    took = time.perf_counter() - began
    print(f"\n(best of {args.rounds} runs of {args.seconds:g} s; took {took:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-broadcast"]:
        serve_broadcast(sys.argv[2])
    else:
        try:
            main()
        except KeyboardInterrupt as interrupt:
            sys.exit(f"interrupted ({interrupt}); servers stopped")
