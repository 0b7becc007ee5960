"""The ``transport`` fixture: end-to-end modules that use it run every test on trio-websocket,
uvicorn and hypercorn (``pytestmark = pytest.mark.usefixtures("transport")``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wsserver_support


@pytest.fixture(params=wsserver_support.TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    wsserver_support.transport = request.param
    try:
        yield request.param
    finally:
        wsserver_support.transport = "trio"
