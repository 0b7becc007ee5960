"""Request compilation: a decoded message becomes a validated run, or an error.

Theory of operation
-------------------
Everything here depends only on the message, the engine's fixed entity registry and its
limits, never on what else is going on, which is why it lives apart from the engine's
transitions. :meth:`RequestCompiler.compile` resolves a message's entity and validates it
into a :class:`~wsspec_core._pipeline.Run` whose ``key`` is the storage operation to carry
out (``ReadList``, ``ReadOne``, ``Create``, ``Update``, ``Delete``); a mistake of the client
raises ``InvalidRequest``, which the engine answers with the error it carries.
:meth:`RequestCompiler.check` builds the storage operation, on arrival and again after
before-hooks (they may have changed options, data or the record id).

Compiling options is the costly part of a request, and clients repeat the same query
shapes: compiled filters, reads and selections are remembered per ``(kind, entity,
options)`` in a bounded cache (``_COMPILED_CACHE_SIZE``), cleared when full. The decoder
hands back the very same ``QueryOptions`` object for options it has seen (the compiler's
``options_cache``; absent options are one shared object too), so the cache is first
searched by identity, which skips hashing the options and typing their values.

The module also holds what turns storage outcomes into protocol answers
(``result_problem``, ``storage_error``, ``record_not_found``) and the ``meta`` operation's
description of the registry (docs/protocol.md "Errors", "Meta").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._codec import OptionsCache
from ._config import Limits
from ._entities import ColumnType, Entity, EntityRegistry, ResolutionError
from ._filters import _INT_RANGES, compile_filters
from ._messages import (
    WRITE_OPERATIONS,
    DecodeError,
    ErrorInfo,
    Operation,
    QueryOptions,
    Request,
    Subscribe,
    Unsubscribe,
    quick_new,
)
from ._options import coerce_key, coerce_record, compile_read, compile_selection
from ._pipeline import Connection, Run, RunKind
from ._query import (
    Create,
    Delete,
    Filters,
    InvalidRequest,
    ListResult,
    ReadList,
    ReadOne,
    Selection,
    StorageError,
    StorageErrorKind,
    StorageOperation,
    Update,
)

_T = TypeVar("_T")

_new_read_one = quick_new(ReadOne)

#: Compiled queries kept per engine; the cache is cleared when it reaches this size.
_COMPILED_CACHE_SIZE = 1024

#: The error code of a failed storage operation, by operation (docs/protocol.md "Errors").
STORAGE_ERROR_CODES: dict[Operation, str] = {
    Operation.READ: "read_error",
    Operation.CREATE: "create_error",
    Operation.UPDATE: "update_error",
    Operation.DELETE: "delete_error",
}


class RequestCompiler:
    """Validates messages against one registry and its limits, with a cache of compiled
    query shapes."""

    __slots__ = ("_cache", "_same", "_shapes", "limits", "options_cache", "registry")

    def __init__(self, registry: EntityRegistry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits
        self._cache: dict[tuple[str, str, QueryOptions, tuple[Any, ...]], Any] = {}
        #: The same entries by identity: ``(kind, id(entity), id(options))`` to
        #: ``(entity, options, compiled)``. The entry holds both objects, so neither id can
        #: be reused by another object while it is there; a lookup checks them with ``is``.
        self._same: dict[tuple[str, int, int], tuple[Entity, QueryOptions, Any]] = {}
        #: Handed to :func:`~wsspec_core._codec.decode`: options already checked, by text.
        self.options_cache: OptionsCache = {}
        #: What reads of one shape need (:meth:`read`), by ``(id(entity), id(options))``;
        #: the entry holds both objects, like ``_same``.
        self._shapes: dict[tuple[int, int], _ReadShape] = {}

    def decode_error(self, message: DecodeError) -> ErrorInfo:
        """The error answering an undecodable message: ``model_not_found`` when the entity
        it names does not exist (the more useful news), else the decoder's own."""
        error = message.error
        if message.entity_ref is not None:
            resolved = self.registry.resolve(*message.entity_ref)
            if isinstance(resolved, ResolutionError):
                error = not_found_error(resolved)
        return error

    def compile(self, conn: Connection, message: Request | Subscribe | Unsubscribe) -> Run:
        """The run of a decoded ``message`` from ``conn``; raises InvalidRequest."""
        if isinstance(message, Unsubscribe):
            run = Run(conn, RunKind.EXCLUSIVE, message)
            run.subscription_id = message.subscription_id
            return run
        if isinstance(message, Subscribe):
            entity = self._resolve(message.schema, message.entity)
            compile_filters(entity, message.options.filters, self.limits)
            return Run(conn, RunKind.EXCLUSIVE, message, entity, options=message.options)
        if message.operation is Operation.META and not message.entity:
            return Run(conn, RunKind.SHARED, message)
        entity = self._resolve(message.schema, message.entity)
        run = Run(conn, RunKind.SHARED, message, entity, options=message.options)
        if message.operation in WRITE_OPERATIONS:
            run.kind = RunKind.EXCLUSIVE
            run.data = _copy_data(message.data)
        run.record_id = message.record_id
        self.check(run)
        return run

    def read(self, conn: Connection, message: Request) -> Run:
        """:meth:`compile` of a read (``message.operation`` is READ), for the engine's
        direct path: the same run and the same errors, with what the read needs found in
        one lookup of its ``(entity, options)`` shape (:class:`_ReadShape`) rather than one
        ``_compiled`` lookup per part. A shape not seen yet takes :meth:`check`, which
        compiles (or refuses) it as always; a successful one is remembered."""
        resolved = self.registry.resolve(message.schema, message.entity)
        if isinstance(resolved, ResolutionError):
            error = not_found_error(resolved)
            raise InvalidRequest(error.code, error.message, error.details)
        options = message.options
        run = Run(conn, RunKind.SHARED, message, resolved, options=options)
        record_id = run.record_id = message.record_id
        query = self.known_read(resolved, options, record_id)
        if query is not None:
            run.key = query
            return run
        self.check(run)
        self._remember(run)
        return run

    def known_read(
        self, entity: Entity, options: QueryOptions, record_id: Any
    ) -> ReadList | ReadOne | None:
        """The storage operation of a read of ``entity`` with ``options`` (this very
        object) and ``record_id``, if its shape has been compiled before (:meth:`read`
        remembers each one it compiles); ``None`` otherwise, and :meth:`check` says what
        to do (or what is wrong). Raises InvalidRequest for a key :meth:`check` would
        refuse, with its error."""
        shape = self._shapes.get((id(entity), id(options)))
        if shape is None or shape.entity is not entity or shape.options is not options:
            return None
        if record_id is None:
            return shape.list_read
        by_id = shape.by_id
        if by_id is None:
            return None
        # The order of check(): filters (known good), the key, the selection (known
        # good). An integer in range is what coerce_key makes of it.
        key_range = shape.key_range
        if (
            key_range is not None
            and type(record_id) is int
            and key_range[0] <= record_id <= key_range[1]
        ):
            key = record_id
        else:
            key = coerce_key(entity, record_id)
        return _new_read_one(entity, key, by_id[0], by_id[1])

    def _remember(self, run: Run) -> None:
        """Keep the parts of a read ``check`` just compiled for :meth:`read`. Only for
        options no one can change in place (hashable ones, as ``_compiled`` asks)."""
        entity = run.entity
        options = run.options
        assert entity is not None
        try:
            hash(options)
        except TypeError:
            return
        same_key = (id(entity), id(options))
        shape = self._shapes.get(same_key)
        if shape is None or shape.entity is not entity or shape.options is not options:
            if len(self._shapes) >= _COMPILED_CACHE_SIZE:
                self._shapes.clear()
            shape = self._shapes[same_key] = _ReadShape(entity, options)
        key = run.key
        if isinstance(key, ReadList):
            shape.list_read = key
        elif isinstance(key, ReadOne):
            shape.by_id = (key.filters, key.selection)

    def _resolve(self, schema: str | None, name: str) -> Entity:
        resolved = self.registry.resolve(schema, name)
        if isinstance(resolved, ResolutionError):
            error = not_found_error(resolved)
            raise InvalidRequest(error.code, error.message, error.details)
        return resolved

    def check(self, run: Run) -> None:
        """Validate what the steps will use and set ``run.key``; raises InvalidRequest.
        Runs on arrival and again after before-hooks (which may have changed options, data
        or record id)."""
        assert isinstance(run.message, Request) and run.entity is not None
        entity = run.entity
        operation = run.message.operation
        if operation is Operation.META:
            return
        options = run.options
        if operation is Operation.READ and run.record_id is None:
            run.key = self._compiled(
                "read",
                entity,
                options,
                lambda: compile_read(entity, options, self.registry, self.limits),
            )
            return
        filters = self._compiled(
            "filters",
            entity,
            options,
            lambda: compile_filters(entity, options.filters, self.limits),
        )
        if operation is Operation.CREATE:
            records = run.data if isinstance(run.data, list) else [run.data]
            if not records:
                raise InvalidRequest("invalid_message", "create needs at least one record")
            if len(records) > self.limits.max_batch_size:
                raise InvalidRequest(
                    "invalid_message",
                    f"a batch create holds at most {self.limits.max_batch_size} records",
                )
            rows = tuple(coerce_record(entity, record, partial=False) for record in records)
            run.key = Create(entity=entity, rows=rows)
            return
        key = coerce_key(entity, run.record_id)
        if operation is Operation.READ:
            selection = self._compiled(
                "selection",
                entity,
                options,
                lambda: compile_selection(entity, options, self.registry, self.limits),
            )
            run.key = ReadOne(entity=entity, key=key, filters=filters, selection=selection)
        elif operation is Operation.UPDATE:
            changes = coerce_record(entity, run.data, partial=True)
            run.key = Update(entity=entity, key=key, changes=changes, filters=filters)
        else:
            run.key = Delete(entity=entity, key=key, filters=filters)

    def _compiled(
        self, kind: str, entity: Entity, options: QueryOptions, build: Callable[[], _T]
    ) -> _T:
        """``build()``, remembered per ``(kind, entity, options)``.

        Compiling options depends only on them, the entity and the engine's fixed registry
        and limits, so clients repeating a query shape skip validation. Options holding
        lists (``in`` values) are not hashable and are simply compiled each time.

        The identity lookup comes first: the same frozen object found again compiles to
        the same thing. Only options the typed key accepted get there (a list value, which
        a hook could change in place, makes the key unhashable and the options uncached).
        """
        same_key = (kind, id(entity), id(options))
        same = self._same.get(same_key)
        if same is not None and same[0] is entity and same[1] is options:
            result: _T = same[2]
            return result
        try:
            # Python equates 1, 1.0 and True (and 0.0 with -0.0), which coerce differently
            # (True is refused on an integer column; 5.0 is "5.0" on a text column): the
            # key tells the values apart by type, and floats by their exact text.
            values = []
            for spec in options.filters:
                value = spec.value
                kind_of = type(value)
                values.append((kind_of, repr(value)) if kind_of is float else (kind_of, value))
            key = (kind, entity.qualified_name, options, tuple(values))
            found = self._cache.get(key)
        except TypeError:
            return build()
        if found is None:
            found = build()
            if len(self._cache) >= _COMPILED_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        if len(self._same) >= _COMPILED_CACHE_SIZE:
            self._same.clear()
        self._same[same_key] = (entity, options, found)
        return found

    def meta(self, entity: Entity | None) -> Any:
        """The answer to ``meta``: the entities of the registry, or one entity described."""
        if entity is None:
            entities = sorted(self.registry.entities(), key=lambda e: (e.schema, e.name))
            return [{"schema": e.schema, "entity": e.name} for e in entities]
        return _describe(entity)


