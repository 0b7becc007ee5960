"""``SubscribeRead`` on the Peewee storage (snapshot and resume, issue 9 item 6) on a real
SQLite file and the real PostgreSQL server: the rows and the log position come from one
committed state, also while another program commits; resume reads only the entity's
entries, bounded; and what the log cannot prove is left unread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from wsspec.storage.peewee import PeeweeStorage, changelog

import wsspec_core as core

from .test_changelog import LogDb


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogDb]:
    made = LogDb(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def storage_of(log: LogDb) -> tuple[PeeweeStorage, core.Entity]:
    storage = PeeweeStorage(log.db)
    storage.register_all(log.models.items())
    entity = next(e for e in storage.entities() if e.name == "users")
    return storage, entity


def active_users(entity: core.Entity, limit: int = 1000) -> core.ReadList:
    filters = core.compile_filters(
        entity, (core.FilterSpec(column="status", operator="eq", value="active"),), core.Limits()
    )
    return core.ReadList(
        entity=entity,
        filters=filters,
        sort=(),
        limit=limit,
        offset=0,
        selection=core.Selection(columns=("id", "name", "status")),
    )


def insert(log: LogDb, conn: Any, name: str, status: str = "active") -> None:
    log.sql(conn, "INSERT INTO tbl_users (name, status, rank) VALUES (?, ?, 1)", name, status)


def test_snapshot_rows_and_seq_come_from_one_state(log: LogDb) -> None:
    storage, users = storage_of(log)
    with log.outside() as conn:
        insert(log, conn, "a")
        insert(log, conn, "b", "away")
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('t')")  # another table's change
    result = storage.execute(
        core.SubscribeRead(entity=users, snapshot=active_users(users), resume=None, replay_limit=5)
    )
    assert isinstance(result, core.SubscribeReadResult)
    assert result.epoch == log.epoch and result.trimmed_through == 0
    assert result.seq == changelog.last_seq(log.db)
    assert result.rows is not None and [r["name"] for r in result.rows.rows] == ["a"]
    assert result.entries is None


def test_rows_hold_exactly_the_changes_up_to_the_seq_while_another_program_commits(
    log: LogDb,
) -> None:
    # The log says which rows exist at each seq: every result's rows must be that state,
    # not one statement later. (Checked by breaking it: PostgreSQL's plain BEGIN, READ
    # COMMITTED, gives rows ahead of the seq within a few reads.)
    storage, users = storage_of(log)
    stop = threading.Event()
    started = threading.Event()

    def write() -> None:
        with log.outside() as conn:
            n = 0
            while not stop.is_set():
                n += 1
                insert(log, conn, f"u{n}", "active" if n % 3 else "away")
                if n % 4 == 0:
                    log.sql(
                        conn, "UPDATE tbl_users SET status = 'away' WHERE name = ?", f"u{n - 1}"
                    )
                started.set()
                time.sleep(0.001)  # let the reader in between commits

    writer = threading.Thread(target=write)
    writer.start()
    results = []
    try:
        assert started.wait(10)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            results.append(
                storage.execute(
                    core.SubscribeRead(
                        entity=users, snapshot=active_users(users), resume=None, replay_limit=5
                    )
                )
            )
    finally:
        stop.set()
        writer.join()
        storage.close()
    history = changelog.read_changes(log.db, 0, 100_000, models=log.models.values())
    assert len({r.seq for r in results}) > 10, "the writer never got between two reads"
    for result in results:
        state: dict[int, dict[str, Any]] = {}
        for entry in history:
            if entry.seq > result.seq or entry.table != "tbl_users":
                continue
            if entry.new is None:
                state.pop(entry.old["id"], None)  # type: ignore[index]
            else:
                state[entry.new["id"]] = entry.new
        expected = sorted(k for k, row in state.items() if row["status"] == "active")
        assert [row["id"] for row in result.rows.rows] == expected, result.seq


def resume_at(
    storage: PeeweeStorage,
    users: core.Entity,
    epoch: str,
    seq: int,
    *,
    limit: int = 5,
    snapshot: bool = True,
) -> core.SubscribeReadResult:
    result = storage.execute(
        core.SubscribeRead(
            entity=users,
            snapshot=active_users(users) if snapshot else None,
            resume=core.ResumePosition(epoch=epoch, seq=seq),
            replay_limit=limit,
        )
    )
    assert isinstance(result, core.SubscribeReadResult)
    return result


def test_resume_reads_the_entitys_entries_after_the_position_as_the_tailer_names_them(
    log: LogDb,
) -> None:
    storage, users = storage_of(log)
    with log.outside() as conn:
        insert(log, conn, "a")
        log.sql(conn, "INSERT INTO tbl_tags (slug) VALUES ('t')")
        log.sql(conn, "UPDATE tbl_users SET status = 'away'")
        log.sql(conn, "DELETE FROM tbl_users")
    first, *rest = changelog.read_changes(log.db)
    result = resume_at(storage, users, log.epoch, first.seq)
    assert result.rows is None  # resumable: no snapshot needed
    assert result.entries is not None
    assert [(e.operation, e.entity, e.schema) for e in result.entries] == [
        (core.Operation.UPDATE, "users", None),
        (core.Operation.DELETE, "users", None),
    ]
    update = result.entries[0]
    assert update.old is not None and update.old["status"] == "active"
    assert update.new is not None and update.new["status"] == "away"
    assert [e.seq for e in result.entries] == [e.seq for e in rest if e.table == "tbl_users"]


def test_resume_reads_one_entry_more_than_the_limit_and_then_the_snapshot(log: LogDb) -> None:
    storage, users = storage_of(log)
    with log.outside() as conn:
        for n in range(6):
            insert(log, conn, f"u{n}")
    result = resume_at(storage, users, log.epoch, 0, limit=3)
    assert result.entries is not None and len(result.entries) == 4
    assert result.rows is not None and len(result.rows.rows) == 6


@pytest.mark.parametrize("case", ["other epoch", "beyond the end", "trimmed"])
def test_a_position_the_log_cannot_prove_reads_no_entries(log: LogDb, case: str) -> None:
    storage, users = storage_of(log)
    with log.outside() as conn:
        for n in range(3):
            insert(log, conn, f"u{n}")
    last = changelog.last_seq(log.db)
    epoch, seq = log.epoch, 0
    if case == "other epoch":
        epoch = "another"
    elif case == "beyond the end":
        seq = last + 1
    else:
        changelog.trim(log.db, keep_last=1, older_than=None)
        seq = changelog.trimmed_through(log.db) - 1
    result = resume_at(storage, users, epoch, seq)
    assert result.entries is None
    assert result.rows is not None and len(result.rows.rows) == 3
    assert result.seq == last


def test_without_the_log_the_read_fails_clearly(tmp_path: Path) -> None:
    db = peewee.SqliteDatabase(str(tmp_path / "nolog.db"))
    from .conftest import make_models

    models = make_models(db, None)
    db.create_tables(list(models.values()))
    storage = PeeweeStorage(db)
    storage.register_all(models.items())
    users = next(e for e in storage.entities() if e.name == "users")
    with pytest.raises(core.StorageFailure, match="change log is not installed"):
        storage.execute(
            core.SubscribeRead(entity=users, snapshot=None, resume=None, replay_limit=1)
        )
    # The connection is usable afterwards: the transaction was ended.
    assert storage.execute(active_users(users)).rows == []
