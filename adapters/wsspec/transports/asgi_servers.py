"""Running an :class:`~wsspec.App` under uvicorn or hypercorn: the settings both need
(from the app's limits), and the runners ``wsspec demo/serve --server`` use.

Both servers speak WebSocket through wsproto here (the ``server`` extra ships it, and it
is what hypercorn uses anyway); the message size limit is the app's, so the server never
buffers a message the engine would refuse. ASGI has no ping, so the engine's keepalive
cannot reach the peer: the server's own WebSocket pings do that job, on the app's
``keepalive_interval`` (and, for uvicorn, ``keepalive_timeout``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .asgi import ASGIApp

if TYPE_CHECKING:
    import hypercorn.config
    import uvicorn

    from ..runtime import App


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free port), handed to the server, so the URL
    is known before it starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(
    app: App,
    *,
    path: str | None,
    log_level: str = "warning",
    certfile: str | None = None,
    keyfile: str | None = None,
    **runtime_options: Any,
) -> uvicorn.Server:
    """A ``uvicorn.Server`` for ``app`` (run it with ``server.run(sockets=[...])`` or
    ``await server.serve(sockets=[...])``). ``certfile``/``keyfile`` (PEM) serve
    ``wss://``; ``runtime_options`` go to :meth:`App.running` (``metrics_address``,
    ``close_timeout``, ``shutdown_timeout``)."""
    import uvicorn

    config = uvicorn.Config(
        ASGIApp(app, path=path, **runtime_options),
        ws="wsproto",
        lifespan="on",
        ws_max_size=app.limits.max_message_bytes,
        ws_ping_interval=app.limits.keepalive_interval,
        ws_ping_timeout=app.limits.keepalive_timeout,
        log_level=log_level,
        # No logging configuration of uvicorn's own: its loggers propagate to the
        # application's handlers, in the application's format (--log-format json too).
        log_config=None,
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    return uvicorn.Server(config)


def hypercorn_config(
    app: App, sock: socket.socket, *, certfile: str | None = None, keyfile: str | None = None
) -> hypercorn.config.Config:
    import hypercorn.config

    config = hypercorn.config.Config()
    # Hypercorn wraps the accepted connections in TLS when given both (wss://).
    config.certfile = certfile
    config.keyfile = keyfile
    # Hypercorn adopts the descriptor and closes it when done: give it a copy of ours.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.websocket_max_message_size = app.limits.max_message_bytes
    config.websocket_ping_interval = app.limits.keepalive_interval
    # serve_hypercorn runs the runtime's graceful shutdown before hypercorn's: by then every
    # WebSocket is closed, and hypercorn would still hold a finished connection's socket
    # for its whole graceful_timeout (3 s) before running the lifespan.
    config.graceful_timeout = 0.5
    config.accesslog = None
    # Given a logger, hypercorn logs through it instead of adding a stderr handler of its
    # own, which printed every line twice beside the application's logging.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve_hypercorn(
    app: App,
    sock: socket.socket,
    *,
    path: str | None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: Any = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    **runtime_options: Any,
) -> None:
    """Serve ``app`` under hypercorn's trio worker on ``sock`` until ``shutdown_trigger``
    returns; then shut down gracefully: the runtime's shutdown first (finish the accepted
    requests, close every connection with 1001), then hypercorn's, which would otherwise
    wait ``graceful_timeout`` for the WebSockets before running the lifespan's."""
    import hypercorn.trio
    import trio

    async def runtime_first() -> None:
        await shutdown_trigger()
        runtime = app._runtime
        if runtime is not None:
            await runtime.shutdown()

    asgi: Any = ASGIApp(app, path=path, **runtime_options)  # hypercorn's types are narrower
    await hypercorn.trio.serve(
        asgi,
        hypercorn_config(app, sock, certfile=certfile, keyfile=keyfile),
        shutdown_trigger=runtime_first,
        task_status=task_status if task_status is not None else trio.TASK_STATUS_IGNORED,
        mode="asgi",
    )
