"""Real servers for the client's end-to-end tests: ``wsspec serve`` processes (started,
SIGKILLed, restarted on the same port, always stopped by PID), their databases (a SQLite
file, or a fresh PostgreSQL schema from ``WSSPEC_TEST_POSTGRES_DSN``), plain SQL from a
third program, and a TCP proxy that can go silent."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

WSSPEC = str(Path(sys.executable).with_name("wsspec"))
HERE = Path(__file__).resolve().parent
DEMO = "wsspec.demo:build_app"
DSN_VARIABLE = "WSSPEC_TEST_POSTGRES_DSN"

PlainSql = Callable[[str], None]


class Server:
    """One ``wsspec serve`` process. ``port=0`` picks a free port, kept across restarts."""

    def __init__(
        self,
        cwd: Path,
        db: str,
        *,
        app: str = DEMO,
        change_feed: bool = True,
        port: int = 0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.cwd, self.db, self.app, self.change_feed = cwd, db, app, change_feed
        self.extra = extra
        self.port = port
        self.stderr = ""
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        args = [WSSPEC, "serve", self.app, "--db", self.db, "--port", str(self.port)]
        if self.change_feed:
            args.append("--change-feed")
        args += self.extra
        process = subprocess.Popen(
            args,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.process = process
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(20)
        if not line or not line[0]:
            self.stop()
            raise AssertionError(f"the server did not start: {self.stderr}")
        self.url = line[0].split()[-1]
        self.port = urllib.parse.urlsplit(self.url).port or 0

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._collect()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._collect()

    def _collect(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stderr is not None
        self.stderr += process.stderr.read()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def serving(cwd: Path, db: str, **options: Any) -> Iterator[Server]:
    server = Server(cwd, db, **options)
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.stderr, server.stderr


def install_changelog(db: str) -> None:
    """The demo app's change log, installed from this process (as `wsspec changelog
    install wsspec.demo:build_app --db DB` would, without a second interpreter)."""
    from wsspec.demo import build_app
    from wsspec.storage.peewee import PeeweeStorage, changelog

    storage = build_app(db).storage
    assert isinstance(storage, PeeweeStorage)
    with storage.database.connection_context():
        changelog.install(storage.database, list(dict.fromkeys(storage.models().values())))
    storage.database.close()


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[tuple[str, PlainSql]]:
    """(a ``--db`` URL for servers run in ``tmp_path``, a plain-SQL runner) on a fresh
    SQLite file or a fresh PostgreSQL schema (dropped afterwards)."""
    if kind == "sqlite":
        path = tmp_path / "app.db"

        def sqlite_sql(statement: str) -> None:
            conn = sqlite3.connect(path, timeout=10)
            try:
                conn.execute(statement)
                conn.commit()
            finally:
                conn.close()

        yield f"sqlite:///{path}", sqlite_sql
        return
    import psycopg

    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"{DSN_VARIABLE} is not set")
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {DSN_VARIABLE} is unreachable: {type(exc).__name__}")
    schema = f"wsspec_client_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    options = urllib.parse.quote(f"-c search_path={schema}", safe="")

    def postgres_sql(statement: str) -> None:
        with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
            conn.execute(statement)

    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}options={options}", postgres_sql
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def log_entries(db: str) -> tuple[str, list[Any]]:
    """The change log as the servers see it: (epoch, every entry in seq order)."""
    from wsspec.storage.peewee import PeeweeStorage, changelog

    storage = PeeweeStorage.from_url(db)
    try:
        with storage.database.connection_context():
            epoch = changelog.epoch(storage.database)
            entries = changelog.read_changes(storage.database, 0, limit=1_000_000)
    finally:
        storage.database.close()
    return epoch, entries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
