"""Coercion, filter compilation and the in-memory matcher (docs/protocol.md "Query options",
"Nulls", "Coercion")."""

from __future__ import annotations

import datetime
import functools
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsspec_core import (
    Column,
    ColumnType,
    Condition,
    Entity,
    FilterGroup,
    Filters,
    FilterSpec,
    InvalidRequest,
    Limits,
    Operator,
    coerce_value,
    compile_filters,
    like_pattern,
    matches,
)
from wsspec_core._config import MAX_FILTER_PARAMETERS, MAX_FILTERS_CEILING

INT = Column(name="n", type=ColumnType.INTEGER)
INT32 = Column(name="n32", type=ColumnType.INTEGER, integer_bits=32)
INT16 = Column(name="n16", type=ColumnType.INTEGER, integer_bits=16)
FLOAT = Column(name="x", type=ColumnType.FLOAT)
TEXT = Column(name="t", type=ColumnType.TEXT)
BOOL = Column(name="b", type=ColumnType.BOOLEAN)
DATE = Column(name="d", type=ColumnType.DATE)
DATETIME = Column(name="dt", type=ColumnType.DATETIME)

UTC = datetime.UTC


def spec(column: str, operator: str, value: Any = None, logic: str = "AND") -> FilterSpec:
    return FilterSpec(column=column, operator=operator, value=value, logic_operator=logic)


def cond(column: str, operator: Operator, value: Any = None) -> Condition:
    return Condition(column=column, operator=operator, value=value)


def all_of(*conditions: Condition) -> Filters:
    return Filters(tuple(FilterGroup((c,)) for c in conditions))


