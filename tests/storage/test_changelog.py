"""The change log (wsspec.storage.peewee.changelog) on a real SQLite file and on the real
PostgreSQL server: what the triggers record, epochs, install/uninstall, trim.

Every change here is made by a *separate* connection with plain SQL (as an admin console
or a batch job would), except where the storage's own writes are checked.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from wsspec.storage.peewee import PeeweeStorage, changelog

from wsspec_core import NO_FILTERS, Create, Delete, Update

from .conftest import Schema, make_models, postgres_database, postgres_dsn


class LogDb:
    """A database with the test models' tables, a log on them, and a way to run plain SQL
    on another connection (``outside``)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.schema_name: str | None = None
        if kind == "sqlite":
            self.path = str(tmp_path / "log.db")
            self.db: peewee.Database = peewee.SqliteDatabase(self.path)
            self.param = "?"
        else:
            self.dsn = postgres_dsn()
            admin = postgres_database(self.dsn)
            self.schema = Schema(admin)
            admin.close()
            self.schema_name = self.schema.name
            self.db = peewee.PostgresqlDatabase(
                self.dsn, connect_timeout=5, options=f"-c search_path={self.schema_name}"
            )
            self.param = "%s"
        self.models = make_models(self.db, None)
        self.db.create_tables(list(self.models.values()))
        self.epoch = changelog.install(self.db, self.models.values())

    @contextlib.contextmanager
    def outside(self) -> Iterator[Any]:
        """A DB-API connection of another program, in autocommit; ``BEGIN`` by hand."""
        if self.kind == "sqlite":
            conn: Any = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        else:
            import psycopg

            conn = psycopg.connect(
                self.dsn, autocommit=True, options=f"-c search_path={self.schema_name}"
            )
        try:
            yield conn
        finally:
            conn.close()

    def sql(self, conn: Any, statement: str, *params: Any) -> None:
        conn.execute(statement.replace("?", self.param), params)

    def changes(self, after: int = 0, decode: bool = True) -> list[changelog.LogEntry]:
        models = self.models.values() if decode else None
        return changelog.read_changes(self.db, after, 10_000, models=models)

    def object_names(self) -> set[str]:
        """Every database object whose name starts with ``wsspec_`` (in the test schema)."""
        if self.kind == "sqlite":
            rows = self.db.execute_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'wsspec\\_%' ESCAPE '\\'"
            ).fetchall()
        else:
            rows = self.db.execute_sql(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace"
                " AND relname LIKE 'wsspec\\_%%'"
                " UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = %s::regnamespace"
                " AND proname LIKE 'wsspec\\_%%'"
                " UNION ALL SELECT tgname FROM pg_trigger WHERE tgname LIKE 'wsspec\\_%%'"
                " AND tgrelid IN (SELECT oid FROM pg_class"
                " WHERE relnamespace = %s::regnamespace)",
                (f'"{self.schema_name}"',) * 3,
            ).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self.db.close()
        if self.kind != "sqlite":
            self.schema.drop()
            self.schema.db.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogDb]:
    made = LogDb(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_plain_sql_from_another_connection_is_captured(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(
            conn,
            "INSERT INTO tbl_users (name, status, rank, active) VALUES (?, 's', ?, ?)",
            "Ann",
            3,
            True,
        )
        log.sql(conn, "UPDATE tbl_users SET name = ?, rank = rank + 1", "Bob")
        log.sql(conn, "DELETE FROM tbl_users")
    create, update, delete = log.changes()
    assert [c.operation for c in (create, update, delete)] == ["create", "update", "delete"]
    assert {c.table for c in (create, update, delete)} == {"tbl_users"}
    assert create.old is None and create.new is not None
    assert create.new["name"] == "Ann" and create.new["rank"] == 3
    assert create.new["active"] is True  # decoded: SQLite stores 1
    assert update.old == create.new
    assert update.new == {**create.new, "name": "Bob", "rank": 4}
    assert delete.old == update.new and delete.new is None
    assert create.seq < update.seq < delete.seq
    now = datetime.datetime.now(datetime.UTC)
    assert all(abs(c.changed_at - now) < datetime.timedelta(minutes=1) for c in log.changes())


def test_every_row_of_a_statement_and_every_table_share_one_seq_order(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(
            conn,
            "INSERT INTO tbl_users (name, status, rank)"
            " VALUES ('a', 's', 1), ('b', 's', 2), ('c', 's', 3)",
        )
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('x')")
        log.sql(conn, "UPDATE tbl_users SET rank = 0")
        log.sql(conn, "DELETE FROM tbl_tags")
    found = log.changes()
    assert [(c.table, c.operation) for c in found] == [
        *[("tbl_users", "create")] * 3,
        ("tbl_tags", "create"),
        *[("tbl_users", "update")] * 3,
        ("tbl_tags", "delete"),
    ]
    seqs = [c.seq for c in found]
    assert seqs == sorted(set(seqs))
    assert changelog.last_seq(log.db) == seqs[-1]
    assert changelog.oldest_seq(log.db) == seqs[0]
    assert [c.seq for c in log.changes(after=seqs[3])] == seqs[4:]
    assert [c.seq for c in changelog.read_changes(log.db, seqs[1], 2)] == seqs[2:4]


def test_a_rolled_back_transaction_leaves_nothing(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(conn, "BEGIN")
        log.sql(conn, "INSERT INTO tbl_users (name, status, rank) VALUES ('gone', 's', 1)")
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('gone')")
        log.sql(conn, "ROLLBACK")
        assert log.changes() == []
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('kept')")
    (kept,) = log.changes()
    assert kept.new == {"slug": "kept", "label": None}


def test_a_failed_statement_leaves_nothing(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('one')")
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('two'), ('one')")
    assert [c.new for c in log.changes()] == [{"slug": "one", "label": None}]


def test_the_storage_own_writes_are_logged_as_it_returns_them(log: LogDb) -> None:
    storage = PeeweeStorage(log.db)
    for name, model in log.models.items():
        storage.register(name, model)
    users = {e.name: e for e in storage.entities()}["users"]
    (created,) = storage.execute(
        Create(
            entity=users,
            rows=[
                {
                    "name": "Ann",
                    "rank": 2,
                    "score": 2.5,
                    "active": False,
                    "born": datetime.date(1990, 5, 17),
                    "seen": datetime.datetime(2024, 3, 1, 12, 30, 15, 250000),
                }
            ],
        )
    )
    updated = storage.execute(
        Update(entity=users, key=created["id"], changes={"age": 30}, filters=NO_FILTERS)
    )
    deleted = storage.execute(Delete(entity=users, key=created["id"], filters=NO_FILTERS))
    c, u, d = log.changes()
    assert c.new == created
    assert (u.old, u.new) == (created, updated)
    assert d.old == deleted
    storage.close()


def test_undecoded_rows_are_the_database_json(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(
            conn, "INSERT INTO tbl_users (name, status, rank, active) VALUES ('a', 's', 1, ?)", True
        )
    (entry,) = log.changes(decode=False)
    assert entry.new is not None
    assert entry.new["active"] == 1  # SQLite 1, PostgreSQL true (True == 1)


def test_install_twice_is_a_no_op_and_upgrade_keeps_the_log(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('x')")
    before = changelog.status(log.db)
    names = log.object_names()
    assert changelog.install(log.db, log.models.values()) == log.epoch
    assert changelog.upgrade(log.db, log.models.values()) == log.epoch
    assert changelog.status(log.db) == before
    assert log.object_names() == names
    assert before.installed and before.epoch == log.epoch and before.version == changelog.VERSION
    assert before.entries == 1 and before.last_seq == before.oldest_seq
    assert len(before.tables) == 4
    with log.outside() as conn:  # still exactly one entry per change
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('y')")
    assert len(log.changes()) == 2


def test_install_follows_the_models_given(log: LogDb) -> None:
    tags = log.models["tags"]
    changelog.install(log.db, [tags])
    assert changelog.status(log.db).tables == ("tbl_tags",)
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_users (name, status, rank) VALUES ('unlogged', 's', 1)")
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('logged')")
    assert [c.table for c in log.changes()] == ["tbl_tags"]
    changelog.install(log.db, log.models.values())
    assert len(changelog.status(log.db).tables) == 4


def test_uninstall_removes_every_wsspec_object_and_a_reset_makes_a_new_epoch(log: LogDb) -> None:
    assert {"wsspec_changelog", "wsspec_meta"} <= log.object_names()
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('x')")
    changelog.uninstall(log.db)
    assert log.object_names() == set()
    changelog.uninstall(log.db)  # idempotent
    assert changelog.status(log.db) == changelog.ChangelogStatus(installed=False)
    with pytest.raises(changelog.ChangelogNotInstalled):
        changelog.epoch(log.db)
    with pytest.raises(changelog.ChangelogNotInstalled):
        changelog.read_changes(log.db)
    with log.outside() as conn:  # the tables work without the log
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('y')")
    fresh = changelog.install(log.db, log.models.values())
    assert fresh != log.epoch and changelog.epoch(log.db) == fresh
    assert log.changes() == [] and changelog.last_seq(log.db) == 0


def test_trim_keeps_the_newest_changes_and_says_how_far_it_went(log: LogDb) -> None:
    with log.outside() as conn:
        for i in range(25):
            log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES (?)", f"t{i}")
    seqs = [c.seq for c in log.changes()]
    assert changelog.trim(log.db, keep_last=None, older_than=3600) == 0
    assert changelog.trimmed_through(log.db) == 0
    assert changelog.trim(log.db, keep_last=10, older_than=None, batch=4) == 15
    assert [c.seq for c in log.changes()] == seqs[15:]
    assert changelog.trimmed_through(log.db) == seqs[14]
    assert changelog.oldest_seq(log.db) == seqs[15]
    assert changelog.trim(log.db, keep_last=10, older_than=None) == 0
    # By age: everything is older than 0 s, but the newest entry always stays.
    time.sleep(0.01)
    assert changelog.trim(log.db, keep_last=None, older_than=0) == 9
    assert [c.seq for c in log.changes()] == seqs[-1:]
    assert changelog.last_seq(log.db) == seqs[-1]
    assert changelog.trimmed_through(log.db) == seqs[-2]
    with pytest.raises(ValueError):
        changelog.trim(log.db, keep_last=0)


def test_trim_with_defaults_keeps_recent_changes(log: LogDb) -> None:
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('a'), ('b')")
    assert changelog.trim(log.db) == 0
    assert len(log.changes()) == 2


INSTALL_SCRIPT = """
import sys, peewee
sys.path.insert(0, {tests!r})
from storage.conftest import make_models
from wsspec.storage.peewee import changelog
kind, target, schema = sys.argv[1:4]
if kind == "sqlite":
    db = peewee.SqliteDatabase(target, timeout=30)
else:
    db = peewee.PostgresqlDatabase(target, options="-c search_path=" + schema)
models = make_models(db, None)
print(changelog.install(db, models.values()))
"""


def test_install_from_several_processes_at_once(log: LogDb, tmp_path: Path) -> None:
    changelog.uninstall(log.db)
    log.db.close()
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT.format(tests=str(Path(__file__).parent.parent)))
    target = log.path if log.kind == "sqlite" else log.dsn
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), log.kind, target, log.schema_name or ""],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    epochs = {out.strip() for out, _ in outputs}
    assert epochs == {changelog.epoch(log.db)}
    assert len(changelog.status(log.db).tables) == 4
    with log.outside() as conn:
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('once')")
    assert len(log.changes()) == 1


@pytest.mark.postgres
def test_a_committed_change_notifies_the_channel_once_without_payload() -> None:
    """PostgreSQL: the row trigger's ``pg_notify`` wakes a ``LISTEN`` at commit: one
    payload-free notification per transaction, none for a rolled-back one."""
    import psycopg

    log = LogDb("postgres", Path("."))
    try:
        with (
            psycopg.connect(log.dsn, autocommit=True) as listener,
            log.outside() as conn,
        ):
            listener.execute(f"LISTEN {changelog.NOTIFY_CHANNEL}")
            conn.execute("BEGIN")
            for name in ("a", "b", "c"):
                log.sql(conn, "INSERT INTO tbl_users (name, status) VALUES (?, 's')", name)
            conn.execute("UPDATE tbl_users SET name = 'x'")
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            conn.execute("DELETE FROM tbl_users")
            conn.execute("ROLLBACK")
            received = list(listener.notifies(timeout=0.5))
        assert [(n.channel, n.payload) for n in received] == [(changelog.NOTIFY_CHANNEL, "")]
    finally:
        log.close()
