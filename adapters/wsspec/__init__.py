"""wsspec: the WebSocketSpec server built on wsspec_core.

The public surface is small: an :class:`App` (storage, hooks, limits), :func:`serve`, which
runs it with trio + trio-websocket inside your own nursery, and ``App.asgi``, the same app
for any ASGI server (uvicorn, hypercorn) or mounted in Starlette/FastAPI.  ``wsspec demo``
and ``wsspec serve`` run it from the command line (docs/server.md).

Layout by role: ``runtime`` carries out the engine's actions on any loop, ``transports``
move frames, ``storage`` holds the Peewee backend, ``testing`` the Hypothesis strategies and
the conformance fuzzer, ``cli`` the command line.
"""

from wsspec_core import HookContext, HookError, HookRegistry, HookType, Limits, RequestInfo

from .runtime import App
from .transports.trio_websocket import port_of, serve

__all__ = [
    "App",
    "HookContext",
    "HookError",
    "HookRegistry",
    "HookType",
    "Limits",
    "RequestInfo",
    "port_of",
    "serve",
]
