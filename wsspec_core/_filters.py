"""Filter validation, value coercion and the in-memory matcher.

Theory of operation
-------------------
A wire filter (:class:`~wsspec_core.FilterSpec`) is checked once, when a request or a
subscription arrives, by :func:`compile_filters`: the column must exist, the operator must
be known, the value is coerced to the column's Python type (:func:`coerce_value`) and the
filters are grouped (runs of OR-joined filters, the runs ANDed; docs/protocol.md "Query
options").  The result is a :class:`~wsspec_core.Filters` value that storage adapters turn
into SQL with bound parameters only.

:func:`matches` evaluates the same :class:`~wsspec_core.Filters` on a Python row.  It is run
for every notification candidate and by the in-memory backend, and it must give exactly
the answer the SQL ``WHERE`` gives on SQLite and PostgreSQL (docs/protocol.md
"Subscriptions and notifications"):

* ``NULL`` (``None``, or a column missing from the row): ``neq`` and ``not_in`` keep it
  (``IS DISTINCT FROM``), ``is_null`` matches it, every other operator is false on it.
* ``in ()`` matches nothing, ``not_in ()`` matches every row.
* ``between (lo, hi)`` is ``lo <= x AND x <= hi``: empty when ``lo > hi``, as in SQL.
* Text compares by code point (Python ``str`` order), which is SQLite's ``BINARY``
  collation and PostgreSQL's ``"C"`` collation.  ``like`` is case-sensitive; ``ilike``
  folds ASCII letters only (non-ASCII case folding follows the database and may differ).
* ``like`` patterns: ``%`` any run of characters (newlines included), ``_`` exactly one
  character, a backslash makes the next character literal; a pattern ending in a lone
  backslash is rejected (PostgreSQL refuses it too).
* Booleans order ``false < true`` (as 0/1 in SQLite and ``boolean`` in PostgreSQL), so
  ``gt``/``lt``/``between`` are allowed on boolean columns.

Each :class:`~wsspec_core.Filters` is compiled once into a closure and cached by identity
(a subscription keeps its ``Filters`` object for its lifetime), so :func:`matches` costs
one dictionary look-up plus the comparisons themselves.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ._config import Limits
from ._entities import Column, ColumnType, Entity
from ._messages import FilterSpec
from ._query import Condition, FilterGroup, Filters, InvalidRequest, Operator, Row

# --- coercion ---------------------------------------------------------------------------

#: Integers are 64-bit signed in SQLite and PostgreSQL (``bigint``); a bigger value could
#: not be bound as a parameter, so it is refused up front rather than failing in SQL.
#: Narrower columns (``Column.integer_bits``) are refused beyond their own range.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_INT_RANGES = {bits: (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (16, 32, 64)}

#: Largest magnitude of a float taken as an integer: every integer up to 2**53 is exactly
#: a float, beyond it a float no longer says which integer it means (the JSON decoder
#: reads integers beyond 64 bits as floats: -2**63-1 arrives as -2.0**63, in range).
_MAX_EXACT_FLOAT = 2.0**53

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce_integer(value: Any, bits: int = 64) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"expected an integer, got {_describe(value)}")
        if abs(value) > _MAX_EXACT_FLOAT:
            raise ValueError(
                f"integer out of range: {_describe(value)} is a floating-point number beyond "
                "2**53 (or an integer beyond 64 bits), which stands for no exact integer"
            )
        result = int(value)
    elif isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            raise ValueError(f"expected an integer, got the string {_describe(value)}")
        result = int(value)
    else:
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    low, high = _INT_RANGES[bits]
    if not low <= result <= high:
        raise ValueError(f"integer out of range ({bits}-bit signed: {low} to {high})")
    return result


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:
            raise ValueError("number out of range") from None
    elif isinstance(value, str):
        if len(value) > 400 or not _FLOAT_TEXT.fullmatch(value):
            raise ValueError(f"expected a number, got the string {_describe(value)}")
        result = float(value)
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(result):
        raise ValueError("expected a finite number (no NaN or infinity)")
    return result


def _coerce_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("expected text, got a boolean")
    if isinstance(value, str):
        result = value
    elif isinstance(value, int):
        result = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected text, got a non-finite number")
        # Shortest round-trip form: 2.5 -> "2.5", 5.0 -> "5.0", 1e20 -> "1e+20".
        result = repr(value)
    else:
        raise ValueError(f"expected text, got {type(value).__name__}")
    if "\x00" in result:
        # PostgreSQL text cannot hold NUL; refusing it everywhere keeps backends alike.
        raise ValueError("text may not contain the NUL character")
    return result


def _coerce_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {_describe(value)}")


def _coerce_date(value: Any) -> datetime.date:
    if isinstance(value, datetime.datetime):
        raise ValueError("expected a date (YYYY-MM-DD), got a datetime")
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected a date (YYYY-MM-DD), got {_describe(value)}")


def _naive_utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=None)
    try:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("datetime out of range once converted to UTC") from None


def _coerce_datetime(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return _naive_utc(value)
    if isinstance(value, str) and _DATETIME_TEXT.fullmatch(value):
        text = value
        if text[-1] in "Zz":
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.datetime.fromisoformat(text.replace("t", "T", 1))
        except ValueError:
            pass
        else:
            return _naive_utc(parsed)
    raise ValueError(f"expected an ISO 8601 datetime, got {_describe(value)}")


_COERCERS: dict[ColumnType, Callable[[Any], Any]] = {
    ColumnType.INTEGER: _coerce_integer,
    ColumnType.FLOAT: _coerce_float,
    ColumnType.TEXT: _coerce_text,
    ColumnType.BOOLEAN: _coerce_boolean,
    ColumnType.DATE: _coerce_date,
    ColumnType.DATETIME: _coerce_datetime,
}


def coerce_value(column: Column, value: Any) -> Any:
    """``value`` as ``column``'s Python type; raises ``ValueError`` with a clear message.

    docs/protocol.md "Coercion":

    * INTEGER: ``int``, an integral finite ``float`` (``5.0``) of magnitude at most 2**53,
      or a string of ASCII digits with an optional sign (``"5"``, ``"-3"``; no spaces, no
      underscores, no ``"5.0"``). Never a boolean. The result must fit the column's
      ``integer_bits`` (signed 64, 32 or 16 bits).
    * FLOAT: ``int`` or ``float`` (not a boolean), or a decimal string (``"2.5"``,
      ``"-1e3"``); the result is a finite ``float`` (NaN and infinity are refused).
    * TEXT: a string, or a number written as its shortest round-trip decimal text
      (``5`` -> ``"5"``, ``2.5`` -> ``"2.5"``, ``5.0`` -> ``"5.0"``). Never a boolean.
      NUL characters are refused (PostgreSQL cannot store them).
    * BOOLEAN: ``true`` / ``false`` only (not 0/1, not strings).
    * DATE: a ``"YYYY-MM-DD"`` string, or a ``datetime.date`` (not a ``datetime``).
    * DATETIME: an ISO 8601 string ``YYYY-MM-DD[THH:MM[:SS[.fraction]]][Z|±HH:MM]`` (a
      space may replace the ``T``; no offset means UTC; up to 9 fractional digits, cut
      to microseconds), or a ``datetime.datetime``; the result is a naive UTC datetime
      (aware values are converted to UTC first).

    ``None`` is not handled here: callers decide what NULL means.
    """
    kind = column.type
    if kind is ColumnType.INTEGER:
        return _coerce_integer(value, column.integer_bits)
    return _COERCERS[kind](value)


# --- compiling wire filters -----------------------------------------------------------

_OPERATORS = {op.value: op for op in Operator}
_ORDERED = {Operator.GT, Operator.GTE, Operator.LT, Operator.LTE}


def _filter_error(spec: FilterSpec, message: str) -> InvalidRequest:
    return InvalidRequest(
        "invalid_filter", message, {"column": spec.column, "operator": spec.operator}
    )


def _coerce_filter_value(column: Column, spec: FilterSpec, value: Any) -> Any:
    try:
        return coerce_value(column, value)
    except ValueError as exc:
        raise _filter_error(
            spec, f"Invalid value for filter on {column.name!r} ({spec.operator}): {exc}"
        ) from None


def _compile_condition(entity: Entity, spec: FilterSpec, in_budget: list[int]) -> Condition:
    """One wire filter checked and coerced. ``in_budget`` is ``[values still allowed,
    max_in_values]`` for the request's ``in``/``not_in`` lists; this decreases the first."""
    column = entity.columns_by_name.get(spec.column)
    if column is None:
        what = "a relation, not a column" if spec.column in entity.relations_by_name else None
        raise InvalidRequest(
            "invalid_column",
            f"Invalid filter column {spec.column!r} for {entity.qualified_name}"
            + (f": {what}" if what else ""),
            {"column": spec.column},
        )
    name = spec.operator.lower() if spec.operator.isascii() else spec.operator
    operator = _OPERATORS.get(name)
    if operator is None:
        raise _filter_error(
            spec,
            f"Unknown filter operator {spec.operator!r}; expected one of " + ", ".join(_OPERATORS),
        )
    value = spec.value

    if operator in (Operator.IS_NULL, Operator.IS_NOT_NULL):
        # The value, if any, is ignored: the operator says everything.
        return Condition(column=column.name, operator=operator)

    if operator in (Operator.EQ, Operator.NEQ):
        if value is None:
            null_op = Operator.IS_NULL if operator is Operator.EQ else Operator.IS_NOT_NULL
            return Condition(column=column.name, operator=null_op)
        coerced = _coerce_filter_value(column, spec, value)
        return Condition(column=column.name, operator=operator, value=coerced)

    if operator in _ORDERED:
        if value is None:
            raise _filter_error(spec, f"Filter {spec.operator!r} needs a non-null value")
        coerced = _coerce_filter_value(column, spec, value)
        return Condition(column=column.name, operator=operator, value=coerced)

    if operator in (Operator.LIKE, Operator.ILIKE):
        if column.type is not ColumnType.TEXT:
            raise _filter_error(
                spec, f"Filter {spec.operator!r} applies to text columns only: {column.name!r}"
            )
        if not isinstance(value, str):
            raise _filter_error(spec, f"Filter {spec.operator!r} needs a string pattern")
        if "\x00" in value:
            # As for every text value (see _coerce_text): PostgreSQL cannot take NUL.
            raise _filter_error(
                spec, f"Invalid {spec.operator!r} pattern: text may not contain the NUL character"
            )
        try:
            like_pattern(value, case_insensitive=operator is Operator.ILIKE)
        except ValueError as exc:
            raise _filter_error(spec, f"Invalid {spec.operator!r} pattern: {exc}") from None
        return Condition(column=column.name, operator=operator, value=value)

    if operator in (Operator.IN, Operator.NOT_IN):
        items = value if isinstance(value, list | tuple) else [value]
        # Checked before any work on the values, so a huge list costs nothing.
        in_budget[0] -= len(items)
        if in_budget[0] < 0:
            raise _too_many_in_values(spec, in_budget[1])
        # A dict keeps the first of equal values, in order, in linear time (a list's
        # ``in`` test made this quadratic: 40,000 values took 8 s).
        unique: dict[Any, None] = {}
        for item in items:
            if item is None:
                raise _filter_error(
                    spec, f"Filter {spec.operator!r} values may not be null (use is_null)"
                )
            unique[_coerce_filter_value(column, spec, item)] = None
        return Condition(column=column.name, operator=operator, value=tuple(unique))

    # BETWEEN
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _filter_error(spec, "Filter 'between' needs a value [low, high]")
    if value[0] is None or value[1] is None:
        raise _filter_error(spec, "Filter 'between' bounds may not be null")
    low = _coerce_filter_value(column, spec, value[0])
    high = _coerce_filter_value(column, spec, value[1])
    return Condition(column=column.name, operator=operator, value=(low, high))


