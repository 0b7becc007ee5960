"""The demo application: the example models of the Go README, on SQLite or PostgreSQL.

``public.users`` (id, name, email, status) and ``public.posts`` (id, title, content,
user_id -> users; relation ``user``, and ``posts`` on users).  :func:`build_app` is also a
ready example of what ``wsspec serve`` expects: ``wsspec serve wsspec.demo:build_app``.
"""

from __future__ import annotations

import peewee

from . import App
from .storage.peewee import PeeweeStorage

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
