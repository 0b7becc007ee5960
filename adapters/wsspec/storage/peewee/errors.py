"""Database exceptions -> ``wsspec_core.StorageError`` kinds, with client-safe messages.

Messages never carry SQL text, values or tracebacks (docs/storage.md "Errors"): a
constraint failure names its kind and, when the driver says so unambiguously, its column;
a lost or unreachable database is ``UNAVAILABLE``; anything else is ``OTHER``.
"""

from __future__ import annotations

import re
import sqlite3

import peewee
from playhouse.pool import MaxConnectionsExceeded

from wsspec_core import Entity, StorageError, StorageErrorKind

try:  # psycopg 3 is optional: only needed for PostgreSQL.
    import psycopg
    import psycopg.errors as pg_errors
except ImportError:  # pragma: no cover - exercised only without psycopg installed
    psycopg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]

SAFE_MESSAGES = {
    "unique": "unique constraint failed",
    "not_null": "not-null constraint failed",
    "foreign_key": "foreign key constraint failed",
    "check": "check constraint failed",
}

UNAVAILABLE = StorageError(kind=StorageErrorKind.UNAVAILABLE, message="database unavailable")
INTERNAL = StorageError(kind=StorageErrorKind.OTHER, message="internal storage error")


def original(exc: BaseException) -> BaseException:
    """The driver's exception behind a Peewee wrapper (Peewee re-raises DB-API errors as
    its own classes, with the original as the first argument)."""
    if isinstance(exc, peewee.PeeweeException) and exc.args:
        if isinstance(exc.args[0], BaseException):
            return exc.args[0]
        if exc.__context__ is not None:
            return exc.__context__
    return exc


def classify(exc: BaseException, entity: Entity) -> StorageError:
    """The StorageError for ``exc`` (a Peewee wrapper or the driver's own exception) raised
    while running an operation on ``entity``."""
    exc = original(exc)
    if isinstance(exc, MaxConnectionsExceeded):
        return UNAVAILABLE  # the pool stayed full for its whole wait timeout
    if isinstance(exc, sqlite3.IntegrityError):
        return sqlite_constraint(str(exc), entity)
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "unable to open" in text or "locked" in text or "disk i/o" in text:
            return UNAVAILABLE
    if pg_errors is not None and psycopg is not None:
        if isinstance(exc, pg_errors.IntegrityError):
            return pg_constraint(exc, entity)
        if isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable
        ):
            sqlstate = getattr(exc, "sqlstate", None)
            # Connection exceptions (08), operator intervention such as a server shutdown
            # (57P), insufficient resources such as too many connections (53), or no
            # SQLSTATE at all (the client could not connect).
            if sqlstate is None or sqlstate.startswith(("08", "57P", "53")):
                return UNAVAILABLE
        if isinstance(exc, psycopg.InterfaceError):
            return UNAVAILABLE
    return INTERNAL


def sqlite_constraint(text: str, entity: Entity) -> StorageError:
    """From SQLite's message, e.g. ``UNIQUE constraint failed: users.email``."""
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
    return constraint_error(kind, column)


def pg_constraint(exc: BaseException, entity: Entity) -> StorageError:
    """From psycopg 3's exception class and diagnostics."""
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
    return constraint_error(kind, column)


def constraint_error(kind: str, column: str | None) -> StorageError:
    message = SAFE_MESSAGES[kind]
    if column is not None:
        message += f" on column {column}"
    return StorageError(kind=StorageErrorKind.CONSTRAINT, message=message, column=column)
