"""wsspec inside a Starlette application: the WebSocket endpoint is one route among others.

The host application's lifespan runs wsspec's runtime (storage threads, timers, hooks);
Starlette does not pass lifespan events on to the apps it routes to. FastAPI is Starlette
underneath: ``FastAPI(lifespan=lifespan)`` and ``app.add_websocket_route("/ws", wsspec_app.asgi)``
do the same. Run it with any ASGI server:

    uvicorn starlette_mount:app --app-dir docs/examples --port 8000

then ``ws://127.0.0.1:8000/ws`` speaks the protocol and ``http://127.0.0.1:8000/`` is the
rest of the site.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from wsspec.demo import build_app

wsspec_app = build_app(os.environ.get("WSSPEC_DB", "sqlite:///starlette-example.db"))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with wsspec_app.running():
        yield


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{wsspec_app.connection_count} WebSocket clients connected\n")


app = Starlette(
    routes=[Route("/", home), WebSocketRoute("/ws", wsspec_app.asgi)],
    lifespan=lifespan,
)
