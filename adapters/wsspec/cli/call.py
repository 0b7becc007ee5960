"""``wsspec call URL OPERATION ENTITY``: send one request, print its response (docs/client.md
"Command line"). Exit status 1 on an error response or when no answer came."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .watch import (
    add_connection_arguments,
    add_query_arguments,
    emit,
    needs_client_extra,
    run_until_signalled,
)

HELP = "send one request (read, create, update, delete, meta) and print the response"

OPERATIONS = ("read", "create", "update", "delete", "meta")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument(
        "operation", metavar="OPERATION", choices=OPERATIONS, help=", ".join(OPERATIONS)
    )
    parser.add_argument(
        "entity",
        metavar="ENTITY",
        nargs="?",
        default=None,
        help="the entity (meta without one lists the entities)",
    )
    parser.add_argument(
        "--id",
        dest="record_id",
        default=None,
        metavar="ID",
        help="the record id (sent as a string; the server converts it)",
    )
    parser.add_argument(
        "--data", type=_json, default=None, metavar="JSON", help="the record for create or update"
    )
    add_query_arguments(parser)
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows")
    parser.add_argument(
        "--options",
        type=_json,
        default=None,
        metavar="JSON",
        help='more options, as the protocol writes them ({"sort": [...], "columns": [...]})',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the response (default: %(default)s)",
    )


@needs_client_extra("wsspec call")
def run(args: argparse.Namespace) -> int:
    from .. import client as wc

    if args.entity is None and args.operation != "meta":
        print(f"wsspec call: {args.operation} needs an ENTITY", file=sys.stderr)
        return 2
    options = wc.build_options(args.options, filters=args.filter or None, limit=args.limit)

    async def call() -> int:
        try:
            async with wc.connect(args.url, headers=args.header) as client:
                response = await client.request(
                    args.operation,
                    args.entity,
                    schema=args.schema,
                    record_id=args.record_id,
                    data=args.data,
                    options=options,
                    timeout=args.timeout,
                    when_disconnected="fail",
                )
        except wc.RequestError as exc:
            emit(exc.response)
            return 1
        except wc.ClientError as exc:
            print(f"wsspec call: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        emit(response)
        return 0

    return run_until_signalled(call, args.loop)
