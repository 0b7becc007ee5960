"""The in-memory storage backend: the reference semantics every real backend must match.

Theory of operation
-------------------
Each entity's rows live in a ``dict`` from primary key to a complete row (every column
present, ``None`` for NULL).  :meth:`MemoryStorage.execute` takes one of the storage
operations of :mod:`wsspec_core._query` and returns exactly the result documented on it.
Filtering uses :func:`~wsspec_core.matches`, the same matcher that decides notifications,
so this backend agrees with the subscription logic by construction; the SQL adapters are
tested against it.

Decisions a SQL backend must reproduce (docs/protocol.md records them):

* **Sort order.** ``NULL`` is the smallest value: first when ascending, last when
  descending (SQLite's behaviour; on PostgreSQL the adapter writes ``NULLS FIRST`` /
  ``NULLS LAST``).  Text compares by code point (Python ``str`` order = SQLite ``BINARY``
  = PostgreSQL ``COLLATE "C"``); booleans ``false < true``.  Ties are broken by the
  primary key ascending, so pages are stable.
* **Generated keys.** An omitted integer primary key gets one more than the largest key
  the entity has ever held (keys of deleted rows are not reused).
* **Defaults.** An omitted column gets the value declared for it in ``defaults`` (a
  plain value, or a zero-argument callable called once per row); failing that, an
  integer primary key is generated, and any other column gets ``None`` (a non-nullable
  ``has_default`` column too: the database would have filled it with a value this
  backend does not know, so declare one when a test cares).
* **Constraints** raise :class:`~wsspec_core.StorageFailure` with kind ``CONSTRAINT``:
  NOT NULL (an explicit ``None``, or an omitted column that is neither nullable nor
  defaulted), UNIQUE (a primary key that already exists, also within one batch) and
  FOREIGN KEY (a create or update whose referencing column names no existing target row;
  a delete of a row that other rows still reference).  Foreign keys are derived from the
  relations: a ``BELONGS_TO`` relation ``E.local -> T.remote`` and a ``HAS_MANY``
  relation ``E.local <- T.remote`` both mean "the referencing column must name an
  existing row", as the database's foreign key would.
* **Atomicity.** A batch create stores every row or none.
* **Preloads.** ``BELONGS_TO`` gives the related row or ``None``; ``HAS_MANY`` a list
  sorted by the target's primary key; a NULL join value matches nothing.

Returned rows are fresh copies: callers may mutate them.

**Change log** (``change_log_epoch=...``; docs/changefeed.md "Without a database"): the
in-process equivalent of the database's log. Every committed write appends one
:class:`~wsspec_core.LogEntry` per row, numbered from 1 in commit order, with the rows
before and after; a failed write appends nothing. ``read_changes``, ``trim`` and
:class:`~wsspec_core.SubscribeRead` follow the database log's rules (retention removes a
prefix and keeps the newest entry; a snapshot's rows and its ``seq`` agree).

Threads: there is no locking (the core imports no ``threading``).  Writes are
copy-on-write: a write builds a new table and swaps it in with one assignment, and stored
rows are never changed in place, so reads may run in other threads while a write runs
(each read sees the table before or after it). A write commits with one assignment of
``(tables, last seq)``, so a ``SubscribeRead`` in another thread reads rows and log
position of the same commit.  Writes themselves must not overlap: run
them on one thread or one writer lane (as the trio adapter does), or a write may be lost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ._entities import ColumnType, Entity, EntityRegistry, RelationKind
from ._filters import matches
from ._messages import Operation
from ._query import (
    Create,
    Delete,
    Filters,
    ListResult,
    LogEntry,
    Preload,
    ReadList,
    ReadOne,
    Row,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    StorageOperation,
    SubscribeRead,
    SubscribeReadResult,
    Update,
    resumable,
)

_EMPTY: Mapping[Any, Row] = {}


def _constraint(message: str, column: str | None = None) -> StorageFailure:
    return StorageFailure(
        StorageError(kind=StorageErrorKind.CONSTRAINT, message=message, column=column)
    )


def _null_smallest(value: Any) -> tuple[Any, ...]:
    """Sort key that puts ``None`` before every value (and never compares it)."""
    return (0,) if value is None else (1, value)


class _ForeignKey:
    """``child.child_column`` must hold a value of ``parent.parent_column`` (or NULL)."""

    __slots__ = ("child", "child_column", "parent", "parent_column")

    def __init__(self, child: str, child_column: str, parent: str, parent_column: str) -> None:
        self.child = child
        self.child_column = child_column
        self.parent = parent
        self.parent_column = parent_column

    def key(self) -> tuple[str, str, str, str]:
        return (self.child, self.child_column, self.parent, self.parent_column)


class MemoryStorage:
    """A storage backend on Python dicts; see the module docstring for its semantics.

    ``defaults`` declares what an omitted ``has_default`` column receives: qualified
    entity name (``"schema.entity"`` or ``"entity"``) -> column name -> value, where a
    callable value is called (without arguments) for each created row.
    """

    def __init__(
        self,
        registry: EntityRegistry,
        defaults: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        change_log_epoch: str | None = None,
    ) -> None:
        self._registry = registry
        self._defaults: dict[str, dict[str, Any]] = {
            name: dict(columns) for name, columns in (defaults or {}).items()
        }
        #: The committed state: every table, and the log's last seq. Replaced whole by
        #: each write (one assignment), never changed in place.
        self._state: tuple[dict[str, Mapping[Any, Row]], int] = ({}, 0)
        self._high_water: dict[str, int] = {}
        #: The change log (``None``: not kept), its epoch, and what retention removed.
        self._epoch = change_log_epoch
        self._log: list[LogEntry] | None = [] if change_log_epoch is not None else None
        self._trimmed_through = 0

    # --- conveniences for tests --------------------------------------------------------

    def insert(self, entity_name: str, rows: Iterable[Row]) -> list[Row]:
        """Create ``rows`` in the entity registered as ``entity_name`` (qualified name),
        with the same checks as a :class:`~wsspec_core.Create`; returns the stored rows."""
        result: list[Row] = self.execute(Create(entity=self._entity(entity_name), rows=tuple(rows)))
        return result

    def rows(self, entity_name: str) -> list[Row]:
        """Copies of every stored row of the entity, ordered by primary key."""
        entity = self._entity(entity_name)
        key = entity.primary_key.name
        table = self._table(entity)
        return [dict(row) for row in sorted(table.values(), key=lambda r: r[key])]

    # --- the backend interface ---------------------------------------------------------

    def execute(self, operation: StorageOperation) -> Any:
        """Run ``operation`` and return the result documented on its class.

        Raises :class:`~wsspec_core.StorageFailure` (kind ``CONSTRAINT``) when a write
        breaks a constraint; nothing is written then.  Other exceptions mean the
        operation was malformed (the engine validates operations first).
        """
        if isinstance(operation, ReadList):
            return self._read_list(operation)
        if isinstance(operation, ReadOne):
            return self._read_one(operation)
        if isinstance(operation, Create):
            return self._create(operation)
        if isinstance(operation, Update):
            return self._update(operation)
        if isinstance(operation, Delete):
            return self._delete(operation)
        if isinstance(operation, SubscribeRead):
            return self._subscribe_read(operation)
        raise TypeError(f"not a storage operation: {operation!r}")

    # --- reads -------------------------------------------------------------------------

    def _read_list(self, op: ReadList) -> ListResult:
        entity = op.entity
        key = entity.primary_key.name
        found = [row for row in self._table(entity).values() if matches(op.filters, row)]
        found.sort(key=lambda r: r[key])
        # Stable sorts from the last key to the first give the multi-key order; the
        # primary key order above breaks the remaining ties.
        for sort_key in reversed(op.sort):
            column = sort_key.column
            found.sort(key=lambda r: _null_smallest(r.get(column)), reverse=sort_key.descending)
        page = found[op.offset : op.offset + op.limit]
        rows = self._project(entity, page, op.selection.columns, op.selection.preload)
        # The same answer as a database counting at most count_cap + 1 rows.
        cap = op.count_cap
        if cap is not None and len(found) > cap:
            return ListResult(rows=rows, total=cap + 1, total_exact=False)
        return ListResult(rows=rows, total=len(found))

    def _read_one(self, op: ReadOne) -> Row | None:
        row = self._find(op.entity, op.key, op.filters)
        if row is None:
            return None
        return self._project(op.entity, [row], op.selection.columns, op.selection.preload)[0]

    def _find(self, entity: Entity, key: Any, filters: Filters) -> Row | None:
        row = self._table(entity).get(key)
        if row is None or not matches(filters, row):
            return None
        return row

    def _project(
        self,
        entity: Entity,
        rows: Sequence[Row],
        columns: Sequence[str],
        preloads: Sequence[Preload],
    ) -> list[Row]:
        """``rows`` restricted to ``columns``, with the ``preloads`` attached (copies)."""
        out = [{name: row.get(name) for name in columns} for row in rows]
        for preload in preloads:
            relation = entity.relations_by_name[preload.relation]
            target = preload.target
            target_key = target.primary_key.name
            local, remote = relation.local_column, relation.remote_column
            wanted = {row.get(local) for row in rows} - {None}
            related = sorted(
                (t for t in self._table(target).values() if t.get(remote) in wanted),
                key=lambda t: t[target_key],
            )
            target_columns = (
                preload.columns
                if preload.columns is not None
                else tuple(c.name for c in target.columns)
            )
            projected = self._project(target, related, target_columns, preload.children)
            if relation.kind is RelationKind.BELONGS_TO:
                single: dict[Any, Row] = {}
                for source, shown in zip(related, projected, strict=True):
                    single.setdefault(source.get(remote), shown)
                for row, result in zip(rows, out, strict=True):
                    match = single.get(row.get(local))
                    result[preload.relation] = None if match is None else copy.deepcopy(match)
            else:
                many: dict[Any, list[Row]] = {}
                for source, shown in zip(related, projected, strict=True):
                    many.setdefault(source.get(remote), []).append(shown)
                for row, result in zip(rows, out, strict=True):
                    value = row.get(local)
                    children = [] if value is None else many.get(value, [])
                    result[preload.relation] = copy.deepcopy(children)
        return out

    # --- writes ------------------------------------------------------------------------

    def _create(self, op: Create) -> list[Row]:
        entity = op.entity
        name = entity.qualified_name
        pk = entity.primary_key
        table = self._table(entity)
        staged: dict[Any, Row] = {}  # this batch's rows, committed only if all succeed
        high = max(self._high_water.get(name, 0), self._max_int_key(table))
        declared = self._defaults.get(name, {})
        for data in op.rows:
            self._check_columns(entity, data)
            row: Row = {}
            defaulted: set[str] = set()
            for column in entity.columns:
                if column.name in data:
                    row[column.name] = data[column.name]
                elif column.name in declared:
                    row[column.name] = self._default(name, column.name)
                elif column.primary_key and column.type is ColumnType.INTEGER:
                    row[column.name] = high + 1
                elif column.has_default and not column.primary_key:
                    # The database would fill it; without a declared default we store None.
                    row[column.name] = None
                    defaulted.add(column.name)
                else:
                    row[column.name] = None
            for column in entity.columns:
                if column.name in defaulted:
                    continue
                if row[column.name] is None and (not column.nullable or column.primary_key):
                    raise _constraint(
                        f"NOT NULL constraint failed: {name}.{column.name}", column.name
                    )
            key = row[pk.name]
            if key in table or key in staged:
                raise _constraint(f"UNIQUE constraint failed: {name}.{pk.name}", pk.name)
            staged[key] = row
            if isinstance(key, int) and not isinstance(key, bool):
                high = max(high, key)
            self._check_references(entity, row, row.keys(), staged)
        self._high_water[name] = high
        self._commit(
            entity, {**table, **staged}, [(Operation.CREATE, None, r) for r in staged.values()]
        )
        return [dict(row) for row in staged.values()]

    def _update(self, op: Update) -> Row | None:
        entity = op.entity
        name = entity.qualified_name
        row = self._find(entity, op.key, op.filters)
        if row is None:
            return None
        self._check_columns(entity, op.changes)
        pk = entity.primary_key.name
        if pk in op.changes and op.changes[pk] != row[pk]:
            raise ValueError("MemoryStorage cannot change a primary key")
        for column_name, value in op.changes.items():
            column = entity.columns_by_name[column_name]
            if value is None and not column.nullable:
                raise _constraint(f"NOT NULL constraint failed: {name}.{column_name}", column_name)
        updated = {**row, **op.changes}
        self._check_references(entity, updated, op.changes.keys(), {op.key: updated})
        self._check_not_referenced(entity, row, updated)
        table = dict(self._table(entity))
        table[op.key] = updated
        self._commit(entity, table, [(Operation.UPDATE, row, updated)])
        return dict(updated)

    def _delete(self, op: Delete) -> Row | None:
        row = self._find(op.entity, op.key, op.filters)
        if row is None:
            return None
        self._check_not_referenced(op.entity, row, None)
        table = dict(self._table(op.entity))
        del table[op.key]
        self._commit(op.entity, table, [(Operation.DELETE, row, None)])
        return dict(row)

    def _commit(
        self,
        entity: Entity,
        table: Mapping[Any, Row],
        changes: list[tuple[Operation, Row | None, Row | None]],
    ) -> None:
        """Make a write visible: the new table and its log entries, in one assignment."""
        tables, last = self._state
        log = self._log
        if log is not None:
            schema, name = _log_name(entity)
            for operation, old, new in changes:
                last += 1
                log.append(
                    LogEntry(
                        seq=last,
                        schema=schema,
                        entity=name,
                        operation=operation,
                        old=old,
                        new=new,
                    )
                )
        self._state = ({**tables, entity.qualified_name: table}, last)

    # --- the change log ----------------------------------------------------------------

    @property
    def change_log_epoch(self) -> str | None:
        """The log's epoch, or ``None`` when this storage keeps no change log."""
        return self._epoch

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last committed change (0 before any)."""
        return self._state[1]

    @property
    def trimmed_through(self) -> int:
        """The largest ``seq`` :meth:`trim` removed (0: none)."""
        return self._trimmed_through

    def read_changes(self, after_seq: int = 0, limit: int = 1000) -> list[LogEntry]:
        """Up to ``limit`` committed changes with ``seq > after_seq``, in ``seq`` order."""
        log = self._require_log()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        first = log[0].seq if log else self.last_seq + 1
        start = max(0, after_seq + 1 - first)  # seq is dense: entry i holds seq first + i
        return log[start : start + limit]

    def trim(self, keep_last: int) -> int:
        """Keep the newest ``keep_last`` entries (at least one, so the log's end stays
        known); returns how many were removed."""
        log = self._require_log()
        drop = max(0, len(log) - max(keep_last, 1))
        if drop:
            self._trimmed_through = log[drop - 1].seq
            self._log = log[drop:]  # a new list: readers holding the old one are unaffected
        return drop

    def _require_log(self) -> list[LogEntry]:
        if self._log is None:
            raise RuntimeError("this MemoryStorage keeps no change log (change_log_epoch=None)")
        return self._log

    def _subscribe_read(self, op: SubscribeRead) -> SubscribeReadResult:
        """Rows and log entries of one committed state (see :class:`SubscribeRead`)."""
        log = self._require_log()
        assert self._epoch is not None
        tables, last = self._state
        trimmed = self._trimmed_through
        entries: tuple[LogEntry, ...] | None = None
        resume = op.resume
        if resume is not None and resumable(resume, self._epoch, trimmed, last):
            wanted = _log_name(op.entity)
            found: list[LogEntry] = []
            for entry in self.read_changes(resume.seq, len(log) or 1):
                if entry.seq > last:
                    break  # committed after the state read
                if (entry.schema, entry.entity) == wanted:
                    found.append(entry)
                    if len(found) > op.replay_limit:
                        break
            entries = tuple(found)
        rows = None
        recovered = entries is not None and len(entries) <= op.replay_limit
        if op.snapshot is not None and not recovered:
            # The same state as the log position: a shallow copy of this storage reading
            # the tables of that one commit, whatever writes come meanwhile.
            view = copy.copy(self)
            view._state = (tables, last)
            rows = view._read_list(op.snapshot)
        return SubscribeReadResult(
            epoch=self._epoch, seq=last, trimmed_through=trimmed, entries=entries, rows=rows
        )

    # --- constraints -------------------------------------------------------------------

    def _foreign_keys(self) -> list[_ForeignKey]:
        found: dict[tuple[str, str, str, str], _ForeignKey] = {}
        for entity in self._registry.entities():
            for relation in entity.relations:
                if relation.kind is RelationKind.BELONGS_TO:
                    fk = _ForeignKey(
                        entity.qualified_name,
                        relation.local_column,
                        relation.target,
                        relation.remote_column,
                    )
                else:
                    fk = _ForeignKey(
                        relation.target,
                        relation.remote_column,
                        entity.qualified_name,
                        relation.local_column,
                    )
                found.setdefault(fk.key(), fk)
        return list(found.values())

    def _check_references(
        self, entity: Entity, row: Row, written: Iterable[str], staged: Mapping[Any, Row]
    ) -> None:
        """Every foreign key column of ``row`` among ``written`` names an existing row.

        ``staged`` holds rows of ``entity`` not yet in the table (a batch in progress),
        which self-references may name."""
        written = set(written) | {entity.primary_key.name}
        name = entity.qualified_name
        for fk in self._foreign_keys():
            if fk.child != name or fk.child_column not in written:
                continue
            value = row.get(fk.child_column)
            if value is None:
                continue
            parent = self._entity(fk.parent)
            candidates: list[Iterable[Row]] = [self._table(parent).values()]
            if fk.parent == name:
                candidates.append(staged.values())
            if not any(p.get(fk.parent_column) == value for rows in candidates for p in rows):
                raise _constraint(
                    f"FOREIGN KEY constraint failed: {name}.{fk.child_column}", fk.child_column
                )

    def _check_not_referenced(self, entity: Entity, before: Row, after: Row | None) -> None:
        """No row still references ``before`` through a column the write removes or changes
        (``after`` is ``None`` for a delete)."""
        name = entity.qualified_name
        own_key = before[entity.primary_key.name]
        for fk in self._foreign_keys():
            if fk.parent != name:
                continue
            value = before.get(fk.parent_column)
            if value is None or (after is not None and after.get(fk.parent_column) == value):
                continue
            child = self._entity(fk.child)
            child_key = child.primary_key.name
            for other in self._table(child).values():
                if fk.child == name and other[child_key] == own_key:
                    continue  # a row referencing itself goes away with itself
                if other.get(fk.child_column) == value:
                    raise _constraint(
                        f"FOREIGN KEY constraint failed: {name} row is still referenced "
                        f"by {fk.child}.{fk.child_column}",
                        fk.parent_column,
                    )

    # --- helpers -----------------------------------------------------------------------

    def _entity(self, qualified_name: str) -> Entity:
        entity = self._registry.get(qualified_name)
        if entity is None:
            raise KeyError(f"no registered entity {qualified_name!r}")
        return entity

    def _table(self, entity: Entity) -> Mapping[Any, Row]:
        """The entity's current table: a snapshot never changed in place (see the class
        docstring), so readers may iterate it while a writer replaces it."""
        return self._state[0].get(entity.qualified_name, _EMPTY)

    def _default(self, entity_name: str, column: str) -> Any:
        value = self._defaults.get(entity_name, {}).get(column)
        if callable(value):
            call: Callable[[], Any] = value
            return call()
        return value

    @staticmethod
    def _max_int_key(table: Mapping[Any, Row]) -> int:
        return max((k for k in table if isinstance(k, int) and not isinstance(k, bool)), default=0)

    @staticmethod
    def _check_columns(entity: Entity, data: Mapping[str, Any]) -> None:
        unknown = [k for k in data if k not in entity.columns_by_name]
        if unknown:
            raise ValueError(f"unknown columns for {entity.qualified_name}: {unknown}")


def _log_name(entity: Entity) -> tuple[str | None, str]:
    """How log entries name ``entity``: its registered ``(schema, name)``, so that
    ``EntityRegistry.resolve`` finds it again."""
    schema, _, name = entity.qualified_name.rpartition(".")
    return schema or None, name