# --- coerce_value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (INT, 5, 5),
        (INT, -3, -3),
        (INT, 5.0, 5),
        (INT, -0.0, 0),
        (INT, "5", 5),
        (INT, "-3", -3),
        (INT, "+7", 7),
        (INT, "007", 7),
        (INT, 2**63 - 1, 2**63 - 1),
        (INT, -(2**63), -(2**63)),
        (INT, 2.0**53, 2**53),
        (INT, -(2.0**53), -(2**53)),
        (INT32, 2**31 - 1, 2**31 - 1),
        (INT32, -(2**31), -(2**31)),
        (INT32, "-2147483648", -(2**31)),
        (INT16, 32767, 32767),
        (INT16, -32768.0, -32768),
        (FLOAT, 2.5, 2.5),
        (FLOAT, 3, 3.0),
        (FLOAT, "2.5", 2.5),
        (FLOAT, "-1e3", -1000.0),
        (FLOAT, ".5", 0.5),
        (FLOAT, "5", 5.0),
        (TEXT, "abc", "abc"),
        (TEXT, "", ""),
        (TEXT, 5, "5"),
        (TEXT, -5, "-5"),
        (TEXT, 2.5, "2.5"),
        (TEXT, 5.0, "5.0"),
        (TEXT, 1e20, "1e+20"),
        (BOOL, True, True),
        (BOOL, False, False),
        (DATE, "2024-02-29", datetime.date(2024, 2, 29)),
        (DATE, datetime.date(2024, 1, 1), datetime.date(2024, 1, 1)),
        (DATETIME, "2024-01-02T03:04:05Z", datetime.datetime(2024, 1, 2, 3, 4, 5)),
        (DATETIME, "2024-01-02T03:04:05", datetime.datetime(2024, 1, 2, 3, 4, 5)),
        (DATETIME, "2024-01-02 03:04", datetime.datetime(2024, 1, 2, 3, 4)),
        (DATETIME, "2024-01-02T03:04:05.25z", datetime.datetime(2024, 1, 2, 3, 4, 5, 250000)),
        (DATETIME, "2024-01-02T03:04:05+02:00", datetime.datetime(2024, 1, 2, 1, 4, 5)),
        (DATETIME, "2024-01-02T00:30:00-0100", datetime.datetime(2024, 1, 2, 1, 30)),
        (DATETIME, "2024-01-02", datetime.datetime(2024, 1, 2)),
        (
            DATETIME,
            "2024-01-02T03:04:05.123456789Z",
            datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
        ),
        (DATETIME, datetime.datetime(2024, 1, 2, 3), datetime.datetime(2024, 1, 2, 3)),
        (
            DATETIME,
            datetime.datetime(2024, 1, 2, 3, tzinfo=datetime.timezone(datetime.timedelta(hours=3))),
            datetime.datetime(2024, 1, 2, 0),
        ),
    ],
)
def test_coerce_accepts(column: Column, value: Any, expected: Any) -> None:
    result = coerce_value(column, value)
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(result, datetime.datetime):
        assert result.tzinfo is None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (INT, True),
        (INT, False),
        (INT, 5.5),
        (INT, float("nan")),
        (INT, float("inf")),
        (INT, "5.0"),
        (INT, " 5"),
        (INT, "5 "),
        (INT, "1_000"),
        (INT, "٣"),  # a non-ASCII digit
        (INT, ""),
        (INT, "abc"),
        (INT, 2**63),
        (INT, -(2**63) - 1),
        # The JSON decoder reads integers beyond 64 bits as floats: -2**63-1 arrives as
        # -2.0**63, which is in range; a float beyond 2**53 stands for no exact integer.
        (INT, -(2.0**63)),
        (INT, 2.0**53 + 2),
        (INT, 1e300),
        (INT32, 2**31),
        (INT32, -(2**31) - 1),
        (INT32, "2147483648"),
        (INT32, 2.0**31),
        (INT16, 32768),
        (INT16, -32769),
        (INT, "9" * 30),
        (INT, [1]),
        (INT, {"a": 1}),
        (FLOAT, True),
        (FLOAT, "nan"),
        (FLOAT, "inf"),
        (FLOAT, float("nan")),
        (FLOAT, float("-inf")),
        (FLOAT, "1e999"),
        (FLOAT, 10**400),
        (FLOAT, "1,5"),
        (FLOAT, " 1"),
        (FLOAT, "0x10"),
        (FLOAT, []),
        (TEXT, True),
        (TEXT, float("nan")),
        (TEXT, ["a"]),
        (TEXT, {"a": "b"}),
        (TEXT, "a\x00b"),
        (BOOL, 1),
        (BOOL, 0),
        (BOOL, "true"),
        (BOOL, "false"),
        (DATE, "2024-02-30"),
        (DATE, "2024-1-1"),
        (DATE, "20240101"),
        (DATE, "2024-01-01T00:00:00"),
        (DATE, datetime.datetime(2024, 1, 1)),
        (DATE, 20240101),
        (DATETIME, "yesterday"),
        (DATETIME, "2024-01-01T25:00"),
        (DATETIME, "2024-W01-1"),
        (DATETIME, "2024-01-02T03:04:05.1234567890"),
        (DATETIME, "2024-01-02T03:04:05+05"),
        (DATETIME, "0001-01-01T00:00:00+01:00"),
        (DATETIME, datetime.date(2024, 1, 1)),
        (DATETIME, 1700000000),
    ],
)
def test_coerce_rejects(column: Column, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        coerce_value(column, value)
    assert str(info.value)


# --- compile_filters: errors ----------------------------------------------------------------


def invalid(entity: Entity, specs: list[FilterSpec]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        compile_filters(entity, specs)
    return info.value


def test_unknown_column_is_invalid_column(users: Entity) -> None:
    error = invalid(users, [spec("nope", "eq", 1)]).error
    assert error.code == "invalid_column"
    assert error.details == {"column": "nope"}


def test_relation_name_is_not_a_filter_column(users: Entity) -> None:
    error = invalid(users, [spec("posts", "eq", 1)]).error
    assert error.code == "invalid_column"
    assert error.details == {"column": "posts"}
    assert "relation" in error.message


@pytest.mark.parametrize("operator", ["equals", "", "ne", "=", "contains", "\uff25\uff31", "in "])
def test_unknown_operator_is_invalid_filter(users: Entity, operator: str) -> None:
    error = invalid(users, [spec("age", operator, 1)]).error
    assert error.code == "invalid_filter"
    assert error.details == {"column": "age", "operator": operator}


@pytest.mark.parametrize(
    ("column", "operator", "value"),
    [
        ("age", "eq", "five"),
        ("age", "gt", True),
        ("age", "eq", [1]),
        ("age", "gt", None),
        ("age", "gte", None),
        ("age", "lt", None),
        ("age", "lte", None),
        ("age", "in", [1, None]),
        ("age", "in", None),
        ("age", "not_in", [None]),
        ("age", "in", [1, "x"]),
        ("age", "between", [1]),
        ("age", "between", [1, 2, 3]),
        ("age", "between", 1),
        ("age", "between", [None, 2]),
        ("age", "between", [1, None]),
        ("age", "between", [1, "x"]),
        ("age", "like", "1%"),
        ("active", "ilike", "t%"),
        ("name", "like", 5),
        ("name", "like", None),
        ("name", "ilike", ["a"]),
        ("name", "like", "abc\\"),
        ("active", "eq", "true"),
        ("born", "eq", "yesterday"),
        ("seen", "gt", 5),
        ("score", "lt", "nan"),
    ],
)
def test_bad_values_are_invalid_filter(
    users: Entity, column: str, operator: str, value: Any
) -> None:
    error = invalid(users, [spec(column, operator, value)]).error
    assert error.code == "invalid_filter"
    assert error.details == {"column": column, "operator": operator}
    assert error.message


@pytest.mark.parametrize("logic", ["XOR", "", "and not", "||"])
def test_bad_logic_operator_is_invalid_filter(users: Entity, logic: str) -> None:
    error = invalid(users, [spec("age", "eq", 1), spec("age", "eq", 2, logic)]).error
    assert error.code == "invalid_filter"
    assert error.details == {"column": "age", "operator": "eq", "logic_operator": logic}
    # Validated on the first filter too, although its meaning is ignored there.
    assert invalid(users, [spec("age", "eq", 1, logic)]).error.code == "invalid_filter"


def test_first_error_wins_in_filter_order(users: Entity) -> None:
    error = invalid(users, [spec("age", "bogus", 1), spec("nope", "eq", 1)]).error
    assert error.code == "invalid_filter"


# --- compile_filters: results ---------------------------------------------------------------


def test_operators_match_case_insensitively(users: Entity) -> None:
    filters = compile_filters(users, [spec("age", "GTE", "5"), spec("name", "ILike", "a%")])
    assert filters == all_of(cond("age", Operator.GTE, 5), cond("name", Operator.ILIKE, "a%"))


def test_values_are_coerced(users: Entity) -> None:
    filters = compile_filters(
        users,
        [
            spec("age", "eq", "5"),
            spec("score", "lt", "2.5"),
            spec("name", "eq", 7),
            spec("born", "gte", "2024-01-01"),
            spec("seen", "lt", "2024-01-01T10:00:00+01:00"),
        ],
    )
    assert filters == all_of(
        cond("age", Operator.EQ, 5),
        cond("score", Operator.LT, 2.5),
        cond("name", Operator.EQ, "7"),
        cond("born", Operator.GTE, datetime.date(2024, 1, 1)),
        cond("seen", Operator.LT, datetime.datetime(2024, 1, 1, 9)),
    )


def test_eq_neq_null_become_is_null(users: Entity) -> None:
    filters = compile_filters(
        users, [spec("email", "eq", None), spec("email", "neq", None), spec("email", "is_null", 3)]
    )
    assert filters == all_of(
        cond("email", Operator.IS_NULL),
        cond("email", Operator.IS_NOT_NULL),
        cond("email", Operator.IS_NULL),
    )


def test_in_takes_a_list_or_a_single_value(users: Entity) -> None:
    filters = compile_filters(
        users,
        [
            spec("age", "in", [1, "2", 2.0, 1]),
            spec("age", "in", 3),
            spec("age", "not_in", []),
            spec("age", "in", []),
        ],
    )
    assert filters == all_of(
        cond("age", Operator.IN, (1, 2)),
        cond("age", Operator.IN, (3,)),
        cond("age", Operator.NOT_IN, ()),
        cond("age", Operator.IN, ()),
    )


def test_between_takes_a_pair(users: Entity) -> None:
    filters = compile_filters(users, [spec("age", "between", ["1", 9.0])])
    assert filters == all_of(cond("age", Operator.BETWEEN, (1, 9)))


def test_ordering_operators_are_allowed_on_booleans(users: Entity) -> None:
    filters = compile_filters(users, [spec("active", "gt", False)])
    assert matches(filters, {"active": True})
    assert not matches(filters, {"active": False})
    assert not matches(filters, {"active": None})


def test_or_grouping(users: Entity) -> None:
    a, b, c, d = (spec("age", "eq", i) for i in range(4))
    b = spec("age", "eq", 1, "or")
    d = spec("age", "eq", 3, "Or")
    c = spec("age", "eq", 2, "and")
    filters = compile_filters(users, [a, b, c, d])
    assert filters == Filters(
        (
            FilterGroup((cond("age", Operator.EQ, 0), cond("age", Operator.EQ, 1))),
            FilterGroup((cond("age", Operator.EQ, 2), cond("age", Operator.EQ, 3))),
        )
    )


def test_first_filters_or_is_ignored(users: Entity) -> None:
    filters = compile_filters(users, [spec("age", "eq", 0, "OR"), spec("age", "eq", 1)])
    assert filters == all_of(cond("age", Operator.EQ, 0), cond("age", Operator.EQ, 1))


def test_no_filters_match_everything(users: Entity) -> None:
    filters = compile_filters(users, [])
    assert filters == Filters()
    assert matches(filters, {})


# --- matches: null semantics --------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected_on_null"),
    [
        (cond("n", Operator.EQ, 1), False),
        (cond("n", Operator.NEQ, 1), True),
        (cond("n", Operator.GT, 1), False),
        (cond("n", Operator.GTE, 1), False),
        (cond("n", Operator.LT, 1), False),
        (cond("n", Operator.LTE, 1), False),
        (cond("n", Operator.LIKE, "%"), False),
        (cond("n", Operator.ILIKE, "%"), False),
        (cond("n", Operator.IN, (1,)), False),
        (cond("n", Operator.IN, ()), False),
        (cond("n", Operator.NOT_IN, (1,)), True),
        (cond("n", Operator.NOT_IN, ()), True),
        (cond("n", Operator.BETWEEN, (0, 9)), False),
        (cond("n", Operator.IS_NULL), True),
        (cond("n", Operator.IS_NOT_NULL), False),
    ],
)
def test_null_semantics(condition: Condition, expected_on_null: bool) -> None:
    filters = all_of(condition)
    assert matches(filters, {"n": None}) is expected_on_null
    assert matches(filters, {}) is expected_on_null  # a missing column is NULL


def test_comparisons_on_values() -> None:
    row = {"n": 5, "t": "b", "x": 2.5}
    assert matches(all_of(cond("n", Operator.EQ, 5)), row)
    assert not matches(all_of(cond("n", Operator.NEQ, 5)), row)
    assert matches(all_of(cond("n", Operator.GT, 4)), row)
    assert not matches(all_of(cond("n", Operator.GT, 5)), row)
    assert matches(all_of(cond("n", Operator.GTE, 5)), row)
    assert matches(all_of(cond("n", Operator.LT, 6)), row)
    assert matches(all_of(cond("n", Operator.LTE, 5)), row)
    assert matches(all_of(cond("n", Operator.BETWEEN, (5, 5))), row)
    assert not matches(all_of(cond("n", Operator.BETWEEN, (6, 4))), row)  # not symmetric
    assert matches(all_of(cond("n", Operator.IN, (1, 5))), row)
    assert not matches(all_of(cond("n", Operator.NOT_IN, (1, 5))), row)
    assert matches(all_of(cond("x", Operator.GT, 2)), row)  # int vs float numerically
    assert matches(all_of(cond("t", Operator.GT, "B")), row)  # code point order
    assert not matches(all_of(cond("t", Operator.GT, "é")), row)


def test_in_empty_matches_nothing_and_not_in_empty_everything() -> None:
    assert not matches(all_of(cond("n", Operator.IN, ())), {"n": 1})
    assert matches(all_of(cond("n", Operator.NOT_IN, ())), {"n": 1})


def test_matcher_is_cached_per_filters_object() -> None:
    filters = all_of(cond("n", Operator.EQ, 1))
    assert matches(filters, {"n": 1})
    equal_but_distinct = all_of(cond("n", Operator.EQ, 2))
    assert not matches(equal_but_distinct, {"n": 1})
    del filters
    assert matches(all_of(cond("n", Operator.EQ, 3)), {"n": 3})


# --- like patterns --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("abc", "ABC", False),
        ("a%", "a", True),
        ("a%", "abc", True),
        ("%c", "abc", True),
        ("%b%", "abc", True),
        ("%", "", True),
        ("_", "", False),
        ("_", "x", True),
        ("_", "xy", False),
        ("a_c", "abc", True),
        ("a_c", "a\nc", True),
        ("a%c", "a\n\nc", True),
        ("100\\%", "100%", True),
        ("100\\%", "1000", False),
        ("a\\_c", "a_c", True),
        ("a\\_c", "abc", False),
        ("a\\\\b", "a\\b", True),
        ("\\a", "a", True),
        ("a.c", "abc", False),
        ("a*", "aaa", False),
        ("(x)", "(x)", True),
        ("[ab]", "a", False),
        ("%%%", "", True),
        ("é_", "éa", True),
    ],
)
def test_like(pattern: str, text: str, expected: bool) -> None:
    assert (like_pattern(pattern, case_insensitive=False).fullmatch(text) is not None) is expected


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("ABC", "abc", True),
        ("a%Z", "AbcZ", True),
        ("é", "É", False),  # non-ASCII folding follows the database; the core folds ASCII only
        ("k", "\u212a", False),  # KELVIN SIGN is not ASCII "K"
        ("s", "\u017f", False),  # LONG S
        ("\\A", "a", True),
    ],
)
def test_ilike_folds_ascii_only(pattern: str, text: str, expected: bool) -> None:
    assert (like_pattern(pattern, case_insensitive=True).fullmatch(text) is not None) is expected


