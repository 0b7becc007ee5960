"""``wsspec serve MODULE:ATTR``: serve a user's :class:`~wsspec.App`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from .extras import needs_extra
from .flags import add_change_feed_argument, add_server_arguments

HELP = "serve your own app: MODULE:ATTR names an App, or a callable taking the --db URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="where the app is: ATTR is a wsspec.App, or a callable that takes the --db URL "
        "(a string, or None when --db is not given) and returns one",
    )
    add_server_arguments(parser, default_db=None)
    add_change_feed_argument(parser)


def load_app(target: str, db_url: str | None) -> Any:
    from .. import App

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"wsspec serve: expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the app's own imports: its traceback is what helps
        raise SystemExit(
            f"wsspec serve: no module named {module_name!r} (run from its folder)"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, App) and callable(obj):
        obj = obj(db_url)
    if not isinstance(obj, App):
        raise SystemExit(f"wsspec serve: {target} is not a wsspec.App (got {type(obj).__name__})")
    return obj


@needs_extra("server", "wsspec serve")
def run(args: argparse.Namespace) -> int:
    from .serving import configure_logging, run_app

    configure_logging(args.log_level, args.log_format)
    app = load_app(args.target, args.db)
    if args.change_feed:
        app.change_feed = True
        _check_change_log(app)
    try:
        return run_app(app, name="serve", args=args)
    except BaseException as exc:
        unavailable = _change_feed_unavailable(exc)
        if unavailable is None:
            raise
        raise SystemExit(f"wsspec serve: {unavailable}") from None


def _check_change_log(app: Any) -> None:
    """Before any server starts (uvicorn and hypercorn would report a failed start-up as a
    lifespan error): the storage has a change log, or exit with what to run."""
    from ..runtime import ChangeFeedUnavailable, tailer_for

    try:
        tailer_for(app.storage, lambda *batch: None).start_position()
    except ChangeFeedUnavailable as exc:
        raise SystemExit(f"wsspec serve: {exc}") from None


def _change_feed_unavailable(exc: BaseException) -> BaseException | None:
    """The ``ChangeFeedUnavailable`` that stopped the server at start, however deep in
    task groups' exception groups it is."""
    from ..runtime import ChangeFeedUnavailable

    if isinstance(exc, ChangeFeedUnavailable):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _change_feed_unavailable(inner)
            if found is not None:
                return found
    return None
