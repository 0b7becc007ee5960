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
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object per line (time, level, logger, message and the "
        "record's extra fields) for log shippers (default: %(default)s)",
    )
    parser.add_argument(
        "--certfile",
        metavar="PEM",
        help="serve wss:// (TLS) with this certificate chain; needs --keyfile",
    )
    parser.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve /metrics, /healthz and /readyz over plain HTTP on this port of "
        "--host (0 picks one; printed on start); with --workers, worker K uses PORT+K. "
        "The uvicorn and hypercorn servers answer them on --port too",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N server processes sharing the port, supervised by this one; without "
        "the change feed each worker's subscribers see only its own writes "
        "(docs/operations.md) (default: %(default)s)",
    )
    # A worker process of --workers: INDEX:SOCKET_FD:READY_FD:LIFELINE_FD (internal).
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.set_defaults(_parser=parser)


def add_change_feed_argument(parser: argparse.ArgumentParser) -> None:
    """``--change-feed``: for ``wsspec serve``, whose app's database may have the log."""
    parser.add_argument(
        "--change-feed",
        action="store_true",
        help="notify subscribers of every change in the database's change log, from this "
        "server, other server processes or plain SQL (run `wsspec changelog install` "
        "first; docs/changefeed.md)",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


#: Flags a worker process does not take from its parent's command line.
_NOT_FOR_WORKERS = frozenset({"workers", "worker", "help"})


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The command line (after ``wsspec``) that runs ``args`` again, without ``--workers``:
    what each worker process of ``--workers`` is started with. Rebuilt from the parser, so
    every flag a subcommand adds is passed on."""
    parser: argparse.ArgumentParser = args._parser
    options: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:
        if action.dest in _NOT_FOR_WORKERS or action.dest.startswith("_"):
            continue
        value = getattr(args, action.dest, None)
        if not action.option_strings:
            positionals.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                options.append(action.option_strings[-1])
        elif isinstance(action, argparse._StoreAction) and action.nargs is None:
            if value is not None:
                options += [action.option_strings[-1], str(value)]
        else:
            raise TypeError(f"cannot pass {action.option_strings} on to a worker")
    return [args.command, *options, *positionals]
