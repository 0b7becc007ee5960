"""A custom transport: wsspec on asyncio with the ``websockets`` library.

A transport only moves frames. Everything else (flow control, storage lanes, hooks,
keepalive, shutdown) is the runtime's, shared by every transport (docs/server.md "Writing
a transport"). This one implements the five verbs of ``wsspec.runtime.Transport`` on a
``websockets`` connection, and routes the handshake through ``process_request`` so that a
``before_connect`` refusal is a real HTTP 403.

    python docs/examples/asyncio_server.py [--port 8765]

prints ``listening on ws://127.0.0.1:PORT/`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from wsspec import App
from wsspec.runtime import Runtime, TransportClosed

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


class WebsocketsTransport:
    """One ``websockets`` connection as the runtime sees it."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        #: The runtime's answer to the handshake: None to accept, (status, reason) to refuse.
        self.decision: asyncio.Future[tuple[int, str] | None] = loop.create_future()
        #: The connection, once websockets has completed the handshake.
        self.connected: asyncio.Future[ServerConnection] = loop.create_future()
        self.ws: ServerConnection | None = None

    async def accept(self) -> None:
        self.decision.set_result(None)
        try:
            self.ws = await asyncio.wait_for(self.connected, 10)
        except TimeoutError:  # the client left during the handshake
            raise TransportClosed from None

    async def reject(self, status: int, reason: str) -> None:
        self.decision.set_result((status, reason))

    async def receive(self) -> str | bytes | None:
        assert self.ws is not None
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            return None

    async def send(self, frames: Sequence[str]) -> None:
        assert self.ws is not None
        try:
            for frame in frames:
                await self.ws.send(frame)
        except ConnectionClosed:
            raise TransportClosed from None

    async def close(self, code: int, reason: str) -> None:
        assert self.ws is not None
        await self.ws.close(code, reason)

    async def ping(self) -> None:
        assert self.ws is not None
        try:
            await (await self.ws.ping())
        except ConnectionClosed:
            raise TransportClosed from None

    def closed_by_peer(self) -> str:
        code = self.ws.close_code if self.ws is not None else None
        return "dropped" if code is None else f"code {code}"


def request_info(connection: ServerConnection, request: Request) -> ws.RequestInfo:
    path, _, query = request.path.partition("?")
    host, port = connection.remote_address[:2]
    return ws.RequestInfo(
        path=path,
        query=query,
        headers=tuple(request.headers.raw_items()),
        remote_address=f"{host}:{port}",
    )


async def serve_app(app: App, port: int) -> None:
    transports: dict[ServerConnection, WebsocketsTransport] = {}
    running: set[asyncio.Task[None]] = set()

    def start(runtime: Runtime, connection: ServerConnection, request: Request) -> None:
        transport = transports[connection] = WebsocketsTransport()
        task = asyncio.create_task(
            runtime.run_connection(transport, request_info(connection, request))
        )
        running.add(task)
        task.add_done_callback(running.discard)

    async with app.running() as runtime:

        async def process_request(
            connection: ServerConnection, request: Request
        ) -> Response | None:
            start(runtime, connection, request)
            decision = await transports[connection].decision
            if decision is None:
                return None  # websockets completes the handshake, then calls handler()
            transports.pop(connection)
            status, reason = decision
            return connection.respond(status, reason)

        async def handler(connection: ServerConnection) -> None:
            transport = transports.pop(connection)
            transport.connected.set_result(connection)
            await connection.wait_closed()  # the runtime runs the connection meanwhile

        async with serve(handler, "127.0.0.1", port, process_request=process_request) as server:
            bound = next(iter(server.sockets)).getsockname()[1]
            print(f"listening on ws://127.0.0.1:{bound}/", flush=True)
            await asyncio.Future()  # until interrupted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    registry = ws.EntityRegistry([USERS])
    # MemoryStorage never blocks: run it inline (storage_threads=0).
    app = App(ws.MemoryStorage(registry), registry=registry, storage_threads=0)
    asyncio.run(serve_app(app, port))


if __name__ == "__main__":
    main()
