"""Hypothesis strategies for WebSocketSpec messages: valid ones, and malformed frames.

Use them to property-test a WebSocketSpec server or client, this project's or another's
(docs/fuzzing.md).  Every strategy is built from an :class:`wsspec_core.Entity`, so it only
produces column names, operators and values that a compliant server must accept:

* :func:`values_for` - JSON values valid for one column (``None`` when it is nullable);
* :func:`rows` - the ``data`` of a valid create;
* :func:`filter_specs` / :func:`filters` - lists of :class:`wsspec_core.FilterSpec`, with
  ``OR`` groups, every operator of docs/protocol.md and values that coerce to the column's
  type (``"5"`` on an integer column, ``like`` patterns with ``%``, ``_`` and escapes, ...);
* :func:`query_options`, :func:`requests`, :func:`messages` - whole inbound messages as
  :mod:`wsspec_core` value classes (turn them into frames with
  :func:`wsspec_core.encode_inbound`, or :func:`to_wire` for a plain ``dict``);
* :func:`malformed_frames` - frames a server must refuse, each paired with the error
  ``code`` that docs/protocol.md prescribes for it.

Values are *wire* values: what a client writes in JSON (dates and datetimes are ISO 8601
strings).  Text values avoid NUL, lone surrogates and letters whose case folding differs
between databases beyond ASCII, which the protocol leaves to the backend.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from wsspec_core import (
    Column,
    ColumnType,
    Entity,
    FilterSpec,
    InboundMessage,
    Operation,
    Ping,
    PreloadSpec,
    QueryOptions,
    Request,
    SortSpec,
    Subscribe,
    Unsubscribe,
)

__all__ = [
    "FILTER_OPERATORS",
    "MalformedFrame",
    "filter_specs",
    "filters",
    "invalid_requests",
    "malformed_frames",
    "message_ids",
    "messages",
    "operators_for",
    "query_options",
    "requests",
    "rows",
    "subscribes",
    "to_wire",
    "values_for",
]

#: Every filter operator of docs/protocol.md "Query options".
FILTER_OPERATORS: tuple[str, ...] = (
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "like",
    "ilike",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
    "between",
)

# Integers stay well inside 64 bits (and JavaScript's safe range), so that every backend
# stores them exactly.
_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
# Text: ASCII printable (including the LIKE metacharacters and the backslash) plus a few
# non-ASCII characters that have no case, so `ilike` gives the same answer everywhere.
_ALPHABET = st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["€", "中", "✓"])
# Short, colliding words make equality and LIKE filters match now and then.
_WORDS = ("", "a", "A", "ab", "Ab", "active", "inactive", "x_y", "x%y", "50%", "a\\b", " a ")


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_WORDS), st.text(_ALPHABET, max_size=10))


def _floats() -> st.SearchStrategy[float]:
    return st.floats(
        min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False, allow_subnormal=False
    ).map(lambda f: 0.0 if f == 0 else f)


def _dates() -> st.SearchStrategy[dt.date]:
    return st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(2100, 12, 31))


def _datetimes() -> st.SearchStrategy[dt.datetime]:
    return st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    )


def _format_datetime(value: dt.datetime) -> str:
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text + "Z"


def _plain_values(column: Column) -> st.SearchStrategy[Any]:
    """Non-null wire values of the column's type, in their canonical JSON form."""
    kind = column.type
    if kind is ColumnType.INTEGER:
        return st.integers(_INT_MIN, _INT_MAX)
    if kind is ColumnType.FLOAT:
        return _floats()
    if kind is ColumnType.TEXT:
        return _text()
    if kind is ColumnType.BOOLEAN:
        return st.booleans()
    if kind is ColumnType.DATE:
        return _dates().map(dt.date.isoformat)
    if kind is ColumnType.DATETIME:
        return _datetimes().map(_format_datetime)
    raise ValueError(f"unsupported column type {kind!r}")


