"""Pacing the change feed (docs/core.md): a burst of log entries (a bulk ``UPDATE`` by
plain SQL) reaches a client that reads slowly at its own pace instead of closing it; a
client that does not read at all holds the feed back for ``feed_stall_timeout`` at most,
and is then closed while everyone else gets everything."""

from __future__ import annotations

from engine_driver import Driver
from test_change_feed import REGISTRY, entry

import wsspec_core as ws

EPOCH = "E1"
CREATE = ws.Operation.CREATE


def make(outbound_queue: int = 200) -> Driver:
    engine = ws.Engine(
        REGISTRY,
        limits=ws.Limits(keepalive_interval=None, outbound_queue=outbound_queue),
        change_feed=True,
    )
    d = Driver(engine)
    d.feed(ws.ChangesLogged(epoch=EPOCH, entries=(), through=0, now=d.now))
    for conn in ("reader", "slow"):
        d.connect(conn)
        d.request(
            conn, {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
        )
    return d


def burst(d: Driver, count: int, start: int = 1) -> None:
    entries = tuple(
        entry(seq, CREATE, new={"id": seq, "name": "x", "status": "a", "age": 1})
        for seq in range(start, start + count)
    )
    d.feed(ws.ChangesLogged(epoch=EPOCH, entries=entries, now=d.now))


def seqs(d: Driver, conn: str) -> list[int]:
    return [m["seq"] for m in d.take(conn)]


def written(d: Driver, conn: str, count: int) -> None:
    d.feed(ws.FramesWritten(connection_id=conn, count=count, now=d.now))


def test_a_burst_reaches_a_slow_reader_at_its_pace_and_nothing_is_closed() -> None:
    d = make(outbound_queue=200)
    d.not_reading.add("slow")  # its frames are written only when the test says so
    burst(d, 1000)
    # Routing stopped when "slow" was half the queue behind; nobody was closed.
    got = seqs(d, "slow")
    assert got == list(range(1, 101))
    assert d.engine.feed_backlog == 900 and d.engine.position == 100
    assert not d.closed
    received = list(got)
    while len(received) < 1000:
        written(d, "slow", 60)  # the client reads a little...
        received += seqs(d, "slow")  # ...and the feed goes on
        assert not d.closed
    assert received == list(range(1, 1001))
    assert seqs(d, "reader") == list(range(1, 1001))
    assert d.engine.feed_backlog == 0 and d.engine.position == 1000


def test_a_client_that_never_reads_holds_the_feed_back_only_so_long() -> None:
    d = make(outbound_queue=200)
    d.not_reading.add("slow")
    burst(d, 500)
    assert d.engine.position == 100
    deadline = d.engine.next_deadline()
    assert deadline is not None and deadline == d.now + 5.0  # Limits.feed_stall_timeout
    d.feed(ws.TimePassed(now=d.now + 4.9))
    assert "slow" not in d.closed and d.engine.position == 100
    d.feed(ws.TimePassed(now=d.now + 5.0))
    assert d.closed["slow"] == (1008, "client is not keeping up with the change feed")
    assert d.engine.position == 500 and d.engine.feed_backlog == 0
    assert seqs(d, "reader") == list(range(1, 501))
    assert d.engine.next_deadline() is None


def test_the_pong_position_counts_only_what_was_routed() -> None:
    d = make(outbound_queue=200)
    d.not_reading.add("slow")
    burst(d, 300, start=1)
    pong = d.request("reader", {"type": "ping", "id": "p"})
    assert pong["data"] == {"epoch": EPOCH, "seq": 100}


def test_through_moves_the_position_once_the_entries_before_it_are_routed() -> None:
    d = make(outbound_queue=200)
    d.not_reading.add("slow")
    burst(d, 150)
    d.feed(ws.ChangesLogged(epoch=EPOCH, entries=(), through=400, now=d.now))
    assert d.engine.position == 100
    written(d, "slow", 100)
    assert d.engine.position == 400


def test_change_committed_is_ignored_with_the_feed() -> None:
    # Notified beside the log it would carry no seq, and be notified twice.
    d = make()
    d.feed(
        ws.ChangeCommitted(
            schema="public",
            entity="users",
            operation=CREATE,
            row={"id": 1, "name": "x", "status": "a", "age": 1},
            now=d.now,
        )
    )
    assert d.take("reader") == [] and d.take("slow") == []
    assert any("ChangeCommitted ignored" in log.message for log in d.logged)