def test_like_rejects_trailing_backslash() -> None:
    with pytest.raises(ValueError):
        like_pattern("abc\\", case_insensitive=False)
    like_pattern("abc\\\\", case_insensitive=False)  # an escaped backslash is fine


def test_like_and_ilike_in_matches() -> None:
    row = {"t": "Hello"}
    assert matches(all_of(cond("t", Operator.LIKE, "H%")), row)
    assert not matches(all_of(cond("t", Operator.LIKE, "h%")), row)
    assert matches(all_of(cond("t", Operator.ILIKE, "h%")), row)


# --- property tests -------------------------------------------------------------------------

COLUMNS = {"n": ColumnType.INTEGER, "t": ColumnType.TEXT}
PROP_ENTITY = Entity(
    name="things",
    table_name="things",
    columns=[
        Column(name="id", type=ColumnType.INTEGER, primary_key=True, nullable=False),
        Column(name="n", type=ColumnType.INTEGER),
        Column(name="t", type=ColumnType.TEXT),
    ],
)

small_ints = st.integers(-3, 3)
texts = st.text(alphabet="aAbB%_\\é\n", max_size=5)
rows = st.fixed_dictionaries({"n": st.none() | small_ints, "t": st.none() | texts})


@st.composite
def filter_specs(draw: st.DrawFn) -> FilterSpec:
    """A valid wire filter on column n (integer) or t (text)."""
    column = draw(st.sampled_from(["n", "t"]))
    values = small_ints if column == "n" else texts
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
    if operator in ("in", "not_in"):
        value: Any = draw(st.lists(values, max_size=3))
    elif operator == "between":
        value = [draw(values), draw(values)]
    elif operator in ("like", "ilike"):
        value = draw(st.text(alphabet="aAbB%_é\n", max_size=4))
    elif operator in ("eq", "neq"):
        value = draw(st.none() | values)
    else:
        value = draw(values)
    logic = draw(st.sampled_from(["AND", "OR", "and", "or"]))
    return spec(column, operator, value, logic)


