"""The client's promise end to end (issue 10 "Tests"): real ``wsspec serve --change-feed``
processes on SQLite and PostgreSQL, killed with SIGKILL and restarted on the same port
while changes are made through the API and by plain SQL from a third program; two
watchers subscribed at once, one on asyncio and one on trio (each in a thread of its
own). Afterwards each watcher's stream is exactly the log's matching changes after its
snapshot, once each and in order, and snapshot + stream is the table's state. A resume the
server cannot honour (the log trimmed past the watchers, or reset) yields a Resync whose
rows are the matching rows, and the stream goes on after it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import wsspec.client as wc
from client_servers import PlainSql, Server, database, install_changelog, log_entries, serving

ACTIVE = [("status", "eq", "active")]
#: Reconnect fast, and ping often so that pong positions take part.
CONFIG = wc.ClientConfig(
    reconnect_initial=0.05, reconnect_max=0.3, ping_interval=0.2, pong_timeout=5.0
)
KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEOUT = 40


def active(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("status") == "active"


class Watcher(threading.Thread):
    """A client on ``backend`` subscribed to active users with a snapshot, recording every
    item until it has seen a user named ``until`` (and 0.3 s more, for strays)."""

    def __init__(self, backend: str, url: str) -> None:
        super().__init__(name=f"watcher-{backend}", daemon=True)
        self.backend, self.url = backend, url
        self.ready = threading.Event()
        self.until = "END"
        self.rows: list[dict[str, Any]] = []
        self.seq: int | None = None
        self.epoch: str | None = None
        self.items: list[wc.Change | wc.Resync] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            anyio.run(self.watch, backend=self.backend)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def watch(self) -> None:
        with anyio.fail_after(TIMEOUT):
            async with (
                wc.connect(self.url, config=CONFIG) as client,
                client.subscribe(
                    "users", filters=ACTIVE, options={"limit": 1000}, snapshot=True
                ) as sub,
            ):
                assert sub.rows is not None
                self.rows, self.epoch, self.seq = sub.rows, sub.epoch, sub.seq
                self.ready.set()
                async for item in sub:
                    self.items.append(item)
                    if isinstance(item, wc.Change) and item.data["name"] == self.until:
                        break
                with anyio.move_on_after(0.3):
                    async for item in sub:
                        self.items.append(item)

    def wait_for(self, name: str) -> int:
        """Block until the change bringing ``name`` arrived; its index in ``items``."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            for index, item in enumerate(list(self.items)):
                if isinstance(item, wc.Change) and item.data["name"] == name:
                    return index
            time.sleep(0.01)
        raise AssertionError(f"{self.name} never saw {name}")

    def result(self) -> list[wc.Change | wc.Resync]:
        self.join(TIMEOUT + 5)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.items


def start_watchers(url: str) -> list[Watcher]:
    watchers = [Watcher("asyncio", url), Watcher("trio", url)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        assert watcher.ready.wait(20), "no snapshot"
        if watcher.error is not None:
            raise watcher.error
    return watchers


def api(url: str, writes: Callable[[wc.Client], Any]) -> Any:
    async def run() -> Any:
        with anyio.fail_after(20):
            async with wc.connect(url) as client:
                return await writes(client)

    return anyio.run(run, backend="asyncio")


async def some_api_writes(client: wc.Client, tag: str) -> None:
    made = [
        await client.create("users", {"name": f"api-{tag}{i}", "status": "active"})
        for i in range(4)
    ]
    await client.update("users", made[0]["id"], {"status": "away"})  # removed
    await client.update("users", made[1]["id"], {"email": "x"})  # modified
    await client.delete("users", made[2]["id"])  # removed
    away = await client.create("users", {"name": f"api-{tag}-away", "status": "away"})  # nothing
    await client.update("users", away["id"], {"status": "active"})  # added


class SqlWriter(threading.Thread):
    """A third program: plain SQL inserts, updates and deletes on ``users`` every few
    milliseconds until stopped (whether a server is up or not)."""

    def __init__(self, sql: PlainSql, seed: str) -> None:
        super().__init__(name="sql-writer", daemon=True)
        self.sql, self.random = sql, random.Random(seed)
        self.stopping = threading.Event()
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.sql(self.statement())
                self.count += 1
                time.sleep(0.005)
        except BaseException as exc:
            self.error = exc

    def statement(self) -> str:
        pick = self.random.random()
        status = self.random.choice(["active", "active", "away"])
        # Never the rows the API test writes (named api-...): it updates them by id.
        nth = (
            "(SELECT id FROM users WHERE name NOT LIKE 'api-%' ORDER BY id LIMIT 1 "
            f"OFFSET {self.random.randrange(20)})"
        )
        if pick < 0.5:
            return f"INSERT INTO users (name, status) VALUES ('sql{self.count}', '{status}')"
        if pick < 0.85:
            return f"UPDATE users SET status = '{status}' WHERE id = {nth}"
        return f"DELETE FROM users WHERE id = {nth}"

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        if self.error is not None:
            raise self.error


def check_segment(
    name: str,
    items: list[wc.Change | wc.Resync],
    rows: list[dict[str, Any]],
    start: int | None,
    db: str,
    now_active: list[dict[str, Any]],
) -> None:
    """``items`` are exactly the log's changes after ``start`` that concern active users,
    each once, in order, with the right ``change``; and ``rows`` with them applied are
    ``now_active``, the table's active rows."""
    assert start is not None
    _, entries = log_entries(db)
    expected = [
        (
            entry.seq,
            "modified"
            if active(entry.old) and active(entry.new)
            else "added"
            if active(entry.new)
            else "removed",
        )
        for entry in entries
        if entry.table.endswith("users")
        and entry.seq > start
        and (active(entry.old) or active(entry.new))
    ]
    got = [(item.seq, item.change) for item in items if isinstance(item, wc.Change)]
    assert len(got) == len(items), f"{name}: a Resync where none was expected"
    assert got == expected, f"{name}: {len(got)} received, {len(expected)} expected"
    state = {row["id"]: row for row in rows}
    for item in items:
        assert isinstance(item, wc.Change)
        if item.change == "removed":
            state.pop(item.data["id"], None)
        else:
            state[item.data["id"]] = item.data
    assert state == {row["id"]: row for row in now_active}, name


@pytest.fixture
def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, str, PlainSql]]:
    with database(request.param, tmp_path) as (db, sql):
        install_changelog(db)
        for i in range(10):
            status = "active" if i % 3 else "away"
            sql(f"INSERT INTO users (name, status) VALUES ('seed{i}', '{status}')")
        with serving(tmp_path, db) as server:
            yield server, db, sql


