"""The change feed end to end (issue 9 item 4; docs/changefeed.md "Two processes"): real
``wsspec serve --change-feed`` processes on one SQLite file or one PostgreSQL database, a
third program writing plain SQL, and websocket clients on 127.0.0.1. Processes are stopped
by PID; every wait is bounded. Also, in process: the tailer on every transport, and the
default (no change feed) unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from websockets.sync.client import ClientConnection, connect
from wsserver_support import client, demo_app, serving
from wsspec import App
from wsspec.runtime import ChangeFeedUnavailable, Tailer
from wsspec.storage.peewee import PeeweeStorage, changelog

WSSPEC = str(Path(sys.executable).with_name("wsspec"))
APP = "wsspec.demo:build_app"
#: The promise is 1 s (PROTOCOL.md "Several servers, one database"); CI machines stall.
DELIVERY = 2.0
ACTIVE = {"filters": [{"column": "status", "operator": "eq", "value": "active"}]}


# --- real processes -------------------------------------------------------------------------


class Server:
    """One ``wsspec serve --change-feed`` process."""

    def __init__(self, cwd: Path, db: str, *extra: str) -> None:
        self.stderr = ""
        self.process = subprocess.Popen(
            [WSSPEC, "serve", APP, "--db", db, "--port", "0", "--change-feed", *extra],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(20)
        if not line or not line[0]:
            self.stop()
            raise AssertionError(f"the server did not start: {self.stderr}")
        self.url = line[0].split()[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def servers(cwd: Path, db: str, count: int = 2) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for _ in range(count):
            started.append(Server(cwd, db))
        yield started
    finally:
        with contextlib.ExitStack() as stopping:  # every one stopped, whatever fails
            for server in started:
                stopping.callback(server.stop)
        for server in started:
            assert "Traceback" not in server.stderr, server.stderr


class Client:
    """A blocking websocket client speaking the protocol."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(connect(url, open_timeout=10))
        self.ids = 0

    def close(self) -> None:
        self._stack.close()

    def recv(self, timeout: float = DELIVERY) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return found

    def request(self, operation: str, entity: str = "users", **fields: Any) -> dict[str, Any]:
        """Send a request; the next message must be its response."""
        self.ids += 1
        message: dict[str, Any] = {
            "id": str(self.ids),
            "type": "subscription" if operation == "subscribe" else "request",
            "operation": operation,
            "schema": "public",
            "entity": entity,
            **fields,
        }
        self.ws.send(json.dumps(message))
        response = self.recv()
        assert response.get("id") == str(self.ids), response
        assert response["success"], response
        return response

    def nothing_more(self, wait: float = 0.5) -> None:
        with pytest.raises(TimeoutError):
            extra = self.recv(timeout=wait)
            print("unexpected:", extra)