def one(s: FilterSpec) -> Filters:
    return compile_filters(
        PROP_ENTITY, [FilterSpec(column=s.column, operator=s.operator, value=s.value)]
    )


def holds(s: FilterSpec, row: dict[str, Any]) -> bool:
    return matches(one(s), row)


@settings(max_examples=300, deadline=None)
@given(st.lists(filter_specs(), max_size=6), rows)
def test_grouping_law(specs: list[FilterSpec], row: dict[str, Any]) -> None:
    """ORs join a filter to its predecessor; the runs are ANDed."""
    groups: list[list[FilterSpec]] = []
    for i, s in enumerate(specs):
        if i > 0 and s.logic_operator.upper() == "OR":
            groups[-1].append(s)
        else:
            groups.append([s])
    expected = all(any(holds(s, row) for s in group) for group in groups)
    assert matches(compile_filters(PROP_ENTITY, specs), row) is expected


@settings(max_examples=100, deadline=None)
@given(filter_specs(), filter_specs(), filter_specs(), filter_specs(), rows)
def test_named_grouping_laws(
    a: FilterSpec, b: FilterSpec, c: FilterSpec, d: FilterSpec, row: dict[str, Any]
) -> None:
    def with_logic(s: FilterSpec, logic: str) -> FilterSpec:
        return spec(s.column, s.operator, s.value, logic)

    A, B, C, D = (holds(s, row) for s in (a, b, c, d))
    both = compile_filters(PROP_ENTITY, [with_logic(a, "AND"), with_logic(b, "AND")])
    either = compile_filters(PROP_ENTITY, [with_logic(a, "AND"), with_logic(b, "OR")])
    assert matches(both, row) is (A and B)
    assert matches(either, row) is (A or B)
    grouped = compile_filters(
        PROP_ENTITY,
        [with_logic(a, "AND"), with_logic(b, "or"), with_logic(c, "AND"), with_logic(d, "OR")],
    )
    assert matches(grouped, row) is ((A or B) and (C or D))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["n", "t"]), st.data(), rows)
