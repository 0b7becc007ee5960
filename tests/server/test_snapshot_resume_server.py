"""Snapshot and resume end to end (issue 9 item 6; PROTOCOL.md "Change feed"): real
``wsspec serve --change-feed`` processes on one SQLite file or one PostgreSQL database, a
third program writing plain SQL, a client that leaves one server and resumes on the other.
Processes are stopped by PID; every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest
from test_change_feed_server import ACTIVE, Client, install, notified, postgres_schema, servers
from wsspec.storage.peewee import changelog

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
