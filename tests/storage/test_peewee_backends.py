"""Every storage operation, option and error of PeeweeStorage, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from wsspec_core import (
    NO_FILTERS,
    ColumnType,
    Create,
    Delete,
    EntityRegistry,
    FilterSpec,
    Limits,
    ListResult,
    PreloadSpec,
    QueryOptions,
    ReadList,
    ReadOne,
    Relation,
    RelationKind,
    Selection,
    SortSpec,
    StorageErrorKind,
    StorageFailure,
    Update,
    compile_filters,
    compile_read,
    compile_selection,
)

from .conftest import Backend

USERS = "public.users"
POSTS = "blog.posts"
COMMENTS = "comments"


def create(backend: Backend, name: str, *rows: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = backend.storage.execute(
        Create(entity=backend.entity(name), rows=tuple(rows))
    )
    return result


def read(backend: Backend, name: str, **options: Any) -> ListResult:
    entity = backend.entity(name)
    registry = EntityRegistry(backend.storage.entities())
    op = compile_read(entity, QueryOptions(**options), registry, Limits())
    result: ListResult = backend.storage.execute(op)
    return result


def ids(result: ListResult) -> list[Any]:
    return [row["id"] for row in result.rows]


def filt(column: str, operator: str, value: Any = None, logic: str = "AND") -> FilterSpec:
    return FilterSpec(column=column, operator=operator, value=value, logic_operator=logic)


def failure(backend: Backend, op: Any) -> Any:
    with pytest.raises(StorageFailure) as caught:
        backend.storage.execute(op)
    return caught.value.error


# --- entities -------------------------------------------------------------------------


def test_entities_describe_models(backend: Backend) -> None:
    users = backend.entity(USERS)
    assert (users.schema, users.name, users.table_name) == ("public", "users", "tbl_users")
    cols = users.columns_by_name
    assert cols["id"].primary_key and cols["id"].has_default and not cols["id"].nullable
    assert cols["name"].type is ColumnType.TEXT and not cols["name"].nullable
    assert cols["email"].nullable and not cols["email"].has_default
    assert cols["score"].type is ColumnType.FLOAT
    assert cols["active"].type is ColumnType.BOOLEAN
    assert cols["born"].type is ColumnType.DATE
    assert cols["seen"].type is ColumnType.DATETIME
    assert cols["status"].has_default  # Python-side default
    assert cols["rank"].has_default  # SQL DEFAULT constraint
    assert not cols["age"].has_default  # a CHECK constraint is no default
    assert cols["manager_id"].type is ColumnType.INTEGER
    assert users.relations_by_name["posts"] == Relation(
        name="posts",
        kind=RelationKind.HAS_MANY,
        target=POSTS,
        local_column="id",
        remote_column="user_id",
    )
    assert users.relations_by_name["manager"].kind is RelationKind.BELONGS_TO
    posts = backend.entity(POSTS)
    assert posts.relations_by_name["user"] == Relation(
        name="user",
        kind=RelationKind.BELONGS_TO,
        target=USERS,
        local_column="user_id",
        remote_column="id",
    )
    assert backend.entity("tags").primary_key.name == "slug"
    EntityRegistry(backend.storage.entities()).validate()


def test_relations_only_between_registered_models(backend: Backend) -> None:
    from wsspec.storage.peewee import PeeweeStorage

    storage = PeeweeStorage(backend.db)
    posts = storage.register("posts", backend.models["posts"])
    assert "user" not in posts.relations_by_name  # users not registered (yet)
    storage.register("users", backend.models["users"])
    by_name = {e.name: e for e in storage.entities()}
    assert by_name["posts"].relations_by_name["user"].target == "users"
    assert by_name["users"].relations_by_name["posts"].target == "posts"
    with pytest.raises(ValueError):
        storage.register("users", backend.models["users"])


# --- create ---------------------------------------------------------------------------


def test_create_returns_stored_rows_with_defaults(backend: Backend) -> None:
    rows = create(
        backend,
        USERS,
        {"name": "Ann", "email": "ann@x", "age": 30, "active": True},
        {"name": "Bob", "status": "away", "rank": 1},
    )
    assert [r["name"] for r in rows] == ["Ann", "Bob"]
    assert rows[0]["id"] < rows[1]["id"]
    assert rows[0]["status"] == "active" and rows[0]["rank"] == 7
    assert rows[1]["status"] == "away" and rows[1]["rank"] == 1
    assert rows[0]["active"] is True and rows[1]["active"] is None
    assert set(rows[0]) == set(backend.entity(USERS).columns_by_name)


def test_create_with_text_key(backend: Backend) -> None:
    assert create(backend, "tags", {"slug": "a", "label": "A"}) == [{"slug": "a", "label": "A"}]
    error = failure(backend, Create(entity=backend.entity("tags"), rows=({"slug": "a"},)))
    assert error.kind is StorageErrorKind.CONSTRAINT and error.column == "slug"


def test_types_round_trip(backend: Backend) -> None:
    seen = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)
    row = create(
        backend,
        USERS,
        {
            "name": "T",
            "score": 2.5,
            "active": False,
            "born": datetime.date(1999, 12, 31),
            "seen": seen,
        },
    )[0]
    again = backend.storage.execute(
        ReadOne(
            entity=backend.entity(USERS),
            key=row["id"],
            filters=NO_FILTERS,
            selection=Selection(columns=("score", "active", "born", "seen")),
        )
    )
    assert again == {
        "score": 2.5,
        "active": False,
        "born": datetime.date(1999, 12, 31),
        "seen": seen,
    }
    assert type(again["active"]) is bool
    whole = datetime.datetime(2024, 1, 1, 0, 0)
    created = create(backend, USERS, {"name": "W", "seen": whole})[0]
    assert created["seen"] == whole
    found = read(backend, USERS, filters=(filt("seen", "eq", "2024-01-01T00:00:00Z"),))
    assert ids(found) == [created["id"]]
    found = read(backend, USERS, filters=(filt("seen", "gt", "2024-01-01T00:00:00Z"),))
    assert ids(found) == [row["id"]]


def test_batch_create_is_atomic(backend: Backend) -> None:
    create(backend, USERS, {"name": "Ann", "email": "ann@x"})
    error = failure(
        backend,
        Create(
            entity=backend.entity(USERS),
            rows=({"name": "New", "email": "new@x"}, {"name": "Dup", "email": "ann@x"}),
        ),
    )
    assert error.kind is StorageErrorKind.CONSTRAINT
    assert error.column == "email"
    assert error.message == "unique constraint failed on column email"
    assert [r["name"] for r in read(backend, USERS).rows] == ["Ann"]


def test_not_null_foreign_key_and_check_violations(backend: Backend) -> None:
    users = backend.entity(USERS)
    error = failure(backend, Create(entity=users, rows=({"name": None},)))
    assert (error.kind, error.column) == (StorageErrorKind.CONSTRAINT, "name")
    assert error.message == "not-null constraint failed on column name"
    error = failure(
        backend, Create(entity=backend.entity(POSTS), rows=({"user_id": 999, "title": "x"},))
    )
    assert error.kind is StorageErrorKind.CONSTRAINT
    assert error.message.startswith("foreign key constraint failed")
    assert error.column in (None, "user_id")  # SQLite does not say which column
    error = failure(backend, Create(entity=users, rows=({"name": "x", "age": -1},)))
    assert error.kind is StorageErrorKind.CONSTRAINT
    assert error.message.startswith("check constraint failed")
    for message in (error.message,):
        assert "INSERT" not in message and "tbl_" not in message
    assert read(backend, USERS).total == 0


# --- reads ----------------------------------------------------------------------------


@pytest.fixture
def people(backend: Backend) -> list[dict[str, Any]]:
    return create(
        backend,
        USERS,
        {"name": "anna", "email": "a@x", "age": 30, "score": 1.5, "active": True},
        {"name": "Bob", "email": None, "age": None, "score": 2.0, "active": False},
        {"name": "carl", "email": "c@x", "age": 25, "score": None, "active": None},
        {"name": "Émile", "email": "e@x", "age": 30, "score": -1.0, "active": True},
        {"name": "dan_100%", "email": "d@x", "age": 41, "score": 0.0, "active": False},
    )


def test_read_one(backend: Backend, people: list[dict[str, Any]]) -> None:
    users = backend.entity(USERS)
    anna = people[0]
    selection = Selection(columns=("id", "name"))
    found = backend.storage.execute(
        ReadOne(entity=users, key=anna["id"], filters=NO_FILTERS, selection=selection)
    )
    assert found == {"id": anna["id"], "name": "anna"}
    hidden = compile_filters(users, [filt("age", "gt", 40)])
    assert (
        backend.storage.execute(
            ReadOne(entity=users, key=anna["id"], filters=hidden, selection=selection)
        )
        is None
    )
    assert (
        backend.storage.execute(
            ReadOne(entity=users, key=12345, filters=NO_FILTERS, selection=selection)
        )
        is None
    )


def test_filters_and_or_groups(backend: Backend, people: list[dict[str, Any]]) -> None:
    pid = [p["id"] for p in people]
    # (age = 30 OR age = 25) AND (active = true OR active is null)
    result = read(
        backend,
        USERS,
        filters=(
            filt("age", "eq", 30),
            filt("age", "eq", "25", "or"),
            filt("active", "eq", True),
            filt("active", "is_null", None, "OR"),
        ),
    )
    assert ids(result) == [pid[0], pid[2], pid[3]]
    assert result.total == 3


def test_null_semantics(backend: Backend, people: list[dict[str, Any]]) -> None:
    pid = [p["id"] for p in people]
    assert ids(read(backend, USERS, filters=(filt("age", "neq", 30),))) == [pid[1], pid[2], pid[4]]
    assert ids(read(backend, USERS, filters=(filt("age", "not_in", [30, 25]),))) == [
        pid[1],
        pid[4],
    ]
    assert ids(read(backend, USERS, filters=(filt("age", "in", []),))) == []
    assert read(backend, USERS, filters=(filt("age", "not_in", []),)).total == 5
    assert ids(read(backend, USERS, filters=(filt("age", "eq", None),))) == [pid[1]]
    assert read(backend, USERS, filters=(filt("age", "neq", None),)).total == 4
    assert ids(read(backend, USERS, filters=(filt("age", "lt", 100),))) == [
        pid[0],
        pid[2],
        pid[3],
        pid[4],
    ]
    assert ids(read(backend, USERS, filters=(filt("age", "between", [25, 30]),))) == [
        pid[0],
        pid[2],
        pid[3],
    ]
    assert ids(read(backend, USERS, filters=(filt("email", "like", "%"),))) == [
        pid[0],
        pid[2],
        pid[3],
        pid[4],
    ]


def test_like_and_ilike(backend: Backend, people: list[dict[str, Any]]) -> None:
    pid = [p["id"] for p in people]

    def names(op: str, pattern: str) -> list[Any]:
        return ids(read(backend, USERS, filters=(filt("name", op, pattern),)))

    assert names("like", "b%") == []
    assert names("like", "B%") == [pid[1]]
    assert names("ilike", "b%") == [pid[1]]
    assert names("ilike", "%A%") == [pid[0], pid[2], pid[4]]
    assert names("like", "_ob") == [pid[1]]
    assert names("like", "dan\\_%") == [pid[4]]
    assert names("like", "dan_1") == []
    assert names("like", "%\\%") == [pid[4]]
    assert names("like", "%0%") == [pid[4]]
    assert names("like", "[ab]%") == []  # GLOB syntax is not LIKE syntax
    assert names("like", "*") == []
    assert names("like", "?ob") == []
    assert names("ilike", "ÉMILE") == [pid[3]]  # ASCII letters fold; É compares exactly


def test_like_literal_glob_characters(backend: Backend) -> None:
    rows = create(
        backend,
        USERS,
        {"name": "a*b"},
        {"name": "a?b"},
        {"name": "a[b]"},
        {"name": "a\\b"},
        {"name": "axb"},
    )
    rid = [r["id"] for r in rows]

    def names(op: str, pattern: str) -> list[Any]:
        return ids(read(backend, USERS, filters=(filt("name", op, pattern),)))

    assert names("like", "a*b") == [rid[0]]
    assert names("like", "a?b") == [rid[1]]
    assert names("ilike", "A[B]") == [rid[2]]
    assert names("like", "a\\\\b") == [rid[3]]
    assert names("like", "a_b") == [rid[0], rid[1], rid[3], rid[4]]


def test_sort_nulls_collation_and_ties(backend: Backend, people: list[dict[str, Any]]) -> None:
    pid = [p["id"] for p in people]
    asc = read(backend, USERS, sort=(SortSpec(column="age"),))
    assert ids(asc) == [pid[1], pid[2], pid[0], pid[3], pid[4]]  # NULL first, ties by id
    desc = read(backend, USERS, sort=(SortSpec(column="age", direction="desc"),))
    assert ids(desc) == [pid[4], pid[0], pid[3], pid[2], pid[1]]  # NULL last, ties by id
    by_name = read(backend, USERS, sort=(SortSpec(column="name"),))
    assert [r["name"] for r in by_name.rows] == sorted(p["name"] for p in people)
    assert [r["name"] for r in by_name.rows] == ["Bob", "anna", "carl", "dan_100%", "Émile"]
    gt = read(backend, USERS, filters=(filt("name", "gt", "Z"),), sort=(SortSpec(column="name"),))
    assert [r["name"] for r in gt.rows] == ["anna", "carl", "dan_100%", "Émile"]
    two = read(
        backend,
        USERS,
        sort=(SortSpec(column="active", direction="desc"), SortSpec(column="score")),
    )
    assert ids(two) == [pid[3], pid[0], pid[4], pid[1], pid[2]]


def test_limit_offset_total(backend: Backend, people: list[dict[str, Any]]) -> None:
    pid = [p["id"] for p in people]
    page = read(backend, USERS, limit=2, offset=1)
    assert ids(page) == pid[1:3] and page.total == 5
    page = read(backend, USERS, limit=2, offset=10)
    assert page.rows == [] and page.total == 5
    page = read(backend, USERS, limit=0)
    assert page.rows == [] and page.total == 5
    page = read(backend, USERS, limit=10, filters=(filt("age", "eq", 30),))
    assert page.total == 2


def test_columns_selection(backend: Backend, people: list[dict[str, Any]]) -> None:
    result = read(backend, USERS, columns=("name", "age"), limit=1)
    assert result.rows == [{"name": "anna", "age": 30}]


@pytest.fixture
def blog(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    users = create(backend, USERS, {"name": "u1"}, {"name": "u2"}, {"name": "u3"})
    manager = users[0]["id"]
    backend.storage.execute(
        Update(
            entity=backend.entity(USERS),
            key=users[1]["id"],
            changes={"manager_id": manager},
            filters=NO_FILTERS,
        )
    )
    posts = create(
        backend,
        POSTS,
        {"user_id": users[1]["id"], "title": "p1"},
        {"user_id": users[0]["id"], "title": "p2"},
        {"user_id": users[1]["id"], "title": "p3"},
    )
    comments = create(
        backend,
        COMMENTS,
        {"post_id": posts[2]["id"], "text": "c1"},
        {"post_id": posts[0]["id"], "text": "c2"},
        {"post_id": posts[2]["id"], "text": "c3"},
    )
    return {"users": users, "posts": posts, "comments": comments}


class CountingConnection:
    def __init__(self, conn: Any, log: list[str]) -> None:
        self.conn = conn
        self.log = log

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.log.append(sql)
        return self.conn.execute(sql, params)


def count_statements(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []
    original = backend.storage._connection
    monkeypatch.setattr(backend.storage, "_connection", lambda: CountingConnection(original(), log))
    return log


def test_preloads_nested_one_query_per_relation_level(
    backend: Backend, blog: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = count_statements(backend, monkeypatch)
    result = read(
        backend,
        USERS,
        columns=("name",),
        preload=(
            PreloadSpec(relation="posts", columns=("title",)),
            PreloadSpec(relation="posts.comments", columns=("text",)),
            PreloadSpec(relation="manager", columns=("name",)),
        ),
    )
    # users (the page holds every row: no COUNT), posts, comments, manager.
    assert len(log) == 4
    assert result.rows[1] == {
        "name": "u2",
        "posts": [
            {"title": "p1", "comments": [{"text": "c2"}]},
            {"title": "p3", "comments": [{"text": "c1"}, {"text": "c3"}]},
        ],
        "manager": {"name": "u1"},
    }
    assert result.rows[0] == {
        "name": "u1",
        "posts": [{"title": "p2", "comments": []}],
        "manager": None,
    }
    assert result.rows[2] == {"name": "u3", "posts": [], "manager": None}


def test_preload_belongs_to_all_columns_and_read_one(
    backend: Backend, blog: dict[str, list[dict[str, Any]]]
) -> None:
    posts = backend.entity(POSTS)
    registry = EntityRegistry(backend.storage.entities())
    selection = compile_selection(
        posts,
        QueryOptions(columns=("title",), preload=(PreloadSpec(relation="user"),)),
        registry,
    )
    post = blog["posts"][1]
    found = backend.storage.execute(
        ReadOne(entity=posts, key=post["id"], filters=NO_FILTERS, selection=selection)
    )
    assert found == {"title": "p2", "user": blog["users"][0] | {"manager_id": None}}


# --- update and delete ------------------------------------------------------------------


def test_update(backend: Backend, people: list[dict[str, Any]]) -> None:
    users = backend.entity(USERS)
    anna = people[0]
    after = backend.storage.execute(
        Update(entity=users, key=anna["id"], changes={"age": 31, "email": None}, filters=NO_FILTERS)
    )
    assert after == {**anna, "age": 31, "email": None}
    guarded = compile_filters(users, [filt("age", "gt", 40)])
    assert (
        backend.storage.execute(
            Update(entity=users, key=anna["id"], changes={"age": 99}, filters=guarded)
        )
        is None
    )
    assert (
        backend.storage.execute(
            Update(entity=users, key=99999, changes={"age": 99}, filters=NO_FILTERS)
        )
        is None
    )
    assert read(backend, USERS, filters=(filt("age", "eq", 99),)).total == 0
    error = failure(
        backend,
        Update(entity=users, key=anna["id"], changes={"email": "c@x"}, filters=NO_FILTERS),
    )
    assert (error.kind, error.column) == (StorageErrorKind.CONSTRAINT, "email")


def test_delete(backend: Backend, people: list[dict[str, Any]]) -> None:
    users = backend.entity(USERS)
    bob = people[1]
    guarded = compile_filters(users, [filt("active", "eq", True)])
    assert backend.storage.execute(Delete(entity=users, key=bob["id"], filters=guarded)) is None
    gone = backend.storage.execute(Delete(entity=users, key=bob["id"], filters=NO_FILTERS))
    assert gone == bob
    assert backend.storage.execute(Delete(entity=users, key=bob["id"], filters=NO_FILTERS)) is None
    assert read(backend, USERS).total == 4


def test_delete_referenced_row_is_a_constraint_error(
    backend: Backend, blog: dict[str, list[dict[str, Any]]]
) -> None:
    error = failure(
        backend,
        Delete(entity=backend.entity(USERS), key=blog["users"][1]["id"], filters=NO_FILTERS),
    )
    assert error.kind is StorageErrorKind.CONSTRAINT
    assert read(backend, USERS).total == 3


def test_other_errors_are_generic(backend: Backend) -> None:
    users = backend.entity(USERS)
    backend.db.drop_tables([backend.models["comments"], backend.models["posts"]])
    backend.db.drop_tables([backend.models["users"]])
    try:
        error = failure(
            backend,
            ReadList(
                entity=users,
                filters=NO_FILTERS,
                sort=(),
                limit=10,
                offset=0,
                selection=Selection(columns=("id",)),
            ),
        )
        assert error.kind is StorageErrorKind.OTHER
        assert error.message == "internal storage error"
        # The connection is still usable afterwards.
        assert create(backend, "tags", {"slug": "ok"})[0]["slug"] == "ok"
    finally:
        backend.db.create_tables(list(backend.models.values()))


def test_values_are_bound_never_interpolated(backend: Backend) -> None:
    evil = "x'); DROP TABLE tbl_users; --"
    created = create(backend, USERS, {"name": evil})[0]
    result = read(
        backend,
        USERS,
        filters=(filt("name", "eq", evil), filt("name", "like", evil + "%", "or")),
    )
    assert ids(result) == [created["id"]]
    for compiled in backend.storage._compiler.statements():
        assert "DROP" not in compiled.sql


def test_threads_read_while_one_writes(backend: Backend) -> None:
    import threading

    users = backend.entity(USERS)
    create(backend, USERS, *({"name": f"u{i}"} for i in range(30)))
    errors: list[BaseException] = []
    done = threading.Event()
    listing = ReadList(
        entity=users,
        filters=NO_FILTERS,
        sort=(),
        limit=10,
        offset=0,
        selection=Selection(columns=("id", "age")),
    )

    def reader() -> None:
        try:
            while not done.is_set():
                assert len(backend.storage.execute(listing).rows) == 10
        except BaseException as exc:
            errors.append(exc)
        finally:
            backend.storage.close()

    def writer() -> None:
        try:
            for i in range(60):
                backend.storage.execute(
                    Update(entity=users, key=1 + i % 30, changes={"age": i}, filters=NO_FILTERS)
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            backend.storage.close()

    first = read(backend, USERS, limit=1).rows[0]["id"]
    assert first >= 1
    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert read(backend, USERS, filters=(filt("age", "is_not_null"),)).total == 30


def test_never_blocks_only_point_reads_without_preload_on_sqlite(backend: Backend) -> None:
    users = backend.entity(USERS)
    registry = EntityRegistry(backend.storage.entities())
    plain = compile_selection(users, QueryOptions(), registry)
    preloaded = compile_selection(
        users, QueryOptions(preload=(PreloadSpec(relation="posts"),)), registry
    )
    point = ReadOne(entity=users, key=1, filters=NO_FILTERS, selection=plain)
    sqlite = backend.kind == "sqlite"
    assert backend.storage.never_blocks(point) is sqlite
    assert not backend.storage.never_blocks(
        ReadOne(entity=users, key=1, filters=NO_FILTERS, selection=preloaded)
    )
    assert not backend.storage.never_blocks(compile_read(users, QueryOptions(), registry, Limits()))
    assert not backend.storage.never_blocks(Create(entity=users, rows=({"name": "x"},)))
    assert not backend.storage.never_blocks(Delete(entity=users, key=1, filters=NO_FILTERS))
