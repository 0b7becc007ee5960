"""``wsspec watch URL ENTITY``: print a subscription's notifications as JSON lines, across
disconnects and server restarts (docs/client.md "Command line").

Light on purpose: every subcommand module is imported to build ``wsspec --help``; the
client (``wsspec.client``, the ``client`` extra) is imported when the command runs. The
helpers shared with ``wsspec call`` live here.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from .extras import missing_extra_message

HELP = "print an entity's changes as JSON lines, resuming across disconnects and restarts"

#: The top-level modules the ``client`` extra brings (and what they bring).
CLIENT_MODULES = frozenset({"anyio", "sniffio", "idna", "wsproto", "h11"})

_F = TypeVar("_F", bound=Callable[..., int])


def needs_client_extra(command: str) -> Callable[[_F], _F]:
    """Like :func:`.extras.needs_extra` for the ``client`` extra: a missing module becomes
    a one-line message and exit status 2 (``--loop trio`` also needs trio)."""

    def decorate(run: _F) -> _F:
        @functools.wraps(run)
        def guarded(*args: object, **kwargs: object) -> int:
            try:
                return run(*args, **kwargs)
            except ModuleNotFoundError as exc:
                module = (exc.name or "").partition(".")[0]
                if module == "trio":
                    print(f"{command} --loop trio needs trio: pip install trio", file=sys.stderr)
                    return 2
                if module not in CLIENT_MODULES:
                    raise
                print(missing_extra_message(command, "client", module), file=sys.stderr)
                return 2

        return guarded  # type: ignore[return-value]

    return decorate


def parse_filter(text: str) -> dict[str, Any]:
    """``COLUMN:OPERATOR:VALUE`` -> a protocol filter. VALUE is read as JSON when it parses
    (``age:gte:18``, ``status:in:["a","b"]``, ``email:eq:null``), else as a string
    (``status:eq:active``). Everything after the second colon is the value."""
    column, sep, rest = text.partition(":")
    operator, sep2, raw = rest.partition(":")
    if not (sep and sep2 and column and operator):
        raise argparse.ArgumentTypeError(f"expected COLUMN:OPERATOR:VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return {"column": column, "operator": operator, "value": value}


def ws_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not a ws:// or wss:// URL: {text!r}")
    return text


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME: VALUE, got {text!r}")
    return name.strip(), value.strip()


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", type=ws_url, help="the server's ws:// or wss:// URL")
    parser.add_argument(
        "--header",
        action="append",
        type=parse_header,
        default=[],
        metavar="NAME:VALUE",
        help="an HTTP header for the handshake (Authorization: Bearer ...); repeatable",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop to run the client on (default: %(default)s)",
    )


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", default=None, help="the entity's schema, if ambiguous")
    parser.add_argument(
        "--filter",
        action="append",
        type=parse_filter,
        default=[],
        metavar="COLUMN:OPERATOR:VALUE",
        help="a filter (ANDed with the others); VALUE is JSON when it parses, else a string; "
        "repeatable",
    )


def emit(message: Any) -> None:
    """One JSON object per line, flushed at once (a pipe must see each line as it comes)."""
    sys.stdout.write(json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run_until_signalled(main: Callable[[], Any], loop: str) -> int:
    """Run ``main()`` on ``loop`` until it returns (its exit status) or SIGINT / SIGTERM
    arrive, which cancel it cleanly (exit status 0)."""
    import signal

    import anyio

    async def supervised() -> int:
        status = 0
        work = anyio.CancelScope()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def on_signal() -> None:
                    async for _ in signals:
                        work.cancel()
                        return

                group.start_soon(on_signal)
                with work:
                    status = await main()
                group.cancel_scope.cancel()
        return status

    result: int = anyio.run(supervised, backend=loop)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("entity", metavar="ENTITY", help="the entity to watch (users)")
    add_query_arguments(parser)
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help='print the matching rows first, as {"type": "snapshot", "rows": [...], ...} '
        "(needs the server's change feed)",
    )
    parser.add_argument(
        "--max-backoff",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="the longest wait between reconnection attempts (default: %(default)s)",
    )


@needs_client_extra("wsspec watch")
def run(args: argparse.Namespace) -> int:
    import logging

    from .. import client as wc

    # The client's reconnections, one line each on stderr; stdout carries only JSON.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wsspec watch: %(message)s")
    # Reconnect within --max-backoff of a server coming back, however long it was away
    # (the library's default, 30 s, suits a fleet of clients more than one terminal).
    config = wc.ClientConfig(
        reconnect_max=args.max_backoff, reconnect_initial=min(0.1, args.max_backoff)
    )

    async def watch() -> int:
        try:
            async with (
                wc.connect(args.url, headers=args.header, config=config) as client,
                client.subscribe(
                    args.entity,
                    schema=args.schema,
                    filters=args.filter,
                    snapshot=args.snapshot,
                ) as sub,
            ):
                if args.snapshot:
                    data = sub.reply.get("data", {})
                    emit(
                        {
                            "type": "snapshot",
                            "schema": data.get("schema"),
                            "entity": data.get("entity"),
                            "epoch": sub.epoch,
                            "seq": sub.seq,
                            "rows": sub.rows,
                        }
                    )
                async for item in sub:
                    if isinstance(item, wc.Resync):
                        emit(
                            {
                                "type": "resync",
                                "schema": item.reply.get("data", {}).get("schema"),
                                "entity": item.reply.get("data", {}).get("entity"),
                                "reason": item.reason,
                                "epoch": item.epoch,
                                "seq": item.seq,
                                "rows": item.rows,
                            }
                        )
                    else:
                        emit(item.message)
        except wc.ClientError as exc:
            print(f"wsspec watch: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            # The reader went away (| head): nothing more to say, to anyone.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - never closed: exiting
            return 0
        return 0

    return run_until_signalled(watch, args.loop)
