"""Apps the client tests serve with ``wsspec serve client_apps:ATTR`` (run from this
folder): the demo models, with a door that can be shut."""

from __future__ import annotations

from pathlib import Path

from wsspec import App, HookContext, HookError
from wsspec.demo import build_app


def guarded(db_url: str | None) -> App:
    """The demo app whose handshakes are refused with HTTP 403 while a file named
    ``closed`` exists in the working directory, or without ``?token=ok``."""
    app = build_app(db_url)

    @app.hook("before_connect")
    def door(ctx: HookContext) -> None:
        if Path("closed").exists() or ctx.request_info.query_param("token") != "ok":
            raise HookError("unauthorized", "the door is shut")

    return app
