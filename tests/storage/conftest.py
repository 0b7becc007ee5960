"""Fixtures for the Peewee storage adapter tests: the same models on SQLite and PostgreSQL.

PostgreSQL tests read the server from ``WSSPEC_TEST_POSTGRES_DSN`` and are skipped, with
the reason shown, when it is unset or unreachable. Every PostgreSQL fixture works in a
fresh schema of its own (dropped afterwards), so concurrent runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import peewee
import pytest
from wsspec.storage.peewee import PeeweeStorage

DSN_VARIABLE = "WSSPEC_TEST_POSTGRES_DSN"


def postgres_dsn() -> str:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{DSN_VARIABLE} is not set")
    return dsn


def postgres_database(dsn: str) -> peewee.PostgresqlDatabase:
    db = peewee.PostgresqlDatabase(dsn, connect_timeout=5)
    try:
        db.connect()
    except peewee.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {DSN_VARIABLE} is unreachable: {type(exc).__name__}")
    return db


class Schema:
    """A throwaway place for tables: a PostgreSQL schema, or nothing on SQLite."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.name: str | None = None
        if isinstance(db, peewee.PostgresqlDatabase):
            self.name = f"wsspec_test_{uuid.uuid4().hex[:12]}"
            db.execute_sql(f'CREATE SCHEMA "{self.name}"')

    def drop(self) -> None:
        if self.name is not None:
            self.db.execute_sql(f'DROP SCHEMA "{self.name}" CASCADE')


def make_models(db: peewee.Database, schema: str | None) -> dict[str, type[peewee.Model]]:
    """users 1--n posts 1--n comments, users.manager -> users, and tags (text key).

    Table names differ from registration names on purpose."""

    class Base(peewee.Model):
        class Meta:
            database = db

    Base._meta.schema = schema

    class User(Base):
        name = peewee.CharField()
        email = peewee.CharField(null=True, unique=True)
        age = peewee.IntegerField(null=True, constraints=[peewee.Check("age >= 0")])
        score = peewee.FloatField(null=True)
        active = peewee.BooleanField(null=True)
        born = peewee.DateField(null=True)
        seen = peewee.DateTimeField(null=True)
        status = peewee.CharField(default="active")
        rank = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 7")])
        manager = peewee.ForeignKeyField("self", null=True, backref="reports")

        class Meta:
            table_name = "tbl_users"

    class Post(Base):
        user = peewee.ForeignKeyField(User, backref="posts")
        title = peewee.TextField()
        body = peewee.TextField(null=True)

        class Meta:
            table_name = "tbl_posts"

    class Comment(Base):
        post = peewee.ForeignKeyField(Post, backref="comments")
        text = peewee.TextField()

        class Meta:
            table_name = "tbl_comments"

    class Tag(Base):
        slug = peewee.CharField(primary_key=True)
        label = peewee.CharField(null=True)

        class Meta:
            table_name = "tbl_tags"

    return {"users": User, "posts": Post, "comments": Comment, "tags": Tag}


class Backend:
    """A storage with the test models registered, and a way to reset their tables."""

    def __init__(self, kind: str, db: peewee.Database) -> None:
        self.kind = kind
        self.db = db
        self.schema = Schema(db)
        self.models = make_models(db, self.schema.name)
        db.create_tables(list(self.models.values()))
        self.storage = PeeweeStorage(db)
        self.storage.register("public.users", self.models["users"])
        self.storage.register("blog.posts", self.models["posts"])
        self.storage.register("comments", self.models["comments"])
        self.storage.register("tags", self.models["tags"])
        self.entities = {e.qualified_name: e for e in self.storage.entities()}

    def entity(self, name: str) -> Any:
        return self.entities[name]

    def clear(self) -> None:
        for model in ("comments", "posts", "users", "tags"):
            self.models[model].delete().execute()

    def close(self) -> None:
        self.db.drop_tables(list(self.models.values()))
        self.schema.drop()
        self.db.close()


def _backend(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    if kind == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        return Backend(kind, peewee.SqliteDatabase(str(path)))
    return Backend(kind, postgres_database(postgres_dsn()))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    made = _backend(request.param, tmp_path_factory)
    try:
        yield made
    finally:
        made.close()
