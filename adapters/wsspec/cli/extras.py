"""Saying which extra to install, instead of printing a traceback, when a subcommand runs
without the optional dependencies it needs (pyproject.toml ``[project.optional-dependencies]``)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

#: The top-level modules each extra brings.
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "server": frozenset(
        {
            "anyio",
            "sniffio",
            "trio",
            "trio_websocket",
            "wsproto",
            "uvicorn",
            "hypercorn",
            "peewee",
            "playhouse",
            "psycopg",
        }
    ),
    "testing": frozenset({"hypothesis", "websockets"}),
}

_F = TypeVar("_F", bound=Callable[..., int])


def missing_extra_message(command: str, extra: str, module: str) -> str:
    return (
        f"{command} needs the '{extra}' extra (module {module!r} is not installed): "
        f"pip install 'wsspec[{extra}]'"
    )


def needs_extra(extra: str, command: str) -> Callable[[_F], _F]:
    """Decorate a subcommand's ``run``: a missing module of ``extra`` becomes a one-line
    message on stderr and exit status 2."""

    def decorate(run: _F) -> _F:
        @functools.wraps(run)
        def guarded(*args: object, **kwargs: object) -> int:
            try:
                return run(*args, **kwargs)
            except ModuleNotFoundError as exc:
                module = (exc.name or "").partition(".")[0]
                if module not in EXTRA_MODULES[extra]:
                    raise
                print(missing_extra_message(command, extra, module), file=sys.stderr)
                return 2

        return guarded  # type: ignore[return-value]

    return decorate
