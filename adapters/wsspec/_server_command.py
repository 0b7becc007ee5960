"""``wsspec serve MODULE:ATTR``: serve a user's :class:`~wsspec.App`, and the pieces the
server subcommands share (their common flags, and running an app until SIGINT/SIGTERM)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Any

import trio

from . import App, serve

HELP = "serve your own app: MODULE:ATTR names an App, or a callable taking the --db URL"

logger = logging.getLogger("wsspec.cli")


def add_server_arguments(parser: argparse.ArgumentParser, *, default_db: str | None) -> None:
    """The flags every serving subcommand takes."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="TCP port to listen on; 0 picks a free one, printed on start (default: %(default)s)",
    )
    parser.add_argument(
        "--path", default="/ws", help="URL path of the WebSocket endpoint (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        default=default_db,
        help="database URL: sqlite:///PATH (relative; sqlite:////abs/path for absolute) or "
        "postgresql://USER@HOST:PORT/DBNAME" + (" (default: %(default)s)" if default_db else ""),
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level on stderr; info logs one line per connection opened and closed "
        "(default: %(default)s)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="where the app is: ATTR is a wsspec.App, or a callable that takes the --db URL "
        "(a string, or None when --db is not given) and returns one",
    )
    add_server_arguments(parser, default_db=None)


def load_app(target: str, db_url: str | None) -> App:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"wsspec serve: expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, App) and callable(obj):
        obj = obj(db_url)
    if not isinstance(obj, App):
        raise SystemExit(f"wsspec serve: {target} is not a wsspec.App (got {type(obj).__name__})")
    return obj


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    app = load_app(args.target, args.db)
    return run_app(app, name="serve", host=args.host, port=args.port, path=args.path)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_app(app: App, *, name: str, host: str, port: int, path: str) -> int:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (a second signal
    exits at once).  Prints ``wsspec NAME listening on URL`` on stdout when ready."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            done = trio.Event()

            async def run_server(task_status: trio.TaskStatus[str]) -> None:
                try:
                    await serve(app, host, port, path=path, task_status=task_status)
                finally:
                    done.set()

            async def watch_signals() -> None:
                received = 0
                async for signum in signals:
                    received += 1
                    if received == 1:
                        logger.info("%s: shutting down", signal.Signals(signum).name)
                        app.request_shutdown()
                    else:
                        logger.warning("%s again: exiting now", signal.Signals(signum).name)
                        os._exit(1)

            async with trio.open_nursery() as nursery:
                url = await nursery.start(run_server)
                print(f"wsspec {name} listening on {url}", flush=True)
                nursery.start_soon(watch_signals)
                await done.wait()
                nursery.cancel_scope.cancel()
        logger.info("stopped")

    trio.run(main)
    return 0
