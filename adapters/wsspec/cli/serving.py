"""What the serving subcommands (``demo``, ``serve``) share: logging, and running an app
on the chosen server until SIGINT or SIGTERM (their flags are in :mod:`.flags`).

Imported only when such a subcommand runs: it needs the ``server`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial

from .. import App

logger = logging.getLogger("wsspec.cli")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_app(app: App, *, name: str, args: argparse.Namespace) -> int:
    """Serve ``app`` on ``args.server`` until SIGINT or SIGTERM, then shut down gracefully
    (a second signal exits at once).  Prints ``wsspec NAME listening on URL`` on stdout
    when ready."""
    runner: Callable[[App, str, argparse.Namespace], None] = {
        "trio": _run_trio,
        "uvicorn": _run_uvicorn,
        "hypercorn": _run_hypercorn,
    }[args.server]
    runner(app, name, args)
    logger.info("stopped")
    return 0


def _announce(name: str, host: str, port: int, path: str) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"wsspec {name} listening on ws://{shown}:{port}{path}", flush=True)


async def _until_signalled(on_first: Callable[[], None]) -> None:
    """Wait for SIGINT or SIGTERM; call ``on_first`` on the first, exit at once on the
    second."""
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        received = 0
        async for signum in signals:
            received += 1
            if received == 1:
                logger.info("%s: shutting down", signal.Signals(signum).name)
                on_first()
            else:
                logger.warning("%s again: exiting now", signal.Signals(signum).name)
                os._exit(1)


def _run_trio(app: App, name: str, args: argparse.Namespace) -> None:
    import trio

    from .. import serve

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run_server(task_status: trio.TaskStatus[str]) -> None:
                try:
                    await serve(app, args.host, args.port, path=args.path, task_status=task_status)
                finally:
                    done.set()

            url = await nursery.start(run_server)
            print(f"wsspec {name} listening on {url}", flush=True)
            nursery.start_soon(_until_signalled, app.request_shutdown)
            await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


def _run_uvicorn(app: App, name: str, args: argparse.Namespace) -> None:
    from ..transports.asgi_servers import bind_socket, uvicorn_server

    sock = bind_socket(args.host, args.port)
    server = uvicorn_server(app, path=args.path, log_level=args.log_level)
    _announce(name, args.host, sock.getsockname()[1], args.path)
    logger.info("serving with uvicorn")
    # uvicorn handles SIGINT and SIGTERM itself: it stops accepting, closes the
    # WebSockets (1012) and runs the lifespan's shutdown; then it raises the signal again
    # with the handlers it found. Those end the process quietly, as the other servers do.
    signal.signal(signal.SIGTERM, _exit_quietly)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_hypercorn(app: App, name: str, args: argparse.Namespace) -> None:
    import trio

    from ..transports.asgi_servers import bind_socket, serve_hypercorn

    sock = bind_socket(args.host, args.port)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_signalled, stop.set)
            async with trio.open_nursery() as server:
                await server.start(
                    partial(serve_hypercorn, app, sock, path=args.path, shutdown_trigger=stop.wait)
                )
                _announce(name, args.host, sock.getsockname()[1], args.path)
                logger.info("serving with hypercorn (trio worker)")
            nursery.cancel_scope.cancel()
        # hypercorn returned: its lifespan shut the runtime down.

    trio.run(main)
