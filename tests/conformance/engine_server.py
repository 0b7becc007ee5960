"""A small WebSocketSpec server for the fuzzer's tests: the core engine and the in-memory
storage behind ``websockets.sync.server``, optionally broken on purpose.

It serves the demo's ``public.users`` and ``public.posts``.  The breakages imitate real
bugs, so the tests can check that the fuzzer catches them and prints a counterexample:

* ``ignore_filters``: subscriptions are stored without their filters, so every write is
  notified to every subscriber of the entity (what the Go original does);
* ``delete_missing_succeeds``: a delete of a missing record is answered with success
  (also what the Go original does).

One lock serialises everything the engine sees; storage runs inline.  Test use only.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from typing import Any

import attrs
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

import wsspec_core as ws

from ._entities import POSTS, USERS


class EngineServer:
    def __init__(
        self,
        *,
        ignore_filters: bool = False,
        delete_missing_succeeds: bool = False,
        extra_entities: tuple[ws.Entity, ...] = (),
    ) -> None:
        self.ignore_filters = ignore_filters
        self.delete_missing_succeeds = delete_missing_succeeds
        registry = ws.EntityRegistry([USERS, POSTS, *extra_entities])
        self.engine = ws.Engine(registry)
        self.storage = ws.MemoryStorage(registry)
        self._lock = threading.RLock()
        self._sockets: dict[int, ServerConnection] = {}
        self._deletes: dict[tuple[int, Any], Any] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> EngineServer:
        self._server = serve(self._handle, "127.0.0.1", 0, max_size=None)
        port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(5)

    # --- one thread per connection ------------------------------------------------------

    def _handle(self, sock: ServerConnection) -> None:
        cid = next(self._ids)
        with self._lock:
            self._sockets[cid] = sock
            self._feed(
                ws.ConnectionOpened(connection_id=cid, request=ws.RequestInfo(), now=time.time())
            )
        try:
            for frame in sock:
                with self._lock:
                    frame = self._break_inbound(cid, frame)
                    self._feed(ws.MessageReceived(connection_id=cid, data=frame, now=time.time()))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._sockets.pop(cid, None)
                self._feed(ws.ConnectionClosed(connection_id=cid, now=time.time()))

    def _feed(self, first: ws.Event) -> None:
        events: deque[ws.Event] = deque([first])
        while events:
            for action in self.engine.handle(events.popleft()):
                follow = self._apply(action)
                if follow is not None:
                    events.append(follow)

    def _apply(self, action: ws.Action) -> ws.Event | None:
        now = time.time()
        if isinstance(action, ws.Send):
            sock = self._sockets.get(action.connection_id)
            if sock is not None:
                frame = self._break_outbound(action.connection_id, action.frame)
                with contextlib.suppress(ConnectionClosed):
                    sock.send(frame)
                return ws.FramesWritten(connection_id=action.connection_id, count=1, now=now)
        elif isinstance(action, ws.RunStorage):
            try:
                result = self.storage.execute(action.operation)
            except ws.StorageFailure as failure:
                return ws.StorageFailed(
                    operation_id=action.operation_id, error=failure.error, now=now
                )
            return ws.StorageCompleted(operation_id=action.operation_id, result=result, now=now)
        elif isinstance(action, ws.RunHooks):
            error = ws.run_hooks_sync(action.hooks, action.context)
            if error is not None:
                return ws.HooksFailed(call_id=action.call_id, error=ws.hook_failure(error), now=now)
            return ws.HooksCompleted(call_id=action.call_id, now=now)
        elif isinstance(action, ws.CloseConnection):
            sock = self._sockets.get(action.connection_id)
            if sock is not None:
                threading.Thread(
                    target=sock.close, args=(action.code, action.reason), daemon=True
                ).start()
        return None

    # --- the deliberate bugs --------------------------------------------------------------

    def _break_inbound(self, cid: int, frame: str | bytes) -> str | bytes:
        if not (self.ignore_filters or self.delete_missing_succeeds):
            return frame
        message = ws.decode(frame)
        if self.ignore_filters and isinstance(message, ws.Subscribe):
            return ws.encode_inbound(attrs.evolve(message, options=ws.QueryOptions()))
        if (
            self.delete_missing_succeeds
            and isinstance(message, ws.Request)
            and message.operation is ws.Operation.DELETE
        ):
            self._deletes[(cid, message.id)] = message.record_id
        return frame

    def _break_outbound(self, cid: int, frame: str) -> str:
        if not self._deletes:
            return frame
        message = ws.decode_outbound(frame)
        if not isinstance(message, ws.Response) or (cid, message.id) not in self._deletes:
            return frame
        record_id = self._deletes.pop((cid, message.id))
        if message.error is not None and message.error.code == "not_found":
            return ws.encode(
                ws.Response(
                    id=message.id,
                    success=True,
                    timestamp=message.timestamp,
                    data={"deleted": True, "id": record_id},
                )
            )
        return frame