def _too_many_in_values(spec: FilterSpec, limit: int) -> InvalidRequest:
    return InvalidRequest(
        "invalid_filter",
        f"Too many in/not_in values: a request may hold at most {limit} in all its "
        f"in/not_in lists together (limit max_in_values); {spec.column!r} ({spec.operator}) "
        "goes beyond it",
        {"column": spec.column, "operator": spec.operator, "limit": limit},
    )


_DEFAULT_LIMITS = Limits()


def compile_filters(
    entity: Entity, specs: Sequence[FilterSpec], limits: Limits | None = None
) -> Filters:
    """Validate and group wire filters; raises ``InvalidRequest``.

    Checks, for each filter in order: ``logic_operator`` is ``AND`` or ``OR`` in any case
    (``invalid_filter``; checked on the first filter too, although its meaning is
    ignored there), the column exists (``invalid_column``, details ``{column}``), the
    operator is known (``invalid_filter``) and the value fits it (``invalid_filter``,
    details ``{column, operator}``).  ``eq``/``neq`` with ``null`` become
    ``IS_NULL``/``IS_NOT_NULL``; ``in``/``not_in`` values are de-duplicated.

    Limits (``limits``, the defaults when ``None``; docs/protocol.md "Limits"): more than
    ``max_filters`` filters is ``invalid_options`` (details ``{filters, limit}``), checked
    first; more than ``max_in_values`` values in all ``in``/``not_in`` lists together is
    ``invalid_filter`` on the list that goes beyond it (details ``{column, operator,
    limit}``).  The cost of compiling is linear in the number of values.

    Grouping (docs/protocol.md "Query options"): ``OR`` on filter *i* joins it to the
    filter before it; ``[A, B(or), C, D(or)]`` is ``(A OR B) AND (C OR D)``.
    """
    limits = _DEFAULT_LIMITS if limits is None else limits
    if len(specs) > limits.max_filters:
        raise InvalidRequest(
            "invalid_options",
            f"options.filters holds {len(specs)} filters; at most {limits.max_filters} are "
            "allowed (limit max_filters)",
            {"filters": len(specs), "limit": limits.max_filters},
        )
    in_budget = [limits.max_in_values, limits.max_in_values]
    groups: list[list[Condition]] = []
    for index, spec in enumerate(specs):
        logic = spec.logic_operator.upper() if spec.logic_operator.isascii() else ""
        if logic not in ("AND", "OR"):
            raise InvalidRequest(
                "invalid_filter",
                f"Invalid logic_operator {spec.logic_operator!r}: expected AND or OR",
                {
                    "column": spec.column,
                    "operator": spec.operator,
                    "logic_operator": spec.logic_operator,
                },
            )
        condition = _compile_condition(entity, spec, in_budget)
        if logic == "OR" and index > 0:
            groups[-1].append(condition)
        else:
            groups.append([condition])
    return Filters(tuple(FilterGroup(tuple(group)) for group in groups))