def install(cwd: Path, db: str) -> str:
    done = subprocess.run(
        [WSSPEC, "changelog", "install", APP, "--db", db],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[4].rstrip(";")


def notified(note: dict[str, Any], change: str, seq: int) -> dict[str, Any]:
    assert note["type"] == "notification", note
    assert (note["change"], note["seq"]) == (change, seq), note
    data: dict[str, Any] = note["data"]
    return data


def check_two_servers(cwd: Path, db: str, plain_sql: Callable[[list[str]], None]) -> None:
    """Server A takes a write, server B's subscriber gets it; a third program's plain SQL
    reaches both; every server gives the same change the same ``seq``."""
    epoch = install(cwd, db)
    with servers(cwd, db) as (a, b):
        on_b, on_a, writer = Client(b.url), Client(a.url), Client(a.url)
        filtered = Client(b.url)
        try:
            for watcher in (on_b, on_a, writer):
                reply = watcher.request("subscribe")
                assert (reply["data"]["epoch"], reply["data"]["seq"]) == (epoch, 0)
            filtered.request("subscribe", options=ACTIVE)

            started = time.monotonic()
            created = writer.request("create", data={"name": "Ann", "status": "active"})
            # The writer's response came first (request() read it as the next message);
            # its own notification follows, exactly once.
            assert notified(writer.recv(), "added", 1) == created["data"]
            writer.nothing_more(0.3)
            assert notified(on_b.recv(), "added", 1) == created["data"]
            assert time.monotonic() - started < DELIVERY
            assert notified(on_a.recv(), "added", 1) == created["data"]
            assert notified(filtered.recv(), "added", 1)["name"] == "Ann"

            plain_sql(
                [
                    "INSERT INTO users (name, status) VALUES ('Bob', 'active')",
                    "UPDATE users SET status = 'away' WHERE name = 'Bob'",
                    "DELETE FROM users WHERE name = 'Bob'",
                ]
            )
            for watcher in (on_b, on_a, writer):
                assert notified(watcher.recv(), "added", 2)["name"] == "Bob"
                assert notified(watcher.recv(), "modified", 3)["status"] == "away"
                assert notified(watcher.recv(), "removed", 4)["status"] == "away"
            # The filtered subscriber: Bob enters, then leaves with the row as it matched.
            assert notified(filtered.recv(), "added", 2)["status"] == "active"
            assert notified(filtered.recv(), "removed", 3)["status"] == "active"
            for watcher in (on_b, on_a, writer, filtered):
                watcher.nothing_more(0.2)
        finally:
            for c in (on_b, on_a, writer, filtered):
                c.close()


def test_two_servers_on_one_sqlite_file(tmp_path: Path) -> None:
    def plain_sql(statements: list[str]) -> None:
        conn = sqlite3.connect(tmp_path / "app.db", timeout=10)
        try:
            for statement in statements:
                conn.execute(statement)
                conn.commit()
        finally:
            conn.close()

    check_two_servers(tmp_path, "sqlite:///app.db", plain_sql)


@contextlib.contextmanager
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema on the test server: (its --db URL, its name)."""
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("WSSPEC_TEST_POSTGRES_DSN is not set")
    try:
        admin = psycopg.connect(
            dsn, autocommit=True, connect_timeout=5, application_name="wsspec-test"
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is unreachable: {type(exc).__name__}")
    schema = f"wsspec_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    options = urllib.parse.quote(f"-c search_path={schema}", safe="")
    try:
        yield f"{dsn}{'&' if '?' in dsn else '?'}options={options}", schema
    finally:
        drop = f'DROP SCHEMA "{schema}" CASCADE'
        try:
            admin.execute(drop)
        except psycopg.OperationalError:
            # The test restarted the server: drop it on a new connection once it is back.
            for attempt in range(30):
                try:
                    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as again:
                        again.execute(drop)
                    break
                except psycopg.OperationalError:
                    if attempt == 29:
                        raise
                    time.sleep(1)
        finally:
            admin.close()


@pytest.mark.postgres
def test_two_servers_on_one_postgresql_database(tmp_path: Path) -> None:
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN", "")
    with postgres_schema() as (db, schema):

        def plain_sql(statements: list[str]) -> None:
            with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as c:
                for statement in statements:
                    c.execute(statement)

        check_two_servers(tmp_path, db, plain_sql)


@pytest.mark.postgres
def test_killed_database_connections_lose_nothing(tmp_path: Path) -> None:
    """Every connection the servers hold (the LISTEN one, the tailer's, the lanes') is
    killed with pg_terminate_backend, with and without writes in between: the tailers
    reconnect and catch up, and every change reaches the subscriber once, in order."""
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN", "")
    with postgres_schema() as (db, schema):
        install(tmp_path, db)
        outside = psycopg.connect(
            dsn,
            autocommit=True,
            options=f"-c search_path={schema}",
            application_name="wsspec-test",
        )

        def kill_the_servers_connections() -> int:
            killed = outside.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND application_name <> 'wsspec-test'"
            ).fetchone()
            assert killed is not None
            return int(killed[0])

        try:
            with servers(tmp_path, db) as (a, b):
                watcher = Client(b.url)
                try:
                    watcher.request("subscribe")
                    seq = 0
                    for round_ in range(3):
                        assert kill_the_servers_connections() >= 2  # LISTEN + tailer, each
                        if round_ == 1:
                            time.sleep(0.5)  # reconnected meanwhile, or still backing off
                        for name in (f"k{round_}a", f"k{round_}b"):
                            outside.execute("INSERT INTO users (name) VALUES (%s)", (name,))
                        for name in (f"k{round_}a", f"k{round_}b"):
                            seq += 1
                            note = watcher.recv(timeout=10)
                            assert notified(note, "added", seq)["name"] == name
                    watcher.nothing_more(0.5)
                finally:
                    watcher.close()
            for server in (a, b):
                assert "reading the change log failed" in server.stderr or (
                    "LISTEN connection failed" in server.stderr
                ), server.stderr
        finally:
            outside.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_server_killed_mid_write_costs_the_other_nothing(tmp_path: Path, kind: str) -> None:
    """Server A is SIGKILLed while a client streams creates into it; server B's subscriber
    has received, exactly once and in order, every change the database committed (what A
    committed before dying, and plain SQL after)."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            db = "sqlite:///app.db"
            database: Any = PeeweeStorage.from_url(f"sqlite:///{tmp_path / 'app.db'}").database
        else:
            db, _ = stack.enter_context(postgres_schema())
            database = PeeweeStorage.from_url(db).database
            stack.callback(database.close_all)  # its pool, before the schema goes
        install(tmp_path, db)
        with servers(tmp_path, db) as (a, b):
            watcher = Client(b.url)
            stack.callback(watcher.close)
            watcher.request("subscribe")
            writer = Client(a.url)
            sent = 0

            def stream() -> None:
                nonlocal sent
                with contextlib.suppress(Exception):  # A dies under it
                    while True:
                        writer.ws.send(
                            json.dumps(
                                {
                                    "id": str(sent),
                                    "type": "request",
                                    "operation": "create",
                                    "entity": "users",
                                    "data": {"name": f"w{sent}"},
                                }
                            )
                        )
                        sent += 1
                        writer.recv(timeout=5)

            streamer = threading.Thread(target=stream, daemon=True)
            streamer.start()
            time.sleep(0.5)
            os.kill(a.process.pid, signal.SIGKILL)
            a.process.wait(10)
            streamer.join(10)
            with contextlib.suppress(Exception):
                writer.close()
            with database.connection_context():
                database.execute_sql("INSERT INTO users (name) VALUES ('after')")
                logged = changelog.read_changes(database, 0, 100_000)
            assert len(logged) > 3 and logged[-1].new is not None
            assert logged[-1].new["name"] == "after"
            seen = [watcher.recv(timeout=10)["seq"] for _ in logged]
            assert seen == [entry.seq for entry in logged]
            watcher.nothing_more(0.3)


@pytest.mark.parametrize("server", ["trio", "uvicorn", "hypercorn"])
def test_serve_change_feed_without_the_log_fails_at_start(tmp_path: Path, server: str) -> None:
    command = [WSSPEC, "serve", APP, "--db", "sqlite:///app.db", "--port", "0"]
    done = subprocess.run(
        [*command, "--change-feed", "--server", server],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "wsspec changelog install" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


# --- in process -------------------------------------------------------------------------------


def installed_app(tmp_path: Path, **options: Any) -> App:
    app = demo_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    with storage.database.connection_context():
        changelog.install(storage.database, storage.models().values())
    app.change_feed = options.get("change_feed", False)
    return app


def outside_insert(tmp_path: Path, name: str) -> None:
    conn = sqlite3.connect(tmp_path / "test.db", timeout=10)
    try:
        conn.execute("INSERT INTO users (name, status) VALUES (?, 'active')", (name,))
        conn.commit()
    finally:
        conn.close()


async def test_the_tailer_on_every_transport(tmp_path: Path, transport: str) -> None:
    app = installed_app(tmp_path, change_feed=True)
    with trio.fail_after(20):
        async with serving(app) as url, client(url) as watcher, client(url) as writer:
            reply = await watcher.request("subscribe", "users", schema="public")
            assert reply["data"]["seq"] == 0 and reply["data"]["epoch"]
            created = await writer.request("create", "users", data={"name": "In"})
            note = await watcher.recv()
            assert (note["change"], note["seq"], note["data"]) == ("added", 1, created["data"])
            await trio.to_thread.run_sync(outside_insert, tmp_path, "Out")
            note = await watcher.recv()
            assert (note["change"], note["seq"], note["data"]["name"]) == ("added", 2, "Out")


async def test_without_change_feed_nothing_changes(tmp_path: Path) -> None:
    """The default: even with the log installed, replies and notifications are as before
    and plain SQL is not notified."""
    app = installed_app(tmp_path)
    assert app.change_feed is False
    with trio.fail_after(20):
        async with serving(app) as url, client(url) as watcher, client(url) as writer:
            reply = await watcher.request("subscribe", "users", schema="public")
            assert set(reply["data"]) == {"subscription_id", "schema", "entity"}
            await trio.to_thread.run_sync(outside_insert, tmp_path, "Out")
            created = await writer.request("create", "users", data={"name": "In"})
            note = await watcher.recv()
            assert "seq" not in note and "change" not in note
            assert note["data"] == created["data"]
            with trio.move_on_after(0.3) as waited:
                await watcher.recv()
            assert waited.cancelled_caught


async def test_change_feed_without_the_log_fails_at_start(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    app.change_feed = True
    with pytest.raises(BaseException) as raised:
        async with serving(app):
            pass
    found: list[BaseException] = [raised.value]
    while isinstance(found[-1], BaseExceptionGroup):
        found.append(found[-1].exceptions[0])
    assert isinstance(found[-1], ChangeFeedUnavailable)
    assert "wsspec changelog install" in str(found[-1])


def test_a_tailer_behind_the_retention_says_what_was_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Driven by hand, without a loop: entries trimmed before the tailer read them are
    reported as lost (an ERROR), and it goes on from the log's oldest entry."""
    app = installed_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    delivered: list[tuple[str, tuple[Any, ...], int]] = []
    tailer = Tailer(storage, lambda *batch: delivered.append(batch))
    tailer.epoch, tailer.position = tailer.start_position()
    for name in "abcde":
        outside_insert(tmp_path, name)
    with storage.database.connection_context():
        assert changelog.trim(storage.database, keep_last=2, older_than=None) == 3
    try:
        tailer._catch_up(lambda function, argument: function(argument))
    finally:
        storage.close()
    assert [(e.seq, e.new["name"]) for e in delivered[0][1]] == [(4, "d"), (5, "e")]
    assert delivered[0][2] == 5 and tailer.position == 5
    assert "changes after seq 0 up to 3 were trimmed" in caplog.text


def test_a_reset_log_is_followed_under_its_new_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Driven by hand: after ``uninstall`` + ``install`` (a new epoch, seq from 1 again) the
    tailer logs the reset and hands over the new log from its start, under the new epoch."""
    app = installed_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    delivered: list[tuple[str, tuple[Any, ...], int]] = []
    tailer = Tailer(storage, lambda *batch: delivered.append(batch))
    tailer.epoch, tailer.position = tailer.start_position()
    old_epoch = tailer.epoch
    try:
        outside_insert(tmp_path, "old")
        tailer._catch_up(lambda function, argument: function(argument))
        assert tailer.position == 1
        with storage.database.connection_context():
            changelog.uninstall(storage.database)
            new_epoch = changelog.install(storage.database, storage.models().values())
        outside_insert(tmp_path, "new")
        tailer._catch_up(lambda function, argument: function(argument))
    finally:
        storage.close()
    assert new_epoch != old_epoch
    epoch, entries, through = delivered[-1]
    assert (epoch, through) == (new_epoch, 1)
    assert [(e.seq, e.new["name"]) for e in entries] == [(1, "new")]
    assert "epoch changed" in caplog.text


def restart_postgres() -> None:
    """Restart the PostgreSQL server this machine runs (``pg_ctlcluster``, as root)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.postgres
def test_postgresql_restarted_while_writes_go_on_loses_nothing(tmp_path: Path) -> None:
    """The PostgreSQL server itself restarts while a third program inserts rows: every
    connection of the server dies at once. Afterwards the server's subscriber has received
    every committed row exactly once, in order: the tailer reconnected and caught up."""
    if os.geteuid() != 0 or not os.path.isdir("/etc/postgresql"):
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster on this machine")
    dsn = os.environ.get("WSSPEC_TEST_POSTGRES_DSN", "")
    with postgres_schema() as (db, schema):
        install(tmp_path, db)
        committed: list[str] = []
        stop = threading.Event()

        def write() -> None:
            """Insert until told to stop; a row counts once its commit returned."""
            n = 0
            while not stop.is_set():
                try:
                    with psycopg.connect(
                        dsn, autocommit=True, connect_timeout=5, options=f"-c search_path={schema}"
                    ) as conn:
                        while not stop.is_set():
                            n += 1
                            conn.execute("INSERT INTO users (name) VALUES (%s)", (f"r{n}",))
                            committed.append(f"r{n}")
                            time.sleep(0.01)
                except psycopg.Error:
                    time.sleep(0.2)  # the server is restarting; an uncommitted row is lost

        with servers(tmp_path, db, count=1) as (server,):
            watcher = Client(server.url)
            writer = threading.Thread(target=write)
            try:
                watcher.request("subscribe")
                writer.start()
                time.sleep(0.5)
                restart_postgres()
                time.sleep(1.0)  # writes after the restart too
                stop.set()
                writer.join(30)
                assert len(committed) > 20
                received = []
                while len(received) < len(committed):
                    note = watcher.recv(timeout=20)
                    received.append((note["seq"], note["data"]["name"]))
                watcher.nothing_more(1.0)
            finally:
                stop.set()
                watcher.close()
        assert [name for _, name in received] == committed
        seqs = [seq for seq, _ in received]
        assert seqs == sorted(set(seqs))
        assert "reading the change log failed" in server.stderr, server.stderr
