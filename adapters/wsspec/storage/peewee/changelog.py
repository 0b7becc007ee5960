"""The change log: every insert, update and delete on the registered models' tables,
recorded by triggers in the database itself, numbered in commit order (docs/changefeed.md).

Theory of operation
-------------------
:func:`install` creates, in the database, a table ``wsspec_changelog`` and triggers on
every given model's table. Each row a statement inserts, updates or deletes adds one log
entry (the row before and after, as JSON) *in the writing transaction*: plain SQL from
any program is captured, and a rolled-back write leaves nothing.

``seq`` must grow in commit order (PROTOCOL.md "Change feed": a reader that has seen
``seq`` N never later finds a committed change with a smaller one). A plain sequence does
not give that: T1 takes 5, T2 takes 6, T2 commits, a reader polling ``seq > last`` sees 6,
then T1 commits 5 behind it. So:

* **PostgreSQL.** Every writing transaction takes one transaction-level advisory lock
  (``pg_advisory_xact_lock``) before its first logged row change (a ``BEFORE ... FOR EACH
  STATEMENT`` trigger, and again in the row trigger) and draws its ``seq`` values from the
  sequence ``wsspec_changelog_seq`` while holding it. PostgreSQL releases the lock only
  after the commit is visible to new snapshots, so a transaction that draws a larger
  ``seq`` can only have started drawing after every transaction with a smaller one has
  committed or rolled back: ``seq`` order is commit order, and a snapshot that shows
  ``seq`` N shows every committed change below N. Rolled-back transactions leave gaps in
  the numbering (never a skipped change). The price: writes to logged tables are
  serialised from their first logged statement to commit.
* **SQLite.** One writer at a time holds the database's write lock from its first write
  to commit, so ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` (never reused, rolled back with
  its transaction) is already in commit order, and dense.

``tests/storage/test_changelog_order.py`` commits two transactions out of order on the
real server and checks that a poller never skips one.

Everything this module creates is named ``wsspec_...``; :func:`uninstall` removes it all.
Every function takes the Peewee database and runs on the calling thread's connection.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import orjson
import peewee

from wsspec_core import ColumnType

from .dialect import quote
from .introspection import column_type

#: Version of the objects :func:`install` creates, kept in ``wsspec_meta``.
VERSION = "1"
#: :func:`trim`'s defaults: keep at most this many changes...
DEFAULT_KEEP_LAST = 100_000
#: ... and none older than this (seconds): 24 h.
DEFAULT_OLDER_THAN = 86_400.0
#: Rows :func:`trim` deletes per transaction: one batch holds SQLite's write lock for
#: about a millisecond, and on PostgreSQL never touches a row a writer needs.
TRIM_BATCH = 1_000

LOG_TABLE = "wsspec_changelog"
META_TABLE = "wsspec_meta"
SEQUENCE = "wsspec_changelog_seq"  # PostgreSQL only
RECORD_FUNCTION = "wsspec_changelog_record"  # PostgreSQL only
LOCK_FUNCTION = "wsspec_changelog_lock"  # PostgreSQL only
ROW_TRIGGER = "wsspec_changelog_row"  # PostgreSQL: per table; SQLite: prefix
LOCK_TRIGGER = "wsspec_changelog_lock"  # PostgreSQL only
#: PostgreSQL only: the channel the row trigger notifies, with an empty payload, so that a
#: tailer in ``LISTEN`` reads the log at once instead of at its next poll.
NOTIFY_CHANNEL = "wsspec_changelog"

Operation = Literal["create", "update", "delete"]
_SQLITE_OPERATIONS: tuple[tuple[str, Operation], ...] = (
    ("INSERT", "create"),
    ("UPDATE", "update"),
    ("DELETE", "delete"),
)


class ChangelogNotInstalled(RuntimeError):
    """The database has no change log (run :func:`install` or ``wsspec changelog install``)."""


@attrs.frozen(kw_only=True)
class LogEntry:
    """One row change, as recorded in its transaction."""

    #: Position in the log: grows in commit order across all tables.
    seq: int
    #: The table as its model names it: ``"schema.table"`` or ``"table"``
    #: (:func:`table_key`).
    table: str
    operation: Operation
    #: The row before the change (``None`` for a create), by column name.
    old: dict[str, Any] | None
    #: The row after the change (``None`` for a delete), by column name.
    new: dict[str, Any] | None
    #: When the trigger recorded the change (UTC, aware), inside its transaction: the
    #: commit comes at or after it. A trigger cannot know its transaction's commit time.
    changed_at: datetime.datetime


@attrs.frozen(kw_only=True)
class ChangelogStatus:
    """What :func:`status` reports."""

    installed: bool
    epoch: str | None = None
    version: str | None = None
    #: The smallest and largest ``seq`` in the log (``None`` when it is empty).
    oldest_seq: int | None = None
    last_seq: int = 0
    #: The largest ``seq`` ever removed by :func:`trim` (0: nothing removed).
    trimmed_through: int = 0
    entries: int = 0
    #: The tables whose changes are logged, as :func:`table_key` names them (PostgreSQL:
    #: as ``regclass`` prints them).
    tables: tuple[str, ...] = ()


def table_key(model: type[peewee.Model]) -> str:
    """How log entries name ``model``'s table: ``"schema.table"`` or ``"table"``."""
    meta = model._meta
    return f"{meta.schema}.{meta.table_name}" if meta.schema else str(meta.table_name)