# --- like patterns ----------------------------------------------------------------------


#: ASCII letters folded to lower case, nothing else (docs/protocol.md "like / ilike").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class LikePattern:
    """A compiled SQL ``LIKE`` pattern; ``fullmatch(text)`` says whether it matches.

    Theory of operation: ``%`` splits the pattern into *segments* of literal characters and
    ``_`` (any one character). The first segment must match at the start (unless the
    pattern starts with ``%``), the last at the end (unless it ends with ``%``), and the
    ones between are found left to right, each at the leftmost place after the previous
    one: taking the leftmost place never loses a match, because what follows may start
    anywhere later. So matching never backtracks: its cost is at most the text's length
    times the pattern's, where a backtracking regular expression (``.*a.*a.*b``) takes
    time exponential in the number of ``%`` on a long run of ``a`` characters, and would
    hold the event loop for seconds while routing one change.
    """

    __slots__ = ("_fold", "_head", "_middle", "_tail", "_unanchored")

    def __init__(self, segments: list[str | tuple[str | None, ...]], *, fold: bool) -> None:
        self._fold = fold
        # A pattern with no % has one segment that must match the whole text.
        self._unanchored = len(segments) > 1
        self._head = segments[0]
        self._tail = segments[-1] if len(segments) > 1 else None
        self._middle = segments[1:-1]

    def fullmatch(self, text: str) -> bool | None:
        """``True`` when the whole of ``text`` matches, else ``None`` (like ``re``)."""
        if self._fold:
            text = text.translate(_ASCII_LOWER)
        head = self._head
        if not self._unanchored:
            return True if len(text) == len(head) and _match_at(head, text, 0) else None
        tail = self._tail
        assert tail is not None
        start, end = len(head), len(text) - len(tail)
        if start > end or not _match_at(head, text, 0) or not _match_at(tail, text, end):
            return None
        for segment in self._middle:
            found = _find(segment, text, start, end)
            if found < 0:
                return None
            start = found + len(segment)
        return True


