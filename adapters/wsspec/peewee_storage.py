"""The Peewee storage adapter: runs wsspec_core's storage operations on SQLite or PostgreSQL.

Theory of operation
-------------------
The core hands us validated operations (``ReadList``, ``ReadOne``, ``Create``, ``Update``,
``Delete``): column names have been checked against the entity and values coerced to the
column's Python type. We turn each one into SQL *text built only from names taken from the
registered Peewee models* plus bound parameters for every value, so no client string is
ever interpolated (docs/protocol.md "Query options").

Building a Peewee query costs about 100 us, executing its SQL about 5 us, so we do not
build Peewee queries per request. We generate the SQL ourselves and cache it per query
*shape* (entity, filter columns/operators/list lengths, sort, selection); a request of a
known shape costs one dict lookup, building the parameter tuple, and the driver call.

Semantics follow ``wsspec_core.matches`` / ``MemoryStorage`` exactly (docs/storage.md):

* ``neq`` / ``not_in`` keep NULL rows (``col IS NULL OR col <> ?``); ``in []`` matches
  nothing and ``not_in []`` everything; other comparisons are false on NULL.
* ``like`` is case-sensitive and ``ilike`` folds ASCII case on both backends. SQLite's
  ``LIKE`` is case-insensitive, so there the pattern is translated to a ``GLOB`` pattern
  (case-sensitive; ASCII letters become ``[aA]`` classes for ``ilike``). PostgreSQL uses
  ``LIKE`` / ``ILIKE ... ESCAPE '\\'`` on a re-escaped pattern (so a trailing backslash
  means a literal backslash, as in the core's matcher, instead of a SQL error).
* NULL sorts as the smallest value; text compares and sorts by code point (PostgreSQL:
  ``COLLATE "C"``); ties are broken by the primary key ascending.

Threads: reads run concurrently from several threads, each on its own connection (Peewee's
thread-local connection state); writes are serialised by a lock and each runs in one
transaction.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee

import wsspec_core as core
from wsspec_core import (
    Column,
    ColumnType,
    Create,
    Delete,
    Entity,
    Filters,
    ListResult,
    Operator,
    Preload,
    ReadList,
    ReadOne,
    Relation,
    RelationKind,
    Row,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    Update,
)

try:  # psycopg 3 is optional: only needed for PostgreSQL.
    import psycopg
    import psycopg.errors as pg_errors
except ImportError:  # pragma: no cover - exercised only without psycopg installed
    psycopg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]

__all__ = ["PeeweeStorage"]

#: Keys per ``IN (...)`` list when preloading; stays far below both databases' parameter
#: limits (SQLite 32766, PostgreSQL 65535) whatever the nesting.
_PRELOAD_CHUNK = 5000
#: Compiled SQL strings kept per storage; the cache is simply cleared when it fills up
#: (shapes are few in practice; the bound only protects against pathological clients).
_SQL_CACHE_SIZE = 4096

_SAFE_MESSAGES = {
    "unique": "unique constraint failed",
    "not_null": "not-null constraint failed",
    "foreign_key": "foreign key constraint failed",
    "check": "check constraint failed",
}


def _quote(name: str) -> str:
    """Quote an identifier. Only ever applied to names taken from the models."""
    return '"' + name.replace('"', '""') + '"'


def _column_type(field: peewee.Field) -> ColumnType:
    if isinstance(field, peewee.ForeignKeyField):
        return _column_type(field.rel_field)
    if isinstance(field, peewee.BooleanField):
        return ColumnType.BOOLEAN
    if isinstance(field, peewee.DateTimeField):
        return ColumnType.DATETIME
    if isinstance(field, peewee.DateField):
        return ColumnType.DATE
    if isinstance(field, peewee.TimestampField | peewee.BlobField | peewee.BitField):
        raise ValueError(f"field {field.name!r}: {type(field).__name__} is not supported")
    if isinstance(field, peewee.IntegerField):  # Auto, BigInteger, SmallInteger, Identity
        return ColumnType.INTEGER
    if isinstance(field, peewee.FloatField | peewee.DecimalField):  # DoubleField too
        return ColumnType.FLOAT
    return ColumnType.TEXT  # Char, FixedChar, Text, UUID, Time, IP, ...


#: Field classes whose values the drivers take as the core gives them.
_PLAIN_FIELDS = (
    peewee.IntegerField,
    peewee.FloatField,
    peewee.DecimalField,
    peewee.CharField,
    peewee.TextField,
    peewee.BooleanField,
    peewee.DateField,
    peewee.DateTimeField,
    peewee.ForeignKeyField,
)


def _sql_default(field: peewee.Field) -> bool:
    """Whether the field declares a database-side default (``constraints=[SQL("DEFAULT
    ...")]``)."""
    return any(
        isinstance(c, peewee.SQL) and c.sql.strip().upper().startswith("DEFAULT ")
        for c in field.constraints or ()
    )


def _glob_pattern(tokens: Sequence[tuple[str, str]], *, fold: bool) -> str:
    """A SQLite GLOB pattern for LIKE tokens. GLOB is case-sensitive; ``fold`` turns each
    ASCII letter into a ``[xX]`` class, which folds ASCII case and nothing else."""
    out = []
    for kind, char in tokens:
        if kind == "%":
            out.append("*")
        elif kind == "_":
            out.append("?")
        elif char in "*?[":
            out.append(f"[{char}]")
        elif fold and char.isascii() and char.isalpha():
            out.append(f"[{char.lower()}{char.upper()}]")
        else:
            out.append(char)
    return "".join(out)


def _like_tokens(pattern: str) -> list[tuple[str, str]]:
    """Parse a LIKE pattern: ``%`` any run, ``_`` one character, backslash escapes the next
    character; a trailing lone backslash is a literal backslash."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            tokens.append(("c", pattern[i + 1]))
            i += 2
            continue
        if char in "%_":
            tokens.append((char, char))
        else:
            tokens.append(("c", char))
        i += 1
    return tokens


def _pg_like_pattern(tokens: Sequence[tuple[str, str]]) -> str:
    out = []
    for kind, char in tokens:
        if kind != "c":
            out.append(kind)
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


class _Target:
    """What the adapter knows about one registered model, beyond its Entity."""

    __slots__ = ("defaults", "fields", "model", "table", "to_db", "to_py")

    def __init__(self, model: type[peewee.Model], table: str) -> None:
        self.model = model
        self.table = table
        self.fields: dict[str, peewee.Field] = {}
        #: Column -> converter applied to values bound as parameters (writes and filters).
        self.to_db: dict[str, Callable[[Any], Any] | None] = {}
        #: Column -> converter applied to values read back (``None`` when not needed).
        self.to_py: dict[str, Callable[[Any], Any] | None] = {}
        #: Column -> Peewee's Python-side default (value or callable), applied on create.
        self.defaults: dict[str, Any] = {}


class _Compiled:
    """One cached statement: SQL text with placeholders, and the result layout."""

    __slots__ = ("convert", "names", "sql")

    def __init__(self, sql: str, names: Sequence[str], converters: Sequence[Any]) -> None:
        self.sql = sql
        self.names = tuple(names)
        #: (position, column, converter) for the columns whose values need converting.
        self.convert = tuple(
            (i, name, conv)
            for i, (name, conv) in enumerate(zip(names, converters, strict=True))
            if conv is not None
        )


class PeeweeStorage:
    """A wsspec storage backend over a Peewee ``SqliteDatabase`` or ``PostgresqlDatabase``.

    Register models with :meth:`register`, hand :meth:`entities` to the engine, and let the
    driver call :meth:`execute` from worker threads. See docs/storage.md.
    """

    def __init__(self, database: peewee.Database) -> None:
        if isinstance(database, peewee.PostgresqlDatabase):
            self._postgres = True
        elif isinstance(database, peewee.SqliteDatabase):
            self._postgres = False
            if sqlite3.sqlite_version_info < (3, 35, 0):
                raise RuntimeError("PeeweeStorage needs SQLite 3.35 or later (RETURNING)")
        else:
            raise TypeError("PeeweeStorage supports SqliteDatabase and PostgresqlDatabase")
        self.database = database
        #: The same object, untyped: the adapter uses Peewee's per-thread ``_state``.
        self._db: Any = database
        self._param = "%s" if self._postgres else "?"
        self._models: dict[str, type[peewee.Model]] = {}
        self._entities: dict[str, Entity] = {}
        self._targets: dict[str, _Target] = {}
        self._sql: dict[tuple[Any, ...], _Compiled] = {}
        self._by_entity: dict[int, tuple[Entity, tuple[str, _Target, Any]]] = {}
        self._write_lock = threading.Lock()
        self._local = threading.local()

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> PeeweeStorage:
        """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
        ``postgresql://user[:password]@host[:port]/dbname``."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "sqlite":
            path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
            if not path or path == ":memory:":
                raise ValueError(
                    "sqlite URLs need a file path (sqlite:///file.db): an in-memory "
                    "database is not shared between the worker threads' connections"
                )
            return cls(peewee.SqliteDatabase(path, timeout=5))
        if parsed.scheme in ("postgres", "postgresql"):
            if not parsed.path.strip("/"):
                raise ValueError("postgresql URLs need a database name")
            conninfo = urllib.parse.urlunsplit(parsed._replace(scheme="postgresql"))
            # psycopg 3 even where psycopg2 is installed too: the error mapping reads
            # psycopg 3's diagnostics (docs/storage.md "Errors").
            return cls(peewee.PostgresqlDatabase(conninfo, connect_timeout=5, prefer_psycopg3=True))
        raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}")

    def register(self, name: str, model: type[peewee.Model]) -> Entity:
        """Expose ``model`` as ``"schema.entity"`` or ``"entity"``.

        The name is independent of the SQL table, which is the model's own (with its
        ``Meta.schema``). Relations are built between registered models only and are
        refreshed on every registration, so :meth:`entities` always sees them all; the
        returned Entity holds the relations to models registered so far.
        """
        if name in self._models:
            raise ValueError(f"{name!r} is already registered")
        schema, _, entity_name = name.rpartition(".")
        # Validate before mutating anything.
        columns: Any = self._columns(model)  # (attrs converter: mypy cannot see it)
        Entity(name=entity_name, schema=schema, table_name="t", columns=columns)
        self._models[name] = model
        self._targets[name] = self._build_target(model)
        self._rebuild_entities()
        return self._entities[name]

    def register_all(self, models: Iterable[tuple[str, type[peewee.Model]]]) -> list[Entity]:
        for name, model in models:
            self.register(name, model)
        return self.entities()

    def entities(self) -> list[Entity]:
        return list(self._entities.values())

    def close(self) -> None:
        """Close the calling thread's connection (each thread owns its own)."""
        if not self.database.is_closed():
            self.database.close()

    def _columns(self, model: type[peewee.Model]) -> list[Column]:
        columns = []
        for field in model._meta.sorted_fields:
            auto = isinstance(field, peewee.AutoField) or (
                field.primary_key and isinstance(field, peewee.IntegerField) and field.sequence
            )
            columns.append(
                Column(
                    name=field.column_name,
                    type=_column_type(field),
                    nullable=bool(field.null),
                    primary_key=bool(field.primary_key),
                    has_default=bool(auto or field.default is not None or _sql_default(field)),
                )
            )
        return columns

    def _build_target(self, model: type[peewee.Model]) -> _Target:
        meta = model._meta
        table = _quote(meta.table_name)
        if meta.schema:
            table = f"{_quote(meta.schema)}.{table}"
        target = _Target(model, table)
        for field in meta.sorted_fields:
            col = field.column_name
            target.fields[col] = field
            kind = _column_type(field)
            target.to_db[col] = self._to_db(field, kind)
            target.to_py[col] = self._to_py(kind)
            if kind is ColumnType.TEXT and isinstance(field, peewee.CharField | peewee.TextField):
                target.to_py[col] = None  # already str
            if field.default is not None:
                target.defaults[col] = field.default
        return target

    def _to_db(self, field: peewee.Field, kind: ColumnType) -> Callable[[Any], Any] | None:
        if not self._postgres and kind is ColumnType.DATETIME:
            # The format Peewee and sqlite3 use: text order is time order.
            return lambda v: v.isoformat(" ") if isinstance(v, datetime.datetime) else v
        if not self._postgres and kind is ColumnType.DATE:
            return lambda v: v.isoformat() if isinstance(v, datetime.date) else v
        if isinstance(field, _PLAIN_FIELDS):
            return None
        return field.db_value  # e.g. UUIDField

    def _to_py(self, kind: ColumnType) -> Callable[[Any], Any] | None:
        if kind is ColumnType.BOOLEAN and not self._postgres:
            return bool
        if kind is ColumnType.FLOAT:
            return float  # SQLite NUMERIC affinity may hand back ints; PG numeric a Decimal
        if kind is ColumnType.DATETIME and not self._postgres:
            return _parse_datetime
        if kind is ColumnType.DATE and not self._postgres:
            return _parse_date
        if kind is ColumnType.TEXT:
            return _to_text
        return None

    def _rebuild_entities(self) -> None:
        model_names: dict[type[peewee.Model], str] = {}
        for name, model in self._models.items():
            model_names.setdefault(model, name)
        relations: dict[str, list[Relation]] = {name: [] for name in self._models}
        for name, model in self._models.items():
            columns = {f.column_name for f in model._meta.sorted_fields}
            for field in model._meta.sorted_fields:
                if not isinstance(field, peewee.ForeignKeyField):
                    continue
                target = model_names.get(field.rel_model)
                if target is None:
                    continue
                if field.name not in columns:
                    relations[name].append(
                        Relation(
                            name=field.name,
                            kind=RelationKind.BELONGS_TO,
                            target=target,
                            local_column=field.column_name,
                            remote_column=field.rel_field.column_name,
                        )
                    )
                backref = field.backref
                target_columns = {f.column_name for f in field.rel_model._meta.sorted_fields}
                if backref and backref != "+" and backref not in target_columns:
                    relations[target].append(
                        Relation(
                            name=backref,
                            kind=RelationKind.HAS_MANY,
                            target=name,
                            local_column=field.rel_field.column_name,
                            remote_column=field.column_name,
                        )
                    )
        entities = {}
        for name, model in self._models.items():
            schema, _, entity_name = name.rpartition(".")
            unique: dict[str, Relation] = {}
            for relation in relations[name]:
                unique.setdefault(relation.name, relation)
            entity_columns: Any = self._columns(model)  # (attrs converter: mypy cannot see it)
            found: Any = tuple(unique.values())
            entities[name] = Entity(
                name=entity_name,
                schema=schema,
                table_name=model._meta.table_name,
                columns=entity_columns,
                relations=found,
            )
        self._entities = entities

    # --- connections -------------------------------------------------------------------

    def _connection(self) -> Any:
        db = self._db
        state = db._state
        conn = state.conn
        if conn is None or state.closed:
            db.connect()
            conn = state.conn
        elif self._postgres and (conn.closed or conn.broken):
            self._drop_connection()
            db.connect()
            conn = state.conn
        if getattr(self._local, "conn", None) is not conn:
            self._initialise(conn)
            self._local.conn = conn
        return conn

    def _initialise(self, conn: Any) -> None:
        if self._postgres:
            return
        # WAL lets readers run while the writer writes; busy_timeout waits instead of
        # failing on a lock; foreign keys are enforced as on PostgreSQL.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")

    def _drop_connection(self) -> None:
        """Forget the calling thread's connection so the next call opens a fresh one."""
        state = self._db._state
        conn = state.conn
        try:
            if conn is not None:
                conn.close()
        except Exception:
            pass
        state.reset()
        self._local.conn = None

    # --- execute -------------------------------------------------------------------------

    def never_blocks(self, operation: core.StorageOperation) -> bool:
        """Whether ``operation`` is a read of one row by key, without preloads, on SQLite.

        SQLite answers it in microseconds from a local file, and in WAL mode a reader never
        waits for a writer, so a server may run it on its event loop rather than pay a
        worker-thread round trip that costs several times more (docs/server.md "How it
        runs"). Everything else, and every PostgreSQL query (a network round trip), may
        block and belongs in a worker thread.
        """
        return not self._postgres and type(operation) is ReadOne and not operation.selection.preload

    def execute(self, operation: core.StorageOperation) -> Any:
        """Run one storage operation; its docstring in wsspec_core says what it returns.

        Raises :class:`wsspec_core.StorageFailure` for every database failure.
        """
        kind = type(operation)
        try:
            if kind is ReadOne or kind is ReadList:
                reused = not self._db._state.closed
                try:
                    if kind is ReadOne:
                        return self._read_one(operation)  # type: ignore[arg-type]
                    return self._read_list(operation)  # type: ignore[arg-type]
                except Exception as exc:
                    if not (reused and self._lost_connection(exc, operation.entity)):
                        raise
                # A read is safe to repeat: once, on a fresh connection (the server
                # restarted, or dropped an idle connection). Writes are never retried.
                self._drop_connection()
                return self._read(operation)  # type: ignore[arg-type]
            if kind is Create or kind is Update or kind is Delete:
                with self._write_lock:
                    return self._write(operation)  # type: ignore[arg-type]
            raise TypeError(f"unknown storage operation {kind.__name__}")
        except StorageFailure:
            raise
        except Exception as exc:
            raise self._failure(exc, operation.entity) from None

    # --- reads ---------------------------------------------------------------------------

    def _resolve(self, entity: Entity) -> tuple[str, _Target, Callable[[Any], Any] | None]:
        """The entity's qualified name, target and key converter, cached by identity (the
        engine passes the same Entity objects again and again)."""
        found = self._by_entity.get(id(entity))
        if found is not None and found[0] is entity:
            return found[1]
        name = entity.qualified_name
        target = self._targets[name]
        resolved = (name, target, target.to_db[entity.primary_key.name])
        if len(self._by_entity) >= _SQL_CACHE_SIZE:
            self._by_entity.clear()
        self._by_entity[id(entity)] = (entity, resolved)
        return resolved

    def _read(self, op: ReadOne | ReadList) -> Any:
        if isinstance(op, ReadOne):
            return self._read_one(op)
        return self._read_list(op)

    def _lost_connection(self, exc: BaseException, entity: Entity) -> bool:
        """Whether ``exc`` means an open PostgreSQL connection died under us."""
        if not self._postgres:
            return False
        kind = self._classify(_original(exc), entity).kind
        return kind is StorageErrorKind.UNAVAILABLE or self._connection_broken()

    def _read_one(self, op: ReadOne) -> Row | None:
        entity = op.entity
        name, target, key_to_db = self._resolve(entity)
        selection = op.selection
        preload = selection.preload
        if op.filters.groups:
            shape, params = self._filter_shape(target, op.filters)
        else:
            shape, params = (), []
        key = ("one", name, shape, selection.columns, _preload_shape(preload) if preload else ())
        compiled = self._sql.get(key)
        if compiled is None:
            compiled = self._compile_one(op, shape, key)
        params.insert(0, op.key if key_to_db is None else key_to_db(op.key))
        found = self._connection().execute(compiled.sql, params).fetchone()
        if found is None:
            return None
        row = self._row(compiled, found)
        if selection.preload:
            self._preload([row], op.entity, selection.preload)
            self._strip([row], selection.columns, selection.preload)
        return row

    def _read_list(self, op: ReadList) -> ListResult:
        name, target, _ = self._resolve(op.entity)
        selection = op.selection
        shape, params = self._filter_shape(target, op.filters)
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
        compiled = self._sql.get(key)
        if compiled is None:
            compiled = self._compile_list(op, shape, sort, key)
        conn = self._connection()
        cursor = conn.execute(compiled.sql, [*params, op.limit, op.offset])
        rows = [self._row(compiled, r) for r in cursor.fetchall()]
        if op.offset == 0 and len(rows) < op.limit:
            # The page holds every matching row, so it is the total: no COUNT needed.
            total = len(rows)
        else:
            # A separate statement: under concurrent writes it may see a later state.
            count_key = ("count", name, shape)
            counted = self._sql.get(count_key)
            if counted is None:
                counted = self._compile_count(op, shape, count_key)
            total = conn.execute(counted.sql, params).fetchone()[0]
        if selection.preload and rows:
            self._preload(rows, op.entity, selection.preload)
            self._strip(rows, selection.columns, selection.preload)
        return ListResult(rows=rows, total=total)

    @staticmethod
    def _row(compiled: _Compiled, values: Sequence[Any]) -> Row:
        row = dict(zip(compiled.names, values))  # noqa: B905  (same length by construction)
        for index, name, convert in compiled.convert:
            value = values[index]
            if value is not None:
                row[name] = convert(value)
        return row

    def _fetch_columns(
        self, entity: Entity, columns: Sequence[str], preloads: Sequence[Preload]
    ) -> list[str]:
        wanted = list(columns)
        for preload in preloads:
            local = entity.relations_by_name[preload.relation].local_column
            if local not in wanted:
                wanted.append(local)
        return wanted

    def _compile_one(self, op: ReadOne, shape: Any, key: Any) -> _Compiled:
        entity = op.entity
        target = self._targets[entity.qualified_name]
        names = self._fetch_columns(entity, op.selection.columns, op.selection.preload)
        where = [f"{_quote(entity.primary_key.name)} = {self._param}"]
        filters = self._where(entity, shape)
        if filters:
            where.append(filters)
        sql = (
            f"SELECT {', '.join(map(_quote, names))} FROM {target.table} "
            f"WHERE {' AND '.join(where)}"
        )
        return self._remember(key, _Compiled(sql, names, [target.to_py[n] for n in names]))

    def _compile_list(self, op: ReadList, shape: Any, sort: Any, key: Any) -> _Compiled:
        entity = op.entity
        target = self._targets[entity.qualified_name]
        names = self._fetch_columns(entity, op.selection.columns, op.selection.preload)
        sql = f"SELECT {', '.join(map(_quote, names))} FROM {target.table}"
        where = self._where(entity, shape)
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {self._order_by(entity, sort)} LIMIT {self._param} OFFSET {self._param}"
        return self._remember(key, _Compiled(sql, names, [target.to_py[n] for n in names]))

    def _compile_count(self, op: ReadList, shape: Any, key: Any) -> _Compiled:
        target = self._targets[op.entity.qualified_name]
        sql = f"SELECT COUNT(*) FROM {target.table}"
        where = self._where(op.entity, shape)
        if where:
            sql += f" WHERE {where}"
        return self._remember(key, _Compiled(sql, ["count"], [None]))

    def _remember(self, key: Any, compiled: _Compiled) -> _Compiled:
        if len(self._sql) >= _SQL_CACHE_SIZE:
            self._sql.clear()
        self._sql[key] = compiled
        return compiled

    def _order_by(self, entity: Entity, sort: Sequence[tuple[str, bool]]) -> str:
        parts = []
        seen = set()
        pk = entity.primary_key.name
        for column, descending in (*sort, (pk, False)):
            if column in seen:
                continue
            seen.add(column)
            expr = _quote(column)
            if self._postgres:
                if entity.columns_by_name[column].type is ColumnType.TEXT:
                    expr += ' COLLATE "C"'
                expr += " DESC NULLS LAST" if descending else " ASC NULLS FIRST"
            else:
                # SQLite already sorts NULL first ascending and last descending.
                expr += " DESC" if descending else " ASC"
            parts.append(expr)
            if column == pk:
                break  # the key is unique: later keys cannot change the order
        return ", ".join(parts)

    # --- filters -------------------------------------------------------------------------

    def _filter_shape(self, target: _Target, filters: Filters) -> tuple[tuple[Any, ...], list[Any]]:
        """The cache key of ``filters`` (columns, operators, list lengths) and its bound
        parameters in SQL order, converted for the driver (dates as text on SQLite, LIKE
        patterns rendered as GLOB or escaped LIKE patterns)."""
        shape = []
        params: list[Any] = []
        to_db = target.to_db
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
                    params.append(self._like_param(cond.value, op is Operator.ILIKE))
                else:
                    group_shape.append((cond.column, op, 1))
                    params.append(cond.value if conv is None else conv(cond.value))
            shape.append(tuple(group_shape))
        return tuple(shape), params

    def _like_param(self, pattern: str, fold: bool) -> str:
        tokens = _like_tokens(pattern)
        if self._postgres:
            return _pg_like_pattern(tokens)
        return _glob_pattern(tokens, fold=fold)

    def _where(self, entity: Entity, shape: Sequence[Sequence[tuple[str, Operator, int]]]) -> str:
        groups = []
        for group in shape:
            parts = [self._condition_sql(entity, *cond) for cond in group]
            groups.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")
        return " AND ".join(groups)

    def _condition_sql(self, entity: Entity, column: str, op: Operator, n: int) -> str:
        p = self._param
        col = _quote(column)
        text = entity.columns_by_name[column].type is ColumnType.TEXT
        ordered = f'{col} COLLATE "C"' if (self._postgres and text) else col
        if op is Operator.EQ:
            return f"{col} = {p}"
        if op is Operator.NEQ:
            return f"({col} IS NULL OR {col} <> {p})"
        if op is Operator.GT:
            return f"{ordered} > {p}"
        if op is Operator.GTE:
            return f"{ordered} >= {p}"
        if op is Operator.LT:
            return f"{ordered} < {p}"
        if op is Operator.LTE:
            return f"{ordered} <= {p}"
        if op is Operator.BETWEEN:
            return f"{ordered} BETWEEN {p} AND {p}"
        if op is Operator.IN:
            return f"{col} IN ({', '.join([p] * n)})" if n else "1 = 0"
        if op is Operator.NOT_IN:
            return f"({col} IS NULL OR {col} NOT IN ({', '.join([p] * n)}))" if n else "1 = 1"
        if op is Operator.IS_NULL:
            return f"{col} IS NULL"
        if op is Operator.IS_NOT_NULL:
            return f"{col} IS NOT NULL"
        if op is Operator.LIKE:
            return f"{col} LIKE {p} ESCAPE '\\'" if self._postgres else f"{col} GLOB {p}"
        if op is Operator.ILIKE:
            return f"{col} ILIKE {p} ESCAPE '\\'" if self._postgres else f"{col} GLOB {p}"
        raise ValueError(f"unsupported operator {op}")

    # --- preloads ------------------------------------------------------------------------

    def _preload(self, rows: list[Row], entity: Entity, preloads: Sequence[Preload]) -> None:
        """Fill each preload's relation on ``rows``: one query per relation and level
        (chunked only beyond _PRELOAD_CHUNK parent keys), never one per row."""
        for preload in preloads:
            relation = entity.relations_by_name[preload.relation]
            child_entity = self._entities.get(relation.target, preload.target)
            child = self._targets[relation.target]
            columns = (
                list(preload.columns)
                if preload.columns is not None
                else [c.name for c in child_entity.columns]
            )
            fetch = self._fetch_columns(child_entity, columns, preload.children)
            if relation.remote_column not in fetch:
                fetch.append(relation.remote_column)
            keys = list(
                dict.fromkeys(
                    r[relation.local_column] for r in rows if r[relation.local_column] is not None
                )
            )
            found: list[Row] = []
            many = relation.kind is RelationKind.HAS_MANY
            conv = child.to_db[relation.remote_column]
            for start in range(0, len(keys), _PRELOAD_CHUNK):
                chunk = keys[start : start + _PRELOAD_CHUNK]
                cache_key = (
                    "preload",
                    relation.target,
                    tuple(fetch),
                    relation.remote_column,
                    len(chunk),
                    many,
                )
                compiled = self._sql.get(cache_key)
                if compiled is None:
                    sql = (
                        f"SELECT {', '.join(map(_quote, fetch))} FROM {child.table} "
                        f"WHERE {_quote(relation.remote_column)} IN "
                        f"({', '.join([self._param] * len(chunk))})"
                    )
                    if many:
                        sql += f" ORDER BY {_quote(child_entity.primary_key.name)}"
                    compiled = self._remember(
                        cache_key, _Compiled(sql, fetch, [child.to_py[n] for n in fetch])
                    )
                params = chunk if conv is None else [conv(k) for k in chunk]
                cursor = self._connection().execute(compiled.sql, params)
                found.extend(self._row(compiled, r) for r in cursor.fetchall())
            if preload.children and found:
                self._preload(found, child_entity, preload.children)
            if many:
                groups: dict[Any, list[Row]] = {}
                for r in found:
                    groups.setdefault(r[relation.remote_column], []).append(r)
                for row in rows:
                    row[preload.relation] = groups.get(row[relation.local_column], [])
            else:
                by_key = {r[relation.remote_column]: r for r in found}
                for row in rows:
                    row[preload.relation] = by_key.get(row[relation.local_column])
            if found:
                self._strip(found, columns, preload.children)

    @staticmethod
    def _strip(rows: list[Row], columns: Sequence[str], preloads: Sequence[Preload]) -> None:
        """Drop the join columns fetched only for preloading."""
        keep = set(columns) | {p.relation for p in preloads}
        for row in rows:
            for name in [n for n in row if n not in keep]:
                del row[name]

    # --- writes --------------------------------------------------------------------------

    def _transaction(self) -> Any:
        if self._postgres:
            return self.database.atomic()
        # IMMEDIATE takes the write lock up front: no deadlock-prone upgrade from a read.
        return self.database.atomic(lock_type="IMMEDIATE")

    def _write(self, op: Create | Update | Delete) -> Any:
        self._connection()
        with self._transaction():
            if isinstance(op, Create):
                return [self._insert(op.entity, row) for row in op.rows]
            if isinstance(op, Update):
                return self._update(op)
            return self._delete(op)

    def _all_columns(self, entity: Entity) -> list[str]:
        return [c.name for c in entity.columns]

    def _insert(self, entity: Entity, row: Row) -> Row:
        target = self._targets[entity.qualified_name]
        values = dict(row)
        for column, default in target.defaults.items():
            if column not in values:
                values[column] = default() if callable(default) else default
        names = list(values)
        key = ("insert", entity.qualified_name, tuple(names))
        compiled = self._sql.get(key)
        if compiled is None:
            out = self._all_columns(entity)
            returning = ", ".join(map(_quote, out))
            if names:
                sql = (
                    f"INSERT INTO {target.table} ({', '.join(map(_quote, names))}) "
                    f"VALUES ({', '.join([self._param] * len(names))}) RETURNING {returning}"
                )
            else:
                sql = f"INSERT INTO {target.table} DEFAULT VALUES RETURNING {returning}"
            compiled = self._remember(key, _Compiled(sql, out, [target.to_py[n] for n in out]))
        params = [self._db_value(target, n, values[n]) for n in names]
        stored = self._connection().execute(compiled.sql, params).fetchone()
        return self._row(compiled, stored)

    @staticmethod
    def _db_value(target: _Target, column: str, value: Any) -> Any:
        conv = target.to_db[column]
        return value if conv is None or value is None else conv(value)

    def _update(self, op: Update) -> Row | None:
        entity = op.entity
        target = self._targets[entity.qualified_name]
        pk = entity.primary_key.name
        shape, params = self._filter_shape(target, op.filters)
        names = list(op.changes)
        if not names:
            selection = core.Selection(columns=tuple(self._all_columns(entity)))
            return self._read_one(
                ReadOne(entity=entity, key=op.key, filters=op.filters, selection=selection)
            )
        key = ("update", entity.qualified_name, tuple(names), shape)
        compiled = self._sql.get(key)
        if compiled is None:
            out = self._all_columns(entity)
            assignments = ", ".join(f"{_quote(n)} = {self._param}" for n in names)
            where = f"{_quote(pk)} = {self._param}"
            filters = self._where(entity, shape)
            if filters:
                where += f" AND {filters}"
            sql = (
                f"UPDATE {target.table} SET {assignments} WHERE {where} "
                f"RETURNING {', '.join(map(_quote, out))}"
            )
            compiled = self._remember(key, _Compiled(sql, out, [target.to_py[n] for n in out]))
        bound = [self._db_value(target, n, op.changes[n]) for n in names]
        bound.append(self._db_value(target, pk, op.key))
        bound.extend(params)
        stored = self._connection().execute(compiled.sql, bound).fetchone()
        return None if stored is None else self._row(compiled, stored)

    def _delete(self, op: Delete) -> Row | None:
        entity = op.entity
        target = self._targets[entity.qualified_name]
        pk = entity.primary_key.name
        shape, params = self._filter_shape(target, op.filters)
        key = ("delete", entity.qualified_name, shape)
        compiled = self._sql.get(key)
        if compiled is None:
            out = self._all_columns(entity)
            where = f"{_quote(pk)} = {self._param}"
            filters = self._where(entity, shape)
            if filters:
                where += f" AND {filters}"
            # RETURNING gives the row as it was, read atomically with the delete.
            sql = (
                f"DELETE FROM {target.table} WHERE {where} RETURNING {', '.join(map(_quote, out))}"
            )
            compiled = self._remember(key, _Compiled(sql, out, [target.to_py[n] for n in out]))
        bound = [self._db_value(target, pk, op.key), *params]
        stored = self._connection().execute(compiled.sql, bound).fetchone()
        return None if stored is None else self._row(compiled, stored)

    # --- errors --------------------------------------------------------------------------

    def _failure(self, exc: BaseException, entity: Entity) -> StorageFailure:
        error = self._classify(_original(exc), entity)
        if error.kind is StorageErrorKind.UNAVAILABLE or self._connection_broken():
            self._reset_quietly()
        return StorageFailure(error)

    def _connection_broken(self) -> bool:
        conn = self._db._state.conn
        if conn is None or not self._postgres:
            return False
        return bool(conn.closed or conn.broken)

    def _reset_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._drop_connection()

    def _classify(self, exc: BaseException, entity: Entity) -> StorageError:
        if isinstance(exc, sqlite3.IntegrityError):
            return self._sqlite_constraint(str(exc), entity)
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc).lower()
            if "unable to open" in text or "locked" in text or "disk i/o" in text:
                return StorageError(
                    kind=StorageErrorKind.UNAVAILABLE, message="database unavailable"
                )
        if pg_errors is not None and psycopg is not None:
            if isinstance(exc, pg_errors.IntegrityError):
                return self._pg_constraint(exc, entity)
            if isinstance(exc, psycopg.OperationalError) and not isinstance(
                exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable
            ):
                sqlstate = getattr(exc, "sqlstate", None)
                if (
                    sqlstate is None
                    or sqlstate.startswith("08")
                    or sqlstate.startswith("57P")
                    or sqlstate.startswith("53")
                ):
                    return StorageError(
                        kind=StorageErrorKind.UNAVAILABLE, message="database unavailable"
                    )
            if isinstance(exc, psycopg.InterfaceError):
                return StorageError(
                    kind=StorageErrorKind.UNAVAILABLE, message="database unavailable"
                )
        return StorageError(kind=StorageErrorKind.OTHER, message="internal storage error")

    def _sqlite_constraint(self, text: str, entity: Entity) -> StorageError:
        lowered = text.lower()
        kind = "check"
        if lowered.startswith("unique") or "primary key" in lowered:
            kind = "unique"
        elif lowered.startswith("not null"):
            kind = "not_null"
        elif lowered.startswith("foreign key"):
            kind = "foreign_key"
        column = None
        if kind in ("unique", "not_null") and ":" in text:
            # "UNIQUE constraint failed: users.email" (several: "t.a, t.b": no one column)
            listed = [part.strip() for part in text.split(":", 1)[1].split(",")]
            if len(listed) == 1:
                candidate = listed[0].rpartition(".")[2]
                if candidate in entity.columns_by_name:
                    column = candidate
        return _constraint_error(kind, column)

    def _pg_constraint(self, exc: BaseException, entity: Entity) -> StorageError:
        assert pg_errors is not None
        kind = "check"
        if isinstance(exc, pg_errors.UniqueViolation):
            kind = "unique"
        elif isinstance(exc, pg_errors.NotNullViolation):
            kind = "not_null"
        elif isinstance(exc, pg_errors.ForeignKeyViolation):
            kind = "foreign_key"
        diag = getattr(exc, "diag", None)
        column = getattr(diag, "column_name", None)
        if column is None and diag is not None and diag.message_detail:
            # "Key (email)=(...) already exists." / "Key (user_id)=(9) is not present ..."
            found = re.match(r"Key \(([^)]*)\)=", diag.message_detail)
            if found and "," not in found.group(1):
                column = found.group(1).strip().strip('"')
        if column not in entity.columns_by_name:
            column = None
        return _constraint_error(kind, column)


def _original(exc: BaseException) -> BaseException:
    """The driver's exception behind a Peewee wrapper (Peewee re-raises DB-API errors as
    its own classes, with the original as the first argument)."""
    if isinstance(exc, peewee.PeeweeException) and exc.args:
        if isinstance(exc.args[0], BaseException):
            return exc.args[0]
        if exc.__context__ is not None:
            return exc.__context__
    return exc


def _constraint_error(kind: str, column: str | None) -> StorageError:
    message = _SAFE_MESSAGES[kind]
    if column is not None:
        message += f" on column {column}"
    return StorageError(kind=StorageErrorKind.CONSTRAINT, message=message, column=column)


def _preload_shape(preloads: Sequence[Preload]) -> tuple[Any, ...]:
    """The part of a preload tree that changes the parent's SQL (its join columns)."""
    return tuple(p.relation for p in preloads)


def _parse_datetime(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


def _parse_date(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.date.fromisoformat(value[:10])
    return value


def _to_text(value: Any) -> Any:
    return value if isinstance(value, str) else str(value)
