"""The flags of the serving subcommands. Light on purpose: every subcommand module is
imported to build ``wsspec --help``, with or without the ``server`` extra."""

from __future__ import annotations

import argparse

SERVERS = ("trio", "uvicorn", "hypercorn")


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
        "--server",
        choices=SERVERS,
        default="trio",
        help="the WebSocket server: trio (trio-websocket), uvicorn (ASGI on asyncio) or "
        "hypercorn (ASGI on its trio worker) (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level on stderr; info logs one line per connection opened and closed "
        "(default: %(default)s)",
    )


def add_change_feed_argument(parser: argparse.ArgumentParser) -> None:
    """``--change-feed``: for ``wsspec serve``, whose app's database may have the log."""
    parser.add_argument(
        "--change-feed",
        action="store_true",
        help="notify subscribers of every change in the database's change log, from this "
        "server, other server processes or plain SQL (run `wsspec changelog install` "
        "first; docs/changefeed.md)",
    )