def _match_at(segment: str | tuple[str | None, ...], text: str, at: int) -> bool:
    if isinstance(segment, str):
        return text.startswith(segment, at)
    if at + len(segment) > len(text):
        return False
    return all(c is None or c == text[at + i] for i, c in enumerate(segment))


def _find(segment: str | tuple[str | None, ...], text: str, start: int, end: int) -> int:
    """The leftmost place in ``text[start:end]`` where ``segment`` matches, or -1."""
    if isinstance(segment, str):
        return text.find(segment, start, end)
    for at in range(start, end - len(segment) + 1):
        if _match_at(segment, text, at):
            return at
    return -1


@functools.lru_cache(maxsize=1024)
def like_pattern(pattern: str, *, case_insensitive: bool) -> LikePattern:
    """The compiled form (use ``fullmatch``) of a SQL ``LIKE`` pattern.

    ``%`` matches any run of characters (including none, and newlines), ``_`` exactly one
    character, and a backslash makes the next character literal (``\\%``, ``\\_``,
    ``\\\\``, and ``\\x`` is just ``x``).  A trailing lone backslash raises ``ValueError``.
    ``case_insensitive`` folds ASCII letters only; other characters compare exactly.
    SQL adapters must use ``ESCAPE '\\'`` to get the same rules. Matching takes at most
    time proportional to the text's length times the pattern's (:class:`LikePattern`).
    """
    segments: list[str | tuple[str | None, ...]] = []
    current: list[str | None] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 == n:
                raise ValueError("pattern ends with a lone backslash (escape it as \\\\)")
            current.append(pattern[i + 1])
            i += 2
            continue
        if char == "%":
            segments.append(_segment(current))
            current = []
        elif char == "_":
            current.append(None)
        else:
            current.append(char)
        i += 1
    segments.append(_segment(current))
    if case_insensitive:
        segments = [
            s.translate(_ASCII_LOWER)
            if isinstance(s, str)
            else tuple(c if c is None else c.translate(_ASCII_LOWER) for c in s)
            for s in segments
        ]
    return LikePattern(segments, fold=case_insensitive)