class _ReadShape:
    """The compiled parts of reads of one ``(entity, options)``: the list read, and the
    filters and selection of a read by id (each ``None`` until one compiled), and the
    range of an integer primary key (``coerce_key`` returns an ``int`` in it unchanged)."""

    __slots__ = ("by_id", "entity", "key_range", "list_read", "options")

    def __init__(self, entity: Entity, options: QueryOptions) -> None:
        self.entity = entity
        self.options = options
        self.list_read: ReadList | None = None
        self.by_id: tuple[Filters, Selection] | None = None
        key = entity.primary_key
        self.key_range: tuple[int, int] | None = (
            _INT_RANGES[key.integer_bits] if key.type is ColumnType.INTEGER else None
        )


def size_in_bytes(data: str | bytes, limit: int) -> int:
    """The UTF-8 size of a message, encoding text only when its length cannot settle the
    question (a character takes one to four bytes)."""
    if isinstance(data, bytes) or len(data) > limit:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def result_problem(operation: StorageOperation, result: Any) -> str | None:
    """What is wrong with a storage result for ``operation`` (the shapes documented on
    the operation classes), or ``None``."""
    if isinstance(operation, ReadList):
        if isinstance(result, ListResult):
            # A plain loop: every list read checks every row, and all() over a generator
            # costs twice as much.
            for row in result.rows:
                if not isinstance(row, dict):
                    break
            else:
                return None
        return f"{type(result).__name__}, not a ListResult of rows, for a list read"
    if isinstance(operation, Create):
        if not isinstance(result, list) or len(result) != len(operation.rows):
            return (
                f"{type(result).__name__}, not a list of {len(operation.rows)} rows, for a create"
            )
        if not all(isinstance(row, dict) for row in result):
            return "a non-row in the rows of a create"
        return None
    if result is not None and not isinstance(result, dict):
        return f"{type(result).__name__}, not a row or None"
    if (
        isinstance(operation, Delete)
        and result is not None
        and operation.entity.primary_key.name not in result
    ):
        return "a deleted row without its primary key"
    return None


