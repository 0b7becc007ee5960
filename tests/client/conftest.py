"""Servers shared by the client's test modules (each start costs about a second): the
demo app without the change feed, as a server runs by default, and with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_servers import Server, install_changelog, serving


@pytest.fixture(scope="session")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("plain")
    with serving(folder, f"sqlite:///{folder / 'app.db'}", change_feed=False) as server:
        yield server


@pytest.fixture(scope="session")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("feed")
    db = f"sqlite:///{folder / 'app.db'}"
    install_changelog(db)
    with serving(folder, db) as server:
        yield server
