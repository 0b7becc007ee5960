"""The ``wsspec fuzz`` subcommand: its options, and running the fuzzer with them.

The theory of operation is in :mod:`wsspec.testing.fuzz`.  This module is imported to
build ``wsspec --help``, so its top-level imports are light: Hypothesis and ``websockets``
(the ``testing`` extra) are imported only when the fuzzer runs, and their absence is a
one-line message and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from ...cli.extras import needs_extra
from .config import PROPERTIES, FuzzConfig

__all__ = ["PROPERTIES", "FuzzConfig", "add_arguments", "main", "run"]

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


@needs_extra("testing", "wsspec fuzz")
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
    from .runner import Fuzzer  # Hypothesis and websockets: only when fuzzing

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
