"""The entities the conformance tests use: the demo's users and posts, plus one entity
with every column type (so the strategies are exercised on every type)."""

from __future__ import annotations

from wsspec_core import Column, ColumnType, Entity, Relation, RelationKind

USERS = Entity(
    name="users",
    schema="public",
    table_name="users",
    columns=(
        Column(
            name="id", type=ColumnType.INTEGER, nullable=False, primary_key=True, has_default=True
        ),
        Column(name="name", type=ColumnType.TEXT, nullable=False),
        Column(name="email", type=ColumnType.TEXT, nullable=True),
        Column(name="status", type=ColumnType.TEXT, nullable=True),
    ),
    relations=(
        Relation(
            name="posts",
            kind=RelationKind.HAS_MANY,
            target="public.posts",
            local_column="id",
            remote_column="user_id",
        ),
    ),
)

POSTS = Entity(
    name="posts",
    schema="public",
    table_name="posts",
    columns=(
        Column(
            name="id", type=ColumnType.INTEGER, nullable=False, primary_key=True, has_default=True
        ),
        Column(name="title", type=ColumnType.TEXT, nullable=False),
        Column(name="content", type=ColumnType.TEXT, nullable=True),
        Column(name="user_id", type=ColumnType.INTEGER, nullable=True),
    ),
    relations=(
        Relation(
            name="user",
            kind=RelationKind.BELONGS_TO,
            target="public.users",
            local_column="user_id",
            remote_column="id",
        ),
    ),
)

EVERYTHING = Entity(
    name="things",
    table_name="things",
    columns=(
        Column(name="code", type=ColumnType.TEXT, nullable=False, primary_key=True),
        Column(name="count", type=ColumnType.INTEGER, nullable=False),
        Column(name="ratio", type=ColumnType.FLOAT),
        Column(name="flag", type=ColumnType.BOOLEAN),
        Column(name="day", type=ColumnType.DATE),
        Column(name="at", type=ColumnType.DATETIME, has_default=True),
    ),
)

ALL = (USERS, POSTS, EVERYTHING)
