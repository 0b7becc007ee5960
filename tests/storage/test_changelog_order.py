"""``seq`` is commit order: a reader that has seen ``seq`` N never later finds a committed
change below N (PROTOCOL.md "Change feed"; docs/changefeed.md "How seq is assigned").

On PostgreSQL: two transactions that write concurrently and try to commit in the opposite
order of their writes, checked against a control table numbered by a plain ``bigserial``
(where the poller does skip a change), and concurrent writers under a poller. On SQLite:
a Hypothesis test over random interleavings of several connections.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import peewee
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from wsspec.storage.peewee import changelog

from .conftest import Schema, make_models, postgres_database, postgres_dsn


@contextlib.contextmanager
def pg_log() -> Iterator[tuple[peewee.PostgresqlDatabase, str, str]]:
    """A schema with the test tables and the log installed: (database, dsn, schema)."""
    dsn = postgres_dsn()
    admin = postgres_database(dsn)
    schema = Schema(admin)
    assert schema.name is not None
    db = peewee.PostgresqlDatabase(dsn, options=f"-c search_path={schema.name}")
    models = make_models(db, None)
    db.create_tables(list(models.values()))
    changelog.install(db, models.values())
    try:
        yield db, dsn, schema.name
    finally:
        db.close()
        schema.drop()
        admin.close()


def connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}")


class Poller:
    """A reader that polls ``seq > last seen``, the way a tailer does."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.last = 0
        self.seen: list[int] = []

    def poll(self) -> list[int]:
        found = [e.seq for e in changelog.read_changes(self.db, self.last, 1000)]
        for seq in found:
            assert seq > self.last
            self.last = seq
        self.seen.extend(found)
        return found


