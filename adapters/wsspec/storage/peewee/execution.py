"""PeeweeStorage: registers models and runs the compiled statements.

Threads: reads run concurrently from several threads, each on its own connection
(:mod:`.connections`); writes are serialised by a lock and each runs in one transaction.
A read that fails because its previously working PostgreSQL connection died is retried
once on a fresh connection; writes are never retried, since they may have committed.

A read by key on SQLite (``never_blocks``) takes a path of its own (``_read_by_key``),
and a thread may *hold* such reads in one read transaction (``hold_reads`` /
``release_reads``): docs/storage.md "Read holds".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee

import wsspec_core as core
from wsspec_core import (
    Create,
    Delete,
    Entity,
    ListResult,
    Preload,
    ReadList,
    ReadOne,
    RelationKind,
    Row,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    SubscribeRead,
    SubscribeReadResult,
    Update,
)

from . import changelog, errors, introspection
from .compiler import CACHE_SIZE, Compiled, SqlCompiler, fetch_columns
from .connections import ThreadConnections, database_from_url
from .dialect import Converter, dialect_for
from .introspection import Target

logger = logging.getLogger("wsspec.storage")

#: Keys per ``IN (...)`` list when preloading; stays far below both databases' parameter
#: limits (SQLite 32766, PostgreSQL 65535) whatever the nesting.
PRELOAD_CHUNK = 5000


class _ThreadReads(threading.local):
    """One thread's state for its reads by key (class attributes are the defaults every
    thread starts from)."""

    #: The connection a read by key may use as it is: set up, and if the thread holds its
    #: reads, inside the held transaction. Anything else (None after a change of state, or
    #: another connection than Peewee's current one) sends the read through
    #: ``PeeweeStorage._ready`` first. A strong reference, so that a new connection can
    #: never be mistaken for it by identity.
    ready: Any = None
    #: The connection this thread last had set up (``ThreadConnections.get``), so that
    #: ``_ready`` does not ask again for the same one.
    known: Any = None
    #: Whether the thread called ``hold_reads`` and not yet ``release_reads``.
    holding: bool = False
    #: The connection on which the hold began a transaction still open, else None.
    begun: Any = None


#: A read by key without filters: its entity and selection (the cache is keyed by the
#: selection's ``id`` and an entry serves only these two very objects, which it keeps
#: alive so that their ids are not reused), the SQL, the row function and the key's
#: converter.
_Keyed = tuple[Entity, core.Selection, str, Callable[[Sequence[Any]], Row], Converter]


class PeeweeStorage:
    """A wsspec storage backend over a Peewee ``SqliteDatabase`` or ``PostgresqlDatabase``
    (pooled or not).

    Register models with :meth:`register`, hand :meth:`entities` to the engine, and let the
    driver call :meth:`execute` from worker threads. See docs/storage.md.
    """

    def __init__(self, database: peewee.Database) -> None:
        dialect = dialect_for(database)
        if dialect.local and sqlite3.sqlite_version_info < (3, 35, 0):
            raise RuntimeError("PeeweeStorage needs SQLite 3.35 or later (RETURNING)")
        self.database = database
        self._dialect = dialect
        self._postgres = not dialect.local
        self._models: dict[str, type[peewee.Model]] = {}
        self._entities: dict[str, Entity] = {}
        self._targets: dict[str, Target] = {}
        self._compiler = SqlCompiler(dialect, self._targets)
        self._connections = ThreadConnections(database, dialect)
        self._write_lock = threading.Lock()
        #: ``never_blocks`` for a ReadOne without preloads: SQLite.
        self._by_key = not self._postgres
        #: Peewee's ``connection()``: the calling thread's connection, opened if closed.
        self._peewee_connection: Any = database.connection
        self._reads = _ThreadReads()
        self._keyed: dict[int, _Keyed] = {}

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> PeeweeStorage:
        """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
        ``postgresql://user[:password]@host[:port]/dbname`` (a pool of connections; query
        arguments such as ``?max_connections=30`` configure it). ``ValueError`` for other
        schemes. See :func:`.connections.database_from_url`."""
        return cls(database_from_url(url))

    def register(self, name: str, model: type[peewee.Model]) -> Entity:
        """Expose ``model`` as ``"schema.entity"`` or ``"entity"``.

        The name is independent of the SQL table, which is the model's own (with its
        ``Meta.schema``). Relations are built between registered models only and are
        refreshed on every registration, so :meth:`entities` always sees them all; the
        returned Entity holds the relations to models registered so far.
        """
        if name in self._models:
            raise ValueError(f"{name!r} is already registered")
        introspection.check(name, model)  # validate before mutating anything
        self._models[name] = model
        self._targets[name] = introspection.target(model, self._dialect)
        self._entities = introspection.entities(self._models)
        return self._entities[name]

    def register_all(self, models: Iterable[tuple[str, type[peewee.Model]]]) -> list[Entity]:
        for name, model in models:
            self.register(name, model)
        return self.entities()

    def entities(self) -> list[Entity]:
        return list(self._entities.values())

    def models(self) -> dict[str, type[peewee.Model]]:
        """The registered models by their registered names (a copy): what the change log
        (:mod:`.changelog`) installs its triggers on."""
        return dict(self._models)

    def close(self) -> None:
        """Release the calling thread's connection (each thread holds its own): back to
        the pool on a pooled database, closed otherwise. Ends the thread's read hold
        first (:meth:`release_reads`)."""
        self.release_reads()
        reads = self._reads
        reads.ready = reads.known = None
        self._connections.close()

    # --- read holds ----------------------------------------------------------------------

    def hold_reads(self) -> None:
        """From now on, let the calling thread's reads that :meth:`never_blocks` accepts
        share one read transaction, until :meth:`release_reads`.

        The first such read after this call begins a deferred transaction (``BEGIN``) on
        the thread's connection, unless that connection is already in one, and the next
        ones run in it: a statement then costs no transaction of its own (on SQLite in WAL
        mode about 2-3 us instead of 5 us for a read by key). Every read in it sees the
        database as of the first of them. Any other operation this thread runs meanwhile
        (a write, a list read, a subscribe read, a read with preloads) first ends the held
        transaction, so writes keep their own transactions; a later read by key begins a
        new one. A read that fails inside it rolls it back and raises StorageFailure as
        always. Other threads are unaffected: the hold belongs to the calling thread.

        Meant for the thread that runs reads by key inline (a server's event loop): hold
        while handling messages already received, with nothing awaited in between, and
        release before waiting for anything, so that no read sees a state older than the
        moment its request was received. Cheap (it begins nothing itself), idempotent; a
        no-op on PostgreSQL, whose reads :meth:`never_blocks` never accepts.
        """
        if self._postgres:
            return
        reads = self._reads
        if not reads.holding:
            reads.holding = True
            reads.ready = None  # the next read by key goes through _ready: BEGIN

    def release_reads(self) -> None:
        """Stop holding the calling thread's reads (:meth:`hold_reads`) and end the held
        transaction if one was begun (``COMMIT``: it only read).

        Never raises: if ending it fails, the thread's connection is dropped (the next
        operation opens a fresh one) and the failure is logged at WARNING (logger
        ``wsspec.storage``). If the connection was dropped or replaced since the
        transaction began, it is left alone: closing it ended the transaction. (Not so
        for a ``PooledSqliteDatabase`` connection given back by ``database.close()``
        called directly, which the pool hands out again as it is: :meth:`close`
        releases first.) Cheap when nothing was begun; calling it again, or without a
        hold, does nothing.
        """
        reads = self._reads
        if reads.holding:
            reads.holding = False
            reads.ready = None
        if reads.begun is not None:
            self._end_held(reads, "COMMIT")

    def _ready(self, reads: _ThreadReads, conn: Any) -> Any:
        """The thread's connection (``conn``, Peewee's current one), set up, and inside
        the held transaction if the thread holds its reads; remembered as ``reads.ready``
        for the next reads by key."""
        if conn is not reads.known:
            conn = self._connections.get()
            reads.known = conn
        begun = reads.begun
        if begun is not None and begun is not conn:
            # Dropped or replaced (closing a connection ends its transaction): forget it.
            reads.begun = None
        if reads.holding and reads.begun is None and not conn.in_transaction:
            conn.execute("BEGIN")
            reads.begun = conn
        reads.ready = conn
        return conn

    def _end_held(self, reads: _ThreadReads, statement: str) -> None:
        """End the transaction the thread's hold began, with ``statement`` (``COMMIT`` or
        ``ROLLBACK``), only on the connection it began on and only while that is still the
        thread's connection. Never raises: a failure drops the connection."""
        conn = reads.begun
        reads.begun = None
        reads.ready = None  # a read by key still held begins a new transaction
        database = self.database
        if database.is_closed() or self._peewee_connection() is not conn:
            return  # dropped or replaced since: closing it ended the transaction
        try:
            if conn.in_transaction:
                conn.execute(statement)
        except Exception as exc:
            logger.warning(
                "ending a held read transaction (%s) failed, dropping the connection: %s: %s",
                statement,
                type(exc).__name__,
                exc,
            )
            self._connections.drop()

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
        if kind is ReadOne and self._by_key and not operation.selection.preload:  # type: ignore[union-attr]
            return self._read_by_key(operation)  # type: ignore[arg-type]
        reads = self._reads
        if reads.begun is not None:
            # Not a read by key: it runs outside the hold's transaction (a write inside it
            # would become a savepoint, or fail to upgrade a stale snapshot).
            self._end_held(reads, "COMMIT")
        try:
            if kind is ReadOne or kind is ReadList or kind is SubscribeRead:
                read = self._READS[kind]
                # Only a PostgreSQL connection is ever retried (_lost_connection).
                reused = self._postgres and self._connections.is_open()
                try:
                    return read(self, operation)
                except Exception as exc:
                    if not (reused and self._lost_connection(exc, operation.entity)):
                        raise
                # A read is safe to repeat: once, on a fresh connection (the server
                # restarted, or dropped an idle connection). Writes are never retried.
                self._connections.drop()
                return read(self, operation)
            if kind is Create or kind is Update or kind is Delete:
                with self._write_lock:
                    return self._write(operation)  # type: ignore[arg-type]
            raise TypeError(f"unknown storage operation {kind.__name__}")
        except StorageFailure:
            raise
        except Exception as exc:
            raise self._failure(exc, operation.entity) from None

    def _connection(self) -> Any:
        """The calling thread's DB-API connection (tests wrap it to count statements)."""
        return self._connections.get()

    # --- failures ------------------------------------------------------------------------

    def _failure(self, exc: BaseException, entity: Entity) -> StorageFailure:
        error = errors.classify(exc, entity)
        if error.kind is StorageErrorKind.UNAVAILABLE or self._connections.broken():
            self._connections.drop()
        return StorageFailure(error)

    def _lost_connection(self, exc: BaseException, entity: Entity) -> bool:
        """Whether ``exc`` means an open PostgreSQL connection died under us."""
        if not self._postgres:
            return False
        kind = errors.classify(exc, entity).kind
        return kind is StorageErrorKind.UNAVAILABLE or self._connections.broken()

    # --- reads ---------------------------------------------------------------------------

    def _read_by_key(self, op: ReadOne) -> Row | None:
        """:meth:`_read_one` for what :meth:`never_blocks` accepts (SQLite, no preloads),
        with the same results and failures, in fewer steps: the statement, row function
        and key converter found in one look-up by the identity of the selection, checked
        against the entity's (for a read without filters; the engine hands over the same
        objects for every read of a shape), and the thread's connection taken from Peewee
        (``connection()``) and compared by identity with the one last set up
        (``_ThreadReads.ready``) instead of through ``ThreadConnections.get``. The read
        hold (:meth:`hold_reads`) is applied there too."""
        reads = self._reads
        try:
            entity = op.entity
            selection = op.selection
            keyed = None if op.filters.groups else self._keyed.get(id(selection))
            if keyed is not None and keyed[0] is entity and keyed[1] is selection:
                to_db = keyed[4]
                key = op.key if to_db is None else to_db(op.key)
                sql = keyed[2]
                row = keyed[3]
                conn = self._peewee_connection()
                if conn is not reads.ready:
                    conn = self._ready(reads, conn)
                found = conn.execute(sql, (key,)).fetchone()
            else:
                compiled, params = self._compiler.read_one(op)
                if not op.filters.groups:
                    self._remember_keyed(op, compiled)
                row = compiled.row
                conn = self._peewee_connection()
                if conn is not reads.ready:
                    conn = self._ready(reads, conn)
                found = conn.execute(compiled.sql, params).fetchone()
            return None if found is None else row(found)
        except Exception as exc:
            if reads.begun is not None:
                self._end_held(reads, "ROLLBACK")
            raise self._failure(exc, op.entity) from None

    def _remember_keyed(self, op: ReadOne, compiled: Compiled) -> None:
        keyed = self._keyed
        if len(keyed) >= CACHE_SIZE:
            keyed.clear()
        entity = op.entity
        to_db = self._compiler.resolve(entity)[2]
        keyed[id(op.selection)] = (
            entity,
            op.selection,
            compiled.sql,
            compiled.row,
            to_db,
        )

    def _read_one(self, op: ReadOne) -> Row | None:
        compiled, params = self._compiler.read_one(op)
        found = self._connection().execute(compiled.sql, params).fetchone()
        if found is None:
            return None
        row = compiled.row(found)
        selection = op.selection
        if selection.preload:
            self._preload([row], op.entity, selection.preload)
            _strip([row], selection.columns, selection.preload)
        return row

    def _read_list(self, op: ReadList) -> ListResult:
        compiled, params = self._compiler.read_list(op)
        conn = self._connection()
        rows = [compiled.row(r) for r in conn.execute(compiled.sql, params).fetchall()]
        exact = True
        if op.offset == 0 and len(rows) < op.limit:
            # The page holds every matching row, so it is the total: no COUNT needed.
            total = len(rows)
        elif op.count_cap is None:
            # A separate statement: under concurrent writes it may see a later state.
            counted = compiled.count
            assert counted is not None
            total = conn.execute(counted.sql, params[:-2]).fetchone()[0]
        else:
            # At most count_cap + 1 rows are counted (Limits.max_count): beyond, the total
            # is a lower bound, flagged as such.
            counted = compiled.capped_count
            assert counted is not None
            total = conn.execute(counted.sql, [*params[:-2], op.count_cap + 1]).fetchone()[0]
            exact = total <= op.count_cap
        selection = op.selection
        if selection.preload and rows:
            self._preload(rows, op.entity, selection.preload)
            _strip(rows, selection.columns, selection.preload)
        return ListResult(rows=rows, total=total, total_exact=exact)

    def _subscribe_read(self, op: SubscribeRead) -> SubscribeReadResult:
        """The log's position, the entity's missed entries and the snapshot's rows, in one
        transaction that sees one committed state (``Dialect.BEGIN_SNAPSHOT``): a change
        is in the rows exactly when its ``seq`` is at most the one returned, since
        ``seq`` follows commit order (docs/changefeed.md)."""
        conn = self._connection()
        database = self.database
        conn.execute(self._dialect.BEGIN_SNAPSHOT)
        try:
            try:
                epoch, trimmed = changelog.epoch_and_trimmed_through(database)
            except changelog.ChangelogNotInstalled:
                raise StorageFailure(
                    StorageError(
                        kind=StorageErrorKind.OTHER,
                        message="the change log is not installed in the database",
                    )
                ) from None
            last = changelog.last_seq(database)
            entries: tuple[core.LogEntry, ...] | None = None
            resume = op.resume
            if resume is not None and core.resumable(resume, epoch, trimmed, last):
                model = self._models[op.entity.qualified_name]
                schema, _, name = op.entity.qualified_name.rpartition(".")
                entries = tuple(
                    core.LogEntry(
                        seq=entry.seq,
                        schema=schema or None,
                        entity=name,
                        operation=core.Operation(entry.operation),
                        old=entry.old,
                        new=entry.new,
                    )
                    for entry in changelog.read_changes(
                        database,
                        resume.seq,
                        op.replay_limit + 1,  # one more than allowed says "too many"
                        models=[model],
                        tables=[changelog.table_key(model)],
                        through_seq=last,
                    )
                )
            rows = None
            if op.snapshot is not None and (entries is None or len(entries) > op.replay_limit):
                rows = self._read_list(op.snapshot)
        finally:
            # Read only: ending it either way changes nothing; ROLLBACK also ends a
            # transaction a failed statement aborted.
            conn.execute("ROLLBACK")
        return SubscribeReadResult(
            epoch=epoch, seq=last, trimmed_through=trimmed, entries=entries, rows=rows
        )

    _READS: dict[type, Any] = {
        ReadOne: _read_one,
        ReadList: _read_list,
        SubscribeRead: _subscribe_read,
    }

    def _preload(self, rows: list[Row], entity: Entity, preloads: Sequence[Preload]) -> None:
        """Fill each preload's relation on ``rows``: one query per relation and level
        (chunked only beyond PRELOAD_CHUNK parent keys), never one per row."""
        for preload in preloads:
            relation = entity.relations_by_name[preload.relation]
            child_entity = self._entities.get(relation.target, preload.target)
            child = self._targets[relation.target]
            columns = (
                list(preload.columns)
                if preload.columns is not None
                else [c.name for c in child_entity.columns]
            )
            fetch = fetch_columns(child_entity, columns, preload.children)
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
            for start in range(0, len(keys), PRELOAD_CHUNK):
                chunk = keys[start : start + PRELOAD_CHUNK]
                compiled: Compiled = self._compiler.preload(
                    child_entity, fetch, relation.remote_column, len(chunk), many
                )
                params = chunk if conv is None else [conv(k) for k in chunk]
                cursor = self._connection().execute(compiled.sql, params)
                found.extend(compiled.row(r) for r in cursor.fetchall())
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
                _strip(found, columns, preload.children)

    # --- writes --------------------------------------------------------------------------

    def _write(self, op: Create | Update | Delete) -> Any:
        self._connection()
        with self._dialect.transaction(self.database):
            if isinstance(op, Create):
                return [self._insert(op.entity, row) for row in op.rows]
            if isinstance(op, Update):
                return self._update(op)
            return self._delete(op)

    def _insert(self, entity: Entity, row: Row) -> Row:
        defaults = self._targets[entity.qualified_name].defaults
        values = dict(row)
        for column, default in defaults.items():
            if column not in values:
                values[column] = default() if callable(default) else default
        compiled, params = self._compiler.insert(entity, values)
        return compiled.row(self._connection().execute(compiled.sql, params).fetchone())

    def _update(self, op: Update) -> Row | None:
        if not op.changes:
            columns = tuple(c.name for c in op.entity.columns)
            return self._read_one(
                ReadOne(
                    entity=op.entity,
                    key=op.key,
                    filters=op.filters,
                    selection=core.Selection(columns=columns),
                )
            )
        compiled, params = self._compiler.update(op)
        stored = self._connection().execute(compiled.sql, params).fetchone()
        return None if stored is None else compiled.row(stored)

    def _delete(self, op: Delete) -> Row | None:
        compiled, params = self._compiler.delete(op)
        stored = self._connection().execute(compiled.sql, params).fetchone()
        return None if stored is None else compiled.row(stored)


def _strip(rows: list[Row], columns: Sequence[str], preloads: Sequence[Preload]) -> None:
    """Drop the join columns fetched only for preloading."""
    keep = set(columns) | {p.relation for p in preloads}
    for row in rows:
        for name in [n for n in row if n not in keep]:
            del row[name]
