"""Database limits are client errors, the same on every backend (issue 12, part 1).

Each request goes through the engine to a real SQLite file and to PostgreSQL (and, where
the answer is the core's own, to MemoryStorage): long ``in`` lists, many filters, NUL in a
``like`` pattern, integers beyond a column's range or beyond 64 bits, and the bounded count
behind ``metadata.total``. Before the fixes these gave ``read_error``/``create_error``
("internal storage error", "database unavailable") on one backend and success on the other,
or took seconds of CPU on the event loop.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

import wsspec_core as ws
from wsspec_core._config import MAX_FILTER_PARAMETERS, MAX_FILTERS_CEILING

from .conftest import Backend

# The engine driver of the core tests (tests/core is not a package).
from core.engine_driver import Driver  # isort: skip

USERS = {"schema": "public", "entity": "users"}
POSTS = {"schema": "blog", "entity": "posts"}


def driver(backend: Backend, limits: ws.Limits | None = None) -> Driver:
    engine = ws.Engine(ws.EntityRegistry(backend.storage.entities()), limits=limits)
    made = Driver(engine, backend.storage)  # type: ignore[arg-type]
    made.connect("c")
    return made


def read(d: Driver, filters: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return d.request(
        "c",
        {
            "id": "r",
            "type": "request",
            "operation": "read",
            **USERS,
            "options": {"filters": filters, **options},
        },
    )


def subscribe(d: Driver, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return d.request(
        "c",
        {
            "id": "s",
            "type": "subscription",
            "operation": "subscribe",
            **USERS,
            "options": {"filters": filters},
        },
    )


def create(d: Driver, entity: dict[str, str], data: Any) -> dict[str, Any]:
    return d.request(
        "c", {"id": "w", "type": "request", "operation": "create", **entity, "data": data}
    )


def error(response: dict[str, Any]) -> dict[str, Any]:
    assert response["success"] is False, response
    result: dict[str, Any] = response["error"]
    return result


def seed_users(d: Driver, count: int) -> None:
    rows = [{"name": f"u{i}", "age": i, "rank": 1} for i in range(count)]
    assert create(d, USERS, rows)["success"] is True


# --- long in lists ------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["in", "not_in"])
def test_in_values_up_to_the_limit_work_beyond_it_are_invalid_filter(
    backend: Backend, operator: str
) -> None:
    d = driver(backend)
    seed_users(d, 5)
    limit = ws.Limits().max_in_values
    values = list(range(limit))
    answer = read(d, [{"column": "age", "operator": operator, "value": values}])
    assert answer["success"] is True, answer
    assert answer["metadata"]["total"] == (5 if operator == "in" else 0)
    # The values of all lists of one request count together (they are all bound values).
    half = list(range(limit // 2 + 1))
    failed = error(
        read(
            d,
            [
                {"column": "age", "operator": operator, "value": half},
                {"column": "rank", "operator": operator, "value": half},
            ],
        )
    )
    assert failed["code"] == "invalid_filter"
    assert failed["details"] == {"column": "rank", "operator": operator, "limit": limit}
    assert "max_in_values" in failed["message"]
    # Subscriptions are held to the same limit.
    values.append(limit)
    refused = error(subscribe(d, [{"column": "age", "operator": operator, "value": values}]))
    assert refused["details"] == {"column": "age", "operator": operator, "limit": limit}


def test_70000_values_are_a_quick_client_error_not_a_database_failure(backend: Backend) -> None:
    # PostgreSQL took 24 s and answered read_error "database unavailable" (65,535 bound
    # parameters at most); the core now refuses before coercing a single value.
    d = driver(backend)
    started = time.perf_counter()
    failed = error(read(d, [{"column": "age", "operator": "in", "value": list(range(70_000))}]))
    assert time.perf_counter() - started < 2.0
    assert failed["code"] == "invalid_filter" and failed["details"]["limit"] == 10_000


def test_in_lists_cost_linear_time(backend: Backend) -> None:
    # De-duplicating with a list made validation quadratic: 40,000 values took 8 s, and the
    # largest allowed list (29,000 here) took over 4 s. Linear, it takes milliseconds.
    limits = ws.Limits(max_in_values=MAX_FILTER_PARAMETERS - 2 * 100 - 800)
    d = driver(backend, limits)
    seed_users(d, 3)
    values = list(range(limits.max_in_values))
    started = time.perf_counter()
    answer = read(d, [{"column": "age", "operator": "in", "value": values}])
    elapsed = time.perf_counter() - started
    assert answer["success"] is True, answer
    assert answer["metadata"]["total"] == 3
    assert elapsed < 1.5, f"{len(values)} in values took {elapsed:.2f} s"


def test_the_largest_allowed_filters_run_on_the_database(backend: Backend) -> None:
    # The ceilings of Limits are safe on every backend: MAX_FILTERS_CEILING filters (SQLite
    # refuses an expression tree about 1,000 deep), each binding two values, plus the
    # largest in list; ANDed and in one OR group.
    filters = max(MAX_FILTERS_CEILING - 1, 1)
    in_values = MAX_FILTER_PARAMETERS - 2 * MAX_FILTERS_CEILING
    limits = ws.Limits(max_filters=MAX_FILTERS_CEILING, max_in_values=in_values)
    d = driver(backend, limits)
    seed_users(d, 3)
    ranges = [
        {"column": "age", "operator": "between", "value": [-1, 100 + i]} for i in range(filters)
    ]
    listed = {"column": "age", "operator": "in", "value": list(range(in_values))}
    answer = read(d, [*ranges, listed])
    assert answer["success"] is True, answer
    assert answer["metadata"]["total"] == 3
    ored = [{**f, "logic_operator": "OR"} for f in ranges]
    answer = read(d, [listed, *ored])
    assert answer["success"] is True, answer
    assert answer["metadata"]["total"] == 3


# --- many filters -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [101, 999, 4000])
def test_too_many_filters_are_invalid_options(backend: Backend, count: int) -> None:
    # 999 filters gave read_error "internal storage error" on SQLite (PostgreSQL took them).
    d = driver(backend)
    filters = [{"column": "age", "operator": "neq", "value": i} for i in range(count)]
    failed = error(read(d, filters))
    assert failed["code"] == "invalid_options"
    assert failed["details"] == {"filters": count, "limit": 100}
    assert "max_filters" in failed["message"]
    assert error(subscribe(d, filters))["code"] == "invalid_options"
    assert read(d, filters[:100])["success"] is True


# --- NUL in like patterns -----------------------------------------------------------------


@pytest.mark.parametrize("operator", ["like", "ilike"])
def test_nul_in_a_like_pattern_is_invalid_filter(backend: Backend, operator: str) -> None:
    # PostgreSQL answered "internal storage error", SQLite success.
    d = driver(backend)
    failed = error(read(d, [{"column": "name", "operator": operator, "value": "a\x00%"}]))
    assert failed["code"] == "invalid_filter"
    assert failed["details"] == {"column": "name", "operator": operator}
    assert "NUL" in failed["message"]


# --- integer ranges -----------------------------------------------------------------------


def test_integer_widths_are_what_the_tables_hold(backend: Backend) -> None:
    # Peewee: IntegerField and AutoField (SERIAL) are 32-bit on PostgreSQL, as is a foreign
    # key to an AutoField; the declared width applies on SQLite too (same answers).
    users = backend.entity("public.users").columns_by_name
    posts = backend.entity("blog.posts").columns_by_name
    assert users["id"].integer_bits == 32
    assert users["age"].integer_bits == 32
    assert posts["user_id"].integer_bits == 32
    if backend.kind == "postgres":
        sizes = {"smallint": 16, "integer": 32, "bigint": 64}
        for table, entity in (("tbl_users", users), ("tbl_posts", posts)):
            cursor = backend.db.execute_sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (backend.schema.name, table),
            )
            for name, data_type in cursor.fetchall():
                if data_type in sizes:
                    assert entity[name].integer_bits == sizes[data_type], name


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63 - 1])
def test_a_value_beyond_the_column_range_is_a_validation_error(
    backend: Backend, value: int
) -> None:
    # 2**31 into posts.user_id: create_error "internal storage error" on PostgreSQL.
    d = driver(backend)
    seed_users(d, 1)
    failed = error(create(d, POSTS, {"user_id": value, "title": "t"}))
    assert failed["code"] == "validation_error"
    assert failed["details"] == {"column": "user_id"}
    failed = error(create(d, USERS, {"name": "n", "age": value, "rank": 1}))
    assert failed["details"] == {"column": "age"}
    # The extremes that fit are stored and read back.
    for rank in (2**31 - 1, -(2**31)):
        stored = create(d, USERS, {"name": "n", "rank": rank})
        assert stored["success"] is True, stored
        assert stored["data"]["rank"] == rank


def test_an_integer_beyond_64_bits_is_an_invalid_filter(backend: Backend) -> None:
    # The JSON decoder reads -2**63-1 as the float -2.0**63, which was taken as in range.
    d = driver(backend)
    seed_users(d, 2)
    frame = (
        '{"id":"r","type":"request","operation":"read","entity":"users","options":'
        '{"filters":[{"column":"age","operator":"gt","value":-9223372036854775809}]}}'
    )
    d.send("c", frame)
    (answer,) = d.take("c")
    assert error(answer)["code"] == "invalid_filter"
    assert error(answer)["details"] == {"column": "age", "operator": "gt"}
    assert orjson.loads("-9223372036854775809") == -(2.0**63)  # why it matters


# --- the bounded count behind metadata.total ----------------------------------------------


def test_total_is_counted_up_to_max_count(backend: Backend) -> None:
    d = driver(backend, ws.Limits(max_count=10, default_page_size=5, max_page_size=20))
    seed_users(d, 30)
    memory = ws.MemoryStorage(d.engine.registry)
    memory.insert("public.users", backend.storage.execute(_all_users(backend)).rows)

    def page(offset: int, limit: int) -> dict[str, Any]:
        answer = read(d, [], limit=limit, offset=offset)
        assert answer["success"] is True, answer
        # MemoryStorage answers the same (the differential reference).
        query = ws.compile_read(
            backend.entity("public.users"),
            ws.QueryOptions(limit=limit, offset=offset),
            d.engine.registry,
            d.engine.limits,
        )
        reference = memory.execute(query)
        assert reference.total == answer["metadata"]["total"]
        assert len(reference.rows) == answer["metadata"]["count"]
        return answer

    # offset 0, limit 5: at most max(5, 10) + 1 = 11 rows counted; more match.
    first = page(0, 5)
    assert first["metadata"]["total"] == 11
    # A pager that reads total as a number keeps going while offset + count < total.
    offset, seen = 0, 0
    while True:
        answer = page(offset, 5)
        seen += answer["metadata"]["count"]
        if offset + answer["metadata"]["count"] >= answer["metadata"]["total"]:
            break
        offset += 5
    assert seen == 30
    # Near the end the count is exact; a page larger than max_count widens the cap.
    assert page(20, 5)["metadata"]["total"] == 30
    assert page(0, 20)["metadata"]["total"] == 21
    # A short first page needs no count and is exact (as before).
    short = read(d, [{"column": "age", "operator": "lt", "value": 3}], limit=5)
    assert short["metadata"]["total"] == 3


def test_list_result_says_whether_total_is_exact(backend: Backend) -> None:
    d = driver(backend)
    seed_users(d, 12)
    entity = backend.entity("public.users")
    registry = d.engine.registry
    capped = ws.compile_read(
        entity,
        ws.QueryOptions(limit=2),
        registry,
        ws.Limits(max_count=4, max_page_size=4, default_page_size=2),
    )
    result = backend.storage.execute(capped)
    assert (result.total, result.total_exact) == (5, False)
    exact = ws.compile_read(entity, ws.QueryOptions(limit=2), registry, ws.Limits(max_count=None))
    result = backend.storage.execute(exact)
    assert (result.total, result.total_exact) == (12, True)
    at_cap = ws.compile_read(
        entity,
        ws.QueryOptions(limit=2),
        registry,
        ws.Limits(max_count=12, max_page_size=12, default_page_size=2),
    )
    result = backend.storage.execute(at_cap)
    assert (result.total, result.total_exact) == (12, True)


def _all_users(backend: Backend) -> ws.ReadList:
    entity = backend.entity("public.users")
    columns = tuple(c.name for c in entity.columns)
    return ws.ReadList(
        entity=entity,
        filters=ws.NO_FILTERS,
        sort=(),
        limit=1000,
        offset=0,
        selection=ws.Selection(columns=columns),
    )
