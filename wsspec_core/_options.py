"""Validation of query options, record ids and record data against an entity.

Everything a client names (columns, relations, sort keys) is checked against the
:class:`~wsspec_core.Entity` here, so that storage adapters only ever see names the
application registered (docs/protocol.md "Query options").  Client mistakes raise
:class:`~wsspec_core.InvalidRequest` with the protocol's error code and details; the
engine turns that into an error response.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._config import Limits
from ._entities import Column, Entity, EntityRegistry
from ._filters import coerce_value, compile_filters
from ._messages import PreloadSpec, QueryOptions
from ._query import InvalidRequest, Preload, ReadList, Row, Selection, SortKey

# --- columns and preloads -----------------------------------------------------------------


def _unknown_column(entity: Entity, name: str, what: str) -> InvalidRequest:
    hint = ""
    if name in entity.relations_by_name:
        hint = f" ({name!r} is a relation: use preload)"
    return InvalidRequest(
        "invalid_column",
        f"Unknown {what} {name!r} for {entity.qualified_name}{hint}",
        {"column": name},
    )


def _column_list(entity: Entity, names: Iterable[str], what: str) -> list[str]:
    """``names`` checked against ``entity``, duplicates removed, order kept."""
    result: list[str] = []
    for name in names:
        if name not in entity.columns_by_name:
            raise _unknown_column(entity, name, what)
        if name not in result:
            result.append(name)
    return result


class _PreloadNode:
    """A preload tree under construction (merging the paths that share a prefix)."""

    def __init__(self, relation: str, target: Entity) -> None:
        self.relation = relation
        self.target = target
        #: ``None``: every column; otherwise the union of what the specs asked for.
        self.columns: list[str] | None = None
        self.all_columns = False
        self.children: dict[str, _PreloadNode] = {}

    def freeze(self) -> Preload:
        columns = None if self.all_columns or self.columns is None else tuple(self.columns)
        return Preload(
            relation=self.relation,
            target=self.target,
            columns=columns,
            children=tuple(child.freeze() for child in self.children.values()),
        )


def _add_preload(
    entity: Entity,
    spec: PreloadSpec,
    registry: EntityRegistry,
    roots: dict[str, _PreloadNode],
    max_depth: int | None,
) -> None:
    current = entity
    level = roots
    node: _PreloadNode | None = None
    segments = spec.relation.split(".")
    if max_depth is not None and len(segments) > max_depth:
        raise InvalidRequest(
            "invalid_options",
            f"preload {spec.relation!r} is {len(segments)} relations deep; "
            f"at most {max_depth} are allowed",
            {"relation": spec.relation, "limit": max_depth},
        )
    for segment in segments:
        relation = current.relations_by_name.get(segment)
        if relation is None:
            raise InvalidRequest(
                "invalid_column",
                f"Unknown relation {segment!r} of {current.qualified_name} "
                f"in preload {spec.relation!r}",
                {"relation": spec.relation},
            )
        target = registry.get(relation.target)
        if target is None:  # the application's registry is inconsistent: our bug
            raise LookupError(
                f"{current.qualified_name}.{relation.name} targets unregistered "
                f"entity {relation.target!r} (call EntityRegistry.validate())"
            )
        node = level.get(segment)
        if node is None:
            node = level[segment] = _PreloadNode(segment, target)
        current = target
        level = node.children
    assert node is not None  # split() yields at least one segment
    # An empty ``columns`` list means "every column", as when it is absent.
    if not spec.columns:
        node.all_columns = True
        return
    try:
        wanted = _column_list(current, spec.columns, "preload column")
    except InvalidRequest as exc:
        assert exc.error.details is not None
        exc.error.details["relation"] = spec.relation
        raise
    if node.columns is None:
        node.columns = wanted
    else:
        node.columns += [c for c in wanted if c not in node.columns]


def compile_selection(
    entity: Entity,
    options: QueryOptions,
    registry: EntityRegistry,
    limits: Limits | None = None,
) -> Selection:
    """The columns and preloads a read returns; raises ``InvalidRequest``.

    * ``columns``: absent or empty -> every column in entity order; otherwise exactly the
      named columns in the order given, duplicates removed.  Unknown names, including
      relation names, are ``invalid_column`` (details ``{column}``).
    * ``omit_columns`` are then removed (unknown names are ``invalid_column`` too). Removing
      every column is ``invalid_options`` (details ``{omit_columns}``): a row of no
      column cannot be selected.
    * ``preload[].relation`` is a relation name or a dotted path (``"posts.user"``); each
      segment must be a relation of the entity reached so far (``invalid_column``, details
      ``{relation}``).  Paths sharing a prefix are merged into one tree, in the order first
      named.  ``preload[].columns`` are checked against the target entity (details
      ``{column, relation}``); the same path named twice gets the union of the columns
      (all columns if either asked for all).
    * a preload path of more than ``limits.max_preload_depth`` relations is
      ``invalid_options`` (details ``{relation, limit}``), when ``limits`` are given.
    """
    if options.columns:
        columns = _column_list(entity, options.columns, "column")
    else:
        columns = [c.name for c in entity.columns]
    omitted = set(_column_list(entity, options.omit_columns, "omit_columns entry"))
    kept = tuple(c for c in columns if c not in omitted)
    if not kept:
        raise InvalidRequest(
            "invalid_options",
            f"omit_columns leaves no column of {entity.qualified_name} to return",
            {"omit_columns": list(options.omit_columns)},
        )
    roots: dict[str, _PreloadNode] = {}
    max_depth = limits.max_preload_depth if limits is not None else None
    for spec in options.preload:
        _add_preload(entity, spec, registry, roots, max_depth)
    return Selection(
        columns=kept,
        preload=tuple(node.freeze() for node in roots.values()),
    )


# --- list reads -----------------------------------------------------------------------------


def compile_read(
    entity: Entity, options: QueryOptions, registry: EntityRegistry, limits: Limits
) -> ReadList:
    """The storage operation for a list read; raises ``InvalidRequest``.

    Checked in this order: filters (:func:`~wsspec_core.compile_filters`), the selection
    (:func:`compile_selection`), sort keys (unknown column ``invalid_column``; direction
    other than ``asc``/``desc`` in any case ``invalid_options``; a column named twice keeps
    its first direction), then ``limit`` and ``offset``.

    ``limit``: absent -> ``limits.default_page_size``; above ``limits.max_page_size`` ->
    clamped; ``0`` is allowed (no rows, but ``total``); negative -> ``invalid_options``.
    ``offset``: absent -> 0; negative -> ``invalid_options``.
    ``count_cap``: ``offset + max(limit, limits.max_count)``, or ``None`` when
    ``limits.max_count`` is ``None`` (count every matching row).
    """
    filters = compile_filters(entity, options.filters, limits)
    selection = compile_selection(entity, options, registry, limits)

    sort: list[SortKey] = []
    seen: set[str] = set()
    for spec in options.sort:
        if spec.column not in entity.columns_by_name:
            raise _unknown_column(entity, spec.column, "sort column")
        direction = spec.direction.lower() if spec.direction.isascii() else spec.direction
        if direction not in ("asc", "desc"):
            raise InvalidRequest(
                "invalid_options",
                f"Invalid sort direction {spec.direction!r}: expected asc or desc",
                {"column": spec.column, "direction": spec.direction},
            )
        if spec.column not in seen:
            seen.add(spec.column)
            sort.append(SortKey(column=spec.column, descending=direction == "desc"))

    if options.limit is None:
        limit = limits.default_page_size
    elif options.limit < 0:
        raise InvalidRequest(
            "invalid_options", "limit may not be negative", {"limit": options.limit}
        )
    else:
        limit = min(options.limit, limits.max_page_size)
    if options.offset is None:
        offset = 0
    elif options.offset < 0:
        raise InvalidRequest(
            "invalid_options", "offset may not be negative", {"offset": options.offset}
        )
    else:
        offset = options.offset

    max_count = limits.max_count
    return ReadList(
        entity=entity,
        filters=filters,
        sort=tuple(sort),
        limit=limit,
        offset=offset,
        selection=selection,
        count_cap=None if max_count is None else offset + max(limit, max_count),
    )


# --- record ids and record data -----------------------------------------------------------


def coerce_key(entity: Entity, record_id: Any) -> Any:
    """``record_id`` (a JSON string or number) as the primary key column's type.

    Failure, including ``true``/``false`` and ``null``, is ``invalid_message`` (details
    ``{column}``: the key column), as docs/protocol.md "Message-level mistakes" says.
    """
    key = entity.primary_key
    try:
        if record_id is None or isinstance(record_id, bool):
            raise ValueError("expected a string or a number")
        return coerce_value(key, record_id)
    except ValueError as exc:
        raise InvalidRequest(
            "invalid_message",
            f"Invalid record_id for {entity.qualified_name}.{key.name}: {exc}",
            {"column": key.name},
        ) from None


def _validation_error(column: Column, message: str) -> InvalidRequest:
    return InvalidRequest("validation_error", message, {"column": column.name})


def coerce_record(entity: Entity, data: Any, *, partial: bool) -> Row:
    """One record's ``data`` checked and coerced; raises ``InvalidRequest``.

    * not a JSON object -> ``invalid_message``;
    * a key that is a relation name -> ``invalid_column`` (nested writes are not
      supported); any other unknown key -> ``invalid_column``; details ``{column}``;
    * a value that cannot be coerced, or ``null`` into a non-nullable column ->
      ``validation_error`` (details ``{column}``);
    * ``partial=False`` (create): a non-nullable column without a default that is
      missing -> ``validation_error``;
    * ``partial=True`` (update): the primary key may not appear at all (the key travels
      as ``record_id``) -> ``validation_error``.  An empty update is allowed.

    Unknown keys are reported before bad values, each in the order the client wrote
    them.  The result is in entity column order.
    """
    if not isinstance(data, dict):
        raise InvalidRequest(
            "invalid_message",
            f"Record data for {entity.qualified_name} must be a JSON object",
        )
    for name in data:
        if name in entity.relations_by_name:
            raise InvalidRequest(
                "invalid_column",
                f"{name!r} is a relation of {entity.qualified_name}: nested writes are not "
                "supported, write the related records separately",
                {"column": name},
            )
        if name not in entity.columns_by_name:
            raise InvalidRequest(
                "invalid_column",
                f"Unknown column {name!r} for {entity.qualified_name}",
                {"column": name},
            )
    coerced: dict[str, Any] = {}
    for name, value in data.items():
        column = entity.columns_by_name[name]
        if partial and column.primary_key:
            raise _validation_error(
                column,
                f"The primary key {name!r} cannot be changed by an update "
                "(the record is named by record_id)",
            )
        if value is None:
            if not column.nullable:
                raise _validation_error(column, f"Column {name!r} may not be null")
            coerced[name] = None
            continue
        try:
            coerced[name] = coerce_value(column, value)
        except ValueError as exc:
            raise _validation_error(column, f"Invalid value for {name!r}: {exc}") from None
    if not partial:
        for column in entity.columns:
            if column.name not in coerced and not column.nullable and not column.has_default:
                raise _validation_error(column, f"Column {column.name!r} is required")
    return {c.name: coerced[c.name] for c in entity.columns if c.name in coerced}


def coerce_change_row(entity: Entity, row: Any) -> Row:
    """A full row reported from outside the engine (``ChangeCommitted``), coerced to the
    entity's column types like written data; raises ``InvalidRequest``.

    Unlike :func:`coerce_record` it keeps the primary key and drops keys that are not
    columns of the entity (a table may hold columns the application did not register,
    and a subscriber must never see them).  ``null`` is kept as it is: the database
    already accepted the row.
    """
    if not isinstance(row, dict):
        raise InvalidRequest("invalid_message", f"a {entity.qualified_name} row must be an object")
    coerced: dict[str, Any] = {}
    for column in entity.columns:
        if column.name not in row:
            continue
        value = row[column.name]
        if value is None:
            coerced[column.name] = None
            continue
        try:
            coerced[column.name] = coerce_value(column, value)
        except ValueError as exc:
            raise _validation_error(column, f"Invalid value for {column.name!r}: {exc}") from None
    return coerced
