"""The fuzzer's side of the wire: client connections that record every frame.

A :class:`Connection` is a plain blocking client (``websockets.sync``): the fuzzer sends
frames, then reads until the response carrying a given id arrives, keeping every other
frame (notifications, other responses) in an inbox for the property to inspect.  Every
frame in either direction goes into the current :class:`Transcript`, which is what a
failure report prints.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .report import PropertyFailure, Transcript

__all__ = ["Connection", "WireError", "control_id", "dump"]


def dump(obj: Any) -> str:
    """Compact JSON, as the fuzzer writes frames and prints them."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class WireError(Exception):
    """The server could not be reached, or the connection broke."""


_ids = itertools.count(1)


def control_id() -> str:
    """An id for the fuzzer's own bookkeeping requests; generated ids never start so."""
    return f"fz-{next(_ids)}"


class Connection:
    """One client connection. Not thread-safe; the fuzzer is single-threaded."""

    def __init__(
        self,
        url: str,
        label: str,
        *,
        timeout: float,
        transcript: Callable[[], Transcript],
    ) -> None:
        self.url = url
        self.label = label
        self.timeout = timeout
        self._transcript = transcript
        self.inbox: list[dict[str, Any]] = []
        try:
            # Entered by hand: the connection lives across many examples.  (Works with
            # every websockets version; 17 warns when connect() is used bare.)
            self._ws: ClientConnection = connect(
                url, open_timeout=timeout, close_timeout=1, max_size=None
            ).__enter__()
        except Exception as exc:
            raise WireError(f"cannot connect to {url}: {exc}") from exc

    def close(self) -> None:
        self._ws.close()

    def send(self, frame: str | bytes | dict[str, Any]) -> None:
        text = dump(frame) if isinstance(frame, dict) else frame
        self._transcript().frame(self.label, ">>", text)
        try:
            self._ws.send(text)
        except ConnectionClosed as exc:
            raise PropertyFailure(
                f"the server closed the {self.label!r} connection ({_closed(exc)})"
            ) from exc

    def _receive(self, timeout: float) -> bool:
        """Read one frame into the inbox; False if none arrived within ``timeout``."""
        try:
            frame = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        except ConnectionClosed as exc:
            self._transcript().note(f"connection {self.label!r} closed: {_closed(exc)}")
            raise PropertyFailure(
                f"the server closed the {self.label!r} connection ({_closed(exc)})"
            ) from exc
        self._transcript().frame(self.label, "<<", frame)
        try:
            message = json.loads(frame)
        except ValueError as exc:
            raise PropertyFailure(
                "the server sent a frame that is not one JSON object (several messages "
                "joined in one frame?)"
            ) from exc
        if not isinstance(message, dict):
            raise PropertyFailure("the server sent a JSON frame that is not an object")
        self.inbox.append(message)
        return True

    def take_reply(self, message_id: Any) -> dict[str, Any]:
        """The response (or pong) carrying ``message_id``, waiting for it if need be."""
        deadline = time.monotonic() + self.timeout
        while True:
            for index, message in enumerate(self.inbox):
                if message.get("type") in ("response", "pong") and _same_id(
                    message.get("id"), message_id
                ):
                    return self.inbox.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._receive(remaining):
                raise PropertyFailure(
                    f"no response carrying id {dump(message_id)} within {self.timeout:g} s"
                )

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` (its ``id`` is set if absent) and wait for its response."""
        if "id" not in message:
            message = {"id": control_id(), **message}
        self.send(message)
        return self.take_reply(message["id"])

    def barrier(self, grace: float) -> None:
        """Ping and wait for the pong (the server answers in order), then keep reading
        for ``grace`` seconds: afterwards the inbox holds everything sent before."""
        pong = self.request({"type": "ping"})
        if pong.get("type") != "pong":
            raise PropertyFailure(f"a ping was answered with {pong.get('type')!r}, not a pong")
        self.drain(grace)

    def wait_until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        """Read until ``done(inbox)`` holds or ``timeout`` seconds have passed (a change
        feed notifies asynchronously: there is no barrier to wait on)."""
        deadline = time.monotonic() + timeout
        while not done(self.inbox):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._receive(remaining):
                return

    def drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while True:
            remaining = deadline - time.monotonic()
            if not self._receive(max(remaining, 0.0)) and remaining <= 0:
                return


def _same_id(got: Any, expected: Any) -> bool:
    # "5" and 5 are different ids; True is not 1.
    return type(got) is type(expected) and got == expected


def _closed(exc: ConnectionClosed) -> str:
    received = exc.rcvd
    if received is None:
        return "no close frame"
    return f"close code {received.code}" + (
        f", reason {received.reason!r}" if received.reason else ""
    )
