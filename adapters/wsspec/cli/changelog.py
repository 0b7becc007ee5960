"""``wsspec changelog install|uninstall|status``: set up the change log of a user's app
(wsspec.storage.peewee.changelog; docs/changefeed.md "The command")."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .extras import needs_extra

HELP = "install, remove or inspect the change log (triggers) of your app's database"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["install", "uninstall", "status"],
        help="install (or upgrade) the log and its triggers on the app's registered models; "
        "uninstall every wsspec_ object; status: epoch, positions, entries",
    )
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        nargs="?",
        help="the app, as for wsspec serve (needed by install; uninstall and status need "
        "only --db)",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME (passed to "
        "the app's factory, as wsspec serve does)",
    )


def _database_and_models(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from ..storage.peewee import PeeweeStorage

    if args.target is None:
        if args.action == "install" or args.db is None:
            raise SystemExit(
                f"wsspec changelog {args.action}: give MODULE:ATTR"
                + (" and/or --db URL" if args.action != "install" else "")
            )
        return PeeweeStorage.from_url(args.db).database, []
    from .serve import load_app

    storage = load_app(args.target, args.db).storage
    if not isinstance(storage, PeeweeStorage):
        raise SystemExit(
            f"wsspec changelog: {args.target}'s storage is {type(storage).__name__}, "
            "not a PeeweeStorage"
        )
    # The registered models, in registration order; a model registered under two names
    # is one table.
    models = list(dict.fromkeys(storage.models().values()))
    return storage.database, models


@needs_extra("server", "wsspec changelog")
def run(args: argparse.Namespace) -> int:
    from ..storage.peewee import changelog

    database, models = _database_and_models(args)
    try:
        if args.action == "install":
            epoch = changelog.install(database, models)
            tables = ", ".join(changelog.table_key(m) for m in models) or "no tables"
            print(f"change log installed: epoch {epoch}; logging {tables}")
        elif args.action == "uninstall":
            changelog.uninstall(database)
            print("change log removed")
        else:
            found = changelog.status(database)
            if not found.installed:
                print("change log: not installed")
                return 1
            oldest = "-" if found.oldest_seq is None else found.oldest_seq
            print(f"epoch: {found.epoch}")
            print(f"version: {found.version}")
            print(f"oldest seq: {oldest}")
            print(f"last seq: {found.last_seq}")
            print(f"trimmed through: {found.trimmed_through}")
            print(f"entries: {found.entries}")
            print(f"tables: {', '.join(found.tables) or '-'}")
    except Exception as exc:
        import peewee

        if not isinstance(exc, peewee.DatabaseError | ValueError):
            raise
        print(f"wsspec changelog {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        database.close()
    return 0
