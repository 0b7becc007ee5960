"""The runtime's reader writes replies itself when the writer is idle (write-through), and
handles the messages a transport already has at hand before writing their replies together;
the metrics note each request and count it at the next fold. Driven through a fake
transport, without sockets, so that which task wrote what, and in which batches, is seen."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest
from wsserver_support import TIMEOUT, demo_app, memory_app, wait_until
from wsspec.runtime import TransportClosed
from wsspec.runtime.metrics import (
    FOLD_AT,
    KEEP_TEXT,
    ServerMetrics,
    request_label,
    request_operation,
    response_label,
    response_outcome,
)

from wsspec_core import ErrorInfo, Pong, RequestInfo, Response, encode

INFO = RequestInfo(path="/ws", query="", headers=(), remote_address="127.0.0.1:1")


class FakeTransport:
    """A transport whose messages come from a trio channel the test feeds. ``mode``:
    ``"nowait"`` offers receive_nowait(), ``"buffered"`` offers buffered(), ``"both"`` both
    (as uvicorn's does), ``"plain"`` neither. Records every send (frames, and whether the
    writer task made it) and close."""

    def __init__(self, mode: str = "plain", buffer: int = 100) -> None:
        self.inbox, self._messages = trio.open_memory_channel[str](buffer)
        self.sends: list[tuple[list[str], bool]] = []
        self.closes: list[int] = []
        self.events: list[str] = []
        self.gate: trio.Event | None = None
        self.fail = False
        self._in_send = False
        if mode in ("nowait", "both"):
            self.receive_nowait = self._receive_nowait
        if mode in ("buffered", "both"):
            self.buffered = self._buffered

    async def accept(self) -> None:
        pass

    async def reject(self, status: int, reason: str) -> None:
        pass

    async def receive(self) -> str | bytes | None:
        try:
            return await self._messages.receive()
        except trio.EndOfChannel:
            return None

    def _receive_nowait(self) -> str | bytes | None:
        try:
            return self._messages.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None

    def _buffered(self) -> int:
        return self._messages.statistics().current_buffer_used

    async def send(self, frames: Sequence[str]) -> None:
        assert not self._in_send, "two tasks wrote at once"
        self._in_send = True
        try:
            by_writer = "_writer" in trio.lowlevel.current_task().name
            if self.fail:
                raise TransportClosed
            self.sends.append((list(frames), by_writer))
            self.events.append(f"send {len(frames)}")
            if self.gate is not None:
                gate, self.gate = self.gate, None
                await gate.wait()
            await trio.lowlevel.checkpoint()
        finally:
            self._in_send = False

    async def close(self, code: int, reason: str) -> None:
        self.closes.append(code)
        self.events.append(f"close {code}")

    async def ping(self) -> None:
        pass

    def closed_by_peer(self) -> str:
        return "code 1000"


def ping(n: int) -> str:
    return json.dumps({"type": "ping", "id": f"p{n}"})


def ids(frames: list[str]) -> list[str]:
    return [json.loads(frame)["id"] for frame in frames]


async def test_one_at_a_time_the_reader_writes_each_reply(tmp_path: Path) -> None:
    """The writer idles: the reader writes each pong itself, and reports it written (with a
    queue of 4 frames, reading would pause for good otherwise)."""
    app = memory_app(tmp_path, outbound_queue=4, max_in_flight=1, max_queued=1)
    transport = FakeTransport()
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: app.connection_count == 1)
            for n in range(50):
                await transport.inbox.send(ping(n))
                await wait_until(lambda n=n: len(transport.sends) == n + 1)
            assert [ids(frames) for frames, _ in transport.sends] == [[f"p{n}"] for n in range(50)]
            assert not any(by_writer for _, by_writer in transport.sends)
            assert runtime.outbound_depth() == (0, 0)
            await transport.inbox.aclose()
    assert app.connection_count == 0


@pytest.mark.parametrize("mode", ["nowait", "buffered"])
async def test_messages_at_hand_are_answered_with_one_send(tmp_path: Path, mode: str) -> None:
    app = memory_app(tmp_path)
    transport = FakeTransport(mode)
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: app.connection_count == 1)
            await trio.sleep(0.01)  # the writer waits on its empty queue by now
            for n in range(5):  # arrive together
                transport.inbox.send_nowait(ping(n))
            await wait_until(lambda: sum(len(frames) for frames, _ in transport.sends) == 5)
            assert [ids(frames) for frames, _ in transport.sends] == [[f"p{n}" for n in range(5)]]
            await transport.inbox.aclose()


async def test_without_read_ahead_each_reply_leaves_at_once(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    transport = FakeTransport("plain")
    for n in range(5):
        transport.inbox.send_nowait(ping(n))
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: sum(len(frames) for frames, _ in transport.sends) == 5)
            sent = [frame for frames, _ in transport.sends for frame in frames]
            assert ids(sent) == [f"p{n}" for n in range(5)]
            await transport.inbox.aclose()


async def test_frames_queued_during_a_write_through_follow_it(tmp_path: Path) -> None:
    """While the reader's write blocks, a broadcast queues a frame: the writer sends it
    after that write, never at the same time (FakeTransport.send asserts it)."""
    app = memory_app(tmp_path)
    transport = FakeTransport()
    transport.gate = gate = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: app.connection_count == 1)
            await transport.inbox.send(ping(1))
            await wait_until(lambda: len(transport.sends) == 1)
            assert app.broadcast({"type": "news", "id": "b1"}) == 1
            await trio.sleep(0.05)
            assert len(transport.sends) == 1  # still blocked: nobody else writes
            gate.set()
            await wait_until(lambda: len(transport.sends) == 2)
            (first, first_by_writer), (second, second_by_writer) = transport.sends
            assert (ids(first), first_by_writer) == (["p1"], False)
            assert (ids(second), second_by_writer) == (["b1"], True)
            await transport.inbox.aclose()


async def test_a_close_queued_with_held_replies_is_the_writers(tmp_path: Path) -> None:
    """A pong and then a message too big, at hand together: the pong is written, then the
    close frame (1009), in that order."""
    app = memory_app(tmp_path, max_message_bytes=1000)
    transport = FakeTransport("nowait")
    transport.inbox.send_nowait(ping(1))
    transport.inbox.send_nowait('{"type":"ping","id":"' + "x" * 2000 + '"}')
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: transport.closes == [1009])
            assert transport.events == ["send 1", "close 1009"]
            assert ids(transport.sends[0][0]) == ["p1"]
            await transport.inbox.aclose()
    assert app.connection_count == 0


async def test_a_transport_closed_during_a_write_through_ends_the_connection(
    tmp_path: Path,
) -> None:
    app = memory_app(tmp_path)
    transport = FakeTransport()
    transport.fail = True
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime:
            await transport.inbox.send(ping(1))
            await runtime.run_connection(transport, INFO)  # returns: the connection ended
            assert app.connection_count == 0


def test_fold_counts_what_the_per_request_functions_count() -> None:
    """ServerMetrics.fold() inlines request_operation(), response_outcome() and
    answered(): the same counts, on requests and responses of every kind."""
    stamp = "2025-01-01T00:00:00.000Z"
    requests: list[str | bytes] = [
        '{"id":"1","type":"request","operation":"read"}',
        b'{"operation":"delete","type":"request","id":1}',
        '{"type":"subscription","operation":"subscribe"}',
        '{"type":"ping","id":"p"}',
        '{"type":"request","data":{"operation":"delete"},"operation":"create"}',
        "not json",
        "[1,2]",
        '{"operation":"drop"}',
        '{"operation":["read"]}',
        "{}",
        '{"type":"request","operation":"update","data":"' + "x" * KEEP_TEXT + '"}',
    ]
    responses = [
        encode(Response(id="r1", success=True, timestamp=stamp, data={"id": 1})),
        encode(
            Response(
                id='"type":"response","success":true',
                success=False,
                timestamp=stamp,
                error=ErrorInfo(code="not_found", message="no"),
            )
        ),
        encode(
            Response(
                id="r3",
                success=False,
                timestamp=stamp,
                error=ErrorInfo(code="validation_error", message="x" * KEEP_TEXT),
            )
        ),
        encode(Response(id="r4", success=True, timestamp=stamp, data={"v": "y" * KEEP_TEXT})),
        encode(Pong(id="p", timestamp=stamp)),
    ]
    folded, reference = ServerMetrics(), ServerMetrics()
    for i, request in enumerate(requests * 3):
        response = responses[i % len(responses)]
        seconds = i / 1000
        folded.pending.append((request_label(request), response_label(response), seconds))
        outcome = response_outcome(response)
        reference.answered(request_operation(request), outcome, seconds)
    # A Send's hint (Send.answers: operation, outcome) in place of both texts.
    for i in range(5):
        folded.pending.append((("read", "success"), ("read", "success"), i / 100))
        reference.answered("read", "success", i / 100)
    folded.storage_pending.append((dict, 0.25, True))
    reference.stored("other", 0.25, True)
    folded.fold()
    assert folded.pending == [] and folded.storage_pending == []

    def counts(metrics: ServerMetrics) -> dict[str, Any]:
        return {
            operation: (stats.outcomes, stats.latency.counts, round(stats.latency.total, 9))
            for operation, stats in metrics.requests.items()
        }

    assert counts(folded) == counts(reference)
    assert folded.storage_failures == reference.storage_failures == {"other": 1}
    assert folded.storage_latency["other"].counts == reference.storage_latency["other"].counts


async def test_a_scrape_sees_every_request_answered(tmp_path: Path) -> None:
    """Fewer than FOLD_AT requests are noted, not counted yet; a scrape folds them first."""
    app = memory_app(tmp_path)
    transport = FakeTransport()
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            for n in range(3):
                await transport.inbox.send(ping(n))
            await wait_until(lambda: len(transport.sends) == 3)
            assert 0 < len(app.metrics.pending) < FOLD_AT
            scraped = generate_latest(app.metrics.registry).decode()
            assert 'wsspec_requests_total{operation="ping",outcome="success"} 3.0' in scraped
            assert app.metrics.pending == []
            await transport.inbox.aclose()


@pytest.mark.parametrize("mode", ["nowait", "both"])
async def test_reads_at_hand_share_a_read_hold_released_before_any_wait(
    tmp_path: Path, mode: str
) -> None:
    """SQLite reads by key run inline for messages already at hand share one read
    transaction (PeeweeStorage.hold_reads) from the second message of a batch; the reader
    releases it before it awaits anything, so no other task runs inside it and the next
    batch sees what was committed meanwhile. One message at a time never holds, nor,
    where the transport counts what it holds (buffered()), a batch of two."""
    import sqlite3

    app = demo_app(tmp_path)
    storage = app.storage
    db_file = str(tmp_path / "test.db")
    with sqlite3.connect(db_file) as db:
        db.executemany("INSERT INTO users (id, name) VALUES (?, ?)", [(i, "a") for i in range(9)])
    holding = [False]
    calls: list[str] = []
    real_hold, real_release = storage.hold_reads, storage.release_reads

    def hold() -> None:
        holding[0] = True
        calls.append("hold")
        real_hold()

    def release() -> None:
        holding[0] = False
        calls.append("release")
        real_release()

    storage.hold_reads = hold  # type: ignore[method-assign]
    storage.release_reads = release  # type: ignore[method-assign]

    class Checked(FakeTransport):
        async def receive(self) -> str | bytes | None:
            assert not holding[0], "awaited a message while holding reads"
            return await super().receive()

        async def send(self, frames: Sequence[str]) -> None:
            assert not holding[0], "wrote while holding reads"
            await super().send(frames)

    def read(n: int, key: int) -> str:
        return json.dumps(
            {"id": n, "type": "request", "operation": "read", "entity": "users", "record_id": key}
        )

    def names(start: int) -> list[str]:
        replies = [json.loads(f) for frames, _ in transport.sends for f in frames][start:]
        return [reply["data"]["name"] for reply in replies]

    transport = Checked(mode)
    with trio.fail_after(TIMEOUT):
        async with app.running() as runtime, trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_connection, transport, INFO)
            await wait_until(lambda: app.connection_count == 1)
            for n in range(3):  # one at a time: no hold
                await transport.inbox.send(read(n, n))
                await wait_until(lambda n=n: len(names(0)) == n + 1)
            assert calls == []
            for burst in range(3):
                sent = len(names(0))
                for n in range(9):  # arrive together
                    transport.inbox.send_nowait(read(100 * burst + n, n))
                await wait_until(lambda sent=sent: len(names(0)) == sent + 9)
                # Committed by another connection between bursts: the next burst sees it.
                assert names(sent) == [chr(ord("a") + burst)] * 9
                with sqlite3.connect(db_file) as db:
                    db.execute("UPDATE users SET name = ?", (chr(ord("a") + burst + 1),))
            assert calls == ["hold", "release"] * 3
            sent = len(names(0))
            for n in range(2):
                transport.inbox.send_nowait(read(900 + n, n))
            await wait_until(lambda: len(names(0)) == sent + 2)
            assert names(sent) == ["d", "d"]
            assert calls == ["hold", "release"] * (3 if mode == "both" else 4)
            await transport.inbox.aclose()
