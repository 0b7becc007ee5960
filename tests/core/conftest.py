"""Entities shared by the core's filter, option and in-memory storage tests.

``users`` 1--n ``posts`` 1--n ``comments``; ``users.manager_id`` references ``users``.
Entities are immutable, so the fixtures are session-scoped (Hypothesis tests use them).
"""

from __future__ import annotations

import pytest

from wsspec_core import Column, ColumnType, Entity, EntityRegistry, Relation, RelationKind

USERS = Entity(
    name="users",
    schema="public",
    table_name="users",
    columns=[
        Column(
            name="id", type=ColumnType.INTEGER, nullable=False, primary_key=True, has_default=True
        ),
        Column(name="name", type=ColumnType.TEXT, nullable=False),
        Column(name="email", type=ColumnType.TEXT),
        Column(name="age", type=ColumnType.INTEGER),
        Column(name="score", type=ColumnType.FLOAT),
        Column(name="active", type=ColumnType.BOOLEAN),
        Column(name="born", type=ColumnType.DATE),
        Column(name="seen", type=ColumnType.DATETIME),
        Column(name="status", type=ColumnType.TEXT, nullable=False, has_default=True),
        Column(name="manager_id", type=ColumnType.INTEGER),
    ],
    relations=[
        Relation(
            name="posts",
            kind=RelationKind.HAS_MANY,
            target="blog.posts",
            local_column="id",
            remote_column="user_id",
        ),
        Relation(
            name="manager",
            kind=RelationKind.BELONGS_TO,
            target="public.users",
            local_column="manager_id",
            remote_column="id",
        ),
    ],
)

POSTS = Entity(
    name="posts",
    schema="blog",
    table_name="posts",
    columns=[
        Column(
            name="id", type=ColumnType.INTEGER, nullable=False, primary_key=True, has_default=True
        ),
        Column(name="user_id", type=ColumnType.INTEGER, nullable=False),
        Column(name="title", type=ColumnType.TEXT, nullable=False),
        Column(name="body", type=ColumnType.TEXT),
    ],
    relations=[
        Relation(
            name="user",
            kind=RelationKind.BELONGS_TO,
            target="public.users",
            local_column="user_id",
            remote_column="id",
        ),
        Relation(
            name="comments",
            kind=RelationKind.HAS_MANY,
            target="comments",
            local_column="id",
            remote_column="post_id",
        ),
    ],
)

COMMENTS = Entity(
    name="comments",
    table_name="comments",
    columns=[
        Column(
            name="id", type=ColumnType.INTEGER, nullable=False, primary_key=True, has_default=True
        ),
        Column(name="post_id", type=ColumnType.INTEGER, nullable=False),
        Column(name="text", type=ColumnType.TEXT, nullable=False),
    ],
    relations=[
        Relation(
            name="post",
            kind=RelationKind.BELONGS_TO,
            target="blog.posts",
            local_column="post_id",
            remote_column="id",
        ),
    ],
)

#: A text primary key and no relations.
TAGS = Entity(
    name="tags",
    table_name="tags",
    columns=[
        Column(name="slug", type=ColumnType.TEXT, nullable=False, primary_key=True),
        Column(name="label", type=ColumnType.TEXT),
    ],
)


def make_registry() -> EntityRegistry:
    registry = EntityRegistry([USERS, POSTS, COMMENTS, TAGS])
    registry.validate()
    return registry


@pytest.fixture(scope="session")
def users() -> Entity:
    return USERS


@pytest.fixture(scope="session")
def posts() -> Entity:
    return POSTS


@pytest.fixture(scope="session")
def comments() -> Entity:
    return COMMENTS


@pytest.fixture(scope="session")
def tags() -> Entity:
    return TAGS


@pytest.fixture(scope="session")
def registry() -> EntityRegistry:
    return make_registry()