# --- set-up ------------------------------------------------------------------------------


def install(database: peewee.Database, models: Iterable[type[peewee.Model]]) -> str:
    """Create the log and its triggers on exactly ``models``' tables; return the epoch.

    Idempotent, and safe from several processes at once (PostgreSQL: an advisory lock;
    SQLite: ``BEGIN IMMEDIATE``): an existing log keeps its entries and epoch, missing
    objects are created, triggers that differ are replaced, and triggers on tables no
    longer in ``models`` are removed. The tables must exist. On PostgreSQL the log lives
    in the connection's ``current_schema()``, which readers must also have on their
    ``search_path``.
    """
    models = list(models)
    if _is_postgres(database):
        return _pg_install(database, models)
    return _sqlite_install(database, models)


def upgrade(database: peewee.Database, models: Iterable[type[peewee.Model]]) -> str:
    """Bring an installed log to this version and to ``models`` (the same work as
    :func:`install`, which never loses entries or changes the epoch); return the epoch."""
    return install(database, models)


def uninstall(database: peewee.Database) -> None:
    """Remove every ``wsspec_`` object :func:`install` made: triggers, functions, the
    sequence, the log and its epoch. Idempotent and safe from several processes at once.
    A later :func:`install` starts a new log with a new epoch."""
    if _is_postgres(database):
        with _pg_locked(database) as schema:
            s = quote(schema)
            for function in (RECORD_FUNCTION, LOCK_FUNCTION):
                # CASCADE drops every trigger that calls it, on whatever table.
                _sql(database, f"DROP FUNCTION IF EXISTS {s}.{function}() CASCADE")
            _sql(database, f"DROP TABLE IF EXISTS {s}.{LOG_TABLE}")
            _sql(database, f"DROP SEQUENCE IF EXISTS {s}.{SEQUENCE}")
            _sql(database, f"DROP TABLE IF EXISTS {s}.{META_TABLE}")
        return
    with _sqlite_locked(database):
        for (name,) in _sql(
            database,
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
            (ROW_TRIGGER.replace("_", "\\_") + "\\_%",),
        ).fetchall():
            _sql(database, f"DROP TRIGGER IF EXISTS {quote(name)}")
        _sql(database, f"DROP TABLE IF EXISTS {LOG_TABLE}")
        _sql(database, f"DROP TABLE IF EXISTS {META_TABLE}")


# --- reading -----------------------------------------------------------------------------


