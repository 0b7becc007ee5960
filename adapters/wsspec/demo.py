"""The demo application: the example models of the Go README, on SQLite or PostgreSQL.

``public.users`` (id, name, email, status) and ``public.posts`` (id, title, content,
user_id -> users; relation ``user``, and ``posts`` on users).  :func:`build_app` is also a
ready example of what ``wsspec serve`` expects: ``wsspec serve wsspec.demo:build_app``.
"""

from __future__ import annotations

import peewee

from . import App
from .storage.peewee import PeeweeStorage, changelog

DEFAULT_DB = "sqlite:///wsspec-demo.db"


def make_models(database: peewee.Database) -> tuple[type[peewee.Model], type[peewee.Model]]:
    """Fresh ``User`` and ``Post`` model classes bound to ``database``."""

    class User(peewee.Model):
        id = peewee.AutoField()
        name = peewee.TextField(null=True)
        email = peewee.TextField(null=True)
        status = peewee.TextField(null=True)

        class Meta:
            table_name = "users"

    class Post(peewee.Model):
        id = peewee.AutoField()
        title = peewee.TextField(null=True)
        content = peewee.TextField(null=True)
        user = peewee.ForeignKeyField(User, backref="posts", column_name="user_id")

        class Meta:
            table_name = "posts"

    database.bind([User, Post])
    return User, Post


def build_app(db_url: str | None = None) -> App:
    """The demo app on ``db_url`` (default ``sqlite:///wsspec-demo.db``); creates the
    tables if they are missing."""
    storage = PeeweeStorage.from_url(db_url or DEFAULT_DB)
    user, post = make_models(storage.database)
    with storage.database.connection_context():
        storage.database.create_tables([user, post], safe=True)
    storage.register("public.users", user)
    storage.register("public.posts", post)
    return App(storage)


def with_change_feed(app: App) -> App:
    """Install (or upgrade) the change log on the demo's tables and turn the change feed
    on, as ``wsspec demo`` does: plain SQL on the demo database, and other processes on
    it, then reach its subscribers (docs/changefeed.md). Safe to run from several
    processes at once."""
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    with storage.database.connection_context():
        changelog.install(storage.database, storage.models().values())
    app.change_feed = True
    return app
