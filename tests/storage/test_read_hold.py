"""PeeweeStorage's read hold (hold_reads / release_reads) and its read by key path, on
real SQLite files in WAL mode (docs/storage.md "Read holds")."""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from wsspec.storage.peewee import PeeweeStorage

from wsspec_core import (
    NO_FILTERS,
    Create,
    Delete,
    Entity,
    EntityRegistry,
    FilterSpec,
    PreloadSpec,
    QueryOptions,
    ReadList,
    ReadOne,
    Selection,
    StorageFailure,
    Update,
    compile_filters,
    compile_selection,
)

from .conftest import make_models


class Setup:
    """A storage on a WAL file with users 1..3 and tags, and a plain sqlite3 connection
    to the same file standing for another process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.storage = PeeweeStorage.from_url(f"sqlite:///{path}")
        self.models = make_models(self.storage.database, None)
        self.storage.database.create_tables(list(self.models.values()))
        self.users = self.storage.register("public.users", self.models["users"])
        self.tags = self.storage.register("tags", self.models["tags"])
        self.storage.execute(
            Create(entity=self.users, rows=tuple({"name": n} for n in ("a", "b", "c")))
        )
        self.storage.execute(Create(entity=self.tags, rows=({"slug": "x", "label": "X"},)))
        self.names = Selection(columns=("id", "name"))
        self.other = sqlite3.connect(str(path), isolation_level=None, timeout=5)

    def read(self, key: Any, storage: PeeweeStorage | None = None) -> Any:
        op = ReadOne(entity=self.users, key=key, filters=NO_FILTERS, selection=self.names)
        return (storage or self.storage).execute(op)

    def name(self, key: Any) -> str:
        row = self.read(key)
        assert row is not None
        name: str = row["name"]
        return name

    def rename(self, key: int, name: str) -> None:
        """Commit a change from the other connection."""
        self.other.execute("UPDATE tbl_users SET name = ? WHERE id = ?", (name, key))

    def committed_name(self, key: int) -> str:
        """The name as the other connection sees it (autocommit: the latest commit)."""
        name: str = self.other.execute(
            "SELECT name FROM tbl_users WHERE id = ?", (key,)
        ).fetchone()[0]
        return name

    def in_transaction(self) -> bool:
        return bool(self.storage._connection().in_transaction)

    def close(self) -> None:
        self.other.close()
        self.storage.release_reads()
        self.storage.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path / "hold.db")
    try:
        yield made
    finally:
        made.close()


# --- snapshots -----------------------------------------------------------------------


def test_reads_in_a_hold_share_one_snapshot_until_released(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"  # begins the held transaction: its snapshot is taken here
    assert db.in_transaction()
    db.rename(1, "a2")
    db.rename(2, "b2")
    assert db.committed_name(1) == "a2"
    assert db.name(2) == "b"  # as of the first read of the hold
    assert db.name(1) == "a"
    storage.release_reads()
    assert not db.in_transaction()
    assert db.name(1) == "a2"
    assert db.name(2) == "b2"


def test_without_a_hold_each_read_sees_the_latest_commit(db: Setup) -> None:
    assert db.name(1) == "a"
    assert not db.in_transaction()
    db.rename(1, "a2")
    assert db.name(1) == "a2"
    db.rename(1, "a3")
    assert db.name(1) == "a3"


def test_a_second_storage_on_the_same_file_is_seen_after_release(db: Setup) -> None:
    second = PeeweeStorage.from_url(f"sqlite:///{db.path}")
    models = make_models(second.database, None)
    users = second.register("public.users", models["users"])
    try:
        db.storage.hold_reads()
        assert db.name(3) == "c"
        second.execute(Update(entity=users, key=3, changes={"name": "c2"}, filters=NO_FILTERS))
        assert db.name(3) == "c"
        db.storage.release_reads()
        assert db.name(3) == "c2"
    finally:
        second.close()


def test_hold_and_release_are_idempotent_and_cheap_when_nothing_began(db: Setup) -> None:
    storage = db.storage
    storage.release_reads()  # no hold
    storage.hold_reads()
    storage.hold_reads()
    storage.release_reads()  # held, but no read began anything
    storage.release_reads()
    assert not db.in_transaction()
    storage.hold_reads()
    db.name(1)
    storage.release_reads()
    storage.release_reads()
    assert not db.in_transaction()
    db.rename(1, "a2")
    assert db.name(1) == "a2"  # autocommit again


def test_a_transaction_the_hold_did_not_begin_is_left_alone(db: Setup) -> None:
    conn = db.storage._connection()
    conn.execute("BEGIN")
    db.storage.hold_reads()
    assert db.name(1) == "a"
    db.storage.release_reads()
    assert conn.in_transaction  # not the hold's to end
    conn.execute("COMMIT")


# --- what ends the held transaction ----------------------------------------------------


@pytest.mark.parametrize("write", ["create", "update", "delete"])
def test_a_write_during_a_hold_ends_its_transaction_and_commits_at_once(
    db: Setup, write: str
) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    db.rename(2, "b2")  # the held snapshot is now stale
    op: Any
    if write == "create":
        op = Create(entity=db.users, rows=({"name": "d"},))
    elif write == "update":
        op = Update(entity=db.users, key=1, changes={"name": "a2"}, filters=NO_FILTERS)
    else:
        op = Delete(entity=db.users, key=1, filters=NO_FILTERS)
    # Inside the held transaction this would fail (a nested BEGIN, or SQLITE_BUSY_SNAPSHOT).
    storage.execute(op)
    assert not db.in_transaction()  # committed, nothing left open
    count = db.other.execute("SELECT COUNT(*) FROM tbl_users").fetchone()[0]
    if write == "create":
        assert count == 4
    elif write == "update":
        assert db.committed_name(1) == "a2"
    else:
        assert count == 2
    # Still holding: the next read begins a new transaction, which sees both commits.
    assert db.name(2) == "b2"
    assert db.in_transaction()
    storage.release_reads()
    assert not db.in_transaction()


def test_a_list_read_during_a_hold_ends_its_transaction(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    db.rename(1, "a2")
    listed = storage.execute(
        ReadList(
            entity=db.users, filters=NO_FILTERS, sort=(), limit=10, offset=0, selection=db.names
        )
    )
    assert [r["name"] for r in listed.rows] == ["a2", "b", "c"]  # the latest commit
    assert not db.in_transaction()
    storage.release_reads()


# --- failures ------------------------------------------------------------------------


def test_a_read_failing_in_a_hold_rolls_it_back_and_raises(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    assert db.in_transaction()
    with pytest.raises(StorageFailure):
        db.read(object())  # the driver cannot bind it
    assert not db.in_transaction()
    assert db.name(1) == "a"  # still holding: a new transaction
    assert db.in_transaction()
    storage.release_reads()
    assert not db.in_transaction()


def test_a_dropped_table_fails_the_first_held_read_and_leaves_nothing_open(db: Setup) -> None:
    db.other.execute("DROP TABLE tbl_tags")
    storage = db.storage
    storage.hold_reads()
    with pytest.raises(StorageFailure):
        storage.execute(
            ReadOne(
                entity=db.tags, key="x", filters=NO_FILTERS, selection=Selection(columns=("slug",))
            )
        )
    assert not db.in_transaction()
    storage.release_reads()
    assert not db.in_transaction()


def test_a_connection_closed_behind_peewee_drops_it_logs_and_never_raises_on_release(
    db: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    closed = storage._connection()
    closed.close()  # behind Peewee's back: it still hands this one out
    with caplog.at_level(logging.WARNING, logger="wsspec.storage"), pytest.raises(StorageFailure):
        db.name(1)
    assert [r.levelname for r in caplog.records if r.name == "wsspec.storage"] == ["WARNING"]
    storage.release_reads()  # nothing left to end, nothing raised
    assert storage._connection() is not closed  # dropped: a fresh connection
    assert not db.in_transaction()
    assert db.name(1) == "a"


def test_release_after_the_connection_was_replaced_touches_only_its_own(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    first = storage._connection()
    storage.database.close()  # closing ends the held transaction
    storage.database.connect()
    second = storage._connection()
    assert second is not first
    second.execute("BEGIN")  # someone else's transaction on the new connection
    storage.release_reads()
    assert second.in_transaction  # left alone
    second.execute("COMMIT")


def test_release_after_a_drop_does_not_raise_and_a_later_read_begins_on_the_new_one(
    db: Setup,
) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    first = storage._connection()
    storage._connections.drop()
    db.rename(1, "a2")
    assert db.name(1) == "a2"  # a fresh connection, a fresh held transaction
    assert storage._connection() is not first
    assert db.in_transaction()
    storage.release_reads()
    assert not db.in_transaction()


def test_close_during_a_hold_ends_it(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    storage.close()
    db.rename(1, "a2")
    assert db.name(1) == "a2"  # not holding any more: autocommit
    assert not db.in_transaction()


# --- threads -------------------------------------------------------------------------


def test_other_threads_read_with_their_own_autocommit_connections(db: Setup) -> None:
    storage = db.storage
    storage.hold_reads()
    assert db.name(1) == "a"
    db.rename(1, "a2")
    seen: list[Any] = []

    def elsewhere() -> None:
        try:
            seen.append(db.name(1))
            seen.append(storage._connection().in_transaction)
            storage.release_reads()  # not this thread's hold: does nothing
        except BaseException as exc:  # pragma: no cover - reported below
            seen.append(exc)
        finally:
            storage.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert seen == ["a2", False]
    assert db.in_transaction()  # the holder's transaction is still open
    assert db.name(1) == "a"
    storage.release_reads()
    assert db.name(1) == "a2"


# --- the read by key path ------------------------------------------------------------


def general(storage: PeeweeStorage, op: ReadOne) -> Any:
    """``op`` through execute's general read path (the one PostgreSQL takes)."""
    storage._by_key = False
    try:
        return storage.execute(op)
    finally:
        storage._by_key = True


