"""Databases from URLs (``playhouse.db_url``), the PostgreSQL pool (``playhouse.pool``) and
each thread's connection, through Peewee's public connection API only.

Connections are per thread, as Peewee keeps them (``Database.connect`` / ``connection``
/ ``close`` act on the calling thread's connection): a thread takes a connection on its
first operation and keeps it for the next ones, so an operation costs one round trip.
On PostgreSQL, ``from_url`` builds a ``PooledPostgresqlDatabase``: taking a connection
takes an idle one from the pool (which checks it is alive) or opens one,
``storage.close()`` gives it back, and the pool never holds more than
``max_connections``. (Taking a connection from the pool per operation and giving it back
afterwards would cost the pool's liveness check, a second round trip, on every operation.)

A connection the driver reports closed or broken, or one behind an ``UNAVAILABLE`` error,
is closed without going back to the pool (``manual_close``) and the thread's next
operation takes another.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from typing import Any

import peewee
from playhouse import db_url
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

from .dialect import Dialect

#: Pool size (``max_connections``) when the URL does not say (``?max_connections=N``).
#: Each thread that runs PostgreSQL operations holds one connection: the server's
#: read threads (``STORAGE_THREADS``, 8) and its write thread make 9, and 20 leaves room
#: for a second server or script threads on the same storage while staying well below
#: PostgreSQL's own default limit of 100 connections, shared by every process.
DEFAULT_MAX_CONNECTIONS = 20
#: Seconds a thread waits for a free pooled connection before the operation fails as
#: "database unavailable" (URL: ``?timeout=N``).
POOL_WAIT_SECONDS = 5
#: Seconds to establish a PostgreSQL connection (URL: ``?connect_timeout=N``).
CONNECT_TIMEOUT_SECONDS = 5
#: Seconds SQLite waits for a lock when opening (URL: ``?timeout=N``).
SQLITE_TIMEOUT_SECONDS = 5

SQLITE_SCHEMES = ("sqlite",)
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+pool", "postgres+pool")
_POOLED_SCHEME = "postgresql+pool"


def database_from_url(url: str) -> peewee.Database:
    """A Peewee database for ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
    ``postgresql://user[:password]@host[:port]/dbname`` (pooled). Query arguments are
    passed to the database class, as ``playhouse.db_url`` does (``?max_connections=30``).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if scheme in SQLITE_SCHEMES:
        path = db_url.parse(url)["database"]
        if parts.netloc or path in ("", ":memory:"):
            raise ValueError(
                "sqlite URLs need a file path after three slashes (sqlite:///file.db, "
                "sqlite:////absolute/file.db): an in-memory database is not shared between "
                "the worker threads' connections"
            )
        return _connect(url, timeout=SQLITE_TIMEOUT_SECONDS)
    if scheme in POSTGRESQL_SCHEMES:
        if not db_url.parse(url)["database"].strip("/"):
            raise ValueError("postgresql URLs need a database name (postgresql://host/dbname)")
        if _POOLED_SCHEME not in db_url.schemes:  # registered by Peewee 4.5 already
            db_url.register_database(PooledPostgresqlDatabase, _POOLED_SCHEME)
        return _connect(
            parts._replace(scheme=_POOLED_SCHEME).geturl(),
            unquote=True,
            # psycopg 3 even where psycopg2 is installed too: the error mapping reads
            # psycopg 3's diagnostics (docs/storage.md "Errors").
            prefer_psycopg3=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
        )
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///file.db or "
        "postgresql://user@host:port/dbname"
    )


def _connect(url: str, *, unquote: bool = False, **defaults: Any) -> peewee.Database:
    """``playhouse.db_url.connect`` with ``defaults`` for what the URL's query omits."""
    given = db_url.parse(url, unquote_password=unquote, unquote_user=unquote)
    extra = {k: v for k, v in defaults.items() if k not in given}
    database: peewee.Database = db_url.connect(
        url, unquote_password=unquote, unquote_user=unquote, **extra
    )
    return database


class ThreadConnections:
    """The calling thread's DB-API connection to ``database``, set up by the dialect the
    first time the thread uses it."""

    def __init__(self, database: peewee.Database, dialect: Dialect) -> None:
        self.database = database
        #: The same object, untyped: Peewee's stubs leave ``connection()`` unannotated.
        self._db: Any = database
        self._dialect = dialect
        self._pooled = isinstance(database, PooledDatabase)
        self._check_broken = type(dialect).is_broken is not Dialect.is_broken
        #: The connection this thread last set up (threads may be handed pooled ones).
        self._local = threading.local()

    def get(self) -> Any:
        """The calling thread's connection, opened (or taken from the pool) if needed."""
        db = self._db
        conn = db.connection()  # opens it (or takes one from the pool) if it is closed
        if self._check_broken and self._dialect.is_broken(conn):
            self.drop()
            db.connect()
            conn = db.connection()
        if getattr(self._local, "conn", None) is not conn:
            self._dialect.set_up(conn)
            self._local.conn = conn
        return conn

    def is_open(self) -> bool:
        """Whether the calling thread holds a connection."""
        return not self.database.is_closed()

    def broken(self) -> bool:
        """Whether the calling thread's connection is known to be unusable."""
        if not self._check_broken or self.database.is_closed():
            return False
        return self._dialect.is_broken(self._db.connection())

    def drop(self) -> None:
        """Close the calling thread's connection without returning it to a pool, so that
        the next :meth:`get` opens a fresh one. Never raises."""
        self._local.conn = None
        db = self._db
        if db.is_closed():
            return
        with contextlib.suppress(Exception):
            if self._pooled:
                db.manual_close()
            else:
                db.close()
        if not db.is_closed() and not self._pooled:
            db.dispose()  # forget it: the driver refused even to close it

    def close(self) -> None:
        """Return the calling thread's connection to the pool (close it, unpooled)."""
        self._local.conn = None
        if not self.database.is_closed():
            self.database.close()
