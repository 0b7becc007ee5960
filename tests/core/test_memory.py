"""The in-memory storage backend: the reference semantics for every storage adapter."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsspec_core import (
    NO_FILTERS,
    Column,
    ColumnType,
    Create,
    Delete,
    Entity,
    EntityRegistry,
    FilterSpec,
    Limits,
    ListResult,
    MemoryStorage,
    PreloadSpec,
    QueryOptions,
    ReadList,
    ReadOne,
    Relation,
    RelationKind,
    Selection,
    SortKey,
    SortSpec,
    StorageErrorKind,
    StorageFailure,
    Update,
    compile_filters,
    compile_read,
    compile_selection,
    matches,
)

LIMITS = Limits(default_page_size=100, max_page_size=1000)


@pytest.fixture
def store(registry: EntityRegistry) -> MemoryStorage:
    return MemoryStorage(registry, defaults={"public.users": {"status": "active"}})


@pytest.fixture
def blog(store: MemoryStorage) -> MemoryStorage:
    store.insert(
        "public.users",
        [
            {"name": "ann", "age": 30},
            {"name": "bob", "age": None, "manager_id": 1},
            {"name": "cy", "age": 25, "manager_id": 1},
        ],
    )
    store.insert(
        "blog.posts",
        [
            {"user_id": 1, "title": "first"},
            {"user_id": 2, "title": "second"},
            {"user_id": 1, "title": "third"},
        ],
    )
    store.insert("comments", [{"post_id": 3, "text": "nice"}, {"post_id": 1, "text": "ok"}])
    return store


def read(
    store: MemoryStorage,
    entity: Entity,
    registry: EntityRegistry,
    **options: Any,
) -> ListResult:
    operation = compile_read(entity, QueryOptions(**options), registry, LIMITS)
    result = store.execute(operation)
    assert isinstance(result, ListResult)
    return result


def constraint(store: MemoryStorage, operation: Any) -> Any:
    with pytest.raises(StorageFailure) as info:
        store.execute(operation)
    assert info.value.error.kind is StorageErrorKind.CONSTRAINT
    return info.value.error


def all_columns(entity: Entity) -> Selection:
    return Selection(columns=tuple(c.name for c in entity.columns))


# --- create ---------------------------------------------------------------------------------


def test_create_fills_keys_defaults_and_nulls(store: MemoryStorage, users: Entity) -> None:
    result = store.execute(Create(entity=users, rows=({"name": "ann"}, {"name": "bob"})))
    assert result == [
        {
            "id": 1,
            "name": "ann",
            "email": None,
            "age": None,
            "score": None,
            "active": None,
            "born": None,
            "seen": None,
            "status": "active",
            "manager_id": None,
        },
        {**result[0], "id": 2, "name": "bob"},
    ]
    assert store.rows("public.users") == result


def test_generated_keys_follow_the_largest_and_are_not_reused(
    store: MemoryStorage, users: Entity
) -> None:
    store.insert("public.users", [{"id": 10, "name": "a"}])
    assert store.insert("public.users", [{"name": "b"}])[0]["id"] == 11
    store.execute(Delete(entity=users, key=11, filters=NO_FILTERS))
    assert store.insert("public.users", [{"name": "c"}])[0]["id"] == 12


def test_callable_defaults_and_undeclared_defaults(registry: EntityRegistry) -> None:
    counter = itertools.count(1)
    store = MemoryStorage(
        registry, defaults={"public.users": {"status": lambda: f"s{next(counter)}"}}
    )
    rows = store.insert(
        "public.users", [{"name": "a"}, {"name": "b"}, {"name": "c", "status": "x"}]
    )
    assert [r["status"] for r in rows] == ["s1", "s2", "x"]
    # Without a declared default a has_default column is stored as None.
    bare = MemoryStorage(registry)
    assert bare.insert("public.users", [{"name": "a"}])[0]["status"] is None


def test_duplicate_key_is_a_unique_constraint(store: MemoryStorage, users: Entity) -> None:
    store.insert("public.users", [{"id": 1, "name": "a"}])
    error = constraint(store, Create(entity=users, rows=({"id": 1, "name": "b"},)))
    assert error.column == "id"
    assert "UNIQUE" in error.message
    error = constraint(
        store, Create(entity=users, rows=({"id": 5, "name": "b"}, {"id": 5, "name": "c"}))
    )
    assert error.column == "id"
    assert [r["id"] for r in store.rows("public.users")] == [1]


@pytest.mark.parametrize(
    ("row", "column"),
    [({}, "name"), ({"name": None}, "name"), ({"name": "a", "status": None}, "status")],
)
def test_not_null_constraint(
    store: MemoryStorage, users: Entity, row: dict[str, Any], column: str
) -> None:
    error = constraint(store, Create(entity=users, rows=(row,)))
    assert error.column == column
    assert "NOT NULL" in error.message


def test_text_key_is_required(store: MemoryStorage, tags: Entity) -> None:
    assert constraint(store, Create(entity=tags, rows=({"label": "x"},))).column == "slug"
    assert store.execute(Create(entity=tags, rows=({"slug": "py"},))) == [
        {"slug": "py", "label": None}
    ]


def test_foreign_key_constraint_on_create(blog: MemoryStorage, posts: Entity) -> None:
    error = constraint(blog, Create(entity=posts, rows=({"user_id": 99, "title": "x"},)))
    assert error.column == "user_id"
    assert "FOREIGN KEY" in error.message


def test_batch_create_is_atomic(blog: MemoryStorage, posts: Entity) -> None:
    before = blog.rows("blog.posts")
    batch = ({"user_id": 1, "title": "ok"}, {"user_id": 99, "title": "bad"})
    constraint(blog, Create(entity=posts, rows=batch))
    assert blog.rows("blog.posts") == before
    # The generated keys were not consumed either.
    assert blog.insert("blog.posts", [{"user_id": 1, "title": "x"}])[0]["id"] == 4


def test_batch_may_reference_its_own_earlier_rows(store: MemoryStorage, users: Entity) -> None:
    rows = store.execute(
        Create(entity=users, rows=({"name": "boss"}, {"name": "worker", "manager_id": 1}))
    )
    assert rows[1]["manager_id"] == 1
    error = constraint(store, Create(entity=users, rows=({"name": "x", "manager_id": 7},)))
    assert error.column == "manager_id"


def test_has_many_relation_implies_a_foreign_key() -> None:
    parent = Entity(
        name="parent",
        table_name="parent",
        columns=[Column(name="id", type=ColumnType.INTEGER, primary_key=True, nullable=False)],
        relations=[
            Relation(
                name="kids",
                kind=RelationKind.HAS_MANY,
                target="kid",
                local_column="id",
                remote_column="parent_id",
            )
        ],
    )
    kid = Entity(
        name="kid",
        table_name="kid",
        columns=[
            Column(name="id", type=ColumnType.INTEGER, primary_key=True, nullable=False),
            Column(name="parent_id", type=ColumnType.INTEGER),
        ],
    )
    store = MemoryStorage(EntityRegistry([parent, kid]))
    store.insert("parent", [{"id": 1}])
    store.insert("kid", [{"parent_id": 1}, {"parent_id": None}])
    with pytest.raises(StorageFailure):
        store.insert("kid", [{"parent_id": 2}])
    with pytest.raises(StorageFailure):
        store.execute(Delete(entity=parent, key=1, filters=NO_FILTERS))


# --- read list ------------------------------------------------------------------------------


def test_read_list_filters_sorts_and_counts(
    blog: MemoryStorage, users: Entity, registry: EntityRegistry
) -> None:
    result = read(blog, users, registry, columns=("name", "age"), sort=(SortSpec(column="age"),))
    assert result.rows == [
        {"name": "bob", "age": None},
        {"name": "cy", "age": 25},
        {"name": "ann", "age": 30},
    ]
    assert result.total == 3
    desc = read(
        blog, users, registry, columns=("name",), sort=(SortSpec(column="age", direction="desc"),)
    )
    assert [r["name"] for r in desc.rows] == ["ann", "cy", "bob"]  # NULL last descending
    filtered = read(
        blog,
        users,
        registry,
        columns=("id",),
        filters=(FilterSpec(column="age", operator="neq", value=30),),
        limit=1,
    )
    assert filtered.rows == [{"id": 2}]  # neq keeps NULL; ties broken by key
    assert filtered.total == 2


def test_ties_are_broken_by_key_and_multi_key_sort(
    store: MemoryStorage, users: Entity, registry: EntityRegistry
) -> None:
    store.insert(
        "public.users",
        [
            {"id": 5, "name": "b", "age": 1},
            {"id": 2, "name": "a", "age": 1},
            {"id": 9, "name": "b", "age": 2},
            {"id": 1, "name": "b", "age": 1},
        ],
    )
    result = read(
        store,
        users,
        registry,
        columns=("id",),
        sort=(SortSpec(column="name", direction="desc"), SortSpec(column="age", direction="desc")),
    )
    assert [r["id"] for r in result.rows] == [9, 1, 5, 2]
    unsorted = read(store, users, registry, columns=("id",))
    assert [r["id"] for r in unsorted.rows] == [1, 2, 5, 9]


def test_limit_zero_and_offset(
    blog: MemoryStorage, users: Entity, registry: EntityRegistry
) -> None:
    none = read(blog, users, registry, limit=0)
    assert (none.rows, none.total) == ([], 3)
    page = read(blog, users, registry, columns=("id",), offset=1, limit=5)
    assert page.rows == [{"id": 2}, {"id": 3}]
    beyond = read(blog, users, registry, offset=10)
    assert (beyond.rows, beyond.total) == ([], 3)


def test_text_sorts_by_code_point(
    store: MemoryStorage, tags: Entity, registry: EntityRegistry
) -> None:
    store.insert("tags", [{"slug": s} for s in ["b", "B", "a", "é", "Z", "aa"]])
    result = read(store, tags, registry, columns=("slug",), sort=(SortSpec(column="slug"),))
    assert [r["slug"] for r in result.rows] == ["B", "Z", "a", "aa", "b", "é"]


# --- preloads -------------------------------------------------------------------------------


def test_preloads(blog: MemoryStorage, users: Entity, registry: EntityRegistry) -> None:
    result = read(
        blog,
        users,
        registry,
        columns=("id",),
        preload=(
            PreloadSpec(relation="posts", columns=("title",)),
            PreloadSpec(relation="posts.comments", columns=("text",)),
            PreloadSpec(relation="manager", columns=("name",)),
        ),
    )
    assert result.rows == [
        {
            "id": 1,
            "posts": [
                {"title": "first", "comments": [{"text": "ok"}]},
                {"title": "third", "comments": [{"text": "nice"}]},
            ],
            "manager": None,
        },
        {"id": 2, "posts": [{"title": "second", "comments": []}], "manager": {"name": "ann"}},
        {"id": 3, "posts": [], "manager": {"name": "ann"}},
    ]


def test_preload_belongs_to_with_all_columns(
    blog: MemoryStorage, posts: Entity, registry: EntityRegistry
) -> None:
    result = read(
        blog,
        posts,
        registry,
        columns=("title",),
        preload=(PreloadSpec(relation="user.manager", columns=("name",)),),
    )
    assert result.rows[1]["user"]["name"] == "bob"
    assert result.rows[1]["user"]["manager"] == {"name": "ann"}
    assert result.rows[0]["user"]["manager"] is None
    assert set(result.rows[0]["user"]) == {c.name for c in registry.get("public.users").columns} | {  # type: ignore[union-attr]
        "manager"
    }


def test_returned_rows_are_copies(
    blog: MemoryStorage, posts: Entity, registry: EntityRegistry
) -> None:
    result = read(blog, posts, registry, preload=(PreloadSpec(relation="user"),))
    # Posts 1 and 3 share their user: mutating one must not change the other or the store.
    result.rows[0]["user"]["name"] = "changed"
    result.rows[0]["title"] = "changed"
    assert result.rows[2]["user"]["name"] == "ann"
    again = read(blog, posts, registry, preload=(PreloadSpec(relation="user"),))
    assert again.rows[0]["title"] == "first"
    assert again.rows[0]["user"]["name"] == "ann"
    stored = blog.rows("blog.posts")
    stored[0]["title"] = "changed"
    assert blog.rows("blog.posts")[0]["title"] == "first"


# --- read one -------------------------------------------------------------------------------


def test_read_one(blog: MemoryStorage, users: Entity, registry: EntityRegistry) -> None:
    selection = compile_selection(
        users,
        QueryOptions(columns=("name",), preload=(PreloadSpec(relation="posts", columns=("id",)),)),
        registry,
    )
    found = blog.execute(ReadOne(entity=users, key=1, filters=NO_FILTERS, selection=selection))
    assert found == {"name": "ann", "posts": [{"id": 1}, {"id": 3}]}
    assert (
        blog.execute(ReadOne(entity=users, key=42, filters=NO_FILTERS, selection=selection)) is None
    )
    outside = compile_filters(users, [FilterSpec(column="name", operator="eq", value="bob")])
    assert blog.execute(ReadOne(entity=users, key=1, filters=outside, selection=selection)) is None


# --- update ---------------------------------------------------------------------------------


def test_update_changes_only_the_given_columns(blog: MemoryStorage, users: Entity) -> None:
    before = blog.rows("public.users")[0]
    after = blog.execute(
        Update(entity=users, key=1, changes={"age": 31, "email": "a@x"}, filters=NO_FILTERS)
    )
    assert after == {**before, "age": 31, "email": "a@x"}
    assert blog.rows("public.users")[0] == after


def test_update_honours_filters_and_missing_rows(blog: MemoryStorage, users: Entity) -> None:
    before = blog.rows("public.users")
    outside = compile_filters(users, [FilterSpec(column="age", operator="gt", value=100)])
    assert blog.execute(Update(entity=users, key=1, changes={"age": 1}, filters=outside)) is None
    assert (
        blog.execute(Update(entity=users, key=77, changes={"age": 1}, filters=NO_FILTERS)) is None
    )
    assert blog.rows("public.users") == before


def test_update_constraints(blog: MemoryStorage, users: Entity, posts: Entity) -> None:
    before = blog.rows("public.users")
    assert (
        constraint(
            blog, Update(entity=users, key=1, changes={"name": None}, filters=NO_FILTERS)
        ).column
        == "name"
    )
    assert (
        constraint(
            blog, Update(entity=users, key=1, changes={"manager_id": 9}, filters=NO_FILTERS)
        ).column
        == "manager_id"
    )
    assert (
        constraint(
            blog, Update(entity=posts, key=1, changes={"user_id": 9}, filters=NO_FILTERS)
        ).column
        == "user_id"
    )
    assert blog.rows("public.users") == before
    with pytest.raises(ValueError):
        blog.execute(Update(entity=users, key=1, changes={"id": 5}, filters=NO_FILTERS))
    # Pointing a row at itself is fine.
    assert blog.execute(Update(entity=users, key=1, changes={"manager_id": 1}, filters=NO_FILTERS))


# --- delete ---------------------------------------------------------------------------------


def test_delete_returns_the_row_before(blog: MemoryStorage, comments: Entity) -> None:
    before = blog.rows("comments")[0]
    assert blog.execute(Delete(entity=comments, key=1, filters=NO_FILTERS)) == before
    assert blog.execute(Delete(entity=comments, key=1, filters=NO_FILTERS)) is None
    assert [r["id"] for r in blog.rows("comments")] == [2]


def test_delete_honours_filters(blog: MemoryStorage, comments: Entity) -> None:
    outside = compile_filters(comments, [FilterSpec(column="text", operator="like", value="x%")])
    assert blog.execute(Delete(entity=comments, key=1, filters=outside)) is None
    assert len(blog.rows("comments")) == 2


def test_delete_of_a_referenced_row_is_refused(
    blog: MemoryStorage, users: Entity, posts: Entity
) -> None:
    error = constraint(blog, Delete(entity=posts, key=1, filters=NO_FILTERS))
    assert "FOREIGN KEY" in error.message
    constraint(blog, Delete(entity=users, key=1, filters=NO_FILTERS))
    assert len(blog.rows("blog.posts")) == 3
    # A row that only references itself can go.
    blog.insert("public.users", [{"id": 50, "name": "self", "manager_id": 50}])
    assert blog.execute(Delete(entity=users, key=50, filters=NO_FILTERS)) is not None


def test_execute_rejects_other_objects(store: MemoryStorage) -> None:
    with pytest.raises(TypeError):
        store.execute("read")  # type: ignore[arg-type]


# --- the central property: ReadList returns exactly what `matches` accepts, in order --------

THINGS = Entity(
    name="things",
    table_name="things",
    columns=[
        Column(
            name="id", type=ColumnType.INTEGER, primary_key=True, nullable=False, has_default=True
        ),
        Column(name="n", type=ColumnType.INTEGER),
        Column(name="t", type=ColumnType.TEXT),
        Column(name="x", type=ColumnType.FLOAT),
        Column(name="b", type=ColumnType.BOOLEAN),
    ],
)
THINGS_REGISTRY = EntityRegistry([THINGS])

values_by_column: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers(1, 30),
    "n": st.integers(-2, 2),
    "t": st.text(alphabet="aAb%_", max_size=3),
    "x": st.sampled_from([-1.5, 0.0, 0.5, 2.0]),
    "b": st.booleans(),
}
things = st.lists(
    st.fixed_dictionaries({c: st.none() | v for c, v in values_by_column.items() if c != "id"}),
    max_size=15,
)


@st.composite
def thing_filters(draw: st.DrawFn) -> FilterSpec:
    column = draw(st.sampled_from(["id", "n", "t", "x", "b"]))
    operators = [
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "not_in",
        "between",
        "is_null",
        "is_not_null",
    ]
    if column == "t":
        operators += ["like", "ilike"]
    operator = draw(st.sampled_from(operators))
    values = values_by_column[column]
    if operator in ("in", "not_in"):
        value: Any = draw(st.lists(values, max_size=3))
    elif operator == "between":
        value = [draw(values), draw(values)]
    elif operator in ("eq", "neq"):
        value = draw(st.none() | values)
    else:
        value = draw(values)
    return FilterSpec(
        column=column,
        operator=operator,
        value=value,
        logic_operator=draw(st.sampled_from(["AND", "OR"])),
    )


sorts = st.lists(
    st.builds(
        SortSpec,
        column=st.sampled_from(["n", "t", "x", "b", "id"]),
        direction=st.sampled_from(["asc", "desc"]),
    ),
    max_size=3,
)


def reference_order(sort: tuple[SortKey, ...]) -> Any:
    """An independent comparator: NULL smallest, each key in its direction, then id."""

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for key in sort:
            x, y = a[key.column], b[key.column]
            if x == y or (x is None and y is None):
                continue
            if x is None:
                result = -1
            elif y is None:
                result = 1
            else:
                result = -1 if x < y else 1
            return -result if key.descending else result
        return -1 if a["id"] < b["id"] else (1 if a["id"] > b["id"] else 0)

    return functools.cmp_to_key(compare)


@settings(max_examples=150, deadline=None)
@given(things, st.lists(thing_filters(), max_size=4), sorts, st.integers(0, 6), st.integers(0, 6))
def test_read_list_is_matches_then_sort_then_page(
    rows: list[dict[str, Any]],
    filter_specs: list[FilterSpec],
    sort_specs: list[SortSpec],
    limit: int,
    offset: int,
) -> None:
    store = MemoryStorage(THINGS_REGISTRY)
    stored = store.insert("things", rows)
    options = QueryOptions(
        filters=tuple(filter_specs), sort=tuple(sort_specs), limit=limit, offset=offset
    )
    operation = compile_read(THINGS, options, THINGS_REGISTRY, LIMITS)

    expected = sorted(
        (r for r in stored if matches(operation.filters, r)), key=reference_order(operation.sort)
    )
    result = store.execute(operation)
    assert result.total == len(expected)
    assert result.rows == expected[offset : offset + limit]

    # Paging through with a fixed page size visits exactly the same sequence.
    if limit > 0:
        pages: list[dict[str, Any]] = []
        for start in range(0, len(expected) + limit, limit):
            page = store.execute(
                ReadList(
                    entity=THINGS,
                    filters=operation.filters,
                    sort=operation.sort,
                    limit=limit,
                    offset=start,
                    selection=all_columns(THINGS),
                )
            )
            pages += page.rows
        assert pages == expected


@settings(max_examples=100, deadline=None)
@given(things, st.lists(thing_filters(), max_size=4), st.data())
def test_read_one_update_delete_honour_filters(
    rows: list[dict[str, Any]], filter_specs: list[FilterSpec], data: st.DataObject
) -> None:
    store = MemoryStorage(THINGS_REGISTRY)
    stored = store.insert("things", rows)
    filters = compile_filters(THINGS, filter_specs)
    key = data.draw(st.integers(0, len(stored) + 1))
    row = next((r for r in stored if r["id"] == key), None)
    inside = row is not None and matches(filters, row)
    got = store.execute(
        ReadOne(entity=THINGS, key=key, filters=filters, selection=all_columns(THINGS))
    )
    assert got == (row if inside else None)
    updated = store.execute(Update(entity=THINGS, key=key, changes={"n": 7}, filters=filters))
    assert updated == ({**row, "n": 7} if inside and row is not None else None)
    current = {**row, "n": 7} if inside and row is not None else row
    deleted = store.execute(Delete(entity=THINGS, key=key, filters=filters))
    assert deleted == (current if current is not None and matches(filters, current) else None)


def test_writes_never_change_a_table_a_reader_holds(blog: MemoryStorage, users: Entity) -> None:
    """Copy-on-write: a read running in another thread iterates a snapshot."""
    snapshot = blog._table(users)
    copied = {key: dict(row) for key, row in snapshot.items()}
    blog.insert("public.users", [{"name": "new"}])
    blog.execute(Update(entity=users, key=3, changes={"age": 99}, filters=NO_FILTERS))
    blog.execute(Delete(entity=users, key=4, filters=NO_FILTERS))
    assert snapshot == copied
    assert blog.rows("public.users")[2]["age"] == 99


def test_total_is_counted_up_to_the_count_cap(store: MemoryStorage, users: Entity) -> None:
    # Limits.max_count: as a database counting at most count_cap + 1 rows (issue 12).
    store.insert("public.users", [{"id": i, "name": f"u{i}"} for i in range(1, 31)])
    columns = Selection(columns=("id",))

    def listing(count_cap: int | None, limit: int = 5, offset: int = 0) -> ListResult:
        result = store.execute(
            ReadList(
                entity=users,
                filters=NO_FILTERS,
                sort=(),
                limit=limit,
                offset=offset,
                selection=columns,
                count_cap=count_cap,
            )
        )
        assert isinstance(result, ListResult)
        return result

    capped = listing(10)
    assert (capped.total, capped.total_exact, len(capped.rows)) == (11, False, 5)
    assert (listing(30).total, listing(30).total_exact) == (30, True)
    assert (listing(29).total, listing(29).total_exact) == (30, False)
    assert (listing(None).total, listing(None).total_exact) == (30, True)
    assert listing(35, offset=25).total == 30
