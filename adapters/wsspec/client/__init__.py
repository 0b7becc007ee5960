"""wsspec.client: a WebSocketSpec client for asyncio and trio that never loses a change.

.. code-block:: python

    async with wsspec.client.connect("ws://127.0.0.1:8080/ws") as client:
        rows = await client.read("users", filters=[("status", "eq", "active")], limit=20)
        async with client.subscribe("users", snapshot=True) as sub:
            async for item in sub:  # Change, or Resync after a gap the server could not fill
                ...

It runs :mod:`wsspec_core.client` (the sans-IO client engine) over anyio and wsproto, and
needs the ``client`` extra (``pip install 'wsspec[client]'``). docs/client.md.
"""

from wsspec_core.client import Change, ClientConfig, Failure, Resync

from ._client import Client, build_options, connect
from ._errors import (
    ClientClosed,
    ClientError,
    ConnectError,
    ConnectionLostError,
    HandshakeRejected,
    InvalidReply,
    InvalidRequest,
    NotConnectedError,
    RequestError,
    RequestTimeout,
)
from ._subscription import Subscription

__all__ = [
    "Change",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ConnectError",
    "ConnectionLostError",
    "Failure",
    "HandshakeRejected",
    "InvalidReply",
    "InvalidRequest",
    "NotConnectedError",
    "RequestError",
    "RequestTimeout",
    "Resync",
    "Subscription",
    "build_options",
    "connect",
]
