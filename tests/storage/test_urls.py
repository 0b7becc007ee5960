"""PeeweeStorage.from_url: the URL forms, through playhouse.db_url; no database is opened."""

from __future__ import annotations

import peewee
import pytest
from playhouse.pool import PooledPostgresqlDatabase
from wsspec.storage.peewee import PeeweeStorage
from wsspec.storage.peewee.connections import DEFAULT_MAX_CONNECTIONS


def test_sqlite_relative_and_absolute_paths() -> None:
    relative = PeeweeStorage.from_url("sqlite:///data/app.db").database
    assert type(relative) is peewee.SqliteDatabase
    assert relative.database == "data/app.db"
    assert relative.timeout == 5
    absolute = PeeweeStorage.from_url("sqlite:////var/lib/app.db?timeout=9").database
    assert absolute.database == "/var/lib/app.db"
    assert absolute.timeout == 9  # the URL's query wins over the default
    assert relative.is_closed() and absolute.is_closed()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+pool"])
def test_postgresql_is_pooled(scheme: str) -> None:
    db = PeeweeStorage.from_url(f"{scheme}://app:p%40ss@db.example:6543/shop").database
    assert isinstance(db, PooledPostgresqlDatabase)
    assert db.database == "shop"
    assert db.connect_params == {
        "user": "app",
        "password": "p@ss",  # percent-decoded, as libpq decodes URLs
        "host": "db.example",
        "port": 6543,
        "connect_timeout": 5,
    }
    assert db.is_closed()


def test_pool_size_default_and_from_the_url() -> None:
    db = PeeweeStorage.from_url("postgresql://app@db.example/shop").database
    bigger = PeeweeStorage.from_url("postgresql://app@db.example/shop?max_connections=50").database
    # Peewee has no public reader for the pool size; its constructor argument is kept here.
    assert db._max_connections == DEFAULT_MAX_CONNECTIONS == 20
    assert bigger._max_connections == 50
    assert "max_connections" not in bigger.connect_params


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite://relative.db",  # two slashes: "relative.db" would be a host
        "postgresql://host:5432/",
        "postgresql://host:5432",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ValueError):
        PeeweeStorage.from_url(url)


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "redis://localhost/0", "app.db", "sqlite+pool:///x"]
)
def test_unsupported_schemes_are_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        PeeweeStorage.from_url(url)
