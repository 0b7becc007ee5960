"""``wsspec demo``: the example models of the Go README (``wsspec.demo``), served over
SQLite or PostgreSQL, with the change feed on (the log installed by itself)."""

from __future__ import annotations

import argparse

from .extras import needs_extra
from .flags import add_server_arguments

HELP = "serve the Go README's example models (public.users, public.posts)"
#: wsspec.demo.DEFAULT_DB, repeated here because that module needs the server extra.
DEFAULT_DB = "sqlite:///wsspec-demo.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, default_db=DEFAULT_DB)


@needs_extra("server", "wsspec demo")
def run(args: argparse.Namespace) -> int:
    from ..demo import build_app, with_change_feed
    from .serving import configure_logging, run_app

    configure_logging(args.log_level)
    return run_app(with_change_feed(build_app(args.db)), name="demo", args=args)
