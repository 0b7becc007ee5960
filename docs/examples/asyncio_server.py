"""wsspec_core on asyncio, with the `websockets` library: the engine in another event loop.

The adapter below is the whole binding: it decodes nothing and decides nothing; it feeds
events to the engine and carries out the actions through one ``match``. Storage is the
in-memory backend, run inline (it never blocks); a real backend would go to a thread pool.

    python docs/examples/asyncio_server.py [--port 8765]

prints ``listening on ws://127.0.0.1:PORT/`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import time
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import wsspec_core as ws

USERS = ws.Entity(
    schema="public",
    name="users",
    table_name="users",
    columns=[
        ws.Column(
            name="id",
            type=ws.ColumnType.INTEGER,
            primary_key=True,
            nullable=False,
            has_default=True,
        ),
        ws.Column(name="name", type=ws.ColumnType.TEXT, nullable=False),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
    ],
)

CLOSE = object()  # queued after the frames that must leave before the close frame


class Client:
    def __init__(self, queue_size: int) -> None:
        self.decided: asyncio.Future[ws.Action] = asyncio.get_running_loop().create_future()
        self.outbound: asyncio.Queue[object] = asyncio.Queue(queue_size)
        self.may_read = asyncio.Event()
        self.may_read.set()
        self.close: tuple[int, str] = (1000, "")
        self.websocket: ServerConnection | None = None


class AsyncioAdapter:
    def __init__(self, engine: ws.Engine, storage: ws.MemoryStorage) -> None:
        self.engine = engine
        self.storage = storage
        self.clients: dict[int, Client] = {}
        self.ids = itertools.count(1)
        self.connection_ids: dict[ServerConnection, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def feed(self, event: ws.Event) -> None:
        for action in self.engine.handle(event):
            self.carry_out(action)

    def later(self, event: ws.Event) -> None:
        """Feed after the current action list (actions are carried out in order)."""
        asyncio.get_running_loop().call_soon(self.feed, event)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def carry_out(self, action: ws.Action) -> None:
        now = time.time()
        client = self.clients.get(getattr(action, "connection_id", None))  # type: ignore[arg-type]
        match action:
            case ws.AcceptConnection() | ws.RejectConnection():
                if client is not None and not client.decided.done():
                    client.decided.set_result(action)
            case ws.Send():
                if client is not None:
                    try:
                        client.outbound.put_nowait(ws.encode(action.message))
                    except asyncio.QueueFull:
                        self.later(
                            ws.OutboundQueueFull(connection_id=action.connection_id, now=now)
                        )
            case ws.CloseConnection():
                if client is not None:
                    client.close = (action.code, action.reason)
                    while client.outbound.full():  # a client that does not read loses them
                        client.outbound.get_nowait()
                    client.outbound.put_nowait(CLOSE)
            case ws.RunStorage():
                try:
                    result = self.storage.execute(action.operation)
                except ws.StorageFailure as exc:
                    self.later(
                        ws.StorageFailed(operation_id=action.operation_id, error=exc.error, now=now)
                    )
                else:
                    self.later(
                        ws.StorageCompleted(
                            operation_id=action.operation_id, result=result, now=now
                        )
                    )
            case ws.RunHooks():
                self.spawn(self.run_hooks(action))
            case ws.PauseReading():
                if client is not None:
                    client.may_read.clear()
            case ws.ResumeReading():
                if client is not None:
                    client.may_read.set()
            case ws.SendPing():
                if client is not None and client.websocket is not None:
                    self.spawn(self.ping(action.connection_id, client.websocket))  # type: ignore[arg-type]

    async def run_hooks(self, action: ws.RunHooks) -> None:
        try:
            for hook in action.hooks:
                outcome = hook(action.context)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception as exc:
            error = ws.hook_failure(exc)
            status = getattr(exc, "status", 403)
            self.feed(
                ws.HooksFailed(call_id=action.call_id, error=error, status=status, now=time.time())
            )
        else:
            self.feed(ws.HooksCompleted(call_id=action.call_id, now=time.time()))

    async def ping(self, connection_id: int, websocket: ServerConnection) -> None:
        try:
            await (await websocket.ping())
        except ConnectionClosed:
            return
        self.feed(ws.PongReceived(connection_id=connection_id, now=time.time()))

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """The handshake: ``before_connect`` hooks decide before the 101 is sent."""
        connection_id = next(self.ids)
        client = self.clients[connection_id] = Client(self.engine.limits.outbound_queue)
        path, _, query = request.path.partition("?")
        info = ws.RequestInfo(
            path=path,
            query=query,
            headers=tuple(request.headers.raw_items()),
            remote_address="{}:{}".format(*connection.remote_address[:2]),
        )
        self.connection_ids[connection] = connection_id
        self.feed(ws.ConnectionOpened(connection_id=connection_id, request=info, now=time.time()))
        decision = await client.decided
        if isinstance(decision, ws.RejectConnection):
            del self.clients[connection_id], self.connection_ids[connection]
            self.feed(ws.ConnectionClosed(connection_id=connection_id, now=time.time()))
            return connection.respond(HTTPStatus(decision.status), decision.reason + "\n")
        return None

    async def handler(self, websocket: ServerConnection) -> None:
        connection_id = self.connection_ids.pop(websocket)
        client = self.clients[connection_id]
        client.websocket = websocket
        writer = asyncio.ensure_future(self.write(websocket, client))
        try:
            while True:
                await client.may_read.wait()
                data = await websocket.recv()
                self.feed(
                    ws.MessageReceived(connection_id=connection_id, data=data, now=time.time())
                )
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            del self.clients[connection_id]
            self.feed(ws.ConnectionClosed(connection_id=connection_id, now=time.time()))

    async def write(self, websocket: ServerConnection, client: Client) -> None:
        while (frame := await client.outbound.get()) is not CLOSE:
            assert isinstance(frame, str)
            await websocket.send(frame)  # one protocol message, one frame
        await websocket.close(*client.close)

    async def timer(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            await asyncio.sleep(1.0 if deadline is None else max(0.0, deadline - time.time()))
            self.feed(ws.TimePassed(now=time.time()))


async def main(port: int) -> None:
    registry = ws.EntityRegistry([USERS])
    adapter = AsyncioAdapter(ws.Engine(registry), ws.MemoryStorage(registry))
    async with serve(
        adapter.handler,
        "127.0.0.1",
        port,
        process_request=adapter.process_request,
        ping_interval=None,  # keepalive is the engine's (SendPing)
        max_size=adapter.engine.limits.max_message_bytes,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}/", flush=True)
        await adapter.timer()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args().port))
