"""The ``wsspec`` command.

Subcommands live in :data:`SUBCOMMANDS`: name -> (module, one-line help).  Each module
defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status), and keeps its
top-level imports light: every subcommand module is imported to build ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("wsspec.cli.demo", "serve the example users/posts models of the Go README"),
    "serve": ("wsspec.cli.serve", "serve your own app (MODULE:ATTR)"),
    "fuzz": ("wsspec.testing.fuzz.command", "check a running server's protocol conformance"),
    "changelog": ("wsspec.cli.changelog", "install, remove or inspect the change log"),
    "watch": ("wsspec.cli.watch", "print an entity's changes as JSON lines, resuming after drops"),
    "call": ("wsspec.cli.call", "send one request and print the response"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsspec",
        description="Real-time CRUD over WebSocket (the WebSocketSpec protocol).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args._run(args)
    return status
