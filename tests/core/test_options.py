"""Validation of query options, record ids and record data (docs/protocol.md "Query options",
"Message-level mistakes")."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from wsspec_core import (
    Column,
    ColumnType,
    Condition,
    Entity,
    EntityRegistry,
    FilterGroup,
    Filters,
    FilterSpec,
    InvalidRequest,
    Limits,
    Operator,
    Preload,
    PreloadSpec,
    QueryOptions,
    SortKey,
    SortSpec,
    coerce_key,
    coerce_record,
    compile_read,
    compile_selection,
)

LIMITS = Limits(default_page_size=20, max_page_size=50)
USER_COLUMNS = (
    "id",
    "name",
    "email",
    "age",
    "score",
    "active",
    "born",
    "seen",
    "status",
    "manager_id",
)


def error_of(call: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kwargs)
    return info.value.error


# --- compile_selection ----------------------------------------------------------------------


def test_no_columns_means_every_column_in_entity_order(
    users: Entity, registry: EntityRegistry
) -> None:
    selection = compile_selection(users, QueryOptions(), registry)
    assert selection.columns == USER_COLUMNS
    assert selection.preload == ()
    # An empty list is the same as none (as in the Go original).
    assert compile_selection(users, QueryOptions(columns=()), registry).columns == USER_COLUMNS


def test_columns_are_returned_in_the_order_given_without_duplicates(
    users: Entity, registry: EntityRegistry
) -> None:
    options = QueryOptions(columns=("name", "id", "name", "age"))
    assert compile_selection(users, options, registry).columns == ("name", "id", "age")


def test_omit_columns(users: Entity, registry: EntityRegistry) -> None:
    options = QueryOptions(omit_columns=("email", "seen", "email"))
    expected = tuple(c for c in USER_COLUMNS if c not in ("email", "seen"))
    assert compile_selection(users, options, registry).columns == expected
    both = QueryOptions(columns=("name", "id", "email"), omit_columns=("email",))
    assert compile_selection(users, both, registry).columns == ("name", "id")


@pytest.mark.parametrize(
    "options",
    [
        QueryOptions(omit_columns=USER_COLUMNS),
        QueryOptions(columns=("name", "id"), omit_columns=("id", "name", "id")),
    ],
)
def test_omitting_every_column_is_refused(
    users: Entity, registry: EntityRegistry, options: QueryOptions
) -> None:
    """A selection of no column cannot be read (it was ``SELECT FROM`` and an internal
    storage error): the request is refused with what it omitted."""
    error = error_of(compile_selection, users, options, registry)
    assert error.code == "invalid_options"
    assert error.details == {"omit_columns": list(options.omit_columns)}
    assert "no column" in error.message


@pytest.mark.parametrize(
    "options",
    [
        QueryOptions(columns=("id", "nope")),
        QueryOptions(omit_columns=("nope",)),
        QueryOptions(columns=("posts",)),
    ],
)
def test_unknown_columns(users: Entity, registry: EntityRegistry, options: QueryOptions) -> None:
    error = error_of(compile_selection, users, options, registry)
    assert error.code == "invalid_column"
    assert error.details == {"column": (options.columns or options.omit_columns)[-1]}


def test_preload_relation(users: Entity, posts: Entity, registry: EntityRegistry) -> None:
    options = QueryOptions(preload=(PreloadSpec(relation="posts", columns=("title", "id")),))
    selection = compile_selection(users, options, registry)
    assert selection.preload == (Preload(relation="posts", target=posts, columns=("title", "id")),)


def test_preload_paths_share_prefixes(
    users: Entity, posts: Entity, comments: Entity, registry: EntityRegistry
) -> None:
    options = QueryOptions(
        preload=(
            PreloadSpec(relation="posts.user"),
            PreloadSpec(relation="manager"),
            PreloadSpec(relation="posts", columns=("title",)),
            PreloadSpec(relation="posts.comments", columns=("text",)),
            PreloadSpec(relation="posts", columns=("id", "title")),
        )
    )
    selection = compile_selection(users, options, registry)
    assert selection.preload == (
        Preload(
            relation="posts",
            target=posts,
            columns=("title", "id"),
            children=(
                Preload(relation="user", target=users),
                Preload(relation="comments", target=comments, columns=("text",)),
            ),
        ),
        Preload(relation="manager", target=users),
    )


def test_preload_all_columns_wins_over_a_column_list(
    users: Entity, posts: Entity, registry: EntityRegistry
) -> None:
    options = QueryOptions(
        preload=(PreloadSpec(relation="posts", columns=("title",)), PreloadSpec(relation="posts"))
    )
    assert compile_selection(users, options, registry).preload == (
        Preload(relation="posts", target=posts),
    )


@pytest.mark.parametrize("path", ["nope", "posts.nope", "posts..user", "", "posts.", "name"])
def test_unknown_preload_relation(users: Entity, registry: EntityRegistry, path: str) -> None:
    options = QueryOptions(preload=(PreloadSpec(relation=path),))
    error = error_of(compile_selection, users, options, registry)
    assert error.code == "invalid_column"
    assert error.details == {"relation": path}


def test_unknown_preload_column(users: Entity, registry: EntityRegistry) -> None:
    options = QueryOptions(preload=(PreloadSpec(relation="posts.user", columns=("id", "title")),))
    error = error_of(compile_selection, users, options, registry)
    assert error.code == "invalid_column"
    assert error.details == {"column": "title", "relation": "posts.user"}


# --- compile_read ---------------------------------------------------------------------------


def test_compile_read_defaults(users: Entity, registry: EntityRegistry) -> None:
    read = compile_read(users, QueryOptions(), registry, LIMITS)
    assert read.entity is users
    assert read.filters == Filters()
    assert read.sort == ()
    assert read.limit == 20
    assert read.offset == 0
    assert read.selection.columns == USER_COLUMNS


def test_compile_read_everything(users: Entity, registry: EntityRegistry) -> None:
    options = QueryOptions(
        filters=(
            FilterSpec(column="age", operator="gt", value="3"),
            FilterSpec(column="name", operator="eq", value="x", logic_operator="or"),
        ),
        columns=("id", "name"),
        sort=(
            SortSpec(column="name", direction="DESC"),
            SortSpec(column="age"),
            SortSpec(column="name", direction="asc"),
        ),
        limit=7,
        offset=3,
    )
    read = compile_read(users, options, registry, LIMITS)
    assert read.filters == Filters(
        (
            FilterGroup(
                (
                    Condition(column="age", operator=Operator.GT, value=3),
                    Condition(column="name", operator=Operator.EQ, value="x"),
                )
            ),
        )
    )
    assert read.sort == (SortKey(column="name", descending=True), SortKey(column="age"))
    assert (read.limit, read.offset) == (7, 3)
    assert read.selection.columns == ("id", "name")


@pytest.mark.parametrize(("given", "applied"), [(0, 0), (1, 1), (50, 50), (51, 50), (10**9, 50)])
def test_limit_is_clamped(
    users: Entity, registry: EntityRegistry, given: int, applied: int
) -> None:
    assert compile_read(users, QueryOptions(limit=given), registry, LIMITS).limit == applied


@pytest.mark.parametrize(
    ("options", "details"),
    [
        (QueryOptions(limit=-1), {"limit": -1}),
        (QueryOptions(offset=-5), {"offset": -5}),
        (
            QueryOptions(sort=(SortSpec(column="age", direction="up"),)),
            {"column": "age", "direction": "up"},
        ),
        (
            QueryOptions(sort=(SortSpec(column="age", direction=""),)),
            {"column": "age", "direction": ""},
        ),
    ],
)
def test_invalid_options(
    users: Entity, registry: EntityRegistry, options: QueryOptions, details: dict[str, Any]
) -> None:
    error = error_of(compile_read, users, options, registry, LIMITS)
    assert error.code == "invalid_options"
    assert error.details == details


@pytest.mark.parametrize("column", ["nope", "posts"])
def test_unknown_sort_column(users: Entity, registry: EntityRegistry, column: str) -> None:
    options = QueryOptions(sort=(SortSpec(column=column),))
    error = error_of(compile_read, users, options, registry, LIMITS)
    assert error.code == "invalid_column"
    assert error.details == {"column": column}


def test_compile_read_reports_filter_errors(users: Entity, registry: EntityRegistry) -> None:
    options = QueryOptions(filters=(FilterSpec(column="age", operator="eq", value="x"),))
    assert error_of(compile_read, users, options, registry, LIMITS).code == "invalid_filter"


# --- coerce_key -----------------------------------------------------------------------------


@pytest.mark.parametrize(("record_id", "key"), [(5, 5), ("5", 5), (5.0, 5), ("-2", -2)])
def test_coerce_integer_key(users: Entity, record_id: Any, key: int) -> None:
    assert coerce_key(users, record_id) == key


@pytest.mark.parametrize("record_id", [True, False, None, "five", 5.5, "", [1], {"id": 1}])
def test_bad_integer_key_is_invalid_message(users: Entity, record_id: Any) -> None:
    error = error_of(coerce_key, users, record_id)
    assert error.code == "invalid_message"
    assert error.details == {"column": "id"}


def test_coerce_text_key(tags: Entity) -> None:
    assert coerce_key(tags, "python") == "python"
    assert coerce_key(tags, 42) == "42"
    assert error_of(coerce_key, tags, True).code == "invalid_message"
    assert error_of(coerce_key, tags, None).code == "invalid_message"


# --- coerce_record --------------------------------------------------------------------------


def test_create_record_is_coerced_and_in_entity_order(users: Entity) -> None:
    data = {"seen": "2024-01-01T12:00:00+01:00", "age": "41", "name": "Ann", "born": "1983-05-06"}
    assert coerce_record(users, data, partial=False) == {
        "name": "Ann",
        "age": 41,
        "born": datetime.date(1983, 5, 6),
        "seen": datetime.datetime(2024, 1, 1, 11),
    }
    assert list(coerce_record(users, data, partial=False)) == ["name", "age", "born", "seen"]


def test_create_may_give_the_key_and_nulls_into_nullable_columns(users: Entity) -> None:
    data = {"id": "7", "name": "Bo", "email": None}
    assert coerce_record(users, data, partial=False) == {"id": 7, "name": "Bo", "email": None}


@pytest.mark.parametrize("data", [None, [], [{"name": "x"}], "name", 5])
def test_record_must_be_an_object(users: Entity, data: Any) -> None:
    for partial in (False, True):
        error = error_of(coerce_record, users, data, partial=partial)
        assert error.code == "invalid_message"


@pytest.mark.parametrize(
    ("data", "code", "column"),
    [
        ({"name": "x", "nope": 1}, "invalid_column", "nope"),
        ({"name": "x", "posts": [{"title": "t"}]}, "invalid_column", "posts"),
        ({"name": "x", "manager": {"id": 1}}, "invalid_column", "manager"),
        ({"name": "x", "age": "old"}, "validation_error", "age"),
        ({"name": "x", "active": "yes"}, "validation_error", "active"),
        ({"name": None}, "validation_error", "name"),
        ({"name": "x", "status": None}, "validation_error", "status"),
        ({"email": "a@b"}, "validation_error", "name"),
        ({}, "validation_error", "name"),
        # Unknown keys are reported before bad values.
        ({"age": "old", "nope": 1}, "invalid_column", "nope"),
    ],
)
def test_create_record_errors(users: Entity, data: dict[str, Any], code: str, column: str) -> None:
    error = error_of(coerce_record, users, data, partial=False)
    assert error.code == code
    assert error.details == {"column": column}


def test_nested_write_message_says_so(users: Entity) -> None:
    error = error_of(coerce_record, users, {"name": "x", "posts": []}, partial=False)
    assert "nested writes are not supported" in error.message


def test_update_record_is_partial(users: Entity) -> None:
    assert coerce_record(users, {"age": 5.0}, partial=True) == {"age": 5}
    assert coerce_record(users, {}, partial=True) == {}
    assert coerce_record(users, {"email": None}, partial=True) == {"email": None}


@pytest.mark.parametrize(
    ("data", "code", "column"),
    [
        ({"id": 1}, "validation_error", "id"),
        ({"id": None}, "validation_error", "id"),
        ({"name": None}, "validation_error", "name"),
        ({"age": True}, "validation_error", "age"),
        ({"nope": 1}, "invalid_column", "nope"),
        ({"posts": []}, "invalid_column", "posts"),
    ],
)
def test_update_record_errors(users: Entity, data: dict[str, Any], code: str, column: str) -> None:
    error = error_of(coerce_record, users, data, partial=True)
    assert error.code == code
    assert error.details == {"column": column}


def test_create_with_a_required_text_key(tags: Entity) -> None:
    assert error_of(coerce_record, tags, {"label": "x"}, partial=False).details == {
        "column": "slug"
    }
    assert coerce_record(tags, {"slug": 3}, partial=False) == {"slug": "3"}


# --- limits (issue 12) ---------------------------------------------------------------------


def test_count_cap_follows_max_count(users: Entity, registry: EntityRegistry) -> None:
    def cap(limits: Limits, **options: Any) -> int | None:
        return compile_read(users, QueryOptions(**options), registry, limits).count_cap

    # offset + max(limit, max_count): never below the end of the page.
    assert cap(Limits(max_count=1000), limit=10, offset=30) == 1030
    assert cap(Limits(max_count=5, max_page_size=50, default_page_size=20), limit=40) == 40
    assert cap(Limits(max_count=None), limit=10) is None
    assert Limits().max_count == 10_000


def test_compile_read_applies_the_filter_limits(users: Entity, registry: EntityRegistry) -> None:
    limits = Limits(max_filters=2, max_in_values=3)
    many = QueryOptions(filters=(FilterSpec(column="age", operator="eq", value=1),) * 3)
    with pytest.raises(InvalidRequest) as info:
        compile_read(users, many, registry, limits)
    assert info.value.error.details == {"filters": 3, "limit": 2}
    long = QueryOptions(filters=(FilterSpec(column="age", operator="in", value=[1, 2, 3, 4]),))
    with pytest.raises(InvalidRequest) as info:
        compile_read(users, long, registry, limits)
    assert info.value.error.details == {"column": "age", "operator": "in", "limit": 3}


def test_values_beyond_a_narrow_integer_column_are_validation_errors() -> None:
    entity = Entity(
        name="t",
        table_name="t",
        columns=(
            Column(name="id", type=ColumnType.INTEGER, primary_key=True, integer_bits=32),
            Column(name="small", type=ColumnType.INTEGER, integer_bits=16),
        ),
    )
    assert coerce_record(entity, {"id": 2**31 - 1, "small": -32768}, partial=False) == {
        "id": 2**31 - 1,
        "small": -32768,
    }
    for data, column in (({"id": 2**31}, "id"), ({"small": 32768}, "small")):
        with pytest.raises(InvalidRequest) as info:
            coerce_record(entity, data, partial=False)
        assert info.value.error.code == "validation_error"
        assert info.value.error.details == {"column": column}
    # A record_id beyond the key's range names no row: invalid_message, like any bad key.
    with pytest.raises(InvalidRequest) as info:
        coerce_key(entity, 2**31)
    assert info.value.error.code == "invalid_message"
