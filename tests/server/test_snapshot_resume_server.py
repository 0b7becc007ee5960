"""Snapshot and resume end to end (issue 9 item 6; PROTOCOL.md "Change feed"): real
``wsspec serve --change-feed`` processes on one SQLite file or one PostgreSQL database, a
third program writing plain SQL, a client that leaves one server and resumes on the other.
Processes are stopped by PID; every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest
import trio
from test_change_feed_server import (
    ACTIVE,
    WSSPEC,
    Client,
    install,
    installed_app,
    notified,
    outside_insert,
    postgres_schema,
    servers,
)
from wsserver_support import client, memory_app, serving
from wsspec import App
from wsspec.runtime import ChangeFeedUnavailable, Retention, tailer_for
from wsspec.storage.peewee import PeeweeStorage, changelog

from wsspec_core import Create, EntityRegistry, MemoryStorage

PlainSql = Callable[[str], None]


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[tuple[str, PlainSql, peewee.Database]]:
    """(the servers' --db URL, a plain-SQL runner of a third program, a Peewee handle)."""
    if kind == "sqlite":
        path = tmp_path / "app.db"

        def sqlite_sql(statement: str) -> None:
            conn = sqlite3.connect(path, timeout=10)
            try:
                conn.execute(statement)
                conn.commit()
            finally:
                conn.close()

        db = peewee.SqliteDatabase(str(path))
        yield "sqlite:///app.db", sqlite_sql, db
        db.close()
        return
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN", "")
    with postgres_schema() as (url, schema):

        def postgres_sql(statement: str) -> None:
            with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as c:
                c.execute(statement)

        db = peewee.PostgresqlDatabase(dsn, options=f"-c search_path={schema}")
        yield url, postgres_sql, db
        db.close()


KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def subscribe(client: Client, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.request("subscribe", options=ACTIVE, **fields)["data"]
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_leave_one_server_resume_on_the_other(tmp_path: Path, kind: str) -> None:
    with database(kind, tmp_path) as (db, sql, _):
        epoch = install(tmp_path, db)
        with servers(tmp_path, db) as (a, b):
            writer = Client(a.url)
            try:
                writer.request("create", data={"name": "Ann", "status": "active"})
                sql("INSERT INTO users (name, status) VALUES ('Zed', 'away')")

                # A snapshot on A: the rows, and the seq they are consistent with.
                first = Client(a.url)
                snap = subscribe(first, snapshot=True)
                assert [r["name"] for r in snap["rows"]] == ["Ann"]
                assert (snap["epoch"], snap["seq"]) == (epoch, 2)
                sql("INSERT INTO users (name, status) VALUES ('Bea', 'active')")
                assert notified(first.recv(), "added", 3)["name"] == "Bea"
                first.close()  # the client drops, at position 3

                # Missed meanwhile: through A, by plain SQL, in and out of its filter.
                writer.request("create", data={"name": "Cid", "status": "active"})  # 4
                sql("UPDATE users SET status = 'away' WHERE name = 'Ann'")  # 5: removed
                sql("UPDATE users SET status = 'active' WHERE name = 'Zed'")  # 6: added
                sql("INSERT INTO users (name, status) VALUES ('Out', 'away')")  # 7: nothing

                # It comes back on B, which it never used, with its last position.
                again = Client(b.url)
                resumed = subscribe(again, resume={"epoch": epoch, "seq": 3}, snapshot=True)
                assert resumed["recovered"] is True and resumed["seq"] == 3
                assert "rows" not in resumed
                assert notified(again.recv(), "added", 4)["name"] == "Cid"
                removed = notified(again.recv(), "removed", 5)
                assert (removed["name"], removed["status"]) == ("Ann", "active")  # as it matched
                assert notified(again.recv(), "added", 6)["name"] == "Zed"
                # Then live, without a gap or a repeat.
                sql("DELETE FROM users WHERE name = 'Cid'")  # 8
                assert notified(again.recv(), "removed", 8)["name"] == "Cid"
                again.nothing_more(0.3)

                # A pong tells the position every change has been sent up to.
                again.ws.send(json.dumps({"type": "ping", "id": "p"}))
                pong = again.recv()
                assert pong["type"] == "pong" and pong["data"] == {"epoch": epoch, "seq": 8}
                again.close()
            finally:
                writer.close()


@pytest.mark.parametrize("kind", KINDS)
def test_positions_the_log_cannot_prove_are_not_recovered(tmp_path: Path, kind: str) -> None:
    with database(kind, tmp_path) as (db, sql, peewee_db):
        epoch = install(tmp_path, db)
        for name in ("a", "b", "c"):
            sql(f"INSERT INTO users (name, status) VALUES ('{name}', 'active')")
        changelog.trim(peewee_db, keep_last=1, older_than=None)  # removes seq 1 and 2
        with servers(tmp_path, db, count=1) as (server,):
            client = Client(server.url)
            try:
                for position, why in (
                    ({"epoch": "another", "seq": 3}, "other epoch"),
                    ({"epoch": epoch, "seq": 1}, "trimmed"),
                    ({"epoch": epoch, "seq": 99}, "beyond the end"),
                ):
                    reply = subscribe(client, resume=position, snapshot=True)
                    assert reply["recovered"] is False, why
                    assert reply["seq"] == 3, why
                    assert sorted(r["name"] for r in reply["rows"]) == ["a", "b", "c"], why
                # Without a snapshot: no rows; the client must read by itself.
                reply = subscribe(client, resume={"epoch": "another", "seq": 0})
                assert reply["recovered"] is False and "rows" not in reply
                # Still resumable from the retention's edge.
                assert subscribe(client, resume={"epoch": epoch, "seq": 2})["recovered"] is True
                assert notified(client.recv(), "added", 3)["name"] == "c"
                client.nothing_more(0.3)
            finally:
                client.close()


# --- in process: the in-memory change log and the retention ----------------------------------


def memory_feed_app(tmp_path: Path, **options: Any) -> App:
    app = memory_app(tmp_path)
    registry = app.registry
    app.storage = MemoryStorage(registry, change_log_epoch="mem-epoch")
    app.change_feed = True
    for name, value in options.items():
        setattr(app, name, value)
    return app


async def test_memory_storage_change_log_is_a_change_feed(tmp_path: Path) -> None:
    """The in-memory backend's log behaves as the database's: seq on notifications,
    snapshot, resume with replay, writes made around the server noticed."""
    app = memory_feed_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, MemoryStorage)
    users = app.registry.get("public.users")
    assert users is not None
    with trio.fail_after(20):
        async with serving(app) as url, client(url) as watcher, client(url) as writer:
            reply = await watcher.request("subscribe", "users", schema="public", snapshot=True)
            assert (reply["data"]["epoch"], reply["data"]["seq"], reply["data"]["rows"]) == (
                "mem-epoch",
                0,
                [],
            )
            created = await writer.request("create", "users", data={"name": "In"})
            note = await watcher.recv()
            assert (note["change"], note["seq"], note["data"]) == ("added", 1, created["data"])
            # A write around the server (in-process code using the storage directly).
            storage.execute(Create(entity=users, rows=({"name": "Around"},)))
            note = await watcher.recv()
            assert (note["change"], note["seq"], note["data"]["name"]) == ("added", 2, "Around")
        async with serving(app) as url, client(url) as again:
            await again.send(
                {"id": "x", "type": "subscription", "operation": "subscribe", "entity": "users"}
                | {"resume": {"epoch": "mem-epoch", "seq": 1}}
            )
            reply = await again.recv()
            assert reply["data"]["recovered"] is True and reply["data"]["seq"] == 1
            note = await again.recv()
            assert (note["seq"], note["data"]["name"]) == (2, "Around")


def test_memory_storage_without_a_log_cannot_feed() -> None:
    registry = EntityRegistry([])
    with pytest.raises(ChangeFeedUnavailable, match="change_log_epoch"):
        tailer_for(MemoryStorage(registry), lambda *batch: None)


async def test_the_retention_trims_the_log_in_the_background(tmp_path: Path) -> None:
    app = installed_app(tmp_path, change_feed=True)
    app.retention = Retention(keep_last=2, older_than=None, every=0.05)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    with trio.fail_after(20):
        async with serving(app) as url, client(url) as writer:
            for n in range(5):
                await writer.request("create", "users", data={"name": f"u{n}"})

            def trimmed() -> int:
                with storage.database.connection_context():
                    return changelog.trimmed_through(storage.database)

            while await trio.to_thread.run_sync(trimmed) < 3:
                await trio.sleep(0.05)
            epoch = (await writer.request("subscribe", "users", schema="public"))["data"]["epoch"]
            for seq, recovered in ((2, False), (3, True)):
                reply = await writer.request(
                    "subscribe", "users", schema="public", resume={"epoch": epoch, "seq": seq}
                )
                assert reply["data"]["recovered"] is recovered
    with storage.database.connection_context():
        status = changelog.status(storage.database)
    assert (status.entries, status.oldest_seq, status.last_seq) == (2, 4, 5)


def test_trimmed_through_never_goes_back(tmp_path: Path) -> None:
    """Two processes trimming at once must not lower it (PostgreSQL's trims do not
    serialise): a trim that chose a smaller bound leaves a larger one as it is."""
    app = installed_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    for name in "abc":
        outside_insert(tmp_path, name)
    with storage.database.connection_context():
        db = storage.database
        db.execute_sql(
            "UPDATE wsspec_meta SET value = '99' WHERE key = 'trimmed_through'"
            if db.execute_sql("SELECT 1 FROM wsspec_meta WHERE key = 'trimmed_through'").fetchone()
            else "INSERT INTO wsspec_meta (key, value) VALUES ('trimmed_through', '99')"
        )
        assert changelog.trim(db, keep_last=1, older_than=None) == 2
        assert changelog.trimmed_through(db) == 99


def test_the_demo_installs_the_log_and_serves_the_change_feed(tmp_path: Path) -> None:
    """``wsspec demo`` as a user runs it: plain SQL on its database reaches a subscriber,
    and a snapshot comes with its position, with nothing installed beforehand."""
    process = subprocess.Popen(
        [WSSPEC, "demo", "--port", "0", "--db", "sqlite:///demo.db"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        watcher = Client(url)
        try:
            snap = subscribe(watcher, snapshot=True)
            assert snap["rows"] == [] and snap["seq"] == 0 and snap["epoch"]
            conn = sqlite3.connect(tmp_path / "demo.db", timeout=10)
            conn.execute("INSERT INTO users (name, status) VALUES ('Sql', 'active')")
            conn.commit()
            conn.close()
            assert notified(watcher.recv(), "added", 1)["name"] == "Sql"
        finally:
            watcher.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert process.returncode == 0


async def test_a_bulk_change_reaches_every_subscriber_whole(tmp_path: Path) -> None:
    """3,000 rows inserted by one plain-SQL transaction: three times the outbound queue
    arrive in a burst; subscribers get every one, in order, and none is closed (the engine
    routes them at the pace the clients read)."""
    app = installed_app(tmp_path, change_feed=True)
    with trio.fail_after(60):
        async with serving(app) as url, client(url) as first, client(url) as second:
            for watcher in (first, second):
                await watcher.request("subscribe", "users", schema="public")

            def bulk_insert() -> None:
                conn = sqlite3.connect(tmp_path / "test.db", timeout=10)
                conn.executemany(
                    "INSERT INTO users (name, status) VALUES (?, 'active')",
                    [(f"u{n}",) for n in range(3000)],
                )
                conn.commit()
                conn.close()

            received: dict[int, list[int]] = {}

            async def read_all(watcher: Any) -> None:
                received[id(watcher)] = [(await watcher.recv())["seq"] for _ in range(3000)]

            async with trio.open_nursery() as nursery:
                for watcher in (first, second):
                    nursery.start_soon(read_all, watcher)
                await trio.to_thread.run_sync(bulk_insert)
            assert list(received.values()) == [list(range(1, 3001))] * 2
