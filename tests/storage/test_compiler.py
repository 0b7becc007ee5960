"""The SQL compiler and its dialects, without a database: the SQL text and the bound
parameters each storage operation compiles to, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime
from typing import Any

import hypothesis.strategies as st
import peewee
import pytest
from hypothesis import given, settings
from playhouse.pool import PooledPostgresqlDatabase
from wsspec.storage.peewee import introspection
from wsspec.storage.peewee.compiler import CACHE_LIST_MAX, SqlCompiler
from wsspec.storage.peewee.dialect import POSTGRESQL, SQLITE, Dialect, dialect_for

from wsspec_core import (
    NO_FILTERS,
    Condition,
    Delete,
    Entity,
    EntityRegistry,
    FilterGroup,
    Filters,
    FilterSpec,
    Limits,
    Operator,
    PreloadSpec,
    QueryOptions,
    ReadList,
    ReadOne,
    Selection,
    SortSpec,
    StorageErrorKind,
    StorageFailure,
    Update,
    compile_filters,
    compile_read,
)


class Author(peewee.Model):  # no database: compiling never needs one
    name = peewee.CharField()
    born = peewee.DateField(null=True)
    active = peewee.BooleanField(null=True)
    score = peewee.FloatField(null=True)
    status = peewee.CharField(default="new")

    class Meta:
        schema = "lib"
        table_name = "authors"


class Book(peewee.Model):
    author = peewee.ForeignKeyField(Author, backref="books")
    title = peewee.TextField()

    class Meta:
        table_name = 'odd"name'


MODELS: dict[str, type[peewee.Model]] = {"lib.authors": Author, "books": Book}
ENTITIES = introspection.entities(MODELS)
AUTHORS = ENTITIES["lib.authors"]
BOOKS = ENTITIES["books"]


def compiler(dialect: Dialect) -> SqlCompiler:
    targets = {name: introspection.target(model, dialect) for name, model in MODELS.items()}
    return SqlCompiler(dialect, targets)


def filt(column: str, operator: str, value: Any = None, logic: str = "AND") -> FilterSpec:
    return FilterSpec(column=column, operator=operator, value=value, logic_operator=logic)


def listing(entity: Entity = AUTHORS, limits: Limits | None = None, **options: Any) -> Any:
    return compile_read(
        entity,
        QueryOptions(**options),
        EntityRegistry(ENTITIES.values()),
        Limits() if limits is None else limits,
    )


def where_of(dialect: Dialect, *filters: FilterSpec) -> tuple[str, list[Any]]:
    compiled, params = compiler(dialect).read_list(listing(filters=filters, columns=("id",)))
    sql = compiled.sql
    return sql[sql.index(" WHERE ") + 7 : sql.index(" ORDER BY ")], params[:-2]


# --- dialects ---------------------------------------------------------------------------


def test_dialect_for_each_database_class() -> None:
    assert dialect_for(peewee.SqliteDatabase(None)) is SQLITE
    assert dialect_for(peewee.PostgresqlDatabase(None)) is POSTGRESQL
    assert dialect_for(PooledPostgresqlDatabase(None)) is POSTGRESQL
    with pytest.raises(TypeError):
        dialect_for(peewee.MySQLDatabase(None))


def test_entities_from_models() -> None:
    assert [c.name for c in AUTHORS.columns] == ["id", "name", "born", "active", "score", "status"]
    assert AUTHORS.schema == "lib" and AUTHORS.name == "authors"
    assert AUTHORS.relations_by_name["books"].target == "books"
    assert BOOKS.relations_by_name["author"].local_column == "author_id"


# --- LIKE ---------------------------------------------------------------------------------


def test_like_is_glob_on_sqlite_and_escaped_like_on_postgresql() -> None:
    pattern = "a%b_c\\%d*"
    assert where_of(SQLITE, filt("name", "like", pattern)) == ('"name" GLOB ?', ["a*b?c%d[*]"])
    assert where_of(POSTGRESQL, filt("name", "like", pattern)) == (
        "\"name\" LIKE %s ESCAPE '\\'",
        ["a%b_c\\%d*"],
    )


def test_ilike_folds_ascii_letters_only() -> None:
    assert where_of(SQLITE, filt("name", "ilike", "Ab_é")) == ('"name" GLOB ?', ["[aA][bB]?é"])
    assert where_of(POSTGRESQL, filt("name", "ilike", "Ab_é")) == (
        "\"name\" ILIKE %s ESCAPE '\\'",
        ["Ab_é"],
    )


def test_like_escapes_literal_specials() -> None:
    # SQLite: GLOB's own specials are bracketed; PostgreSQL: LIKE's are backslashed.
    assert where_of(SQLITE, filt("name", "like", "[?\\_")) == ('"name" GLOB ?', ["[[][?]_"])
    assert where_of(POSTGRESQL, filt("name", "like", "100\\%\\\\x")) == (
        "\"name\" LIKE %s ESCAPE '\\'",
        ["100\\%\\\\x"],
    )


def test_trailing_backslash_is_literal() -> None:
    sqlite_params = SQLITE.like_param("a\\", fold=False)
    postgres_params = POSTGRESQL.like_param("a\\", fold=False)
    assert (sqlite_params, postgres_params) == ("a\\", "a\\\\")


# --- comparisons, NULL and lists ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (SQLITE, '"name" > ? AND "score" <= ? AND "name" BETWEEN ? AND ?'),
        (
            POSTGRESQL,
            '"name" COLLATE "C" > %s AND "score" <= %s AND "name" COLLATE "C" BETWEEN %s AND %s',
        ),
    ],
)
def test_text_compares_by_code_point(dialect: Dialect, expected: str) -> None:
    sql, params = where_of(
        dialect,
        filt("name", "gt", "m"),
        filt("score", "lte", 2.5),
        filt("name", "between", ["a", "z"]),
    )
    assert (sql, params) == (expected, ["m", 2.5, "a", "z"])


def test_neq_and_lists_keep_the_core_semantics() -> None:
    sql, params = where_of(
        SQLITE,
        filt("name", "neq", "x"),
        filt("id", "in", [1, 2, 3]),
        filt("id", "not_in", [4]),
        filt("score", "is_null"),
    )
    assert sql == (
        '("name" IS NULL OR "name" <> ?) AND "id" IN (?, ?, ?) '
        'AND ("id" IS NULL OR "id" NOT IN (?)) AND "score" IS NULL'
    )
    assert params == ["x", 1, 2, 3, 4]
    assert where_of(POSTGRESQL, filt("id", "in", []), filt("id", "not_in", [])) == (
        "1 = 0 AND 1 = 1",
        [],
    )


def test_or_groups_are_parenthesised() -> None:
    sql, params = where_of(
        POSTGRESQL,
        filt("name", "eq", "a"),
        filt("name", "eq", "b", "OR"),
        filt("active", "eq", True),
    )
    assert sql == '("name" = %s OR "name" = %s) AND "active" = %s'
    assert params == ["a", "b", True]


def test_dates_are_bound_as_text_on_sqlite_only() -> None:
    day = datetime.date(2024, 2, 29)
    assert where_of(SQLITE, filt("born", "eq", day.isoformat()))[1] == ["2024-02-29"]
    assert where_of(POSTGRESQL, filt("born", "eq", day.isoformat()))[1] == [day]


# --- whole statements --------------------------------------------------------------------


def test_read_list_sort_limit_and_count() -> None:
    op = listing(sort=(SortSpec(column="name", direction="desc"),), limit=20, offset=40)
    columns = '"id", "name", "born", "active", "score", "status"'
    compiled, params = compiler(SQLITE).read_list(op)
    assert compiled.sql == (
        f'SELECT {columns} FROM "lib"."authors" ORDER BY "name" DESC, "id" ASC LIMIT ? OFFSET ?'
    )
    assert params == [20, 40]
    compiled, params = compiler(POSTGRESQL).read_list(op)
    # NOT NULL columns get no NULLS clause: "id" ASC can then walk the primary-key index.
    assert compiled.sql == (
        f'SELECT {columns} FROM "lib"."authors" '
        'ORDER BY "name" COLLATE "C" DESC, "id" ASC LIMIT %s OFFSET %s'
    )
    nullable = listing(sort=(SortSpec(column="born"), SortSpec(column="score", direction="desc")))
    compiled, _ = compiler(POSTGRESQL).read_list(nullable)
    assert 'ORDER BY "born" ASC NULLS FIRST, "score" DESC NULLS LAST, "id" ASC LIMIT' in (
        compiled.sql
    )
    counted, count_params = compiler(POSTGRESQL).count(
        listing(filters=(filt("status", "eq", "new"),), limits=Limits(max_count=None))
    )
    assert counted.sql == 'SELECT COUNT(*) FROM "lib"."authors" WHERE "status" = %s'
    assert count_params == ["new"]


def test_count_is_capped_by_max_count() -> None:
    # Limits.max_count: count at most offset + max(limit, max_count) + 1 rows.
    op = listing(
        filters=(filt("status", "eq", "new"),), limit=20, offset=40, limits=Limits(max_count=500)
    )
    assert op.count_cap == 540
    for dialect, p in ((SQLITE, "?"), (POSTGRESQL, "%s")):
        counted, count_params = compiler(dialect).count(op)
        assert counted.sql == (
            f'SELECT COUNT(*) FROM (SELECT 1 FROM "lib"."authors" WHERE "status" = {p} '
            f"LIMIT {p}) AS wsspec_counted"
        )
        assert count_params == ["new", 541]
    # A page larger than max_count widens the cap so that it covers the page.
    assert listing(limit=900, limits=Limits(max_count=500)).count_cap == 900


def test_statements_with_long_in_lists_are_not_cached() -> None:
    # Their text grows with the list and each length is a shape of its own: caching them
    # would let a client fill the cache with megabytes of placeholders.
    made = compiler(SQLITE)
    made.read_list(listing(filters=(filt("id", "in", list(range(CACHE_LIST_MAX))),)))
    cached = len(list(made.statements()))
    assert cached > 0
    long_list = list(range(CACHE_LIST_MAX + 1))
    compiled, params = made.read_list(listing(filters=(filt("id", "in", long_list),)))
    assert compiled.sql.count("?") == CACHE_LIST_MAX + 3 and params[:-2] == long_list
    assert compiled.capped_count is not None and compiled.count is not None
    assert len(list(made.statements())) == cached


def test_filters_binding_more_than_the_database_takes_fail_clearly() -> None:
    # Limits keep validated requests below this; an operation built directly gets a clear
    # error instead of the driver's (PostgreSQL: "database unavailable" after 24 s).
    for dialect in (SQLITE, POSTGRESQL):
        values = tuple(range(dialect.max_filter_parameters + 1))
        op = ReadList(
            entity=AUTHORS,
            filters=Filters(
                (FilterGroup((Condition(column="id", operator=Operator.IN, value=values),)),)
            ),
            sort=(),
            limit=10,
            offset=0,
            selection=Selection(columns=("id",)),
        )
        with pytest.raises(StorageFailure) as caught:
            compiler(dialect).read_list(op)
        assert caught.value.error.kind is StorageErrorKind.OTHER
        assert str(dialect.max_filter_parameters) in caught.value.error.message


def test_sort_stops_at_the_primary_key() -> None:
    op = listing(sort=(SortSpec(column="id"), SortSpec(column="name")))
    compiled, _ = compiler(SQLITE).read_list(op)
    assert compiled.sql.endswith('ORDER BY "id" ASC LIMIT ? OFFSET ?')


def test_read_one_with_filters_and_preload_join_column() -> None:
    selection = Selection(columns=("name",))
    op = ReadOne(
        entity=AUTHORS,
        key=7,
        filters=compile_filters(AUTHORS, [filt("score", "gt", 1)]),
        selection=selection,
    )
    compiled, params = compiler(POSTGRESQL).read_one(op)
    assert compiled.sql == 'SELECT "name" FROM "lib"."authors" WHERE "id" = %s AND "score" > %s'
    assert params == [7, 1.0]
    # A preload fetches the join column too (removed again after preloading).
    op = listing(BOOKS, columns=("title",), preload=(PreloadSpec(relation="author"),))
    compiled, _ = compiler(SQLITE).read_list(op)
    assert compiled.sql.startswith('SELECT "title", "author_id" FROM "odd""name" ORDER BY')


def test_preload_statement() -> None:
    compiled = compiler(SQLITE).preload(BOOKS, ["title", "author_id", "id"], "author_id", 3, True)
    assert compiled.sql == (
        'SELECT "title", "author_id", "id" FROM "odd""name" '
        'WHERE "author_id" IN (?, ?, ?) ORDER BY "id"'
    )


def test_writes_return_every_column() -> None:
    every = '"id", "name", "born", "active", "score", "status"'
    insert, params = compiler(SQLITE).insert(
        AUTHORS, {"name": "Ann", "born": datetime.date(2000, 1, 2), "status": "new"}
    )
    assert insert.sql == (
        f'INSERT INTO "lib"."authors" ("name", "born", "status") VALUES (?, ?, ?) RETURNING {every}'
    )
    assert params == ["Ann", "2000-01-02", "new"]
    empty, params = compiler(POSTGRESQL).insert(BOOKS, {})
    assert (
        empty.sql == 'INSERT INTO "odd""name" DEFAULT VALUES RETURNING "id", "author_id", "title"'
    )
    guard = compile_filters(AUTHORS, [filt("active", "eq", True)])
    update, params = compiler(POSTGRESQL).update(
        Update(entity=AUTHORS, key=3, changes={"name": "Bo"}, filters=guard)
    )
    assert update.sql == (
        'UPDATE "lib"."authors" SET "name" = %s WHERE "id" = %s AND "active" = %s '
        f"RETURNING {every}"
    )
    assert params == ["Bo", 3, True]
    delete, params = compiler(SQLITE).delete(Delete(entity=AUTHORS, key=3, filters=NO_FILTERS))
    assert delete.sql == f'DELETE FROM "lib"."authors" WHERE "id" = ? RETURNING {every}'
    assert params == [3]
    with pytest.raises(ValueError):
        compiler(SQLITE).update(Update(entity=AUTHORS, key=3, changes={}, filters=NO_FILTERS))


def test_values_never_reach_the_sql_text() -> None:
    evil = "x'); DROP TABLE authors; --"
    sql, params = where_of(SQLITE, filt("name", "eq", evil), filt("name", "like", evil, "OR"))
    assert "DROP" not in sql and params[0] == evil
    insert, _ = compiler(POSTGRESQL).insert(AUTHORS, {"name": evil})
    assert "DROP" not in insert.sql


def test_statements_are_cached_per_shape() -> None:
    c = compiler(SQLITE)
    first, _ = c.read_list(listing(filters=(filt("id", "in", [1, 2]),)))
    again, params = c.read_list(listing(filters=(filt("id", "in", [3, 4]),)))
    longer, _ = c.read_list(listing(filters=(filt("id", "in", [1, 2, 3]),)))
    assert first is again and params[:2] == [3, 4]
    assert longer is not first
    assert {s.sql for s in c.statements()} >= {first.sql, longer.sql}


def test_rows_are_converted_back_per_dialect() -> None:
    op = ReadOne(
        entity=AUTHORS,
        key=1,
        filters=NO_FILTERS,
        selection=Selection(columns=("born", "active", "score")),
    )
    compiled, _ = compiler(SQLITE).read_one(op)
    assert compiled.row(("2000-01-02", 1, 3)) == {
        "born": datetime.date(2000, 1, 2),
        "active": True,
        "score": 3.0,
    }
    compiled, _ = compiler(POSTGRESQL).read_one(op)
    assert compiled.row((datetime.date(2000, 1, 2), True, None)) == {
        "born": datetime.date(2000, 1, 2),
        "active": True,
        "score": None,
    }


def _reference_row(compiled: Any, values: Any) -> dict[str, Any]:
    """What ``Compiled.row`` did before it was generated per statement (issue 11): a
    dict of the names and values, then each converted column's value converted unless it
    is ``None``."""
    row = dict(zip(compiled.names, values, strict=True))
    for index, name, convert in compiled.convert:
        value = values[index]
        if value is not None:
            row[name] = convert(value)
    return row


@settings(max_examples=200)
@given(
    columns=st.lists(
        st.sampled_from(["id", "name", "born", "active", "score", "status"]),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    data=st.data(),
    postgres=st.booleans(),
)
def test_a_generated_row_is_the_row_of_names_and_converted_values(
    columns: list[str], data: st.DataObject, postgres: bool
) -> None:
    """``Compiled.row`` (generated code per statement) gives the keys in the same order
    and the very values of the loop it replaced, for each dialect's converters."""
    dialect = POSTGRESQL if postgres else SQLITE
    op = ReadOne(
        entity=AUTHORS, key=1, filters=NO_FILTERS, selection=Selection(columns=tuple(columns))
    )
    compiled, _ = compiler(dialect).read_one(op)
    driver_values = {
        "id": st.integers(),
        "name": st.text(max_size=5),
        "born": st.dates().map(str) if not postgres else st.dates(),
        "active": st.sampled_from([0, 1]) if not postgres else st.booleans(),
        "score": st.integers(-5, 5) | st.floats(allow_nan=False),
        "status": st.text(max_size=3),
    }
    values = tuple(data.draw(st.none() | driver_values[column]) for column in compiled.names)
    row = compiled.row(values)
    expected = _reference_row(compiled, values)
    assert list(row) == list(expected)
    assert all(row[k] == expected[k] and type(row[k]) is type(expected[k]) for k in row)


