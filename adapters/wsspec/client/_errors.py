"""The exceptions of ``wsspec.client``: one per way a request can fail, each carrying the
:class:`~wsspec_core.client.Failure` it came from (``code``, ``message``, ``details``)."""

from __future__ import annotations

from typing import Any

from wsspec_core import client as core


class ClientError(Exception):
    """Base class: ``code``, ``message`` and ``details`` as in the protocol's errors."""

    def __init__(self, failure: core.Failure) -> None:
        super().__init__(f"{failure.code}: {failure.message}")
        self.failure = failure

    @property
    def code(self) -> str:
        return self.failure.code

    @property
    def message(self) -> str:
        return self.failure.message

    @property
    def details(self) -> dict[str, Any] | None:
        return self.failure.details


class RequestError(ClientError):
    """The server answered with an error (docs/protocol.md "Errors"): ``code`` is the
    protocol's (``not_found``, ``validation_error``, a hook's own code...)."""

    @property
    def response(self) -> dict[str, Any]:
        """The error response as received."""
        return self.failure.response or {}


class RequestTimeout(ClientError, TimeoutError):
    """No answer by the deadline (``timeout``), connection waits included."""


class ConnectionLostError(ClientError):
    """The connection was lost after a write was sent and before its response: it may or
    may not have been carried out (``connection_lost``)."""


class NotConnectedError(ClientError):
    """The request asked to fail at once while disconnected (``not_connected``)."""


class HandshakeRejected(ClientError):
    """The server refused the WebSocket handshake (``handshake_rejected``); ``status`` is
    its HTTP status. 401 and 403 are final: the client stops."""

    @property
    def status(self) -> int | None:
        return self.failure.status


class ConnectError(ClientError):
    """The first connection could not be made (``connect_failed``): no server there, a
    name that does not resolve, a timeout."""


class ClientClosed(ClientError):
    """The client was closed (``closed``)."""


class InvalidReply(ClientError):
    """The server's answer was not a protocol message the client could use."""


class InvalidRequest(ClientError, TypeError):
    """The request cannot be written as JSON (``invalid_request``)."""


_BY_CODE: dict[str, type[ClientError]] = {
    core.TIMEOUT: RequestTimeout,
    core.CONNECTION_LOST: ConnectionLostError,
    core.NOT_CONNECTED: NotConnectedError,
    core.HANDSHAKE_REJECTED: HandshakeRejected,
    core.CONNECT_FAILED: ConnectError,
    core.CLOSED: ClientClosed,
    core.INVALID_REPLY: InvalidReply,
    core.INVALID_REQUEST: InvalidRequest,
}


# Tracebacks name them as they are imported: wsspec.client.ConnectError.
for _error in (ClientError, *_BY_CODE.values(), RequestError):
    _error.__module__ = "wsspec.client"


def error_for(failure: core.Failure) -> ClientError:
    if failure.origin == core.ORIGIN_SERVER:
        return RequestError(failure)
    return _BY_CODE.get(failure.code, ClientError)(failure)
