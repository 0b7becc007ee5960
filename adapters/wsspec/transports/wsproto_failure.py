"""Failing a WebSocket connection with a close frame, on every server that speaks wsproto.

RFC 6455 section 7.1.7: an endpoint that finds invalid data (a text frame that is not UTF-8,
a bad opcode, a masked server frame...) *fails the connection*: it sends a close frame with
the code that says why (1007, 1002...) and closes the TCP connection. wsproto (1.3) reports
such a failure as a ``CloseConnection`` event carrying the code, but leaves the connection
``OPEN``; trio-websocket, uvicorn's wsproto protocol and hypercorn all answer a
``CloseConnection`` with a close frame only in ``REMOTE_CLOSING`` (a close the peer sent),
so on a failure they drop the TCP connection and the client never learns why.

:func:`install` wraps ``wsproto.connection.Connection.events`` once per process so that a
failure leaves the connection in ``REMOTE_CLOSING``, as a close frame from the peer would:
each server then sends ``event.response()``, the close frame with the failure's code and
reason, exactly as it does to complete a closing handshake, and closes. A ``CloseConnection``
event with the connection still ``OPEN`` can only be such a failure (wsproto moves to
``REMOTE_CLOSING`` itself before reporting a close frame it received), and if a later wsproto
moves the state on a failure, the wrapper finds nothing to do.

The transports install it on import (``wsspec.transports``), so it is in place before any
server accepts a connection, also when uvicorn or hypercorn imports the application.
"""

from __future__ import annotations

from collections.abc import Generator

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event

_MARK = "_wsspec_fails_with_close_frame"


def install() -> None:
    """Make wsproto leave a failed connection in ``REMOTE_CLOSING`` (idempotent)."""
    events = Connection.events
    if getattr(events, _MARK, False):
        return

    def events_failing_with_close_frame(self: Connection) -> Generator[Event, None, None]:
        for event in events(self):
            if type(event) is CloseConnection and self._state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING
            yield event

    setattr(events_failing_with_close_frame, _MARK, True)
    events_failing_with_close_frame.__doc__ = events.__doc__
    Connection.events = events_failing_with_close_frame  # type: ignore[method-assign]