def outcome(run: Any) -> Any:
    try:
        return ("ok", run())
    except StorageFailure as exc:
        return ("failure", exc.error)


def test_the_read_by_key_path_answers_as_the_general_one(db: Setup) -> None:
    storage = db.storage
    storage.execute(
        Update(
            entity=db.users,
            key=2,
            changes={"active": True, "born": "2001-02-03", "score": 1, "age": 4},
            filters=NO_FILTERS,
        )
    )
    every = Selection(columns=tuple(c.name for c in db.users.columns))
    selections = [every, db.names, Selection(columns=("born", "active", "score"))]
    keys: list[Any] = [1, 2, 3, 99, "2", "nope", None, 2.0, object()]
    filters = [
        NO_FILTERS,
        compile_filters(db.users, [FilterSpec(column="name", operator="eq", value="b")]),
        compile_filters(db.users, [FilterSpec(column="name", operator="like", value="%z")]),
    ]
    checked = 0
    for hold in (False, True):
        if hold:
            storage.hold_reads()
        for selection in selections:
            for key in keys:
                for where in filters:
                    op = ReadOne(entity=db.users, key=key, filters=where, selection=selection)
                    assert storage.never_blocks(op)
                    for _ in range(2):  # compiled, then cached
                        lean = outcome(lambda op=op: storage.execute(op))
                        assert lean == outcome(lambda op=op: general(storage, op))
                        if lean[0] == "ok":  # _read_one raises the driver's exceptions
                            assert lean[1] == storage._read_one(op)
                        checked += 1
        storage.release_reads()
    assert checked == 2 * 3 * 9 * 3 * 2
    assert outcome(lambda: db.read(2))[1] == {"id": 2, "name": "b"}
    assert db.read(99) is None


