"""SQLite specifics: WAL, threads, URLs, an unreachable file."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import peewee
import pytest
from wsspec.storage.peewee import PeeweeStorage

from wsspec_core import (
    NO_FILTERS,
    Create,
    ReadList,
    ReadOne,
    Selection,
    StorageErrorKind,
    StorageFailure,
    Update,
)

from .conftest import make_models


def setup(path: Path) -> tuple[PeeweeStorage, Any]:
    storage = PeeweeStorage.from_url(f"sqlite:///{path}")
    models = make_models(storage.database, None)
    storage.database.create_tables(list(models.values()))
    entity = storage.register("public.users", models["users"])
    return storage, entity


def test_from_url_and_wal(tmp_path: Path) -> None:
    storage, users = setup(tmp_path / "x.db")
    storage.execute(Create(entity=users, rows=({"name": "a"},)))
    mode = storage._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert storage._connection().execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_from_url_rejects_memory_and_unknown_schemes() -> None:
    for url in ("sqlite:///:memory:", "sqlite://", "mysql://x/y", "postgresql://host:5432/"):
        with pytest.raises(ValueError):
            PeeweeStorage.from_url(url)


def test_unopenable_file_is_unavailable_then_retried(tmp_path: Path) -> None:
    storage = PeeweeStorage(peewee.SqliteDatabase(str(tmp_path / "missing" / "x.db")))

    class Users(peewee.Model):
        name = peewee.CharField()

        class Meta:
            database = storage.database

    users = storage.register("users", Users)
    op = ReadOne(entity=users, key=1, filters=NO_FILTERS, selection=Selection(columns=("id",)))
    for _ in range(2):  # each call tries a fresh connection
        with pytest.raises(StorageFailure) as caught:
            storage.execute(op)
        assert caught.value.error.kind is StorageErrorKind.UNAVAILABLE
        assert caught.value.error.message == "database unavailable"
    (tmp_path / "missing").mkdir()
    storage.database.create_tables([Users])
    assert storage.execute(op) is None  # the database came back


def test_concurrent_readers_and_one_writer(tmp_path: Path) -> None:
    storage, users = setup(tmp_path / "threads.db")
    storage.execute(Create(entity=users, rows=tuple({"name": f"u{i}"} for i in range(50))))
    errors: list[BaseException] = []
    stop = threading.Event()
    read = ReadList(
        entity=users,
        filters=NO_FILTERS,
        sort=(),
        limit=20,
        offset=0,
        selection=Selection(columns=("id", "name", "age")),
    )

    def reader() -> None:
        try:
            while not stop.is_set():
                result = storage.execute(read)
                assert len(result.rows) == 20 and result.total >= 50
        except BaseException as exc:
            errors.append(exc)
        finally:
            storage.close()

    def writer() -> None:
        try:
            for i in range(200):
                storage.execute(
                    Update(entity=users, key=1 + i % 50, changes={"age": i}, filters=NO_FILTERS)
                )
                if i % 20 == 0:
                    storage.execute(Create(entity=users, rows=({"name": f"w{i}"},)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()
            storage.close()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    total = storage.execute(read).total
    assert total == 60