def test_eq_neq(column: str, data: st.DataObject, row: dict[str, Any]) -> None:
    value = data.draw(small_ints if column == "n" else texts)
    eq = holds(spec(column, "eq", value), row)
    neq = holds(spec(column, "neq", value), row)
    if row[column] is None:
        assert not eq
        assert neq  # IS DISTINCT FROM keeps NULL
    else:
        assert eq is not neq
        assert eq is (row[column] == value)
    assert holds(spec(column, "eq", None), row) is (row[column] is None)
    assert holds(spec(column, "neq", None), row) is (row[column] is not None)


@settings(max_examples=200, deadline=None)
@given(st.lists(small_ints, max_size=4), rows)
def test_in_is_an_or_of_eqs(values: list[int], row: dict[str, Any]) -> None:
    in_ = holds(spec("n", "in", values), row)
    assert in_ is any(holds(spec("n", "eq", v), row) for v in values)
    not_in = holds(spec("n", "not_in", values), row)
    assert not_in is all(holds(spec("n", "neq", v), row) for v in values)
    if not values:
        assert not in_
        assert not_in


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["n", "t"]), st.data(), rows)
def test_between_is_gte_and_lte(column: str, data: st.DataObject, row: dict[str, Any]) -> None:
    values = small_ints if column == "n" else texts
    low, high = data.draw(values), data.draw(values)
    between = holds(spec(column, "between", [low, high]), row)
    assert between is (
        holds(spec(column, "gte", low), row) and holds(spec(column, "lte", high), row)
    )


