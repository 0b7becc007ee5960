"""Storage operations -> SQL text and bound parameters, cached per query *shape*.

The core hands over validated operations (``ReadList``, ``ReadOne``, ``Create``,
``Update``, ``Delete``): column names have been checked against the entity and values
coerced to the column's Python type. Each becomes SQL text *built only from names taken
from the registered Peewee models* plus a bound parameter for every value, so no client
string is ever interpolated (docs/protocol.md "Query options").

Building a Peewee query costs about 100 us, executing its SQL about 5 us, so Peewee's
query builder is not used per request. The SQL is generated here and cached per shape
(operation, entity, filter columns/operators/list lengths, sort, selection, preloads); a
request of a known shape costs one dict look-up and building the parameter list.

Semantics follow ``wsspec_core.matches`` / ``MemoryStorage`` (docs/storage.md):
``neq`` / ``not_in`` keep NULL rows (``col IS NULL OR col <> ?``); ``in []`` matches
nothing and ``not_in []`` everything; other comparisons are false on NULL; ties in a sort
are broken by the primary key ascending. What differs per database comes from the
:class:`~.dialect.Dialect`.

Nothing here touches a database: tests/storage/test_compiler.py compiles for both
dialects and checks the text and parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from wsspec_core import (
    ColumnType,
    Delete,
    Entity,
    Filters,
    Operator,
    Preload,
    ReadList,
    ReadOne,
    Row,
    Selection,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    Update,
)

from .dialect import Converter, Dialect, quote
from .introspection import Target

#: Compiled statements kept per storage; the cache is simply cleared when it fills up
#: (shapes are few in practice; the bound only protects against pathological clients).
CACHE_SIZE = 4096
#: Statements whose ``in``/``not_in`` lists are longer than this are not cached: their
#: text grows with the list (10,000 placeholders are 30-40 kB), each length is its own
#: shape, and building the text again costs about as much as binding the values.
CACHE_LIST_MAX = 64

Shape = tuple[tuple[tuple[str, Operator, int], ...], ...]


class Compiled:
    """One cached statement: SQL text with placeholders, and the result layout.

    ``row(values)`` makes a result row (a dict, keys in ``names`` order) of the values
    the driver returned, each converted by its column's converter unless it is ``None``.
    It is generated per statement (one dict display, no loop), as attrs generates an
    ``__init__``: it runs for every row of every read.
    """

    __slots__ = ("capped_count", "convert", "count", "names", "row", "sql")

    def __init__(self, sql: str, names: Sequence[str], converters: Sequence[Converter]) -> None:
        self.sql = sql
        self.names = tuple(names)
        #: (position, column, converter) for the columns whose values need converting.
        self.convert = tuple(
            (i, name, conv)
            for i, (name, conv) in enumerate(zip(names, converters, strict=True))
            if conv is not None
        )
        self.row: Callable[[Sequence[Any]], Row] = _row_function(self.names, self.convert)
        #: For a list statement: its ``COUNT(*)``, bound to the same parameters minus the
        #: trailing limit and offset.
        self.count: Compiled | None = None
        #: For a list statement: its count of at most N rows, bound to the same parameters
        #: with N in place of the trailing limit and offset.
        self.capped_count: Compiled | None = None

    def __repr__(self) -> str:
        return f"Compiled({self.sql!r})"


def _row_function(
    names: tuple[str, ...], convert: tuple[tuple[int, str, Converter], ...]
) -> Callable[[Sequence[Any]], Row]:
    """``row(values)`` for :class:`Compiled`: what ``dict(zip(names, values))`` followed
    by ``row[name] = conv(value)`` for each converted column whose value is not ``None``
    gives (the same keys in the same order, the same values; tests/storage compare the
    two). Column names and converters are bound as constants, never written into the
    code: only positions are."""
    namespace: dict[str, Any] = {}
    converters = {index: conv for index, _name, conv in convert}
    items = []
    for index, name in enumerate(names):
        namespace[f"_n{index}"] = name
        if index in converters:
            namespace[f"_c{index}"] = converters[index]
            items.append(
                f"_n{index}: None if (v{index} := v[{index}]) is None else _c{index}(v{index})"
            )
        else:
            items.append(f"_n{index}: v[{index}]")
    source = "def row(v):\n    return {" + ", ".join(items) + "}"
    exec(source, namespace)
    function: Callable[[Sequence[Any]], Row] = namespace["row"]
    return function


def fetch_columns(entity: Entity, columns: Sequence[str], preloads: Sequence[Preload]) -> list[str]:
    """``columns`` plus the local join columns the preloads need."""
    wanted = list(columns)
    for preload in preloads:
        local = entity.relations_by_name[preload.relation].local_column
        if local not in wanted:
            wanted.append(local)
    return wanted


class SqlCompiler:
    """Compiles operations on the registered targets for one dialect, with a cache.

    ``targets`` (qualified entity name -> :class:`Target`) is read, never copied, so
    registrations made later are seen.
    """

    def __init__(self, dialect: Dialect, targets: Mapping[str, Target]) -> None:
        self.dialect = dialect
        self.targets = targets
        self._param = dialect.param
        self._cache: dict[tuple[Any, ...], Compiled] = {}
        self._by_entity: dict[int, tuple[Entity, tuple[str, Target, Converter]]] = {}
        #: Reads by key without filters, by the identity of their entity and selection
        #: (the engine hands over the same objects for every read of a shape): the
        #: statement and the key's converter, found in one look-up. The entry holds both
        #: objects, so neither id can be reused while it is there.
        self._one_by_identity: dict[
            tuple[int, int], tuple[Entity, Selection, Compiled, Converter]
        ] = {}

    def statements(self) -> Iterator[Compiled]:
        """Every statement in the cache."""
        return iter(list(self._cache.values()))

    def clear(self) -> None:
        self._cache.clear()
        self._by_entity.clear()
        self._one_by_identity.clear()

    def _remember(self, key: Any, compiled: Compiled, shape: Shape = ()) -> Compiled:
        """Cache ``compiled`` under ``key``, unless ``shape`` has a list longer than
        ``CACHE_LIST_MAX`` (it is returned all the same)."""
        for group in shape:
            for _column, _op, n in group:
                if n > CACHE_LIST_MAX:
                    return compiled
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = compiled
        return compiled

    def resolve(self, entity: Entity) -> tuple[str, Target, Converter]:
        """The entity's qualified name, target and key converter, cached by identity (the
        engine passes the same Entity objects again and again)."""
        found = self._by_entity.get(id(entity))
        if found is not None and found[0] is entity:
            return found[1]
        name = entity.qualified_name
        target = self.targets[name]
        resolved = (name, target, target.to_db[entity.primary_key.name])
        if len(self._by_entity) >= CACHE_SIZE:
            self._by_entity.clear()
        self._by_entity[id(entity)] = (entity, resolved)
        return resolved

    # --- reads ---------------------------------------------------------------------------

    def read_one(self, op: ReadOne) -> tuple[Compiled, list[Any]]:
        """``SELECT ... WHERE pk = ? [AND filters]`` and its parameters."""
        entity = op.entity
        selection = op.selection
        filtered = op.filters.groups
        if not filtered:
            same = self._one_by_identity.get((id(entity), id(selection)))
            if same is not None and same[0] is entity and same[1] is selection:
                key_to_db = same[3]
                return same[2], [op.key if key_to_db is None else key_to_db(op.key)]
        name, target, key_to_db = self.resolve(entity)
        preload = selection.preload
        if filtered:
            shape, params = self.filter_shape(target, op.filters)
        else:
            shape, params = (), []
        key = ("one", name, shape, selection.columns, _preload_shape(preload) if preload else ())
        compiled = self._cache.get(key)
        if compiled is None:
            names = fetch_columns(entity, selection.columns, preload)
            where = [f"{quote(entity.primary_key.name)} = {self._param}"]
            filters = self.where(entity, shape)
            if filters:
                where.append(filters)
            sql = (
                f"SELECT {', '.join(map(quote, names))} FROM {target.table} "
                f"WHERE {' AND '.join(where)}"
            )
            compiled = self._remember(
                key, Compiled(sql, names, [target.to_py[n] for n in names]), shape
            )
        if not filtered:
            if len(self._one_by_identity) >= CACHE_SIZE:
                self._one_by_identity.clear()
            self._one_by_identity[(id(entity), id(selection))] = (
                entity,
                selection,
                compiled,
                key_to_db,
            )
        params.insert(0, op.key if key_to_db is None else key_to_db(op.key))
        return compiled, params

    def read_list(self, op: ReadList) -> tuple[Compiled, list[Any]]:
        """``SELECT ... [WHERE filters] ORDER BY ... LIMIT ? OFFSET ?`` and its parameters
        (the filters', then limit and offset). ``compiled.count`` is the matching
        ``COUNT(*)``, whose parameters are the same without the last two."""
        name, target, _ = self.resolve(op.entity)
        selection = op.selection
        shape, params = self.filter_shape(target, op.filters)
        sort = tuple((k.column, k.descending) for k in op.sort)
        preload = selection.preload
        key = (
            "list",
            name,
            shape,
            sort,
            selection.columns,
            _preload_shape(preload) if preload else (),
        )
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile_list(op, shape, sort, key)
        params.append(op.limit)
        params.append(op.offset)
        return compiled, params

    def _compile_list(self, op: ReadList, shape: Shape, sort: Any, key: Any) -> Compiled:
        entity = op.entity
        target = self.targets[entity.qualified_name]
        names = fetch_columns(entity, op.selection.columns, op.selection.preload)
        where = self.where(entity, shape)
        where_sql = f" WHERE {where}" if where else ""
        sql = (
            f"SELECT {', '.join(map(quote, names))} FROM {target.table}{where_sql}"
            f" ORDER BY {self.order_by(entity, sort)} LIMIT {self._param} OFFSET {self._param}"
        )
        compiled = Compiled(sql, names, [target.to_py[n] for n in names])
        count_key = ("count", entity.qualified_name, shape)
        counted = self._cache.get(count_key)
        if counted is None:
            counted = self._remember(
                count_key,
                Compiled(f"SELECT COUNT(*) FROM {target.table}{where_sql}", ["count"], [None]),
                shape,
            )
        compiled.count = counted
        capped_key = ("capped_count", entity.qualified_name, shape)
        capped = self._cache.get(capped_key)
        if capped is None:
            # Stops after N matching rows: the cost of ``total`` is bounded by N
            # (Limits.max_count) instead of the table's size.
            sql = (
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {target.table}{where_sql} "
                f"LIMIT {self._param}) AS wsspec_counted"
            )
            capped = self._remember(capped_key, Compiled(sql, ["count"], [None]), shape)
        compiled.capped_count = capped
        return self._remember(key, compiled, shape)

    def count(self, op: ReadList) -> tuple[Compiled, list[Any]]:
        """The count of ``op``'s filters and its parameters: ``COUNT(*)``, or when
        ``op.count_cap`` is set, a count of at most ``count_cap + 1`` rows."""
        compiled, params = self.read_list(op)
        del params[-2:]
        if op.count_cap is None:
            assert compiled.count is not None
            return compiled.count, params
        assert compiled.capped_count is not None
        params.append(op.count_cap + 1)
        return compiled.capped_count, params

    def preload(
        self, entity: Entity, fetch: Sequence[str], remote_column: str, keys: int, many: bool
    ) -> Compiled:
        """``SELECT fetch FROM entity WHERE remote_column IN (keys placeholders)``, ordered
        by the primary key for a ``has_many`` relation."""
        name = entity.qualified_name
        key = ("preload", name, tuple(fetch), remote_column, keys, many)
        compiled = self._cache.get(key)
        if compiled is None:
            target = self.targets[name]
            sql = (
                f"SELECT {', '.join(map(quote, fetch))} FROM {target.table} "
                f"WHERE {quote(remote_column)} IN ({', '.join([self._param] * keys)})"
            )
            if many:
                sql += f" ORDER BY {quote(entity.primary_key.name)}"
            compiled = self._remember(key, Compiled(sql, fetch, [target.to_py[n] for n in fetch]))
        return compiled

    # --- writes --------------------------------------------------------------------------

    def insert(self, entity: Entity, values: Mapping[str, Any]) -> tuple[Compiled, list[Any]]:
        """``INSERT ... RETURNING`` every column, for exactly the columns in ``values``."""
        target = self.targets[entity.qualified_name]
        names = list(values)
        key = ("insert", entity.qualified_name, tuple(names))
        compiled = self._cache.get(key)
        if compiled is None:
            out = [c.name for c in entity.columns]
            returning = ", ".join(map(quote, out))
            if names:
                sql = (
                    f"INSERT INTO {target.table} ({', '.join(map(quote, names))}) "
                    f"VALUES ({', '.join([self._param] * len(names))}) RETURNING {returning}"
                )
            else:
                sql = f"INSERT INTO {target.table} DEFAULT VALUES RETURNING {returning}"
            compiled = self._remember(key, Compiled(sql, out, [target.to_py[n] for n in out]))
        return compiled, [_db_value(target, n, values[n]) for n in names]

    def update(self, op: Update) -> tuple[Compiled, list[Any]]:
        """``UPDATE ... SET changes WHERE pk = ? [AND filters] RETURNING`` every column.
        ``op.changes`` must not be empty (there is nothing to SET)."""
        if not op.changes:
            raise ValueError("an update without changes has no SQL")
        entity = op.entity
        target = self.targets[entity.qualified_name]
        pk = entity.primary_key.name
        shape, params = self.filter_shape(target, op.filters)
        names = list(op.changes)
        key = ("update", entity.qualified_name, tuple(names), shape)
        compiled = self._cache.get(key)
        if compiled is None:
            out = [c.name for c in entity.columns]
            assignments = ", ".join(f"{quote(n)} = {self._param}" for n in names)
            sql = (
                f"UPDATE {target.table} SET {assignments} WHERE {self._key_where(entity, shape)} "
                f"RETURNING {', '.join(map(quote, out))}"
            )
            compiled = self._remember(
                key, Compiled(sql, out, [target.to_py[n] for n in out]), shape
            )
        bound = [_db_value(target, n, op.changes[n]) for n in names]
        bound.append(_db_value(target, pk, op.key))
        bound.extend(params)
        return compiled, bound

    def delete(self, op: Delete) -> tuple[Compiled, list[Any]]:
        """``DELETE ... WHERE pk = ? [AND filters] RETURNING`` every column: the row as it
        was, read atomically with the delete."""
        entity = op.entity
        target = self.targets[entity.qualified_name]
        shape, params = self.filter_shape(target, op.filters)
        key = ("delete", entity.qualified_name, shape)
        compiled = self._cache.get(key)
        if compiled is None:
            out = [c.name for c in entity.columns]
            sql = (
                f"DELETE FROM {target.table} WHERE {self._key_where(entity, shape)} "
                f"RETURNING {', '.join(map(quote, out))}"
            )
            compiled = self._remember(
                key, Compiled(sql, out, [target.to_py[n] for n in out]), shape
            )
        return compiled, [_db_value(target, entity.primary_key.name, op.key), *params]

    def _key_where(self, entity: Entity, shape: Shape) -> str:
        where = f"{quote(entity.primary_key.name)} = {self._param}"
        filters = self.where(entity, shape)
        return f"{where} AND {filters}" if filters else where

    # --- filters and order ---------------------------------------------------------------

    def filter_shape(self, target: Target, filters: Filters) -> tuple[Shape, list[Any]]:
        """The cache key of ``filters`` (columns, operators, list lengths) and its bound
        parameters in SQL order, converted for the driver (dates as text on SQLite, LIKE
        patterns in the dialect's form)."""
        shape = []
        params: list[Any] = []
        to_db = target.to_db
        dialect = self.dialect
        for group in filters.groups:
            group_shape: list[tuple[str, Operator, int]] = []
            for cond in group.conditions:
                op = cond.operator
                conv = to_db[cond.column]
                if op is Operator.IN or op is Operator.NOT_IN:
                    values = tuple(cond.value)
                    group_shape.append((cond.column, op, len(values)))
                    params.extend(values if conv is None else map(conv, values))
                elif op is Operator.BETWEEN:
                    group_shape.append((cond.column, op, 2))
                    params.extend(cond.value if conv is None else map(conv, cond.value))
                elif op is Operator.IS_NULL or op is Operator.IS_NOT_NULL:
                    group_shape.append((cond.column, op, 0))
                elif op is Operator.LIKE or op is Operator.ILIKE:
                    group_shape.append((cond.column, op, 1))
                    params.append(dialect.like_param(cond.value, fold=op is Operator.ILIKE))
                else:
                    group_shape.append((cond.column, op, 1))
                    params.append(cond.value if conv is None else conv(cond.value))
            shape.append(tuple(group_shape))
        if len(params) > dialect.max_filter_parameters:
            # wsspec_core.Limits keeps validated requests far below this; an operation
            # built some other way gets a clear error rather than the driver's.
            raise StorageFailure(
                StorageError(
                    kind=StorageErrorKind.OTHER,
                    message=(
                        f"the filters bind {len(params)} values; {dialect.name} takes at most "
                        f"{dialect.max_filter_parameters} (lower Limits.max_in_values)"
                    ),
                )
            )
        return tuple(shape), params

    def where(self, entity: Entity, shape: Shape) -> str:
        """``(A OR B) AND (C OR D)`` for a filter shape; empty for no filters."""
        groups = []
        for group in shape:
            parts = [self.condition(entity, *cond) for cond in group]
            groups.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")
        return " AND ".join(groups)

    def condition(self, entity: Entity, column: str, op: Operator, n: int) -> str:
        """One condition with ``n`` placeholders."""
        p = self._param
        col = quote(column)
        text = entity.columns_by_name[column].type is ColumnType.TEXT
        if op is Operator.EQ:
            return f"{col} = {p}"
        if op is Operator.NEQ:
            return f"({col} IS NULL OR {col} <> {p})"
        if op is Operator.IN:
            return f"{col} IN ({', '.join([p] * n)})" if n else "1 = 0"
        if op is Operator.NOT_IN:
            return f"({col} IS NULL OR {col} NOT IN ({', '.join([p] * n)}))" if n else "1 = 1"
        if op is Operator.IS_NULL:
            return f"{col} IS NULL"
        if op is Operator.IS_NOT_NULL:
            return f"{col} IS NOT NULL"
        if op is Operator.LIKE:
            return self.dialect.like(col, fold=False)
        if op is Operator.ILIKE:
            return self.dialect.like(col, fold=True)
        compared = self.dialect.compared(col, text=text)
        if op is Operator.GT:
            return f"{compared} > {p}"
        if op is Operator.GTE:
            return f"{compared} >= {p}"
        if op is Operator.LT:
            return f"{compared} < {p}"
        if op is Operator.LTE:
            return f"{compared} <= {p}"
        if op is Operator.BETWEEN:
            return f"{compared} BETWEEN {p} AND {p}"
        raise ValueError(f"unsupported operator {op}")

    def order_by(self, entity: Entity, sort: Sequence[tuple[str, bool]]) -> str:
        """The sort keys, then the primary key ascending (stopping at the key: it is
        unique, so later keys cannot change the order)."""
        parts = []
        seen = set()
        pk = entity.primary_key.name
        columns = entity.columns_by_name
        for column, descending in (*sort, (pk, False)):
            if column in seen:
                continue
            seen.add(column)
            text = columns[column].type is ColumnType.TEXT
            nullable = columns[column].nullable and column != pk
            parts.append(
                self.dialect.order_term(
                    quote(column), text=text, descending=descending, nullable=nullable
                )
            )
            if column == pk:
                break
        return ", ".join(parts)


def _db_value(target: Target, column: str, value: Any) -> Any:
    conv: Callable[[Any], Any] | None = target.to_db[column]
    return value if conv is None or value is None else conv(value)


def _preload_shape(preloads: Sequence[Preload]) -> tuple[Any, ...]:
    """The part of a preload tree that changes the parent's SQL (its join columns)."""
    return tuple(p.relation for p in preloads)