def test_the_read_by_key_path_on_a_text_and_a_uuid_key(db: Setup) -> None:
    class Doc(peewee.Model):
        id = peewee.UUIDField(primary_key=True)
        title = peewee.CharField()

        class Meta:
            database = db.storage.database
            table_name = "tbl_docs"

    db.storage.database.create_tables([Doc])
    docs: Entity = db.storage.register("docs", Doc)
    known = uuid.uuid4()
    db.storage.execute(Create(entity=docs, rows=({"id": str(known), "title": "t"},)))
    storage = db.storage
    cases: list[tuple[Entity, Any]] = [
        (db.tags, "x"),
        (db.tags, "missing"),
        (db.tags, 1),
        (docs, str(known)),
        (docs, known),
        (docs, str(uuid.uuid4())),
        (docs, "not a uuid"),
        (docs, 7),
    ]
    for entity, key in cases:
        selection = Selection(columns=tuple(c.name for c in entity.columns))
        op = ReadOne(entity=entity, key=key, filters=NO_FILTERS, selection=selection)
        for _ in range(2):
            lean = outcome(lambda op=op: storage.execute(op))
            assert lean == outcome(lambda op=op: general(storage, op))
    found = storage.execute(
        ReadOne(
            entity=docs,
            key=str(known),
            filters=NO_FILTERS,
            selection=Selection(columns=("id", "title")),
        )
    )
    assert found == {"id": known.hex, "title": "t"}  # SQLite stores a UUIDField as hex


def test_reads_with_preloads_take_the_general_path_and_end_a_hold(db: Setup) -> None:
    posts = db.storage.register("blog.posts", db.models["posts"])
    db.storage.execute(Create(entity=posts, rows=({"user_id": 1, "title": "p"},)))
    registry_users = {e.qualified_name: e for e in db.storage.entities()}["public.users"]
    selection = compile_selection(
        registry_users,
        QueryOptions(columns=("name",), preload=(PreloadSpec(relation="posts"),)),
        EntityRegistry(db.storage.entities()),
    )
    op = ReadOne(entity=registry_users, key=1, filters=NO_FILTERS, selection=selection)
    assert not db.storage.never_blocks(op)
    db.storage.hold_reads()
    db.read(1)
    assert db.in_transaction()
    row = db.storage.execute(op)
    assert row["name"] == "a" and [p["title"] for p in row["posts"]] == ["p"]
    assert not db.in_transaction()
    db.storage.release_reads()
