"""The tailer: reads the database's change log in ``seq`` order and hands it to the engine.

Theory of operation.  One :class:`Tailer` per running server with ``App(change_feed=True)``
(docs/changefeed.md; PROTOCOL.md "Change feed").  Every read runs in a thread of its own,
``wsspec-tailer``, on its own database connection, so neither the event loop nor the
storage lanes' write thread ever waits for it.  At start the thread reads the log's epoch
and end and the runtime feeds ``ChangesLogged(epoch, (), through=end)`` before it accepts
a client, so every subscription starts at a known position.  Then the thread loops:

* it waits for a wake-up: the runtime's own write completing (:meth:`Tailer.wake`, from
  the loop thread), a ``NOTIFY wsspec_changelog`` on PostgreSQL (a second thread,
  ``wsspec-tailer-listen``, holds a psycopg connection in ``LISTEN``; psycopg's async API
  is asyncio-only, a thread serves trio and asyncio alike), or the poll interval;
* on SQLite it first asks ``PRAGMA data_version``, which changes when any other
  connection (this server's write lane, another process, a ``sqlite3`` shell) committed:
  a poll that finds nothing costs one pragma;
* it reads ``read_changes(after=position)`` in batches, converts each entry (table to the
  registered entity) and hands the batch to the loop thread, where it is fed to the
  engine; the next batch is read only once the loop has taken this one and the engine
  has routed all but a batch of what it holds (``Engine.feed_backlog``: the engine paces
  routing by its slowest subscribers, docs/core.md "Pacing the change feed"), so at most
  two batches are in memory and the rest waits in the database.

A failure (a lost connection, the log uninstalled) is logged and retried with backoff from
the last position handed over, so a reconnect catches up and nothing is dropped; nothing
raises into the runtime.  An epoch change (a reset log) is fed as it is: the engine logs
it and starts again from 0, and so does the tailer.

Retention (:class:`Retention`): a third thread, ``wsspec-trimmer``, calls
``changelog.trim`` every ``Retention.every`` seconds on its own connection; trimming
deletes a prefix in short batches, so writers and readers never wait for it long (on
PostgreSQL not at all). Every server process of a deployment trims; their trims never
undo each other (``trimmed_through`` only grows).

:class:`MemoryTailer` is the same for ``MemoryStorage(change_log_epoch=...)``: no threads
(the storage runs on the loop), the same start, hand-over and retention.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from wsspec_core import LogEntry, MemoryStorage, Operation

from .loop import LoopClosed, Schedule, current_scheduler

logger = logging.getLogger("wsspec.tailer")

#: Most log entries read and handed to the engine at once.
TAILER_BATCH = 500
#: Seconds between checks of ``PRAGMA data_version`` on SQLite (one pragma each).
SQLITE_POLL_INTERVAL = 0.02
#: Seconds between polls on PostgreSQL while no LISTEN connection is up.
POSTGRES_POLL_INTERVAL = 0.05
#: Seconds between polls on PostgreSQL while LISTEN is up: a safety net only.
POSTGRES_LISTEN_POLL_INTERVAL = 0.5
#: Retry delays after a failure: doubled from the first up to the last.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0

#: ``deliver(epoch, entries, through)``: on the loop thread, feed them to the engine.
Deliver = Callable[[str, tuple[LogEntry, ...], int], None]


class ChangeFeedUnavailable(RuntimeError):
    """The app's storage cannot give a change feed: neither a ``PeeweeStorage`` nor a
    ``MemoryStorage`` with a change log, or the change log is not installed in its
    database."""


def _positive_or_none(_: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or None")


@attrs.frozen(kw_only=True)
class Retention:
    """How much of the change log a server keeps (docs/changefeed.md "Retention"): the
    newest ``keep_last`` changes, and none recorded more than ``older_than`` seconds ago
    (``None`` turns a bound off); trimmed every ``every`` seconds, or never when ``every``
    is ``None``. A resume from before the kept part answers ``recovered: false``."""

    keep_last: int | None = attrs.field(default=100_000, validator=_positive_or_none)
    older_than: float | None = attrs.field(default=86_400.0, validator=_positive_or_none)
    every: float | None = attrs.field(default=60.0, validator=_positive_or_none)


#: How many entries the engine holds not yet routed (``Engine.feed_backlog``); read from
#: the tailer's thread (an int attribute: no lock needed).
Backlog = Callable[[], int]


def _nothing_held() -> int:
    return 0


def tailer_for(
    storage: Any,
    deliver: Deliver,
    retention: Retention | None = None,
    *,
    backlog: Backlog = _nothing_held,
) -> Tailer | MemoryTailer:
    """The tailer of ``storage``; :class:`ChangeFeedUnavailable` when it has no change log
    to follow."""
    retention = retention if retention is not None else Retention()
    if isinstance(storage, MemoryStorage):
        if storage.change_log_epoch is None:
            raise ChangeFeedUnavailable(
                "change_feed=True needs MemoryStorage(..., change_log_epoch=...) to keep a "
                "change log"
            )
        return MemoryTailer(storage, deliver, retention, backlog=backlog)
    return Tailer(storage, deliver, retention, backlog=backlog)


class Tailer:
    """The change-log reader of one server; see the module docstring."""

    def __init__(
        self,
        storage: Any,
        deliver: Deliver,
        retention: Retention | None = None,
        *,
        backlog: Backlog = _nothing_held,
    ) -> None:
        from ..storage.peewee import PeeweeStorage, changelog

        if not isinstance(storage, PeeweeStorage):
            raise ChangeFeedUnavailable(
                "change_feed=True needs a PeeweeStorage or a MemoryStorage with a change "
                f"log (got {type(storage).__name__})"
            )
        self._changelog = changelog
        self.retention = retention if retention is not None else Retention()
        self._backlog = backlog
        self.storage = storage
        self.database = storage.database
        self._deliver_to_engine = deliver
        self._postgres = changelog._is_postgres(self.database)
        models = storage.models()
        self._models = list(models.values())
        #: Table (as log entries name it) -> (schema, entity) of its registration. A model
        #: registered under two names is handed over under the first.
        self._entities: dict[str, tuple[str | None, str]] = {}
        for name, model in models.items():
            schema, _, entity = name.rpartition(".")
            self._entities.setdefault(changelog.table_key(model), (schema or None, entity))
        self.epoch: str | None = None
        #: The largest ``seq`` handed to the engine.
        self.position = 0
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._taken = threading.Event()
        self._listening = False
        self._threads: list[threading.Thread] = []

    # --- the loop thread's side ----------------------------------------------------------

    def wake(self) -> None:
        """Read the log now (the runtime's own write committed). Any thread."""
        self._wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the log's start position, hand it over, report started; then tail until
        cancelled. Raises :class:`ChangeFeedUnavailable` at start if there is no log."""
        schedule = current_scheduler()
        epoch, end = await anyio.to_thread.run_sync(self.start_position)
        self.epoch, self.position = epoch, end
        self._deliver_to_engine(epoch, (), end)
        self._threads.append(
            threading.Thread(target=self._tail, args=(schedule,), name="wsspec-tailer", daemon=True)
        )
        if self._postgres:
            self._threads.append(
                threading.Thread(target=self._listen, name="wsspec-tailer-listen", daemon=True)
            )
        if self.retention.every is not None:
            self._threads.append(
                threading.Thread(target=self._trim, name="wsspec-trimmer", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self._stopping.set()
            self._wakeup.set()
            self._taken.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _hand_over(self, batch: tuple[str, tuple[LogEntry, ...], int]) -> None:
        """On the loop thread."""
        try:
            if not self._stopping.is_set():
                self._deliver_to_engine(*batch)
        finally:
            self._taken.set()

    # --- the tailer thread -----------------------------------------------------------------

    def start_position(self) -> tuple[str, int]:
        """The log's epoch and end, read on the calling thread (blocking; the server calls
        it in a worker thread). :class:`ChangeFeedUnavailable` without a log."""
        changelog = self._changelog
        try:
            self.storage._connection()
            epoch = changelog.epoch(self.database)
            end = changelog.last_seq(self.database)
        except changelog.ChangelogNotInstalled:
            raise ChangeFeedUnavailable(
                "change_feed=True but the change log is not installed in this database: "
                "run `wsspec changelog install MODULE:ATTR --db URL` (or "
                "wsspec.storage.peewee.changelog.install(database, models)) first"
            ) from None
        finally:
            self.storage.close()
        return epoch, end

    def _tail(self, schedule: Schedule) -> None:
        try:
            self._tail_until_stopped(schedule)
        except LoopClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                self.storage.close()

    def _tail_until_stopped(self, schedule: Schedule) -> None:
        backoff = BACKOFF_FIRST
        data_version: int | None = None
        check_now = True  # catch up once after start: writes may have come meanwhile
        while not self._stopping.is_set():
            if not check_now:
                woken = self._wakeup.wait(self._poll_interval())
                if self._stopping.is_set():
                    return
                self._wakeup.clear()
            else:
                woken = True
            check_now = False
            try:
                if not self._postgres:
                    version = self._data_version()
                    if version == data_version and not woken:
                        continue
                    data_version = version
                self._catch_up(schedule)
                backoff = BACKOFF_FIRST
            except LoopClosed:
                raise
            except Exception as exc:
                logger.error(
                    "change feed: reading the change log failed (%s: %s); retrying in %.1f s "
                    "from seq %d",
                    type(exc).__name__,
                    exc,
                    backoff,
                    self.position,
                )
                self._drop_connection()
                data_version = None
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                check_now = True

    def _poll_interval(self) -> float:
        if not self._postgres:
            return SQLITE_POLL_INTERVAL
        return POSTGRES_LISTEN_POLL_INTERVAL if self._listening else POSTGRES_POLL_INTERVAL

    def _data_version(self) -> int:
        conn = self.storage._connection()
        version: int = conn.execute("PRAGMA data_version").fetchone()[0]
        return version

    def _catch_up(self, schedule: Schedule) -> None:
        """Read and hand over every change after the position, batch by batch."""
        changelog = self._changelog
        database = self.database
        self.storage._connection()  # set up (SQLite pragmas), reopened if it broke
        while not self._stopping.is_set():
            epoch, trimmed = changelog.epoch_and_trimmed_through(database)
            if epoch != self.epoch:
                logger.warning(
                    "change feed: the change log's epoch changed from %r to %r (it was "
                    "reset); reading the new log from its start",
                    self.epoch,
                    epoch,
                )
                self.epoch, self.position = epoch, 0
            elif self.position < trimmed:
                # Never silently: the entries are gone, subscribers cannot get them.
                logger.error(
                    "change feed: this server fell behind the log's retention: changes "
                    "after seq %d up to %d were trimmed before it read them, and its "
                    "subscribers missed them",
                    self.position,
                    trimmed,
                )
            found = changelog.read_changes(
                database, self.position, TAILER_BATCH, models=self._models
            )
            if not found:
                return
            through = found[-1].seq
            entries = tuple(
                converted for entry in found if (converted := self._convert(entry)) is not None
            )
            self._taken.clear()
            schedule(self._hand_over, (epoch, entries, through))
            self.position = through
            # One batch in flight: wait until the loop has fed it, and the engine has routed
            # all but a batch of what it holds.
            while not self._taken.wait(0.1):
                if self._stopping.is_set():
                    return
            while self._backlog() >= TAILER_BATCH:
                if self._stopping.wait(0.01):
                    return
            if len(found) < TAILER_BATCH:
                return

    def _convert(self, entry: Any) -> LogEntry | None:
        target = self._entities.get(entry.table)
        if target is None:
            return None  # a table logged for another app: the position still moves past it
        schema, name = target
        return LogEntry(
            seq=entry.seq,
            schema=schema,
            entity=name,
            operation=Operation(entry.operation),
            old=entry.old,
            new=entry.new,
        )

    def _drop_connection(self) -> None:
        with contextlib.suppress(Exception):
            self.storage._connections.drop()

    # --- the trimmer thread ---------------------------------------------------------------

    def _trim(self) -> None:
        """Apply the retention every ``Retention.every`` seconds, on this thread's own
        connection; a failure is logged and tried again at the next turn."""
        retention = self.retention
        assert retention.every is not None
        try:
            while not self._stopping.wait(retention.every):
                try:
                    removed = self._changelog.trim(
                        self.database,
                        keep_last=retention.keep_last,
                        older_than=retention.older_than,
                    )
                except Exception as exc:
                    logger.warning(
                        "change feed: trimming the change log failed (%s: %s); trying again "
                        "in %.0f s",
                        type(exc).__name__,
                        exc,
                        retention.every,
                    )
                    self._drop_connection()
                    continue
                if removed:
                    logger.info("change feed: retention removed %d changes from the log", removed)
        finally:
            with contextlib.suppress(Exception):
                self.storage.close()

    # --- the LISTEN thread (PostgreSQL) -------------------------------------------------------

    def _listen(self) -> None:
        """Hold a connection in ``LISTEN wsspec_changelog`` and wake the tailer on each
        notification; reconnect with backoff. While it is down the tailer polls faster."""
        import psycopg

        params = dict(self.database.connect_params)
        params.pop("prefer_psycopg3", None)
        # Named, so an operator can tell it in pg_stat_activity.
        params.setdefault("application_name", "wsspec-tailer-listen")
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    dbname=self.database.database, autocommit=True, **params
                ) as conn:
                    conn.execute(f"LISTEN {self._changelog.NOTIFY_CHANNEL}")
                    self._listening = True
                    self._wakeup.set()  # catch up whatever came while not listening
                    backoff = BACKOFF_FIRST
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.2):
                            self._wakeup.set()
            except Exception as exc:
                if self._stopping.is_set():
                    return
                logger.warning(
                    "change feed: the LISTEN connection failed (%s: %s); polling every "
                    "%.2f s until it is back",
                    type(exc).__name__,
                    exc,
                    POSTGRES_POLL_INTERVAL,
                )
            finally:
                self._listening = False
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


class MemoryTailer:
    """The tailer of a ``MemoryStorage`` with a change log: the same start, hand-over and
    retention as :class:`Tailer`, on the loop thread (the storage never blocks)."""

    #: Seconds between looks at the log for writes made around the runtime (in-process
    #: code calling the storage directly); the runtime's own writes wake it at once.
    POLL_INTERVAL = 0.05

    def __init__(
        self,
        storage: MemoryStorage,
        deliver: Deliver,
        retention: Retention | None = None,
        *,
        backlog: Backlog = _nothing_held,
    ) -> None:
        assert storage.change_log_epoch is not None
        self.storage = storage
        self.retention = retention if retention is not None else Retention()
        self._backlog = backlog
        self._deliver_to_engine = deliver
        self.epoch: str = storage.change_log_epoch
        self.position = 0
        self._running = False

    def start_position(self) -> tuple[str, int]:
        """The log's epoch and end (what :meth:`run` hands over first)."""
        return self.epoch, self.storage.last_seq

    def wake(self) -> None:
        """Read the log now. On the loop thread only (the runtime's own write completed)."""
        if self._running:
            self._catch_up()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        _, self.position = self.start_position()
        self._deliver_to_engine(self.epoch, (), self.position)
        self._running = True
        task_status.started()
        retention = self.retention
        since_trim = 0.0
        try:
            while True:
                await anyio.sleep(self.POLL_INTERVAL)
                self._catch_up()
                since_trim += self.POLL_INTERVAL
                if retention.every is not None and since_trim >= retention.every:
                    since_trim = 0.0
                    if retention.keep_last is not None:  # entries carry no time
                        self.storage.trim(retention.keep_last)
        finally:
            self._running = False

    def _catch_up(self) -> None:
        storage = self.storage
        while storage.last_seq > self.position and self._backlog() < TAILER_BATCH:
            if self.position < storage.trimmed_through:
                logger.error(
                    "change feed: this server fell behind the log's retention: changes "
                    "after seq %d up to %d were trimmed before it read them",
                    self.position,
                    storage.trimmed_through,
                )
            found = storage.read_changes(self.position, TAILER_BATCH)
            if not found:
                return
            self.position = found[-1].seq
            self._deliver_to_engine(self.epoch, tuple(found), self.position)
