"""The client's state machine: one place owns every transition.

Theory of operation
-------------------
The engine holds one *connection phase* and two tables that outlive connections:

* **calls** (request/response), keyed by the adapter's ``call_id``, each with a wire id
  (``r<n>``: a counter, never reused for the life of the engine, so a late response on a
  new connection can never be mistaken for another call's) and a deadline. While
  ``OPEN`` a call is sent at once; otherwise it waits in submission order, or fails at once
  with ``not_connected`` if it asked to (``when_disconnected="fail"``). When a connection
  is lost, a sent read or meta call is sent again on the next connection (asking twice is
  harmless); a sent write fails with ``connection_lost``, because whether the server
  applied it is unknown and doing it twice is not harmless. Every call ends by its
  deadline: answered, failed, or ``timeout``.

* **subscriptions**, keyed by the adapter's ``key``, each with its *position*
  (``epoch``, ``seq``): the last change delivered for it, or a later point the server
  vouched for (the subscribe reply's ``seq``; a pong's ``seq``, PROTOCOL.md "Idle
  positions"). The server's ``subscription_id`` is per connection; ``_server_ids`` maps
  the current connection's ids to keys and is cleared with the connection.

  A notification is delivered only if its ``seq`` is beyond the position, which then
  moves to it: each change at most once, in ``seq`` order, whatever the server or the
  network repeats. On every new connection each subscription is sent again: with
  ``resume`` (its position) and ``snapshot`` when it has a position, so that the server
  replays what was missed (``recovered: true``: nothing for the application to see) or
  sends fresh rows (``recovered: false``: a :class:`Resync`, after which the position is
  the reply's ``seq``). A subscription without a position (a server without the change
  feed) is subscribed again plainly and also gets a ``Resync``: changes may have been
  missed, and the application must know. A subscribe refused with a transient error
  (``subscribe_error``, ``rate_limited``) is sent again after a backoff; any other
  refusal ends the subscription (``EndSubscription``).

The phases: ``IDLE`` until ``ConnectRequested``; ``CONNECTING`` (an ``OpenConnection`` is
out, bounded by ``connect_timeout``); ``OPEN``; ``WAITING`` until the backoff's
``reconnect_at``; ``STOPPED`` for good (closed by the application, or a final handshake
refusal). Connection ids are a counter; events about any but the current one are stale
and ignored, so the adapter never has to synchronise with the engine's verdicts (a
timed-out attempt that connects after all is simply not used).

Timing is data: ``next_deadline()`` says when the engine next wants ``TimePassed`` (a
call's deadline, the reconnect time, the connect timeout, the next ping, the pong
timeout); the backoff's random draw comes in with the events that may start a wait.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from typing import Any

import attrs
import orjson

from ._actions import (
    Action,
    CloseConnection,
    CompleteCall,
    ConfirmSubscription,
    DeliverChange,
    DeliverResync,
    EndSubscription,
    FailCall,
    Log,
    OpenConnection,
    SendFrame,
    Stop,
)
from ._config import ClientConfig, backoff_delay
from ._events import (
    FAIL,
    WAIT,
    CallCancelled,
    CallId,
    CallRequested,
    CloseRequested,
    ConnectFailed,
    ConnectionLost,
    ConnectionOpened,
    ConnectRequested,
    Event,
    FrameReceived,
    SubscribeRequested,
    SubscriptionKey,
    SubscriptionLagged,
    TimePassed,
    UnsubscribeRequested,
)
from ._values import (
    CLOSED,
    CONNECT_FAILED,
    CONNECTION_LOST,
    HANDSHAKE_REJECTED,
    INVALID_REPLY,
    NO_POSITION,
    NOT_CONNECTED,
    NOT_RECOVERED,
    ORIGIN_SERVER,
    RESUME_UNSUPPORTED,
    TIMEOUT,
    Change,
    Failure,
    Resync,
)

LOG_DEBUG = 10
LOG_INFO = 20
LOG_WARNING = 30

#: Operations that may be sent again after a lost connection: asking twice is harmless.
_RETRY_SAFE = frozenset({"read", "meta"})
#: An ``invalid_request`` failure: the application's data cannot be written as JSON.
INVALID_REQUEST = "invalid_request"
#: Subscribe errors that say "try again" (docs/protocol.md "Snapshot and resume":
#: ``subscribe_error`` "subscribing again is the remedy in every case"; a rate limit
#: passes): the subscribe is sent again after a backoff, on the same connection.
RETRY_SUBSCRIBE = frozenset({"subscribe_error", "rate_limited"})


class Phase(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    WAITING = "waiting"
    STOPPED = "stopped"


class _Sent(enum.Enum):
    """What a wire id sent on the current connection was for."""

    CALL = "call"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    #: The application gave up on it (deadline, cancellation, unsubscribe): its answer is
    #: expected and dropped; a subscription it creates is unsubscribed at once.
    ABANDONED_CALL = "abandoned call"
    ABANDONED_SUBSCRIBE = "abandoned subscribe"


@attrs.define
class _Call:
    call_id: CallId
    wire_id: str
    frame: str
    deadline: float
    when_disconnected: str
    retry_safe: bool
    sent: bool = False


@attrs.define
class _Subscription:
    key: SubscriptionKey
    entity: str
    schema: str | None
    options: dict[str, Any]
    snapshot: bool
    #: Until confirmed; ``None`` afterwards (a confirmed subscription has no deadline).
    deadline: float | None
    confirmed: bool = False
    epoch: str | None = None
    seq: int | None = None
    #: The server's id on the current connection, once its reply came.
    server_id: str | None = None
    #: The wire id of the subscribe in flight on the current connection.
    pending: str | None = None
    #: The subscribe in flight carries ``resume``.
    resuming: bool = False
    #: After a retryable refusal: when to subscribe again, and how many in a row.
    retry_at: float | None = None
    retries: int = 0

    @property
    def live(self) -> bool:
        return self.server_id is not None and self.pending is None


def _seq(value: object) -> int | None:
    # bool is an int in Python, never a seq on the wire.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


class ClientEngine:
    """The WebSocketSpec client as a state machine (module docstring; docs/client.md).

    ``handle(event)`` returns the complete list of actions, with the state already
    updated. Whatever the server sends, or fails to send, becomes a failure, a log action
    or nothing; an exception out of ``handle`` is a bug in wsspec_core, or an adapter
    reporting an event out of order (``ConnectRequested`` twice is ignored, not an error).
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config if config is not None else ClientConfig()
        self._phase = Phase.IDLE
        self._connection_id = 0
        #: When the current CONNECTING or OPEN phase began.
        self._since = 0.0
        self._reconnect_at = 0.0
        #: Consecutive failed or fruitless connections: the backoff's exponent.
        self._failures = 0
        self._ever_opened = False
        self._next_wire_id = 0
        self._calls: dict[CallId, _Call] = {}
        self._subscriptions: dict[SubscriptionKey, _Subscription] = {}
        self._sent: dict[str, tuple[_Sent, Hashable]] = {}
        self._server_ids: dict[str, SubscriptionKey] = {}
        #: The ping in flight: (wire id, sent at).
        self._ping: tuple[str, float] | None = None
        self._last_ping = 0.0
        self._last_received = 0.0
        self._stopped: Failure | None = None
        self._handlers: dict[type[Any], Callable[[Any], list[Action]]] = {
            ConnectRequested: self._connect_requested,
            ConnectionOpened: self._connection_opened,
            ConnectFailed: self._connect_failed,
            FrameReceived: self._frame_received,
            ConnectionLost: self._connection_lost,
            TimePassed: self._time_passed,
            CallRequested: self._call_requested,
            CallCancelled: self._call_cancelled,
            SubscribeRequested: self._subscribe_requested,
            UnsubscribeRequested: self._unsubscribe_requested,
            SubscriptionLagged: self._subscription_lagged,
            CloseRequested: self._close_requested,
        }

    # --- public surface -----------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def connection_id(self) -> int | None:
        """The connection in use or being opened, if any."""
        if self._phase in (Phase.CONNECTING, Phase.OPEN):
            return self._connection_id
        return None

    @property
    def stopped(self) -> Failure | None:
        """Why the engine stopped (``None`` while it has not)."""
        return self._stopped

    def position(self, key: SubscriptionKey) -> tuple[str | None, int | None] | None:
        """The subscription's position (``epoch``, ``seq``), ``None`` for an unknown key."""
        sub = self._subscriptions.get(key)
        return None if sub is None else (sub.epoch, sub.seq)

    @property
    def pending_calls(self) -> int:
        return len(self._calls)

    def handle(self, event: Event) -> list[Action]:
        return self._handlers[type(event)](event)

    def next_deadline(self) -> float | None:
        """When the engine next wants ``TimePassed`` (``None``: only events will move it)."""
        deadlines = [call.deadline for call in self._calls.values()]
        deadlines += [s.deadline for s in self._subscriptions.values() if s.deadline is not None]
        if self._phase is Phase.WAITING:
            deadlines.append(self._reconnect_at)
        elif self._phase is Phase.CONNECTING:
            deadlines.append(self._since + self.config.connect_timeout)
        elif self._phase is Phase.OPEN:
            deadlines += [s.retry_at for s in self._subscriptions.values() if s.retry_at]
            if self._ping is not None:
                deadlines.append(self._pong_deadline(self._ping[1]))
            elif self.config.ping_interval is not None:
                deadlines.append(self._last_ping + self.config.ping_interval)
        return min(deadlines) if deadlines else None

    # --- the application's requests ----------------------------------------------------

    def _call_requested(self, event: CallRequested) -> list[Action]:
        if event.call_id in self._calls:
            raise ValueError(f"call id {event.call_id!r} is already in use")
        if self._stopped is not None:
            return [FailCall(call_id=event.call_id, failure=self._stopped)]
        wire_id = self._wire_id("r")
        message: dict[str, Any] = {"id": wire_id, "type": "request", "operation": event.operation}
        for key in ("entity", "schema", "record_id", "data"):
            value = getattr(event, key)
            if value is not None:
                message[key] = value
        if event.options:
            message["options"] = event.options
        try:
            frame = _encode(message)
        except TypeError as exc:
            failure = Failure(code=INVALID_REQUEST, message=f"cannot be sent as JSON: {exc}")
            return [FailCall(call_id=event.call_id, failure=failure)]
        if event.deadline <= event.now:
            return [FailCall(call_id=event.call_id, failure=self._timeout("the request"))]
        if self._phase is not Phase.OPEN and event.when_disconnected == FAIL:
            failure = Failure(code=NOT_CONNECTED, message="the client is not connected")
            return [FailCall(call_id=event.call_id, failure=failure)]
        call = _Call(
            call_id=event.call_id,
            wire_id=wire_id,
            frame=frame,
            deadline=event.deadline,
            when_disconnected=event.when_disconnected,
            retry_safe=event.operation.lower() in _RETRY_SAFE,
        )
        self._calls[event.call_id] = call
        if self._phase is Phase.OPEN:
            return [self._send_call(call)]
        return []

    def _call_cancelled(self, event: CallCancelled) -> list[Action]:
        call = self._calls.pop(event.call_id, None)
        if call is not None and call.sent:
            self._sent[call.wire_id] = (_Sent.ABANDONED_CALL, None)
        return []

    def _subscribe_requested(self, event: SubscribeRequested) -> list[Action]:
        if event.key in self._subscriptions:
            raise ValueError(f"subscription key {event.key!r} is already in use")
        if self._stopped is not None:
            return [EndSubscription(key=event.key, failure=self._stopped)]
        try:
            _encode(event.options)
        except TypeError as exc:
            failure = Failure(code=INVALID_REQUEST, message=f"cannot be sent as JSON: {exc}")
            return [EndSubscription(key=event.key, failure=failure)]
        if event.deadline <= event.now:
            return [EndSubscription(key=event.key, failure=self._timeout("the subscribe"))]
        sub = _Subscription(
            key=event.key,
            entity=event.entity,
            schema=event.schema,
            options=event.options,
            snapshot=event.snapshot,
            deadline=event.deadline,
        )
        self._subscriptions[event.key] = sub
        if self._phase is Phase.OPEN:
            return [self._send_subscribe(sub)]
        return []

    def _unsubscribe_requested(self, event: UnsubscribeRequested) -> list[Action]:
        sub = self._subscriptions.pop(event.key, None)
        if sub is None:
            return []
        return self._detach(sub)

    def _subscription_lagged(self, event: SubscriptionLagged) -> list[Action]:
        sub = self._subscriptions.get(event.key)
        if sub is None or not sub.confirmed:
            return []
        if event.epoch is None or event.seq is None:
            sub.epoch, sub.seq = None, None
        else:
            sub.epoch, sub.seq = event.epoch, event.seq
        if self._phase is not Phase.OPEN:
            return []  # the next connection subscribes again from this position
        return [*self._detach(sub), self._send_subscribe(sub)]

    def _close_requested(self, event: CloseRequested) -> list[Action]:
        if self._stopped is not None:
            return []
        return self._stop(Failure(code=CLOSED, message="the client was closed"), close=True)

    # --- the network --------------------------------------------------------------------

    def _connect_requested(self, event: ConnectRequested) -> list[Action]:
        if self._phase is not Phase.IDLE:
            return []
        return self._connect(event.now)

    def _connection_opened(self, event: ConnectionOpened) -> list[Action]:
        if not self._current(event.connection_id, Phase.CONNECTING):
            return []
        self._phase = Phase.OPEN
        self._ever_opened = True
        self._since = self._last_ping = self._last_received = event.now
        actions: list[Action] = [self._send_subscribe(s) for s in self._subscriptions.values()]
        actions += [self._send_call(call) for call in self._calls.values()]
        return actions

    def _connect_failed(self, event: ConnectFailed) -> list[Action]:
        if not self._current(event.connection_id, Phase.CONNECTING):
            return []
        return self._attempt_failed(event.now, event.jitter, event.reason, event.status)

    def _connection_lost(self, event: ConnectionLost) -> list[Action]:
        if self._current(event.connection_id, Phase.CONNECTING):
            return self._attempt_failed(event.now, event.jitter, event.reason, None)
        if not self._current(event.connection_id, Phase.OPEN):
            return []
        return self._lost(event.now, event.jitter, f"connection lost: {event.reason}")

    def _time_passed(self, event: TimePassed) -> list[Action]:
        now = event.now
        actions: list[Action] = []
        for call in [c for c in self._calls.values() if c.deadline <= now]:
            del self._calls[call.call_id]
            if call.sent:
                self._sent[call.wire_id] = (_Sent.ABANDONED_CALL, None)
            actions.append(FailCall(call_id=call.call_id, failure=self._timeout("the request")))
        for sub in list(self._subscriptions.values()):
            if sub.deadline is not None and sub.deadline <= now:
                del self._subscriptions[sub.key]
                actions += self._detach(sub)
                failure = self._timeout("the subscribe")
                actions.append(EndSubscription(key=sub.key, failure=failure))
        if self._phase is Phase.WAITING and now >= self._reconnect_at:
            actions += self._connect(now)
        elif self._phase is Phase.CONNECTING:
            if now >= self._since + self.config.connect_timeout:
                reason = f"no connection within {self.config.connect_timeout:g} s"
                actions.append(CloseConnection(connection_id=self._connection_id, reason=reason))
                actions += self._attempt_failed(now, event.jitter, reason, None)
        elif self._phase is Phase.OPEN:
            for sub in self._subscriptions.values():
                if sub.retry_at is not None and sub.retry_at <= now:
                    actions.append(self._send_subscribe(sub))
            if self._ping is not None:
                if now >= self._pong_deadline(self._ping[1]):
                    reason = f"no pong within {self.config.pong_timeout:g} s"
                    actions.append(
                        CloseConnection(connection_id=self._connection_id, reason=reason)
                    )
                    actions += self._lost(now, event.jitter, reason)
            elif (
                self.config.ping_interval is not None
                and now >= self._last_ping + self.config.ping_interval
            ):
                wire_id = self._wire_id("p")
                self._ping = (wire_id, now)
                self._last_ping = now
                frame = _encode({"type": "ping", "id": wire_id})
                actions.append(SendFrame(connection_id=self._connection_id, frame=frame))
        return actions

    def _frame_received(self, event: FrameReceived) -> list[Action]:
        if not self._current(event.connection_id, Phase.OPEN):
            return []
        self._last_received = event.now
        # The server answered something: it is up, so the next loss backs off from scratch.
        self._failures = 0
        try:
            message = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return [Log(level=LOG_WARNING, message="ignored a frame that is not JSON")]
        if not isinstance(message, dict):
            return [Log(level=LOG_WARNING, message="ignored a frame that is not a JSON object")]
        kind = message.get("type")
        if kind == "response":
            return self._response(message, event.now)
        if kind == "notification":
            return self._notification(message)
        if kind == "pong":
            return self._pong(message)
        return [Log(level=LOG_WARNING, message=f"ignored a message of type {kind!r}")]

    # --- frames from the server -----------------------------------------------------------

    def _response(self, message: dict[str, Any], now: float) -> list[Action]:
        wire_id = message.get("id")
        sent = self._sent.pop(wire_id, None) if isinstance(wire_id, str) else None
        if sent is None:
            text = f"ignored a response to an unknown id {wire_id!r}"
            return [Log(level=LOG_WARNING, message=text)]
        kind, key = sent
        success = message.get("success")
        if kind is _Sent.CALL:
            del self._calls[key]
            if success is True:
                return [CompleteCall(call_id=key, response=message)]
            if success is False:
                return [FailCall(call_id=key, failure=Failure.from_response(message))]
            failure = Failure(
                code=INVALID_REPLY, message="a response without success", response=message
            )
            return [FailCall(call_id=key, failure=failure)]
        if kind is _Sent.SUBSCRIBE:
            return self._subscribe_reply(self._subscriptions[key], message, now)
        if kind is _Sent.ABANDONED_SUBSCRIBE and success is True:
            data = message.get("data")
            server_id = data.get("subscription_id") if isinstance(data, dict) else None
            if isinstance(server_id, str):  # the server made it: take it down again
                return [self._send_unsubscribe(server_id)]
        return []

    def _subscribe_reply(
        self, sub: _Subscription, message: dict[str, Any], now: float
    ) -> list[Action]:
        sub.pending = None
        resuming, sub.resuming = sub.resuming, False
        data = message.get("data")
        server_id = data.get("subscription_id") if isinstance(data, dict) else None
        if message.get("success") is not True or not isinstance(server_id, str):
            if message.get("success") is True:
                failure = Failure(
                    code=INVALID_REPLY,
                    message="a subscribe reply without a subscription_id",
                    response=message,
                )
            else:
                failure = Failure.from_response(message)
            if failure.code in RETRY_SUBSCRIBE and failure.origin == ORIGIN_SERVER:
                # Its position is kept: the retry resumes from it. No jitter: the
                # reconnections before it were jittered already.
                delay = backoff_delay(self.config, sub.retries, 1.0)
                sub.retries += 1
                sub.retry_at = now + delay
                text = (
                    f"subscribe refused ({failure.code}: {failure.message}); again in {delay:g} s"
                )
                return [Log(level=LOG_INFO, message=text)]
            del self._subscriptions[sub.key]
            sub.deadline = None
            return [EndSubscription(key=sub.key, failure=failure)]
        assert isinstance(data, dict)
        sub.retries = 0
        sub.server_id = server_id
        self._server_ids[server_id] = sub.key
        epoch = data.get("epoch") if isinstance(data.get("epoch"), str) else None
        seq = _seq(data.get("seq"))
        rows = data.get("rows") if isinstance(data.get("rows"), list) else None
        if not sub.confirmed:
            sub.confirmed = True
            sub.deadline = None
            sub.epoch, sub.seq = epoch, seq
            return [
                ConfirmSubscription(key=sub.key, rows=rows, epoch=epoch, seq=seq, reply=message)
            ]
        if resuming:
            recovered = data.get("recovered")
            if recovered is True:
                # The server replays every change after our position: nothing was missed,
                # and the position stays ours (the reply's seq is that same position).
                return []
            reason = NOT_RECOVERED if recovered is False else RESUME_UNSUPPORTED
        else:
            reason = NO_POSITION
        sub.epoch, sub.seq = epoch, seq
        resync = Resync(rows=rows, epoch=epoch, seq=seq, reason=reason, reply=message)
        return [DeliverResync(key=sub.key, resync=resync)]

    def _notification(self, message: dict[str, Any]) -> list[Action]:
        server_id = message.get("subscription_id")
        key = self._server_ids.get(server_id) if isinstance(server_id, str) else None
        if key is None:
            return []  # unsubscribed (or resubscribing) meanwhile: expected, not an error
        sub = self._subscriptions[key]
        seq = _seq(message.get("seq"))
        if seq is not None:
            if sub.seq is not None and seq <= sub.seq:
                return []  # already delivered, or covered by a resume or a pong
            sub.seq = seq
        return [DeliverChange(key=key, change=Change.from_notification(message, seq))]

    def _pong(self, message: dict[str, Any]) -> list[Action]:
        if self._ping is not None and message.get("id") == self._ping[0]:
            self._ping = None
        data = message.get("data")
        if not isinstance(data, dict):
            return []
        epoch, seq = data.get("epoch"), _seq(data.get("seq"))
        if not isinstance(epoch, str) or seq is None:
            return []
        actions: list[Action] = []
        # PROTOCOL.md "Idle positions": every change up to seq has been notified to this
        # connection, so each subscription live on it has seen all of its own up to there.
        for sub in list(self._subscriptions.values()):
            if not sub.live:
                continue
            if sub.epoch == epoch:
                if sub.seq is None or seq > sub.seq:
                    sub.seq = seq
            elif sub.epoch is not None:
                # The log was reset under a live subscription: the seqs it now receives
                # restart from 1 and would be taken for duplicates. Resubscribing from the
                # old position makes the server answer recovered: false with fresh rows.
                actions.append(Log(level=LOG_INFO, message=f"the log's epoch changed to {epoch!r}"))
                actions += [*self._detach(sub), self._send_subscribe(sub)]
        return actions

    # --- helpers --------------------------------------------------------------------------

    def _current(self, connection_id: int, phase: Phase) -> bool:
        return connection_id == self._connection_id and self._phase is phase

    def _wire_id(self, prefix: str) -> str:
        self._next_wire_id += 1
        return f"{prefix}{self._next_wire_id}"

    def _timeout(self, what: str) -> Failure:
        return Failure(code=TIMEOUT, message=f"{what} was not answered by its deadline")

    def _pong_deadline(self, ping_sent: float) -> float:
        # Anything received proves the connection alive: a pong may queue behind a slow
        # response (docs/protocol.md "Order").
        return max(ping_sent, self._last_received) + self.config.pong_timeout

    def _send_call(self, call: _Call) -> SendFrame:
        call.sent = True
        self._sent[call.wire_id] = (_Sent.CALL, call.call_id)
        return SendFrame(connection_id=self._connection_id, frame=call.frame)

    def _send_subscribe(self, sub: _Subscription) -> SendFrame:
        sub.retry_at = None
        wire_id = self._wire_id("s")
        message: dict[str, Any] = {
            "id": wire_id,
            "type": "subscription",
            "operation": "subscribe",
            "entity": sub.entity,
        }
        if sub.schema is not None:
            message["schema"] = sub.schema
        if sub.options:
            message["options"] = sub.options
        sub.resuming = sub.confirmed and sub.epoch is not None and sub.seq is not None
        if sub.resuming:
            # Always ask for rows with a resume: they come only if the resume fails, and
            # then they are what the application needs (no second round trip).
            message["resume"] = {"epoch": sub.epoch, "seq": sub.seq}
            message["snapshot"] = True
        elif sub.snapshot:
            message["snapshot"] = True
        sub.pending = wire_id
        self._sent[wire_id] = (_Sent.SUBSCRIBE, sub.key)
        return SendFrame(connection_id=self._connection_id, frame=_encode(message))

    def _send_unsubscribe(self, server_id: str) -> SendFrame:
        wire_id = self._wire_id("u")
        self._sent[wire_id] = (_Sent.UNSUBSCRIBE, None)
        message = {
            "id": wire_id,
            "type": "subscription",
            "operation": "unsubscribe",
            "subscription_id": server_id,
        }
        return SendFrame(connection_id=self._connection_id, frame=_encode(message))

    def _detach(self, sub: _Subscription) -> list[Action]:
        """Take ``sub`` off the current connection: what its pending subscribe creates is
        taken down when it comes, and the live server subscription now."""
        actions: list[Action] = []
        if sub.pending is not None:
            self._sent[sub.pending] = (_Sent.ABANDONED_SUBSCRIBE, None)
            sub.pending = None
        if sub.server_id is not None:
            del self._server_ids[sub.server_id]
            if self._phase is Phase.OPEN:
                actions.append(self._send_unsubscribe(sub.server_id))
            sub.server_id = None
        sub.resuming = False
        return actions

    def _connect(self, now: float) -> list[Action]:
        self._connection_id += 1
        self._phase = Phase.CONNECTING
        self._since = now
        return [OpenConnection(connection_id=self._connection_id)]

    def _attempt_failed(
        self, now: float, jitter: float, reason: str, status: int | None
    ) -> list[Action]:
        if status is not None and status in self.config.final_statuses:
            text = f"the server refused the connection with HTTP {status}: {reason}"
            failure = Failure(code=HANDSHAKE_REJECTED, message=text, status=status)
            return self._stop(failure, close=False)
        if not self._ever_opened and not self.config.retry_first_connect:
            code = CONNECT_FAILED if status is None else HANDSHAKE_REJECTED
            return self._stop(Failure(code=code, message=reason, status=status), close=False)
        return self._wait(now, jitter, f"connection attempt failed: {reason}")

    def _lost(self, now: float, jitter: float, reason: str) -> list[Action]:
        actions: list[Action] = []
        self._sent.clear()
        self._server_ids.clear()
        self._ping = None
        for call in list(self._calls.values()):
            if not call.sent:
                continue
            call.sent = False
            if not (call.retry_safe and call.when_disconnected == WAIT):
                del self._calls[call.call_id]
                failure = Failure(
                    code=CONNECTION_LOST,
                    message="the connection was lost before the response: the request "
                    "may or may not have been carried out",
                )
                actions.append(FailCall(call_id=call.call_id, failure=failure))
        for sub in self._subscriptions.values():
            sub.server_id = sub.pending = sub.retry_at = None
            sub.resuming = False
        return actions + self._wait(now, jitter, reason)

    def _wait(self, now: float, jitter: float, reason: str) -> list[Action]:
        delay = backoff_delay(self.config, self._failures, jitter)
        self._failures += 1
        self._phase = Phase.WAITING
        self._reconnect_at = now + delay
        return [Log(level=LOG_INFO, message=f"{reason}; reconnecting in {delay:.2f} s")]

    def _stop(self, failure: Failure, *, close: bool) -> list[Action]:
        actions: list[Action] = []
        if close and self._phase in (Phase.CONNECTING, Phase.OPEN):
            actions.append(
                CloseConnection(connection_id=self._connection_id, reason=failure.message)
            )
        self._phase = Phase.STOPPED
        self._stopped = failure
        actions += [FailCall(call_id=c, failure=failure) for c in self._calls]
        actions += [EndSubscription(key=k, failure=failure) for k in self._subscriptions]
        self._calls.clear()
        self._subscriptions.clear()
        self._sent.clear()
        self._server_ids.clear()
        self._ping = None
        actions.append(Stop(failure=failure))
        return actions