def reset_log(db: str) -> None:
    from wsspec.demo import build_app
    from wsspec.storage.peewee import PeeweeStorage, changelog

    storage = build_app(db).storage
    assert isinstance(storage, PeeweeStorage)
    with storage.database.connection_context():
        changelog.uninstall(storage.database)
        changelog.install(storage.database, list(dict.fromkeys(storage.models().values())))
    storage.database.close()


def trim_log(db: str) -> None:
    from wsspec.storage.peewee import PeeweeStorage, changelog

    storage = PeeweeStorage.from_url(db)
    with storage.database.connection_context():
        changelog.trim(storage.database, keep_last=1, older_than=None)
    storage.database.close()


@pytest.mark.parametrize(
    ("served", "lose"),
    [
        pytest.param("sqlite", trim_log, id="sqlite-then-trimmed"),
        pytest.param("postgres", reset_log, marks=pytest.mark.postgres, id="postgres-then-reset"),
    ],
    indirect=["served"],
)
def test_two_server_crashes_one_resumable_one_not(
    served: tuple[Server, str, PlainSql], lose: Callable[[str], None]
) -> None:
    server, db, sql = served
    watchers = start_watchers(server.url)

    # 1. SIGKILL and restart while a third program writes plain SQL and clients write
    # through the API: the server replays what the watchers missed.
    writer = SqlWriter(sql, seed=db)
    writer.start()
    try:
        api(server.url, lambda c: some_api_writes(c, "before"))
        server.kill()  # mid-stream: the SQL writer goes on while no server is up
        time.sleep(0.3)
        server.start()  # the same port
        api(server.url, lambda c: some_api_writes(c, "after"))
        time.sleep(0.2)
    finally:
        writer.stop()
    assert writer.count > 20
    api(server.url, lambda c: c.create("users", {"name": "api-END1", "status": "active"}))
    now_active = api(server.url, lambda c: c.read("users", filters=ACTIVE, limit=1000))
    ends = [watcher.wait_for("api-END1") for watcher in watchers]
    for watcher, end in zip(watchers, ends, strict=True):
        check_segment(
            watcher.name, watcher.items[: end + 1], watcher.rows, watcher.seq, db, now_active
        )

    # 2. SIGKILL; while no server is up, changes the watchers cannot have seen, then the
    # log loses them (retention trims past the watchers) or its history (a reset): the
    # resume cannot be honoured, and each watcher gets a Resync with the rows as they are.
    server.kill()
    sql("INSERT INTO users (name, status) VALUES ('unseen1', 'active')")
    sql("UPDATE users SET status = 'away' WHERE name = 'seed1'")
    sql("INSERT INTO users (name, status) VALUES ('unseen2', 'active')")
    lose(db)
    server.start()
    time.sleep(0.3)
    api(server.url, lambda c: some_api_writes(c, "later"))
    api(server.url, lambda c: c.create("users", {"name": "END", "status": "active"}))
    now_active = api(server.url, lambda c: c.read("users", filters=ACTIVE, limit=1000))
    epoch, _ = log_entries(db)
    for watcher, end in zip(watchers, ends, strict=True):
        resync, *after = watcher.result()[end + 1 :]
        assert isinstance(resync, wc.Resync), resync
        assert resync.reason == "not_recovered" and resync.epoch == epoch
        assert resync.rows is not None
        names = {row["name"] for row in resync.rows}
        assert {"unseen1", "unseen2"} <= names and "seed1" not in names
        check_segment(watcher.name, after, resync.rows, resync.seq, db, now_active)