def _copy_data(data: Any) -> Any:
    """A copy hooks may mutate without touching the decoded message."""
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, list):
        return [dict(item) if isinstance(item, dict) else item for item in data]
    return data


def not_found_error(resolved: ResolutionError) -> ErrorInfo:
    details = {"candidates": list(resolved.candidates)} if resolved.candidates else None
    return ErrorInfo(code="model_not_found", message=resolved.message, details=details)


def record_not_found(run: Run) -> ErrorInfo:
    assert run.entity is not None
    return ErrorInfo(
        code="not_found",
        message=f"{run.entity.qualified_name} record {run.record_id!r} not found",
        details={"record_id": run.record_id},
    )


def storage_error(operation: Operation, error: StorageError) -> ErrorInfo:
    if error.kind is StorageErrorKind.CONSTRAINT:
        details = {"column": error.column} if error.column else None
        return ErrorInfo(code="validation_error", message=error.message, details=details)
    return ErrorInfo(code=STORAGE_ERROR_CODES[operation], message=error.message)


def _describe(entity: Entity) -> dict[str, Any]:
    return {
        "schema": entity.schema,
        "entity": entity.name,
        "table_name": entity.table_name,
        "primary_key": entity.primary_key.name,
        "columns": [
            {
                "name": c.name,
                "type": c.type.value,
                "nullable": c.nullable,
                "primary_key": c.primary_key,
                "has_default": c.has_default,
            }
            for c in entity.columns
        ],
        "relations": [
            {
                "name": r.name,
                "kind": r.kind.value,
                "target": r.target,
                "local_column": r.local_column,
                "remote_column": r.remote_column,
            }
            for r in entity.relations
        ],
    }