def values_for(
    column: Column, *, nulls: bool | None = None, coercible: bool = False
) -> st.SearchStrategy[Any]:
    """Valid JSON values for ``column``.

    ``nulls``: include ``None`` (default: when the column is nullable).  ``coercible``: also
    produce the other spellings that docs/protocol.md "Coercion" says the server must accept
    for the type (``5.0`` and ``"5"`` for an integer, numeric strings for a float, integers
    for text, ``+02:00`` offsets for datetimes), as a filter value may be written.
    """
    base = _plain_values(column)
    if coercible:
        base = st.one_of(base, _coercible_spellings(column))
    if nulls is None:
        nulls = column.nullable
    return st.one_of(st.none(), base) if nulls else base


def _coercible_spellings(column: Column) -> st.SearchStrategy[Any]:
    kind = column.type
    if kind is ColumnType.INTEGER:
        ints = st.integers(_INT_MIN, _INT_MAX)
        return st.one_of(ints.map(float), ints.map(str))
    if kind is ColumnType.FLOAT:
        return st.one_of(st.integers(_INT_MIN, _INT_MAX), _floats().map(repr))
    if kind is ColumnType.TEXT:
        return st.integers(-1000, 1000)
    if kind is ColumnType.DATETIME:
        return _datetimes().map(
            lambda d: (d + dt.timedelta(hours=2)).isoformat(timespec="seconds") + "+02:00"
        )
    return _plain_values(column)


def _writable_columns(entity: Entity) -> list[Column]:
    return [c for c in entity.columns if not (c.primary_key and c.has_default)]


def rows(
    entity: Entity,
    *,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    optional: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """The ``data`` of a valid create for ``entity``.

    Every column is present except a primary key the database generates; with
    ``optional``, nullable columns and columns with a default may be left out.  A key the
    client supplies is never ``null`` or ``""`` (an empty ``record_id`` means none).
    ``overrides`` replaces the value strategy of some columns (foreign keys, unique ones).
    """
    overrides = dict(overrides or {})
    required: dict[str, st.SearchStrategy[Any]] = {}
    maybe: dict[str, st.SearchStrategy[Any]] = {}
    for column in _writable_columns(entity):
        strategy = overrides.get(column.name, values_for(column))
        if column.primary_key:
            # A key must be addressable: ``record_id: ""`` means "no record id" on the
            # wire (docs/protocol.md "Messages"), and a key is never null.
            strategy = strategy.filter(lambda v: v is not None and v != "")
        if optional and (column.nullable or column.has_default):
            maybe[column.name] = strategy
        else:
            required[column.name] = strategy
    return st.fixed_dictionaries(required, optional=maybe)


def operators_for(column: Column) -> tuple[str, ...]:
    """The operators a compliant server accepts on ``column`` (``like`` on text only,
    no ordering on booleans)."""
    ops = list(FILTER_OPERATORS)
    if column.type is not ColumnType.TEXT:
        ops.remove("like")
        ops.remove("ilike")
    if column.type is ColumnType.BOOLEAN:
        for op in ("gt", "gte", "lt", "lte", "between"):
            ops.remove(op)
    return tuple(ops)


def _filterable(entity: Entity) -> list[Column]:
    return [c for c in entity.columns if isinstance(c.type, ColumnType)]


def _like_patterns(samples: st.SearchStrategy[Any] | None) -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.sampled_from(["%", "_", "\\%", "\\_", "\\\\", "a", "A", "x", "%a%", "_%"]),
        st.text(_ALPHABET.filter(lambda c: c not in "%_\\"), max_size=3),
    )
    built = st.lists(piece, max_size=4).map("".join)
    if samples is None:
        return built
    # A sample value with some characters turned into wildcards: matches sometimes.
    derived = st.tuples(samples.filter(lambda v: isinstance(v, str)), st.integers(0, 3)).map(
        _wildcard
    )
    return st.one_of(built, derived)