def epoch(database: peewee.Database) -> str:
    """The log's epoch: a random string made by :func:`install`; a reset makes another.
    :class:`ChangelogNotInstalled` when there is no log."""
    found = _meta(database).get("epoch")
    if found is None:
        raise ChangelogNotInstalled("the change log is not installed")
    return found


def read_changes(
    database: peewee.Database,
    after_seq: int = 0,
    limit: int = 1_000,
    *,
    models: Iterable[type[peewee.Model]] | None = None,
    tables: Collection[str] | None = None,
    through_seq: int | None = None,
) -> list[LogEntry]:
    """Up to ``limit`` committed changes with ``seq > after_seq``, in ``seq`` order; only
    those of ``tables`` (as :func:`table_key` names them) and up to ``through_seq``, when
    given.

    Rows come as the database's JSON gives them (PostgreSQL ``to_jsonb``; SQLite
    ``json_object``: booleans 0/1, datetimes as text). With ``models``, the rows of their
    tables are converted to the Python values the storage returns (``bool``,
    ``datetime.date``, naive ``datetime.datetime``, ``float``), as ``wsspec_core.matches``
    expects them.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    decoders = {table_key(m): _decoder(m) for m in models} if models is not None else {}
    p = _param(database)
    where = [f"seq > {p}"]
    params: list[Any] = [after_seq]
    if through_seq is not None:
        where.append(f"seq <= {p}")
        params.append(through_seq)
    if tables is not None:
        if not tables:
            return []
        where.append(f"table_name IN ({', '.join([p] * len(tables))})")
        params.extend(tables)
    try:
        rows = _sql(
            database,
            f"SELECT seq, table_name, operation, old_row, new_row, changed_at FROM {LOG_TABLE}"
            f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT {p}",
            (*params, limit),
        ).fetchall()
    except (peewee.OperationalError, peewee.ProgrammingError) as exc:
        _raise_if_missing(database, exc)
        raise
    found = []
    for seq, table, operation, old, new, changed_at in rows:
        decode = decoders.get(table)
        old_row, new_row = _json(old), _json(new)
        if decode is not None:
            old_row, new_row = decode(old_row), decode(new_row)
        found.append(
            LogEntry(
                seq=seq,
                table=table,
                operation=operation,
                old=old_row,
                new=new_row,
                changed_at=_utc(changed_at),
            )
        )
    return found


def last_seq(database: peewee.Database) -> int:
    """The largest committed ``seq`` (0 before the first change). :func:`trim` always
    keeps the newest entry, so this never goes back."""
    return int(_scalar(database, f"SELECT max(seq) FROM {LOG_TABLE}") or 0)


def oldest_seq(database: peewee.Database) -> int | None:
    """The smallest ``seq`` still in the log, ``None`` when it is empty."""
    found = _scalar(database, f"SELECT min(seq) FROM {LOG_TABLE}")
    return None if found is None else int(found)


def trimmed_through(database: peewee.Database) -> int:
    """The largest ``seq`` :func:`trim` ever removed (0: none). A reader at position N
    has missed nothing that the log no longer holds exactly when ``N >= trimmed_through``
    (on PostgreSQL ``seq`` has gaps, so ``oldest_seq`` alone cannot tell)."""
    return int(_meta(database).get("trimmed_through", "0"))


def epoch_and_trimmed_through(database: peewee.Database) -> tuple[str, int]:
    """:func:`epoch` and :func:`trimmed_through` in one query: what a tailer checks before
    each read. :class:`ChangelogNotInstalled` when there is no log."""
    meta = _meta(database)
    found = meta.get("epoch")
    if found is None:
        raise ChangelogNotInstalled("the change log is not installed")
    return found, int(meta.get("trimmed_through", "0"))


def status(database: peewee.Database) -> ChangelogStatus:
    """The epoch, version, positions, size and logged tables of the log."""
    try:
        meta = _meta(database)
    except ChangelogNotInstalled:
        return ChangelogStatus(installed=False)
    count, low, high = _sql(
        database, f"SELECT count(*), min(seq), max(seq) FROM {LOG_TABLE}"
    ).fetchone()
    return ChangelogStatus(
        installed=True,
        epoch=meta.get("epoch"),
        version=meta.get("version"),
        oldest_seq=None if low is None else int(low),
        last_seq=int(high or 0),
        trimmed_through=int(meta.get("trimmed_through", "0")),
        entries=int(count),
        tables=tuple(sorted(_logged_tables(database))),
    )


# --- retention ---------------------------------------------------------------------------


def trim(
    database: peewee.Database,
    keep_last: int | None = DEFAULT_KEEP_LAST,
    older_than: float | None = DEFAULT_OLDER_THAN,
    *,
    batch: int = TRIM_BATCH,
) -> int:
    """Remove the oldest changes beyond the newest ``keep_last``, and those recorded more
    than ``older_than`` seconds ago; ``None`` turns either bound off. Return how many.

    Only a prefix of the log is ever removed (so the log is always the changes after
    :func:`trimmed_through`), the newest entry is always kept (so :func:`last_seq`
    never goes back), and each batch of ``batch`` rows is its own short transaction, so
    writers wait at most for one batch (SQLite) or not at all (PostgreSQL: writers only
    insert rows after the ones removed).
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError("keep_last must be at least 1 (or None)")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    newest = last_seq(database)
    p = _param(database)
    count_bound = None
    if keep_last is not None:
        count_bound = _scalar(
            database, f"SELECT seq FROM {LOG_TABLE} ORDER BY seq DESC LIMIT 1 OFFSET {p}", keep_last
        )
    postgres = _is_postgres(database)
    if older_than is None:
        old_sql: str = "0 = 1"
        old_params: tuple[Any, ...] = ()
    elif postgres:
        old_sql, old_params = f"changed_at < now() - {p} * interval '1 second'", (older_than,)
    else:
        old_sql = f"changed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', {p})"
        old_params = (f"-{float(older_than)} seconds",)
    removed = 0
    while True:
        with _write_transaction(database):
            rows = _sql(
                database,
                f"SELECT seq, CASE WHEN {old_sql} THEN 1 ELSE 0 END FROM {LOG_TABLE}"
                f" ORDER BY seq LIMIT {p}",
                (*old_params, batch),
            ).fetchall()
            through = None
            taken = 0
            for seq, old in rows:
                if seq >= newest or not (old or (count_bound is not None and seq <= count_bound)):
                    break
                through = seq
                taken += 1
            if through is None:
                break
            _sql(database, f"DELETE FROM {LOG_TABLE} WHERE seq <= {p}", (through,))
            # Never lowered: on PostgreSQL another process's trim may have gone further
            # since this one chose its batch (SQLite's write lock serialises them).
            _sql(
                database,
                f"INSERT INTO {META_TABLE} (key, value) VALUES ('trimmed_through', {p})"
                " ON CONFLICT (key) DO UPDATE SET value = CASE"
                f" WHEN CAST({META_TABLE}.value AS BIGINT) < CAST(excluded.value AS BIGINT)"
                f" THEN excluded.value ELSE {META_TABLE}.value END",
                (str(through),),
            )
            removed += taken
        if taken < batch:
            break
    return removed


