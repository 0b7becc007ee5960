"""``wsspec fuzz URL``: property-based conformance checks against a running server.

Theory of operation.  The fuzzer is an ordinary WebSocketSpec client (two connections:
``main`` for requests and writes, ``sub`` for subscriptions).  It discovers the server's
entities with ``meta``, turns each into a :class:`wsspec_core.Entity`, and runs a set of
properties, each as a Hypothesis test driven programmatically (``@given`` with explicit
settings and seed).  An example draws its inputs (records, filters, writes, frames), talks
to the server, and compares what came back with what docs/protocol.md prescribes; the
expected answer of a filter is computed by the core's matcher (``wsspec_core.matches``),
which is this project's executable definition of the filter semantics.

On a failure Hypothesis shrinks the example; the fuzzer prints the minimal one as the exact
frames exchanged and exits with status 1.  The fuzzer only updates and deletes records it
created, and deletes every record it created before it exits (parents last).

Exit status: 0 all properties held; 1 a property failed; 2 the server could not be fuzzed
(unreachable, discovery failed, no usable entity, every example rejected).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs

__all__ = ["PROPERTIES", "FuzzConfig", "add_arguments", "main", "run"]

#: Property name -> what it checks (the summary prints these).
PROPERTIES: dict[str, str] = {
    "responses": "every request gets exactly one response carrying its id (pipelined)",
    "malformed": "malformed input gets the prescribed error and the connection stays usable",
    "roundtrip": "a record read after create/update equals what was stored; "
    "missing records are not_found",
    "filtered-read": "a filtered read returns exactly the records the filters match",
    "subscription": "a filtered subscription is notified of exactly the matching writes, "
    "and of none after unsubscribe",
}


@attrs.frozen(kw_only=True)
class FuzzConfig:
    url: str
    entities: tuple[str, ...] = ()
    properties: tuple[str, ...] = tuple(PROPERTIES)
    max_examples: int = 25
    max_seconds: float = 60.0
    seed: int | None = None
    timeout: float = 5.0
    grace: float = 0.05


# --- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``wsspec fuzz`` options (shared by :func:`main` and the ``wsspec`` command)."""
    parser.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
    parser.add_argument(
        "--entity",
        action="append",
        default=[],
        metavar="SCHEMA.NAME",
        help="fuzz only this entity (repeatable; default: every entity meta lists)",
    )
    parser.add_argument(
        "--property",
        action="append",
        default=[],
        choices=list(PROPERTIES),
        help="check only this property (repeatable; default: all)",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=25,
        metavar="N",
        help="examples per property and entity (default 25)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="overall time budget, shrinking excepted (default 60)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed (default: random, printed)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="how long to wait for each response (default 5)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=0.05,
        metavar="S",
        help="how long to wait for late notifications after a barrier (default 0.05)",
    )


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the fuzzer with parsed arguments; returns the exit status."""
    config = FuzzConfig(
        url=args.url,
        entities=tuple(args.entity),
        properties=tuple(args.property) or tuple(PROPERTIES),
        max_examples=args.max_examples,
        max_seconds=args.max_seconds,
        seed=args.seed,
        timeout=args.timeout,
        grace=args.grace,
    )
    from ._fuzz_runner import Fuzzer  # Hypothesis and websockets: only when fuzzing

    return Fuzzer(config, out).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wsspec fuzz",
        description="Check a running WebSocketSpec server against the protocol with "
        "property-based tests (docs/fuzzing.md).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