def _wildcard(args: tuple[str, int]) -> str:
    text, how = args
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if how == 0:
        return escaped
    if how == 1:
        return escaped[: len(escaped) // 2] + "%"
    if how == 2:
        return "%" + text[len(text) // 2 :].replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_"
        )
    return "_" * len(text)


def _random_case(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word, word, word.upper(), word.capitalize()])


@st.composite
def _filter_spec(
    draw: st.DrawFn,
    column: Column,
    samples: Sequence[Any],
    first: bool,
) -> FilterSpec:
    operator = draw(st.sampled_from(operators_for(column)))
    plain = values_for(column, nulls=False, coercible=True)
    if samples:
        present = [v for v in samples if v is not None]
        if present:
            plain = st.one_of(st.sampled_from(present), plain)
    value: Any
    if operator in ("eq", "neq"):
        value = draw(st.one_of(plain, st.none()) if column.nullable else plain)
    elif operator in ("gt", "gte", "lt", "lte"):
        value = draw(plain)
    elif operator in ("like", "ilike"):
        sample_strategy = st.sampled_from(list(samples)) if samples else None
        value = draw(_like_patterns(sample_strategy))
    elif operator in ("in", "not_in"):
        value = draw(st.one_of(st.lists(plain, max_size=4), plain))
    elif operator == "between":
        value = draw(st.lists(plain, min_size=2, max_size=2))
    else:
        value = None
    logic = "AND" if first else draw(st.sampled_from(["AND", "OR", "OR", "or", "and"]))
    return FilterSpec(
        column=column.name,
        operator=draw(_random_case(operator)),
        value=value,
        logic_operator=logic,
    )


def filter_specs(
    entity: Entity,
    *,
    min_size: int = 0,
    max_size: int = 4,
    samples: Sequence[Mapping[str, Any]] = (),
    columns: Sequence[str] | None = None,
) -> st.SearchStrategy[list[FilterSpec]]:
    """Lists of valid wire filters on ``entity``'s columns, with ``OR`` groups.

    ``samples``: rows whose values are reused as filter values now and then, so that
    filters match some of them.  ``columns`` restricts the columns filtered on.  The first
    filter of a list is never ``OR`` (it has nothing before it to join).
    """
    candidates = [c for c in _filterable(entity) if columns is None or c.name in columns]
    if not candidates:
        return st.just([])

    @st.composite
    def build(draw: st.DrawFn) -> list[FilterSpec]:
        size = draw(st.integers(min_size, max_size))
        out: list[FilterSpec] = []
        for i in range(size):
            column = draw(st.sampled_from(candidates))
            values = [row.get(column.name) for row in samples if column.name in row]
            out.append(draw(_filter_spec(column, values, first=i == 0)))
        return out

    return build()


#: Another name for :func:`filter_specs`.
filters = filter_specs


def query_options(
    entity: Entity,
    *,
    samples: Sequence[Mapping[str, Any]] = (),
    with_filters: bool = True,
    max_limit: int = 50,
) -> st.SearchStrategy[QueryOptions]:
    """Valid read options: filters, columns or omit_columns, preload, sort, limit, offset."""
    names = [c.name for c in entity.columns]
    relations = [r.name for r in entity.relations]
    subset = st.lists(st.sampled_from(names), unique=True, min_size=1).map(tuple)
    return st.builds(
        QueryOptions,
        filters=(filter_specs(entity, samples=samples) if with_filters else st.just([])).map(tuple),
        columns=st.one_of(st.none(), subset),
        omit_columns=st.one_of(st.just(()), subset.filter(lambda s: len(s) < len(names))),
        preload=(
            st.lists(st.sampled_from(relations), unique=True, max_size=2).map(
                lambda rs: tuple(PreloadSpec(relation=r) for r in rs)
            )
            if relations
            else st.just(())
        ),
        sort=st.lists(
            st.builds(
                SortSpec,
                column=st.sampled_from(names),
                direction=st.sampled_from(["asc", "desc", "ASC", "Desc"]),
            ),
            max_size=2,
            unique_by=lambda s: s.column,
        ).map(tuple),
        limit=st.one_of(st.none(), st.integers(0, max_limit)),
        offset=st.one_of(st.none(), st.integers(0, 20)),
    ).filter(_keeps_a_column)


