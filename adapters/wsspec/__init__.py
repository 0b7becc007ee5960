"""wsspec: the WebSocketSpec server built on wsspec_core.

The public surface is small: an :class:`App` (storage, hooks, limits), :func:`serve`, which
runs it with trio + trio-websocket inside your own nursery, and ``App.asgi``, the same app
for any ASGI server (uvicorn, hypercorn) or mounted in Starlette/FastAPI.  ``wsspec demo``
and ``wsspec serve`` run it from the command line (docs/server.md).

Layout by role: ``runtime`` carries out the engine's actions on any loop, ``transports``
move frames, ``storage`` holds the Peewee backend, ``testing`` the Hypothesis strategies and
the conformance fuzzer, ``cli`` the command line.

``App``, ``serve`` and ``port_of`` need the ``server`` extra and are imported on first use,
so that the command line (and ``wsspec_core``'s names re-exported here) work without it.
"""

from typing import TYPE_CHECKING, Any

from wsspec_core import HookContext, HookError, HookRegistry, HookType, Limits, RequestInfo

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name == "App":
        from .runtime import App

        return App
    if name in ("serve", "port_of"):
        from .transports import trio_websocket

        return getattr(trio_websocket, name)
    raise AttributeError(f"module 'wsspec' has no attribute {name!r}")