# --- PostgreSQL --------------------------------------------------------------------------


def _is_postgres(database: peewee.Database) -> bool:
    return isinstance(database, peewee.PostgresqlDatabase)


def _param(database: peewee.Database) -> str:
    return "%s" if _is_postgres(database) else "?"


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for ``purpose`` in ``schema``."""
    digest = hashlib.sha256(f"wsspec:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _pg_locked(database: peewee.Database) -> Iterator[str]:
    """A transaction holding the install lock of the connection's current schema."""
    with database.atomic():
        schema = _sql(database, "SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise RuntimeError("the connection has no current schema (search_path is empty)")
        _sql(database, "SELECT pg_advisory_xact_lock(%s)", (_lock_key("install", schema),))
        yield schema


def _pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pg_install(database: peewee.Database, models: list[type[peewee.Model]]) -> str:
    with _pg_locked(database) as schema:
        s = quote(schema)
        seq_key = _lock_key("seq", schema)
        sequence = _pg_literal(f"{s}.{SEQUENCE}")
        _sql(
            database,
            f"CREATE TABLE IF NOT EXISTS {s}.{META_TABLE}"
            " (key text PRIMARY KEY, value text NOT NULL)",
        )
        _sql(database, f"CREATE SEQUENCE IF NOT EXISTS {s}.{SEQUENCE} AS bigint")
        _sql(
            database,
            f"CREATE TABLE IF NOT EXISTS {s}.{LOG_TABLE} ("
            " seq bigint PRIMARY KEY,"
            " table_name text NOT NULL,"
            " operation text NOT NULL CHECK (operation IN ('create', 'update', 'delete')),"
            " old_row jsonb,"
            " new_row jsonb,"
            " changed_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        # The lock is taken before the statement locks any row of its table, so two
        # writers never hold a row each and wait for the other's lock; the row trigger
        # takes it again (re-entrant, cheap) so correctness never depends on the order
        # PostgreSQL fires triggers in.
        _sql(
            database,
            f"CREATE OR REPLACE FUNCTION {s}.{LOCK_FUNCTION}() RETURNS trigger"
            f" LANGUAGE plpgsql AS $wsspec$ BEGIN PERFORM pg_advisory_xact_lock({seq_key});"
            " RETURN NULL; END $wsspec$",
        )
        _sql(
            database,
            f"CREATE OR REPLACE FUNCTION {s}.{RECORD_FUNCTION}() RETURNS trigger"
            " LANGUAGE plpgsql AS $wsspec$ BEGIN"
            f" PERFORM pg_advisory_xact_lock({seq_key});"
            f" INSERT INTO {s}.{LOG_TABLE} (seq, table_name, operation, old_row, new_row)"
            f" VALUES (nextval({sequence}::regclass), TG_ARGV[0],"
            " CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update'"
            " ELSE 'delete' END,"
            " CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,"
            " CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END);"
            # Wakes listening tailers at commit; payload-free, so the 8000-byte limit
            # never matters, and PostgreSQL sends one per transaction however many rows.
            f" PERFORM pg_notify({_pg_literal(NOTIFY_CHANNEL)}, '');"
            " RETURN NULL; END $wsspec$",
        )
        wanted: dict[int, type[peewee.Model]] = {}
        for model in models:
            oid = _sql(database, "SELECT to_regclass(%s)::oid", (_pg_relation(model),)).fetchone()[
                0
            ]
            if oid is None:
                raise ValueError(f"table {table_key(model)!r} does not exist")
            wanted[oid] = model
        existing: dict[int, dict[str, bytes]] = {}
        for oid, name, args in _sql(
            database,
            "SELECT t.tgrelid::oid, t.tgname, t.tgargs FROM pg_trigger t"
            " JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE p.pronamespace = %s::regnamespace AND p.proname IN (%s, %s)",
            (quote(schema), RECORD_FUNCTION, LOCK_FUNCTION),
        ).fetchall():
            existing.setdefault(oid, {})[name] = bytes(args)
        for oid, triggers in existing.items():
            if oid not in wanted:
                relation = _sql(database, "SELECT %s::regclass::text", (oid,)).fetchone()[0]
                for name in triggers:
                    _sql(database, f"DROP TRIGGER IF EXISTS {quote(name)} ON {relation}")
        for oid, model in wanted.items():
            relation = _pg_relation(model)
            key = table_key(model)
            have = existing.get(oid, {})
            # tgargs: each argument followed by a NUL byte.
            if have.get(ROW_TRIGGER) != key.encode() + b"\x00":
                _sql(
                    database,
                    f"CREATE OR REPLACE TRIGGER {ROW_TRIGGER}"
                    f" AFTER INSERT OR UPDATE OR DELETE ON {relation}"
                    f" FOR EACH ROW EXECUTE FUNCTION {s}.{RECORD_FUNCTION}({_pg_literal(key)})",
                )
            if LOCK_TRIGGER not in have:
                _sql(
                    database,
                    f"CREATE OR REPLACE TRIGGER {LOCK_TRIGGER}"
                    f" BEFORE INSERT OR UPDATE OR DELETE ON {relation}"
                    f" FOR EACH STATEMENT EXECUTE FUNCTION {s}.{LOCK_FUNCTION}()",
                )
        return _ensure_meta(database)


def _pg_relation(model: type[peewee.Model]) -> str:
    meta = model._meta
    table = quote(meta.table_name)
    return f"{quote(meta.schema)}.{table}" if meta.schema else table


# --- SQLite ------------------------------------------------------------------------------


@contextmanager
def _sqlite_locked(database: peewee.Database) -> Iterator[None]:
    with database.atomic(lock_type="IMMEDIATE"):
        yield


def _sqlite_trigger_name(table: str, operation: Operation) -> str:
    return f"{ROW_TRIGGER}_{table}_{operation}"


def _sqlite_triggers(model: type[peewee.Model]) -> dict[str, str]:
    """Trigger name -> its ``CREATE TRIGGER`` statement, for each operation."""
    meta = model._meta
    if meta.schema:
        raise ValueError(
            f"{meta.table_name}: the SQLite change log cannot watch a table in an attached "
            "database (Meta.schema)"
        )
    table = str(meta.table_name)
    found = {}
    for event, operation in _SQLITE_OPERATIONS:

        def row(alias: str) -> str:
            pairs = ", ".join(
                f"{_sqlite_literal(f.column_name)}, {alias}.{quote(f.column_name)}"
                for f in meta.sorted_fields
            )
            return f"json_object({pairs})"

        old = "NULL" if operation == "create" else row("OLD")
        new = "NULL" if operation == "delete" else row("NEW")
        name = _sqlite_trigger_name(table, operation)
        found[name] = (
            f"CREATE TRIGGER {quote(name)} AFTER {event} ON {quote(table)} FOR EACH ROW BEGIN"
            f" INSERT INTO {LOG_TABLE} (table_name, operation, old_row, new_row)"
            f" VALUES ({_sqlite_literal(table)}, '{operation}', {old}, {new}); END"
        )
    return found


def _sqlite_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sqlite_install(database: peewee.Database, models: list[type[peewee.Model]]) -> str:
    wanted: dict[str, str] = {}
    for model in models:
        wanted.update(_sqlite_triggers(model))
    with _sqlite_locked(database):
        _sql(
            database,
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        _sql(
            database,
            f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " table_name TEXT NOT NULL,"
            " operation TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')),"
            " old_row TEXT,"
            " new_row TEXT,"
            " changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
        )
        existing = dict(
            _sql(
                database,
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                " AND name LIKE ? ESCAPE '\\'",
                (ROW_TRIGGER.replace("_", "\\_") + "\\_%",),
            ).fetchall()
        )
        for name, sql in existing.items():
            if wanted.get(name) != sql:
                _sql(database, f"DROP TRIGGER IF EXISTS {quote(name)}")
        for name, sql in wanted.items():
            if existing.get(name) != sql:
                _sql(database, sql)
        return _ensure_meta(database)


# --- shared ------------------------------------------------------------------------------


def _sql(database: peewee.Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """``database.execute_sql`` (untyped in Peewee): the cursor."""
    db: Any = database
    return db.execute_sql(sql, params)


@contextmanager
def _write_transaction(database: peewee.Database) -> Iterator[None]:
    if _is_postgres(database):
        with database.atomic():
            yield
    else:
        with _sqlite_locked(database):
            yield


def _ensure_meta(database: peewee.Database) -> str:
    """Inside the install transaction: keep the epoch, or make one; record the version."""
    p = _param(database)
    _sql(
        database,
        f"INSERT INTO {META_TABLE} (key, value) VALUES ('epoch', {p}) ON CONFLICT (key) DO NOTHING",
        (secrets.token_urlsafe(12),),
    )
    _set_meta(database, "version", VERSION)
    found: str = _sql(database, f"SELECT value FROM {META_TABLE} WHERE key = 'epoch'").fetchone()[0]
    return found


def _set_meta(database: peewee.Database, key: str, value: str) -> None:
    p = _param(database)
    _sql(
        database,
        f"INSERT INTO {META_TABLE} (key, value) VALUES ({p}, {p})"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _meta(database: peewee.Database) -> dict[str, str]:
    try:
        rows = _sql(database, f"SELECT key, value FROM {META_TABLE}").fetchall()
    except (peewee.OperationalError, peewee.ProgrammingError) as exc:
        _raise_if_missing(database, exc)
        raise
    return dict(rows)


def _scalar(database: peewee.Database, sql: str, *params: Any) -> Any:
    try:
        row = _sql(database, sql, params).fetchone()
    except (peewee.OperationalError, peewee.ProgrammingError) as exc:
        _raise_if_missing(database, exc)
        raise
    return None if row is None else row[0]


def _raise_if_missing(database: peewee.Database, exc: Exception) -> None:
    """Turn "no such table" into :class:`ChangelogNotInstalled`."""
    text = str(exc)
    if "no such table" in text or "does not exist" in text:
        raise ChangelogNotInstalled("the change log is not installed") from exc


def _logged_tables(database: peewee.Database) -> list[str]:
    if _is_postgres(database):
        schema = _sql(database, "SELECT current_schema()").fetchone()[0]
        rows = _sql(
            database,
            "SELECT t.tgrelid::regclass::text FROM pg_trigger t JOIN pg_proc p"
            " ON p.oid = t.tgfoid WHERE p.pronamespace = %s::regnamespace AND p.proname = %s",
            (quote(schema), RECORD_FUNCTION),
        ).fetchall()
    else:
        rows = _sql(
            database,
            "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger'"
            " AND name LIKE ? ESCAPE '\\'",
            (ROW_TRIGGER.replace("_", "\\_") + "\\_%",),
        ).fetchall()
    return [r[0] for r in rows]


def _json(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    decoded: dict[str, Any] = orjson.loads(value)
    return decoded


def _utc(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)  # type: ignore[no-any-return]
    return value.astimezone(datetime.UTC)  # type: ignore[no-any-return]


def _decoder(model: type[peewee.Model]) -> Any:
    """A function converting one JSON row of ``model`` to the storage's Python values."""
    converters: dict[str, Any] = {}
    for field in model._meta.sorted_fields:
        try:
            kind = column_type(field)
        except ValueError:
            continue
        convert = _FROM_JSON.get(kind)
        if convert is not None:
            converters[field.column_name] = convert

    def decode(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {
            k: (v if v is None or k not in converters else converters[k](v)) for k, v in row.items()
        }

    return decode


def _datetime(value: Any) -> datetime.datetime:
    found = datetime.datetime.fromisoformat(value) if isinstance(value, str) else value
    if found.tzinfo is not None:  # timestamptz: the storage's datetimes are naive UTC
        found = found.astimezone(datetime.UTC).replace(tzinfo=None)
    return found


def _date(value: Any) -> datetime.date:
    return datetime.date.fromisoformat(value[:10]) if isinstance(value, str) else value


_FROM_JSON: dict[ColumnType, Any] = {
    ColumnType.BOOLEAN: bool,
    ColumnType.FLOAT: float,
    ColumnType.DATETIME: _datetime,
    ColumnType.DATE: _date,
    ColumnType.TEXT: lambda v: v if isinstance(v, str) else str(v),
}