def _keeps_a_column(options: QueryOptions) -> bool:
    """``omit_columns`` leave a column of the selection (else ``invalid_options``)."""
    return not options.columns or not set(options.columns) <= set(options.omit_columns)


def message_ids() -> st.SearchStrategy[str | int]:
    """Non-empty message ids: strings (the norm) or numbers (echoed as given)."""
    return st.one_of(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12),
        st.integers(1, 2**31),
    )


def _record_ids(entity: Entity, existing: Sequence[Any]) -> st.SearchStrategy[Any]:
    key = entity.primary_key
    spelled: st.SearchStrategy[Any]
    if key.type is ColumnType.INTEGER:
        ints = st.integers(1, _INT_MAX)
        spelled = st.one_of(ints, ints.map(str))
    else:
        spelled = _plain_values(key).filter(lambda v: isinstance(v, str | int) and v != "")
    if existing:
        return st.one_of(st.sampled_from(list(existing)), spelled)
    return spelled


def _schema(entity: Entity) -> st.SearchStrategy[str | None]:
    if entity.schema:
        return st.sampled_from([entity.schema, entity.schema, None])
    return st.none()


def requests(
    entity: Entity,
    *,
    operations: Sequence[Operation] = (
        Operation.READ,
        Operation.CREATE,
        Operation.UPDATE,
        Operation.DELETE,
        Operation.META,
    ),
    record_ids: Sequence[Any] = (),
    data: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[Request]:
    """Valid ``type: "request"`` messages on ``entity``.

    ``record_ids``: keys to use for read-one, update and delete (random keys otherwise).
    ``data``: the create data strategy (default :func:`rows`); updates send a partial row.
    """
    create_data = data if data is not None else rows(entity)
    update_data = rows(entity, optional=True).map(
        lambda r: {k: v for k, v in r.items() if k != entity.primary_key.name}
    )
    ids = message_ids()
    schema = _schema(entity)
    record = _record_ids(entity, record_ids)
    options = query_options(entity)
    # The fields each operation's messages carry beyond id, operation, entity and schema;
    # read comes in two shapes (a list read with options, a read of one record).
    shapes: dict[Operation, list[dict[str, st.SearchStrategy[Any]]]] = {
        Operation.READ: [{"options": options}, {"record_id": record}],
        Operation.CREATE: [{"data": create_data}],
        Operation.UPDATE: [{"record_id": record, "data": update_data}],
        Operation.DELETE: [{"record_id": record}],
        Operation.META: [{}],
    }
    alternatives: list[st.SearchStrategy[Request]] = [
        st.builds(
            Request,
            id=ids,
            operation=st.just(operation),
            entity=st.just(entity.name),
            schema=schema,
            **fields,
        )
        for operation in operations
        for fields in shapes[operation]
    ]
    if Operation.META in operations:  # meta without an entity lists the entities
        alternatives.append(
            st.builds(Request, id=ids, operation=st.just(Operation.META), entity=st.just(""))
        )
    if not alternatives:
        raise ValueError("requests() needs at least one operation")
    return st.one_of(alternatives)


def subscribes(
    entity: Entity, *, samples: Sequence[Mapping[str, Any]] = ()
) -> st.SearchStrategy[Subscribe]:
    """Valid subscribe messages on ``entity`` with random filters."""
    return st.builds(
        Subscribe,
        id=message_ids(),
        entity=st.just(entity.name),
        schema=_schema(entity),
        options=filter_specs(entity, samples=samples).map(
            lambda fs: QueryOptions(filters=tuple(fs))
        ),
    )


def messages(
    entity: Entity, *, record_ids: Sequence[Any] = (), subscription_ids: Sequence[str] = ()
) -> st.SearchStrategy[InboundMessage]:
    """Any valid inbound message: a request, a subscribe, an unsubscribe or a ping."""
    subscription = (
        st.one_of(st.sampled_from(list(subscription_ids)), st.text(min_size=1, max_size=10))
        if subscription_ids
        else st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=10
        )
    )
    return st.one_of(
        requests(entity, record_ids=record_ids),
        subscribes(entity),
        st.builds(Unsubscribe, id=message_ids(), subscription_id=subscription),
        st.builds(Ping, id=st.one_of(st.none(), message_ids())),
    )