def _segment(chars: list[str | None]) -> str | tuple[str | None, ...]:
    """A run between two ``%``: a plain string when it has no ``_`` (``str.find`` is fast)."""
    if None in chars:
        return tuple(chars)
    return "".join(c for c in chars if c is not None)


# --- the matcher --------------------------------------------------------------------------

_Predicate = Callable[[Row], bool]


def _condition_predicate(condition: Condition) -> _Predicate:
    col = condition.column
    op = condition.operator
    v = condition.value

    if op is Operator.IS_NULL:
        return lambda row: row.get(col) is None
    if op is Operator.IS_NOT_NULL:
        return lambda row: row.get(col) is not None
    if op is Operator.EQ:

        def eq(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x == v

        return eq
    if op is Operator.NEQ:

        def neq(row: Row) -> bool:
            x = row.get(col)
            return x is None or x != v

        return neq
    if op is Operator.GT:

        def gt(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x > v

        return gt
    if op is Operator.GTE:

        def gte(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x >= v

        return gte
    if op is Operator.LT:

        def lt(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x < v

        return lt
    if op is Operator.LTE:

        def lte(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x <= v

        return lte
    if op in (Operator.LIKE, Operator.ILIKE):
        fullmatch = like_pattern(v, case_insensitive=op is Operator.ILIKE).fullmatch

        def like(row: Row) -> bool:
            x = row.get(col)
            return x is not None and fullmatch(x) is not None

        return like
    if op is Operator.IN:
        if not v:
            return lambda row: False
        members = frozenset(v)

        def in_(row: Row) -> bool:
            x = row.get(col)
            return x is not None and x in members

        return in_
    if op is Operator.NOT_IN:
        if not v:
            return lambda row: True
        excluded = frozenset(v)

        def not_in(row: Row) -> bool:
            x = row.get(col)
            return x is None or x not in excluded

        return not_in
    if op is Operator.BETWEEN:
        low, high = v

        def between(row: Row) -> bool:
            x = row.get(col)
            return x is not None and low <= x <= high

        return between
    raise AssertionError(f"unhandled operator {op!r}")  # pragma: no cover


def _any_of(predicates: Sequence[_Predicate]) -> _Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def any_of(row: Row) -> bool:
        for predicate in predicates:  # noqa: SIM110 - a loop is faster than any(genexpr)
            if predicate(row):
                return True
        return False

    return any_of


def _compile(filters: Filters) -> _Predicate:
    groups = [
        _any_of([_condition_predicate(c) for c in group.conditions]) for group in filters.groups
    ]
    if not groups:
        return lambda row: True
    if len(groups) == 1:
        return groups[0]

    def all_of(row: Row) -> bool:
        for group in groups:  # noqa: SIM110 - a loop is faster than all(genexpr)
            if not group(row):
                return False
        return True

    return all_of


#: id(filters) -> (weak reference to the Filters, its compiled predicate).  Keyed by
#: identity because hashing a Filters value walks all of it; the weak reference's
#: callback drops the entry when the Filters object dies, before its id can be reused.
_compiled: dict[int, tuple[weakref.ref[Filters], _Predicate]] = {}


def _predicate_for(filters: Filters) -> _Predicate:
    key = id(filters)
    entry = _compiled.get(key)
    if entry is not None and entry[0]() is filters:
        return entry[1]
    predicate = _compile(filters)

    def forget(_ref: weakref.ref[Filters]) -> None:
        _compiled.pop(key, None)

    _compiled[key] = (weakref.ref(filters, forget), predicate)
    return predicate


def matches(filters: Filters, row: Row) -> bool:
    """Whether ``row`` satisfies ``filters``, exactly as SQL ``WHERE`` would.

    A column missing from ``row`` counts as NULL.  Row values must be of their column's
    Python type (as storage returns them); ``int`` and ``float`` compare numerically.
    See the module docstring for the NULL, ``in``, ``between`` and ``like`` rules.
    """
    return _predicate_for(filters)(row)
