"""Shared helpers of the end-to-end server tests: apps on SQLite files, a running server on
any transport, and two independent clients (trio-websocket in the test's trio loop; the
asyncio ``websockets`` library in a worker thread).

The transport is chosen per test by the ``transport`` fixture (tests/server/conftest.py):
``trio`` (trio-websocket, in the test's trio loop), ``hypercorn`` (its trio worker, in the
test's trio loop) and ``uvicorn`` (asyncio, in a thread of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from wsspec import App, Limits, serve
from wsspec.demo import make_models
from wsspec.storage.peewee import PeeweeStorage
from wsspec.transports.asgi_servers import bind_socket, serve_hypercorn, uvicorn_server

from wsspec_core import EntityRegistry, MemoryStorage

#: Seconds any single test may take; every test wraps its body in trio.fail_after(TIMEOUT).
TIMEOUT = 20

TRANSPORTS = ("trio", "uvicorn", "hypercorn")
#: The transport serving() uses; set by the ``transport`` fixture.
transport = "trio"


def demo_app(tmp_path: Path, *, storage_wrapper: Any = None, **limits: Any) -> App:
    """The demo models (public.users, public.posts) on a fresh SQLite file."""
    storage = PeeweeStorage.from_url(f"sqlite:///{tmp_path / 'test.db'}")
    user, post = make_models(storage.database)
    with storage.database.connection_context():
        storage.database.create_tables([user, post])
    storage.register("public.users", user)
    storage.register("public.posts", post)
    backend = storage_wrapper(storage) if storage_wrapper is not None else storage
    return App(backend, registry=EntityRegistry(storage.entities()), limits=Limits(**limits))


def memory_app(tmp_path: Path, **limits: Any) -> App:
    """The demo entities on wsspec_core.MemoryStorage (where storage does not matter)."""
    storage = PeeweeStorage.from_url(f"sqlite:///{tmp_path / 'schema-only.db'}")
    user, post = make_models(storage.database)
    storage.register("public.users", user)
    storage.register("public.posts", post)
    registry = EntityRegistry(storage.entities())
    return App(MemoryStorage(registry), registry=registry, limits=Limits(**limits))


class GatedStorage:
    """Wraps a storage; writes wait (in their worker thread) until ``release()``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.write_started = threading.Event()

    def execute(self, operation: Any) -> Any:
        from wsspec_core import Create, Delete, Update

        if isinstance(operation, Create | Update | Delete):
            self.write_started.set()
            if not self.gate.wait(timeout=TIMEOUT):
                raise RuntimeError("gate never opened")
        return self.inner.execute(operation)

    def release(self) -> None:
        self.gate.set()

    def entities(self) -> Any:
        return self.inner.entities()


async def wait_thread_event(event: threading.Event) -> None:
    while not event.is_set():
        await trio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], interval: float = 0.01) -> None:
    while not predicate():
        await trio.sleep(interval)


@contextlib.asynccontextmanager
async def serving(app: App, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1, a free port, on the current transport; yields the URL;
    shuts down on exit. ``options``: ``close_timeout``, ``shutdown_timeout``."""
    if transport == "trio":
        async with trio.open_nursery() as nursery:
            url: str = await nursery.start(partial(serve, app, "127.0.0.1", 0, **options))
            try:
                yield url
            finally:
                app.request_shutdown()
        return
    sock = bind_socket("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    try:
        if transport == "hypercorn":
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        serve_hypercorn,
                        app,
                        sock,
                        path="/ws",
                        shutdown_trigger=stop.wait,
                        **options,
                    )
                )
                await wait_until(lambda: app._runtime is not None and app._runtime.running)
                try:
                    yield url
                finally:
                    stop.set()
            return
        assert transport == "uvicorn", transport
        server = uvicorn_server(app, path="/ws", **options)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="uvicorn", daemon=True
        )
        thread.start()
        await wait_until(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        try:
            yield url
        finally:
            server.should_exit = True
            await trio.to_thread.run_sync(thread.join, TIMEOUT)
    finally:
        sock.close()


class Client:
    """A trio-websocket client speaking the protocol (JSON frames)."""

    _ids = itertools.count(1)

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_message(message if isinstance(message, str) else json.dumps(message))

    async def recv(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self.ws.get_message())
        return result

    async def request(self, operation: str, entity: str | None = None, **fields: Any) -> Any:
        """Send a request and return its response (the next message must be it)."""
        message_id = f"r{next(self._ids)}"
        message: dict[str, Any] = {"id": message_id, "type": "request", "operation": operation}
        if entity is not None:
            message["entity"] = entity
        message.update(fields)
        if operation in ("subscribe", "unsubscribe"):
            message["type"] = "subscription"
        await self.send(message)
        response = await self.recv()
        assert response.get("id") == message_id, response
        return response


@contextlib.asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[Client]:
    async with trio_websocket.open_websocket_url(url, **options) as ws:
        yield Client(ws)


async def in_asyncio(func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``func(*args)`` with asyncio (the ``websockets`` client) in a worker thread."""

    def run() -> Any:
        return asyncio.run(asyncio.wait_for(func(*args), TIMEOUT))

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
