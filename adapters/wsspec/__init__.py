"""wsspec: the WebSocketSpec server built on wsspec_core, trio-websocket and Peewee.

The public surface is small: an :class:`App` (storage, hooks, limits) and :func:`serve`,
which runs it with trio inside your own nursery.  ``wsspec demo`` and ``wsspec serve`` run
it from the command line (docs/server.md).
"""

from wsspec_core import HookContext, HookError, HookRegistry, HookType, Limits, RequestInfo

from .server import App, serve

__all__ = [
    "App",
    "HookContext",
    "HookError",
    "HookRegistry",
    "HookType",
    "Limits",
    "RequestInfo",
    "serve",
]