# --- the wire form ---------------------------------------------------------------------


def _options_to_wire(options: QueryOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options.filters:
        out["filters"] = [
            {
                "column": f.column,
                "operator": f.operator,
                "value": f.value,
                "logic_operator": f.logic_operator,
            }
            for f in options.filters
        ]
    if options.columns is not None:
        out["columns"] = list(options.columns)
    if options.omit_columns:
        out["omit_columns"] = list(options.omit_columns)
    if options.preload:
        out["preload"] = [
            {"relation": p.relation}
            if p.columns is None
            else {"relation": p.relation, "columns": list(p.columns)}
            for p in options.preload
        ]
    if options.sort:
        out["sort"] = [{"column": s.column, "direction": s.direction} for s in options.sort]
    if options.limit is not None:
        out["limit"] = options.limit
    if options.offset is not None:
        out["offset"] = options.offset
    return out


def to_wire(message: InboundMessage) -> dict[str, Any]:
    """``message`` as the JSON object a client sends (README "Message Protocol")."""
    out: dict[str, Any]
    if isinstance(message, Ping):
        out = {"type": "ping"}
        if message.id is not None:
            out["id"] = message.id
        return out
    if isinstance(message, Unsubscribe):
        return {
            "id": message.id,
            "type": "subscription",
            "operation": "unsubscribe",
            "subscription_id": message.subscription_id,
        }
    if isinstance(message, Subscribe):
        out = {"id": message.id, "type": "subscription", "operation": "subscribe"}
    else:
        out = {"id": message.id, "type": "request", "operation": message.operation.value}
    if message.schema is not None:
        out["schema"] = message.schema
    if message.entity:
        out["entity"] = message.entity
    if isinstance(message, Request):
        if message.record_id is not None:
            out["record_id"] = message.record_id
        if message.data is not None:
            out["data"] = message.data
    options = _options_to_wire(message.options)
    if options:
        out["options"] = options
    return out


# --- malformed input ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MalformedFrame:
    """A frame that a compliant server answers with an error response.

    ``code`` is the error code docs/protocol.md prescribes; ``id`` the id the response
    must carry (``""`` when the frame has no readable id); ``binary``: send it as a binary
    frame (``frame`` is then bytes); ``reason`` says what is wrong, for reports.
    """

    frame: str | bytes
    code: str
    id: str | int
    reason: str

    @property
    def binary(self) -> bool:
        return isinstance(self.frame, bytes)


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@st.composite
def _malformed(
    draw: st.DrawFn, entity_name: str, schema: str | None, key_is_int: bool
) -> MalformedFrame:
    mid: str = draw(st.text(st.sampled_from("abcdefghij0123456789-"), min_size=1, max_size=8))
    base: dict[str, Any] = {"id": mid, "type": "request", "entity": entity_name}
    if schema:
        base["schema"] = schema
    kind = draw(st.integers(0, 18))

    def frame(obj: Any, code: str, reason: str, fid: str | int = mid) -> MalformedFrame:
        return MalformedFrame(frame=_dump(obj), code=code, id=fid, reason=reason)

    if kind == 0:
        text = draw(
            st.sampled_from(
                ["", "{", "{]", "not json", '{"type": "ping",}', "[1, 2", "nul", "{'a': 1}"]
            )
        )
        return MalformedFrame(frame=text, code="invalid_message", id="", reason="not JSON")
    if kind == 1:
        value = draw(
            st.one_of(
                st.just([]),
                st.lists(st.integers(), min_size=1, max_size=3),
                st.integers(),
                st.text(max_size=5),
                st.just(None),
                st.booleans(),
                st.just([{"id": mid, "type": "ping"}]),
            )
        )
        return frame(value, "invalid_message", "JSON but not an object", "")
    if kind == 2:
        raw = draw(
            st.sampled_from(
                [b"\xff\xfe", b'{"type":"ping","id":"\xc3\x28"}', b"\x80abc", b"{\xed\xa0\x80}"]
            )
        )
        return MalformedFrame(
            frame=raw, code="invalid_message", id="", reason="invalid UTF-8 in a binary frame"
        )
    if kind == 3:
        obj = {k: v for k, v in base.items() if k != "type"}
        obj["operation"] = "read"
        return frame(obj, "invalid_message", "no type")
    if kind == 4:
        bad: Any = draw(st.sampled_from([1, None, True, [], {}, 2.5]))
        return frame(
            {**base, "type": bad, "operation": "read"}, "invalid_message", "type is not a string"
        )
    if kind == 5:
        bad = draw(
            st.sampled_from(
                ["response", "notification", "pong", "error", "", "requests", "subscribe", "x"]
            )
        )
        return frame(
            {**base, "type": bad, "operation": "read"},
            "invalid_message_type",
            f"unknown type {bad!r}",
        )
    if kind == 6:
        bad = draw(
            st.sampled_from(["subscribe", "unsubscribe", "list", "get", "remove", "x", "readd"])
        )
        return frame({**base, "operation": bad}, "invalid_operation", f"unknown operation {bad!r}")
    if kind == 7:
        bad = draw(st.sampled_from(["read", "create", "delete", "meta", "sub", "x"]))
        obj = {**base, "type": "subscription", "operation": bad}
        return frame(
            obj, "invalid_subscription_operation", f"unknown subscription operation {bad!r}"
        )
    if kind == 8:
        obj = {k: v for k, v in base.items() if k != "id"}
        obj["operation"] = draw(st.sampled_from(["read", "create", "meta"]))
        return frame(obj, "invalid_message", "request without id", "")
    if kind == 9:
        return frame(
            {**base, "id": "", "operation": "read"},
            "invalid_message",
            "request with an empty id",
            "",
        )
    if kind == 10:
        obj = {k: v for k, v in base.items() if k not in ("entity", "schema")}
        obj["operation"] = draw(st.sampled_from(["read", "create", "update", "delete"]))
        if obj["operation"] in ("update", "delete"):
            obj["record_id"] = 1
        if obj["operation"] in ("create", "update"):
            obj["data"] = {}
        return frame(obj, "invalid_message", "request without entity")
    if kind == 11:
        op = draw(st.sampled_from(["update", "delete"]))
        obj = {**base, "operation": op}
        if op == "update":
            obj["data"] = {}
        return frame(obj, "invalid_message", f"{op} without record_id")
    if kind == 12:
        bad = draw(
            st.sampled_from([True, [1], {"id": 1}, 1.5] if key_is_int else [True, [1], {"id": 1}])
        )
        op = draw(st.sampled_from(["read", "delete"]))
        return frame(
            {**base, "operation": op, "record_id": bad},
            "invalid_message",
            "record_id of a wrong type",
        )
    if kind == 13:
        bad = draw(st.sampled_from(["text", 5, True]))
        op = draw(st.sampled_from(["create", "update"]))
        obj = {**base, "operation": op, "data": bad}
        if op == "update":
            obj["record_id"] = 1
        return frame(obj, "invalid_message", "data is not an object")
    if kind == 14:
        bad = draw(st.sampled_from([[1], "limit=5", 5, True]))
        return frame(
            {**base, "operation": "read", "options": bad},
            "invalid_options",
            "options is not an object",
        )
    if kind == 15:
        field = draw(st.sampled_from(["limit", "offset"]))
        bad = draw(st.sampled_from([-1, -100, "ten", [5], True, 2.5]))
        obj = {**base, "operation": "read", "options": {field: bad}}
        return frame(obj, "invalid_options", f"{field} is {bad!r}")
    if kind == 16:
        bad = draw(st.sampled_from([{"column": "id"}, "eq", 5, [1]]))
        obj = {**base, "operation": "read", "options": {"filters": bad}}
        return frame(obj, "invalid_options", "filters is not a list")
    if kind == 17:
        obj = {**base, "type": "subscription", "operation": "unsubscribe"}
        obj.pop("entity")
        return frame(obj, "missing_subscription_id", "unsubscribe without subscription_id")
    # Oversized values: numbers no storage engine holds as an integer.
    field = draw(st.sampled_from(["limit", "offset"]))
    big = draw(st.sampled_from([2**64, -(2**64), 10**30]))
    obj = {**base, "operation": "read", "options": {field: big}}
    return frame(obj, "invalid_options", f"{field} {big} is out of range")


def malformed_frames(entity: Entity | None = None) -> st.SearchStrategy[MalformedFrame]:
    """Frames a compliant server must refuse, each with the error code it must answer.

    ``entity``: a registered entity, named by the frames that need one (so that the server
    does not answer ``model_not_found`` first: docs/protocol.md "Validation order").
    Every frame has exactly one thing wrong with it.
    """
    if entity is None:
        return _malformed("users", None, True)
    return _malformed(
        entity.name, entity.schema or None, entity.primary_key.type is ColumnType.INTEGER
    )


_UNKNOWN = "no_such_column_zz"


@st.composite
def _invalid_request(draw: st.DrawFn, entity: Entity) -> MalformedFrame:
    mid: str = draw(st.text(st.sampled_from("abcdefghij0123456789-"), min_size=1, max_size=8))
    ref: dict[str, Any] = {"entity": entity.name}
    if entity.schema:
        ref["schema"] = entity.schema
    subscribe = draw(st.booleans())
    base: dict[str, Any] = (
        {"id": mid, "type": "subscription", "operation": "subscribe", **ref}
        if subscribe
        else {"id": mid, "type": "request", "operation": "read", **ref}
    )
    read = {"id": mid, "type": "request", "operation": "read", **ref}
    unknown = _UNKNOWN
    while unknown in entity.columns_by_name or unknown in entity.relations_by_name:
        unknown += "_"
    columns = list(entity.columns)
    column = draw(st.sampled_from(columns))

    def frame(obj: dict[str, Any], code: str, reason: str) -> MalformedFrame:
        return MalformedFrame(frame=_dump(obj), code=code, id=mid, reason=reason)

    def with_filter(spec: dict[str, Any]) -> dict[str, Any]:
        return {**base, "options": {"filters": [spec]}}

    kinds = ["filter-column", "operator", "value", "entity", "unsubscribe"]
    kinds += ["sort-column", "direction", "columns", "preload", "record-id"]
    non_text = [c for c in columns if c.type is not ColumnType.TEXT]
    if non_text:
        kinds.append("like")
    kind = draw(st.sampled_from(kinds))
    if kind == "filter-column":
        spec = {"column": unknown, "operator": "eq", "value": 1}
        return frame(with_filter(spec), "invalid_column", "a filter on an unknown column")
    if kind == "operator":
        operator = draw(st.sampled_from(["equals", "=", "~", "like2", "contains", ""]))
        spec = {"column": column.name, "operator": operator, "value": 1}
        return frame(with_filter(spec), "invalid_filter", f"unknown operator {operator!r}")
    if kind == "like":
        target = draw(st.sampled_from(non_text))
        operator = draw(st.sampled_from(["like", "ilike"]))
        spec = {"column": target.name, "operator": operator, "value": "%1%"}
        return frame(with_filter(spec), "invalid_filter", f"{operator} on a {target.type.value}")
    if kind == "value":
        bad_values: dict[ColumnType, list[Any]] = {
            ColumnType.INTEGER: ["abc", True, 1.5, "1.5", {"a": 1}],
            ColumnType.FLOAT: ["abc", True, {"a": 1}, [[1]]],
            ColumnType.TEXT: [True, {"a": 1}],
            ColumnType.BOOLEAN: ["yes", 2, {"a": 1}],
            ColumnType.DATE: ["not a date", True, "2024-13-45"],
            ColumnType.DATETIME: ["not a time", True, "2024-01-01T25:00:00"],
        }
        value = draw(st.sampled_from(bad_values[column.type]))
        operator = draw(st.sampled_from(["eq", "neq", "gt", "lte"]))
        spec = {"column": column.name, "operator": operator, "value": value}
        return frame(
            with_filter(spec),
            "invalid_filter",
            f"{_dump(value)} does not coerce to {column.type.value}",
        )
    if kind == "entity":
        name = draw(st.sampled_from(["no_such_entity_zz", entity.name + "_zz"]))
        obj = {**base, "entity": name}
        obj.pop("schema", None)
        return frame(obj, "model_not_found", "an unknown entity")
    if kind == "unsubscribe":
        obj = {
            "id": mid,
            "type": "subscription",
            "operation": "unsubscribe",
            "subscription_id": "no-such-subscription-" + mid,
        }
        return frame(obj, "subscription_not_found", "unsubscribe of an unknown subscription")
    if kind == "sort-column":
        obj = {**read, "options": {"sort": [{"column": unknown, "direction": "asc"}]}}
        return frame(obj, "invalid_column", "sort on an unknown column")
    if kind == "direction":
        direction = draw(st.sampled_from(["up", "ascending", "", "random"]))
        obj = {**read, "options": {"sort": [{"column": column.name, "direction": direction}]}}
        return frame(obj, "invalid_options", f"sort direction {direction!r}")
    if kind == "columns":
        obj = {**read, "options": {"columns": [column.name, unknown]}}
        return frame(obj, "invalid_column", "an unknown column in options.columns")
    if kind == "preload":
        obj = {**read, "options": {"preload": [{"relation": unknown}]}}
        return frame(obj, "invalid_column", "a preload of an unknown relation")
    # record-id
    key = entity.primary_key
    if key.type is ColumnType.INTEGER:
        obj = {**read, "record_id": draw(st.sampled_from(["abc", "1.5", "1e3", "0x10"]))}
        return frame(obj, "invalid_message", "a record_id that is not an integer key")
    obj = {**read, "entity": "no_such_entity_zz"}
    obj.pop("schema", None)
    return frame(obj, "model_not_found", "an unknown entity")


def invalid_requests(entity: Entity) -> st.SearchStrategy[MalformedFrame]:
    """Well-formed frames that ``entity``'s server must still refuse, with the code.

    Unlike :func:`malformed_frames`, these decode fine: the mistake shows only against the
    entity (docs/protocol.md "Validation order", steps 8-10): unknown columns in filters,
    sort, ``columns`` or preload (``invalid_column``), unknown operators, ``like`` on a
    non-text column and values that do not coerce (``invalid_filter``), a bad sort
    direction (``invalid_options``), a ``record_id`` that is not a valid key
    (``invalid_message``), an unknown entity (``model_not_found``) and an unsubscribe of
    an unknown subscription (``subscription_not_found``).  None of them writes anything.
    """
    return _invalid_request(entity)
