"""A synchronous test driver for the engine: a Playbook-like harness.

It plays the adapter: feeds events, records what the engine asks for, and (in ``auto``
mode) completes storage operations against :class:`wsspec_core.MemoryStorage` and runs
plain hooks, in FIFO order after the current batch of actions has been carried out, as a
real adapter's concurrent tasks would. With ``auto=False`` the test completes them itself,
in any order it likes. Either way, each frame the engine asks it to send counts as written
(``FramesWritten``) at once, as for a client that reads everything, except on the
connections in ``not_reading``.

Optional, for property tests: ``trace`` records every event fed and the actions it caused,
in order (the FramesWritten reports included); ``storage_result`` may replace what the
storage returned before it is reported (a storage backend's odd or unencodable results).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Hashable
from typing import Any

import orjson

import wsspec_core as ws


class Driver:
    def __init__(
        self,
        engine: ws.Engine,
        storage: ws.MemoryStorage | None = None,
        *,
        auto: bool = True,
        now: float = 1_700_000_000.0,
        storage_result: Callable[[ws.RunStorage, Any], Any] | None = None,
    ) -> None:
        self.engine = engine
        self.storage = storage if storage is not None else ws.MemoryStorage(engine.registry)
        self.auto = auto
        self.now = now
        self.sent: dict[Hashable, list[dict[str, Any]]] = defaultdict(list)
        self.accepted: set[Hashable] = set()
        self.rejected: dict[Hashable, tuple[int, str]] = {}
        self.closed: dict[Hashable, tuple[int, str]] = {}
        self.paused: set[Hashable] = set()
        self.pings: list[Hashable] = []
        self.storage_pending: deque[ws.RunStorage] = deque()
        self.hooks_pending: deque[ws.RunHooks] = deque()
        self.log: list[ws.Action] = []
        self.logged: list[ws.Log] = []
        #: Connections whose client does not read: their frames are never written.
        self.not_reading: set[Hashable] = set()
        #: Every event fed, each followed by the actions it caused, in order.
        self.trace: list[ws.Event | ws.Action] = []
        self.storage_result = storage_result
        self._busy = False

    # --- feeding events ---------------------------------------------------------------

    def feed(self, event: ws.Event) -> list[ws.Action]:
        self.trace.append(event)
        actions = self.engine.handle(event)
        self.trace.extend(actions)
        self.log.extend(actions)
        written: dict[Hashable, int] = defaultdict(int)
        for action in actions:
            self._apply(action)
            if isinstance(action, ws.Send) and action.connection_id not in self.not_reading:
                written[action.connection_id] += 1
        for conn, count in written.items():
            if conn not in self.closed:
                self.feed(ws.FramesWritten(connection_id=conn, count=count, now=self.now))
        if self.auto and not self._busy:
            self._busy = True
            try:
                self.run_pending()
            finally:
                self._busy = False
        return actions

    def _apply(self, action: ws.Action) -> None:
        conn = getattr(action, "connection_id", None)
        assert conn not in self.closed, f"action for a closed connection: {action}"
        if isinstance(action, ws.Send):
            self.sent[action.connection_id].append(orjson.loads(action.frame))
        elif isinstance(action, ws.AcceptConnection):
            self.accepted.add(action.connection_id)
        elif isinstance(action, ws.RejectConnection):
            self.rejected[action.connection_id] = (action.status, action.reason)
        elif isinstance(action, ws.CloseConnection):
            self.closed[action.connection_id] = (action.code, action.reason)
        elif isinstance(action, ws.PauseReading):
            self.paused.add(action.connection_id)
        elif isinstance(action, ws.ResumeReading):
            self.paused.discard(action.connection_id)
        elif isinstance(action, ws.SendPing):
            self.pings.append(action.connection_id)
        elif isinstance(action, ws.RunStorage):
            self.storage_pending.append(action)
        elif isinstance(action, ws.RunHooks):
            self.hooks_pending.append(action)
        elif isinstance(action, ws.Log):
            self.logged.append(action)
        else:  # pragma: no cover - a new action type the driver does not know
            raise AssertionError(f"unknown action {action!r}")

    def run_pending(self) -> None:
        while self.storage_pending or self.hooks_pending:
            if self.hooks_pending:
                self.finish_hooks(self.hooks_pending.popleft())
            else:
                self.finish_storage(self.storage_pending.popleft())

    def finish_storage(self, action: ws.RunStorage) -> None:
        try:
            result = self.storage.execute(action.operation)
        except ws.StorageFailure as exc:
            self.feed(
                ws.StorageFailed(operation_id=action.operation_id, error=exc.error, now=self.now)
            )
        else:
            if self.storage_result is not None:
                result = self.storage_result(action, result)
            self.feed(
                ws.StorageCompleted(operation_id=action.operation_id, result=result, now=self.now)
            )

    def finish_hooks(self, action: ws.RunHooks) -> None:
        exc = ws.run_hooks_sync(action.hooks, action.context)
        if exc is None:
            self.feed(ws.HooksCompleted(call_id=action.call_id, now=self.now))
        else:
            self.feed(
                ws.HooksFailed(
                    call_id=action.call_id,
                    error=ws.hook_failure(exc),
                    status=getattr(exc, "status", 403),
                    now=self.now,
                )
            )

    # --- conveniences -----------------------------------------------------------------

    def connect(self, conn: Hashable, request: ws.RequestInfo | None = None) -> None:
        self.feed(
            ws.ConnectionOpened(
                connection_id=conn, request=request or ws.RequestInfo(), now=self.now
            )
        )

    def disconnect(self, conn: Hashable) -> None:
        """The client went away: from now on no action may name it."""
        self.closed.setdefault(conn, (1006, "client went away"))
        self.feed(ws.ConnectionClosed(connection_id=conn, now=self.now))

    def send(self, conn: Hashable, message: dict[str, Any] | str | bytes) -> list[ws.Action]:
        data = orjson.dumps(message).decode() if isinstance(message, dict) else message
        return self.feed(ws.MessageReceived(connection_id=conn, data=data, now=self.now))

    def take(self, conn: Hashable) -> list[dict[str, Any]]:
        """The messages sent to ``conn`` since the last take."""
        messages = self.sent[conn]
        self.sent[conn] = []
        return messages

    def request(self, conn: Hashable, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return the one response to it (auto mode)."""
        self.send(conn, message)
        responses = [m for m in self.sent[conn] if m.get("type") in ("response", "pong")]
        assert len(responses) >= 1, f"no response to {message}"
        response = responses[-1]
        self.sent[conn].remove(response)
        return response