def waiting_for_lock(db: peewee.Database, pid: int) -> bool:
    row = db.execute_sql(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.postgres
def test_control_a_bigserial_poller_skips_a_change_committed_out_of_order() -> None:
    """Without the log's scheme, the scenario below loses T1's row: the test can fail."""
    with pg_log() as (db, dsn, schema):
        db.execute_sql("CREATE TABLE control (id bigserial PRIMARY KEY, label text)")
        with connect(dsn, schema) as t1, connect(dsn, schema) as t2:
            t1.execute("BEGIN")
            t1.execute("INSERT INTO control (label) VALUES ('T1')")  # id 1
            t2.execute("BEGIN")
            t2.execute("INSERT INTO control (label) VALUES ('T2')")  # id 2
            t2.execute("COMMIT")
            seen = [r[0] for r in db.execute_sql("SELECT id FROM control WHERE id > 0")]
            assert seen == [2]
            t1.execute("COMMIT")
            later = [r[0] for r in db.execute_sql("SELECT id FROM control WHERE id > 2")]
            assert later == []  # T1's row (id 1) is committed and the poller never sees it


@pytest.mark.postgres
def test_out_of_order_commits_never_make_a_poller_skip_a_change() -> None:
    """T1 writes; T2 writes; T2 tries to commit first; the poller reads; T1 commits; the
    poller reads again. T2's write waits for T1's commit, so T2's change takes the larger
    ``seq`` and the poller sees T1's change, then T2's: nothing skipped."""
    with pg_log() as (db, dsn, schema):
        poller = Poller(db)
        with connect(dsn, schema) as t1, connect(dsn, schema) as t2:
            t1.execute("BEGIN")
            t1.execute("INSERT INTO tbl_tags (slug) VALUES ('T1')")
            t2_pid = t2.info.backend_pid
            t2_done = threading.Event()

            def run_t2() -> None:
                t2.execute("BEGIN")
                t2.execute("INSERT INTO tbl_tags (slug) VALUES ('T2')")
                t2.execute("COMMIT")
                t2_done.set()

            thread = threading.Thread(target=run_t2)
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while not waiting_for_lock(db, t2_pid):
                    assert time.monotonic() < deadline, "T2 never waited for T1"
                    time.sleep(0.01)
                assert not t2_done.wait(0.2)  # T2 cannot commit before T1
                assert poller.poll() == []
                t1.execute("INSERT INTO tbl_tags (slug) VALUES ('T1b')")  # T1 goes on
                t1.execute("COMMIT")
                assert t2_done.wait(10)
            finally:
                thread.join(10)
        poller.poll()
        entries = changelog.read_changes(db, 0, 100)
        assert [e.new["slug"] for e in entries if e.new] == ["T1", "T1b", "T2"]
        assert poller.seen == [e.seq for e in entries]


@pytest.mark.postgres
def test_a_later_transaction_that_writes_first_to_another_table_still_orders() -> None:
    """Two tables, T2 commits while T1 is open but has not written yet: T2 is first in
    both commit and seq order; T1's later write gets a larger seq."""
    with pg_log() as (db, dsn, schema):
        poller = Poller(db)
        with connect(dsn, schema) as t1, connect(dsn, schema) as t2:
            t1.execute("BEGIN")
            t1.execute("SELECT 1 FROM tbl_users")  # open, snapshot taken, nothing written
            t2.execute("BEGIN")
            t2.execute("INSERT INTO tbl_tags (slug) VALUES ('T2')")
            t2.execute("COMMIT")
            assert len(poller.poll()) == 1
            t1.execute("INSERT INTO tbl_users (name, status, rank) VALUES ('T1', 's', 1)")
            t1.execute("COMMIT")
            assert len(poller.poll()) == 1
        assert poller.seen == [e.seq for e in changelog.read_changes(db, 0, 100)]


@pytest.mark.postgres
def test_concurrent_writers_under_a_poller_lose_nothing() -> None:
    """Writers on several connections (one-statement and multi-statement transactions,
    some rolled back) while a poller reads ``seq > last``: the poller's sequence equals
    the final log, which holds exactly the committed rows."""
    with pg_log() as (db, dsn, schema):
        poller = Poller(db)
        stop = threading.Event()
        committed: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                with connect(dsn, schema) as conn:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        slugs = [f"w{n}-{i}-{k}" for k in range(1 + i % 3)]
                        conn.execute("BEGIN")
                        for slug in slugs:
                            conn.execute("INSERT INTO tbl_tags (slug) VALUES (%s)", (slug,))
                        if i % 5 == 0:
                            conn.execute("ROLLBACK")
                            continue
                        conn.execute("COMMIT")
                        with lock:
                            committed.extend(slugs)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            poller.poll()
        stop.set()
        for thread in threads:
            thread.join(10)
        assert not errors
        poller.poll()
        entries = changelog.read_changes(db, 0, 100_000)
        assert poller.seen == [e.seq for e in entries]
        assert sorted(e.new["slug"] for e in entries if e.new) == sorted(committed)
        assert len(committed) > 20


# --- SQLite: random interleavings ----------------------------------------------------------

CONNECTIONS = 3
steps = st.lists(
    st.tuples(
        st.integers(0, CONNECTIONS - 1), st.sampled_from(["write", "write", "commit", "rollback"])
    ),
    max_size=40,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(script=steps)
def test_sqlite_log_in_seq_order_is_commit_order(tmp_path: Path, script: list) -> None:
    """Several connections open transactions, write, commit or roll back in any order (a
    write that finds another writer's lock fails, and its transaction is rolled back, as
    SQLite's single writer makes it): the log read in seq order is every committed write,
    transaction by transaction, in commit order, and a poller never skips one."""
    path = tmp_path / f"order-{time.monotonic_ns()}.db"
    db = peewee.SqliteDatabase(str(path))
    models = make_models(db, None)
    db.create_tables([models["tags"]])
    changelog.install(db, [models["tags"]])
    poller = Poller(db)
    conns = [sqlite3.connect(path, isolation_level=None, timeout=0) for _ in range(CONNECTIONS)]
    pending: list[list[str]] = [[] for _ in conns]
    expected: list[str] = []
    counter = 0
    try:
        for n, action in script:
            conn = conns[n]
            if action == "write":
                counter += 1
                slug = f"c{n}-{counter}"
                try:
                    if not conn.in_transaction:
                        conn.execute("BEGIN")
                    conn.execute("INSERT INTO tbl_tags (slug) VALUES (?)", (slug,))
                    pending[n].append(slug)
                except sqlite3.OperationalError as exc:
                    assert "locked" in str(exc)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    pending[n] = []
            elif conn.in_transaction:
                conn.execute("COMMIT" if action == "commit" else "ROLLBACK")
                if action == "commit":
                    expected.extend(pending[n])
                pending[n] = []
            poller.poll()
        for n, conn in enumerate(conns):
            if conn.in_transaction:
                conn.execute("COMMIT")
                expected.extend(pending[n])
        poller.poll()
        entries = changelog.read_changes(db, 0, 10_000)
        assert [e.new["slug"] for e in entries if e.new] == expected
        assert poller.seen == [e.seq for e in entries]
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))  # dense
    finally:
        for conn in conns:
            conn.close()
        db.close()


@pytest.mark.postgres
@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_overlapping_transactions_under_stricter_isolation_both_commit(level: str) -> None:
    """The lock and the sequence are outside MVCC: two overlapping transactions at
    ``level`` whose snapshots predate each other's commit both commit, in seq order."""
    with pg_log() as (db, dsn, schema):
        with connect(dsn, schema) as t1, connect(dsn, schema) as t2:
            t1.execute(f"BEGIN ISOLATION LEVEL {level}")
            t2.execute(f"BEGIN ISOLATION LEVEL {level}")
            t2.execute("SELECT count(*) FROM tbl_tags")  # T2's snapshot, before T1 commits
            t1.execute("INSERT INTO tbl_tags (slug) VALUES ('T1')")
            t1.execute("COMMIT")
            t2.execute("INSERT INTO tbl_tags (slug) VALUES ('T2')")
            t2.execute("COMMIT")
        entries = changelog.read_changes(db, 0, 10)
        assert [e.new["slug"] for e in entries if e.new] == ["T1", "T2"]