def test_a_read_by_key_found_by_identity_is_the_read_compiled_afresh() -> None:
    """Reads by key without filters are found again by the identity of their entity and
    selection: the same statement and parameters as a fresh compiler's, and a selection
    of another identity (or filters) is compiled by its shape as before."""
    c = compiler(SQLITE)
    selection = Selection(columns=("id", "born", "name"))
    for key in (1, 2, 3):
        op = ReadOne(entity=AUTHORS, key=key, filters=NO_FILTERS, selection=selection)
        compiled, params = c.read_one(op)
        fresh, fresh_params = compiler(SQLITE).read_one(op)
        assert (compiled.sql, compiled.names, params) == (fresh.sql, fresh.names, fresh_params)
    again, _ = c.read_one(op)
    assert again is compiled
    other, _ = c.read_one(
        ReadOne(entity=AUTHORS, key=1, filters=NO_FILTERS, selection=Selection(columns=("id",)))
    )
    assert other.sql != compiled.sql
    filtered = ReadOne(
        entity=AUTHORS,
        key=1,
        filters=compile_filters(AUTHORS, [filt("name", "eq", "x")]),
        selection=selection,
    )
    compiled, params = c.read_one(filtered)
    assert "name" in compiled.sql.split("WHERE")[1] and params == [1, "x"]
    c.clear()
    assert c.read_one(op)[0] is not again