# An independent oracle for LIKE: dynamic programming over the parsed pattern, no regex.


def parse_like(pattern: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        tokens.append(("any", "") if ch == "%" else ("one", "") if ch == "_" else ("lit", ch))
        i += 1
    return tokens


def like_oracle(pattern: str, text: str) -> bool:
    tokens = parse_like(pattern)

    @functools.cache
    def match(ti: int, si: int) -> bool:
        if ti == len(tokens):
            return si == len(text)
        kind, ch = tokens[ti]
        if kind == "any":
            return match(ti + 1, si) or (si < len(text) and match(ti, si + 1))
        if si == len(text):
            return False
        if kind == "one" or text[si] == ch:
            return match(ti + 1, si + 1)
        return False

    return match(0, 0)


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


like_alphabet = "aAbBé\n%_\\"


@st.composite
def like_patterns(draw: st.DrawFn) -> str:
    pattern = draw(st.text(alphabet=like_alphabet, max_size=8))
    return pattern + "\\\\" if pattern.endswith("\\") and not pattern.endswith("\\\\") else pattern


def well_formed(pattern: str) -> bool:
    try:
        parse_like(pattern)
    except IndexError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(like_patterns(), st.text(alphabet="aAbBé\n%_\\", max_size=8))
def test_like_against_oracle(pattern: str, text: str) -> None:
    if not well_formed(pattern):
        with pytest.raises(ValueError):
            like_pattern(pattern, case_insensitive=False)
        return
    got = like_pattern(pattern, case_insensitive=False).fullmatch(text) is not None
    assert got is like_oracle(pattern, text)
    assert holds(spec("t", "like", pattern), {"t": text}) is got


@settings(max_examples=300, deadline=None)
@given(like_patterns(), st.text(alphabet="aAbBéÉ%_\\\u212a", max_size=8))
def test_ilike_is_like_after_ascii_lowercasing(pattern: str, text: str) -> None:
    if not well_formed(pattern):
        return
    ilike = like_pattern(pattern, case_insensitive=True).fullmatch(text) is not None
    assert ilike is like_oracle(ascii_lower(pattern), ascii_lower(text))
    assert holds(spec("t", "ilike", pattern), {"t": text}) is ilike


@pytest.mark.parametrize("case_insensitive", [False, True])
def test_like_never_backtracks(case_insensitive: bool) -> None:
    """A subscription filter ``like '%a%a%a...%b'`` against a long run of ``a``: a
    backtracking matcher takes time exponential in the number of ``%`` (this test would
    then run into pytest's timeout); the segment matcher answers at once."""
    text = "a" * 5_000
    for pattern in ("%a" * 12 + "%b", "%a_" * 12 + "%b", "%a" * 12 + "%"):
        expected = pattern.endswith("%")
        compiled = like_pattern(pattern, case_insensitive=case_insensitive)
        assert (compiled.fullmatch(text) is not None) is expected
        assert holds(spec("t", "ilike" if case_insensitive else "like", pattern), {"t": text}) is (
            expected
        )


# --- limits (issue 12: database limits are client errors) ---------------------------------


def test_long_in_lists_compile_in_linear_time(users: Entity) -> None:
    # De-duplicating with ``list.__contains__`` was quadratic: 40,000 values took 8 s on
    # the event loop. 29,000 (the most Limits allows) would take over 4 s that way.
    limits = Limits(max_in_values=29_000)
    values = [*range(29_000)]
    started = time.perf_counter()
    compiled = compile_filters(users, [spec("age", "not_in", values)], limits)
    elapsed = time.perf_counter() - started
    assert compiled.groups[0].conditions[0].value == tuple(values)
    assert elapsed < 1.0, f"{len(values)} values took {elapsed:.2f} s"


def test_in_values_are_deduplicated_keeping_the_first(users: Entity) -> None:
    compiled = compile_filters(users, [spec("age", "in", [3, "3", 1, 3.0, 2, 1])])
    assert compiled.groups[0].conditions[0].value == (3, 1, 2)
    compiled = compile_filters(users, [spec("score", "in", [-0.0, 0, 1, 1.0])])
    value = compiled.groups[0].conditions[0].value
    assert value == (-0.0, 1.0) and str(value[0]) == "-0.0"


def test_in_values_beyond_max_in_values_are_invalid_filter(users: Entity) -> None:
    limits = Limits(max_in_values=5)
    compile_filters(users, [spec("age", "in", [1, 2, 3]), spec("id", "not_in", [1, 2])], limits)
    with pytest.raises(InvalidRequest) as info:
        compile_filters(
            users, [spec("age", "in", [1, 2, 3]), spec("id", "not_in", [1, 2, 2])], limits
        )
    error = info.value.error
    assert error.code == "invalid_filter"
    assert error.details == {"column": "id", "operator": "not_in", "limit": 5}
    assert "max_in_values" in error.message
    # Counted as sent (before duplicates are removed, before any value is coerced).
    with pytest.raises(InvalidRequest):
        compile_filters(users, [spec("age", "in", [object()] * 6)], limits)
    # The default applies when no limits are given.
    default = Limits().max_in_values
    compile_filters(users, [spec("age", "in", list(range(default)))])
    with pytest.raises(InvalidRequest):
        compile_filters(users, [spec("age", "in", list(range(default + 1)))])


def test_more_than_max_filters_is_invalid_options(users: Entity) -> None:
    limits = Limits(max_filters=3)
    compile_filters(users, [spec("age", "neq", i) for i in range(3)], limits)
    with pytest.raises(InvalidRequest) as info:
        compile_filters(users, [spec("age", "neq", i) for i in range(4)], limits)
    error = info.value.error
    assert error.code == "invalid_options"
    assert error.details == {"filters": 4, "limit": 3}
    assert "max_filters" in error.message
    # Checked before anything else: SQLite refused 999 filters with an internal error.
    with pytest.raises(InvalidRequest) as info:
        compile_filters(users, [spec("nope", "neq", 1)] * 999)
    assert info.value.error.code == "invalid_options"


@pytest.mark.parametrize("operator", ["like", "ilike"])
def test_nul_in_a_like_pattern_is_invalid_filter(users: Entity, operator: str) -> None:
    # As every text value: PostgreSQL cannot hold NUL (it gave "internal storage error").
    error = invalid(users, [spec("name", operator, "a\x00%")]).error
    assert error.code == "invalid_filter"
    assert error.details == {"column": "name", "operator": operator}


def test_limits_are_checked_against_what_the_databases_take() -> None:
    assert Limits(max_filters=MAX_FILTERS_CEILING).max_filters == MAX_FILTERS_CEILING
    with pytest.raises(ValueError, match="max_filters"):
        Limits(max_filters=MAX_FILTERS_CEILING + 1)
    top = MAX_FILTER_PARAMETERS - 2 * 100
    assert Limits(max_in_values=top).max_in_values == top
    with pytest.raises(ValueError, match="max_in_values"):
        Limits(max_in_values=top + 1)
    with pytest.raises(ValueError):
        Limits(max_count=0)
    assert Limits(max_count=None).max_count is None
