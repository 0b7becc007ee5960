"""Storage lanes: the worker threads that run storage operations for the runtime.

Storage backends are synchronous (Peewee, sqlite3, psycopg's blocking API), so operations
run in threads of their own, started once per server (not ``to_thread`` per call, whose
hop costs more than a cached SQLite query). ``read_threads`` threads share the read lane,
so a slow query occupies one of them while the others keep serving; writes have one
thread of their own, so their completions reach the engine in commit order
(docs/DESIGN-NOTES.md, decision 10). A thread takes every operation queued (up to
``STORAGE_BATCH``) and hands their outcomes to the loop with one scheduled callback.

The queues are unbounded on purpose: the engine bounds them. It runs at most
``max_in_flight`` reads and one write per connection at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from wsspec_core import (
    Create,
    Delete,
    MessageId,
    RunStorage,
    StorageError,
    StorageErrorKind,
    StorageFailure,
    StorageOperation,
    Update,
)

from .loop import LoopClosed, Schedule, current_scheduler

logger = logging.getLogger("wsspec.storage")

#: Most operations a worker thread takes from its queue at once and reports together:
#: handing results back to the loop costs more than a cached SQLite query.
STORAGE_BATCH = 16

#: What a lane reports for one operation: its id and either its result or its error.
Outcome = tuple[int, Any, StorageError | None]


class Storage(Protocol):
    """What the runtime needs from a storage backend (``PeeweeStorage``, ``MemoryStorage``):
    a synchronous, thread-safe ``execute(operation) -> result`` that raises
    ``wsspec_core.StorageFailure`` for expected failures.  (``entities()`` too, unless the
    App is given a ``registry``.)  Optionally ``never_blocks(operation) -> bool``: True for
    operations cheap enough to run on the event loop (``PeeweeStorage`` says so of SQLite
    reads by key); the others go to the worker threads."""

    def execute(self, operation: StorageOperation) -> Any: ...


def execute(storage: Storage, action: RunStorage) -> Outcome:
    """Run one operation. A failure is logged for the operator with the request's id and
    the database's own message, which the client never sees: at INFO for a constraint the
    client broke (its ``validation_error`` says enough), at ERROR for the rest. An
    unexpected exception becomes an internal error, logged with its traceback."""
    return execute_operation(storage, action.operation_id, action.operation, action.request_id)


def execute_operation(
    storage: Storage,
    operation_id: int,
    operation: StorageOperation,
    request_id: MessageId | None,
) -> Outcome:
    """:func:`execute` from the action's fields (the engine's ``run_inline`` has no
    ``RunStorage`` to give)."""
    try:
        return (operation_id, storage.execute(operation), None)
    except StorageFailure as exc:
        error = exc.error
        # Backends raise StorageFailure from the driver's exception (``from None`` keeps
        # it as the context): that is the database's own message.
        cause = exc.__cause__ or exc.__context__
        logger.log(
            logging.INFO if error.kind is StorageErrorKind.CONSTRAINT else logging.ERROR,
            "request %r: %s on %s failed (%s): %s%s",
            request_id,
            type(operation).__name__,
            _entity_name(operation),
            error.kind.value,
            error.message,
            f": {type(cause).__name__}: {cause}" if cause is not None else "",
        )
        return (operation_id, None, error)
    except Exception:
        logger.exception(
            "request %r: %s on %s raised",
            request_id,
            type(operation).__name__,
            _entity_name(operation),
        )
        return (
            operation_id,
            None,
            StorageError(kind=StorageErrorKind.OTHER, message="internal storage error"),
        )


def _entity_name(operation: StorageOperation) -> str:
    entity = getattr(operation, "entity", None)
    return entity.qualified_name if entity is not None else "?"


class StorageLanes:
    """The read and write lanes of one server. ``submit`` from the loop thread; outcomes
    come back through ``report`` on the loop thread, a list per batch, in the order run."""

    def __init__(
        self, storage: Storage, read_threads: int, report: Callable[[list[Outcome]], None]
    ) -> None:
        self.storage = storage
        self.read_threads = read_threads
        self._report = report
        #: The storage's own never_blocks(operation) (False for all without one).
        self.never_blocks: Callable[[StorageOperation], bool] = getattr(
            storage, "never_blocks", lambda operation: False
        )
        self._reads: queue.SimpleQueue[RunStorage | None] = queue.SimpleQueue()
        self._writes: queue.SimpleQueue[RunStorage | None] = queue.SimpleQueue()
        self._stopped = False

    def submit(self, action: RunStorage) -> None:
        if self.read_threads == 0 or self.never_blocks(action.operation):
            # Inline: storage_threads=0 for storage that never blocks (MemoryStorage), or an
            # operation the storage says cannot block (a SQLite read by key), for which a
            # thread round trip would cost several times the query itself.
            self._report([execute(self.storage, action)])
        elif isinstance(action.operation, Create | Update | Delete):
            self._writes.put(action)
        else:
            self._reads.put(action)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the threads until cancelled; then drop the operations not started and wait
        for those running (their results are still reported: the engine may be finishing
        a connection)."""
        if not self.read_threads:
            task_status.started()
            await anyio.sleep_forever()
        schedule = current_scheduler()
        lanes = [self._reads] * self.read_threads + [self._writes]
        threads = [
            threading.Thread(
                target=self._work,
                args=(lane, schedule),
                name=f"wsspec-storage-{'write' if lane is self._writes else 'read'}",
                # Joined below; daemon only so that a storage call that never returns
                # cannot keep the interpreter alive after the loop ended some other way.
                daemon=True,
            )
            for lane in lanes
        ]
        for thread in threads:
            thread.start()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            for lane in (self._reads, self._writes):
                while True:
                    try:
                        lane.get_nowait()
                    except queue.Empty:
                        break
            for lane in lanes:
                lane.put(None)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_join_all, threads)
            self._stopped = True

    def _work(self, lane: queue.SimpleQueue[RunStorage | None], schedule: Schedule) -> None:
        """A worker thread: takes the operations queued (up to STORAGE_BATCH), runs them and
        hands their outcomes to the loop in one callback, until it takes a None."""
        try:
            self._work_until_stopped(lane, schedule)
        finally:
            # Storage that holds a connection per thread (PeeweeStorage) releases this
            # thread's: a pool would otherwise lose a slot with every server run.
            close = getattr(self.storage, "close", None)
            if close is not None:
                close()

    def _work_until_stopped(
        self, lane: queue.SimpleQueue[RunStorage | None], schedule: Schedule
    ) -> None:
        running = True
        while running:
            batch: list[RunStorage] = []
            action = lane.get()
            while action is not None:
                batch.append(action)
                if len(batch) == STORAGE_BATCH:
                    break
                try:
                    action = lane.get_nowait()
                except queue.Empty:
                    break
            else:
                running = False  # took the None: run what it took, then stop
            if batch:
                outcomes = [execute(self.storage, action) for action in batch]
                try:
                    schedule(self._deliver, outcomes)
                except LoopClosed:
                    return

    def _deliver(self, outcomes: list[Outcome]) -> None:
        if not self._stopped:
            self._report(outcomes)


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
