"""Drives a :class:`wsspec_core.client.ClientEngine` by hand in scenario tests: a clock,
the frames the engine sent (decoded), and what it handed to the application."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from wsspec_core import client as wc

EPOCH = "E1"


class ClientDriver:
    def __init__(self, config: wc.ClientConfig | None = None, **settings: Any) -> None:
        if config is None:
            settings.setdefault("ping_interval", None)
            config = wc.ClientConfig(**settings)
        self.engine = wc.ClientEngine(config)
        self.now = 100.0
        self.jitter = 0.5
        self.actions: list[wc.Action] = []
        self.connection = 0
        self.calls = 0

    # --- feeding events -------------------------------------------------------------------

    def feed(self, event: wc.Event) -> list[wc.Action]:
        actions = self.engine.handle(event)
        self.actions += actions
        return actions

    def advance(self, seconds: float) -> list[wc.Action]:
        self.now += seconds
        return self.feed(wc.TimePassed(now=self.now, jitter=self.jitter))

    def run_until_idle_deadline(self) -> list[wc.Action]:
        """Move the clock to the engine's next deadline and report it."""
        deadline = self.engine.next_deadline()
        assert deadline is not None
        self.now = max(self.now, deadline)
        return self.feed(wc.TimePassed(now=self.now, jitter=self.jitter))

    def open(self) -> list[wc.Action]:
        """``ConnectRequested`` (first time) or the pending reconnect, then its success."""
        if self.engine.phase is wc.Phase.IDLE:
            self.feed(wc.ConnectRequested(now=self.now))
        elif self.engine.phase is wc.Phase.WAITING:
            self.run_until_idle_deadline()
        opened = [a for a in self.actions if isinstance(a, wc.OpenConnection)]
        self.connection = opened[-1].connection_id
        return self.feed(wc.ConnectionOpened(connection_id=self.connection, now=self.now))

    def lose(self, reason: str = "reset") -> list[wc.Action]:
        return self.feed(
            wc.ConnectionLost(
                connection_id=self.connection, now=self.now, jitter=self.jitter, reason=reason
            )
        )

    def receive(self, message: dict[str, Any]) -> list[wc.Action]:
        return self.feed(
            wc.FrameReceived(connection_id=self.connection, data=json.dumps(message), now=self.now)
        )

    def call(
        self, operation: str = "read", entity: str = "users", timeout: float = 30.0, **fields: Any
    ) -> Hashable:
        self.calls += 1
        call_id = f"call-{self.calls}"
        self.feed(
            wc.CallRequested(
                call_id=call_id,
                operation=operation,
                entity=entity,
                deadline=self.now + timeout,
                now=self.now,
                **fields,
            )
        )
        return call_id

    def subscribe(
        self, key: Hashable = "sub", timeout: float = 30.0, **fields: Any
    ) -> list[wc.Action]:
        fields.setdefault("entity", "users")
        return self.feed(
            wc.SubscribeRequested(key=key, deadline=self.now + timeout, now=self.now, **fields)
        )

    # --- reading what came out ------------------------------------------------------------

    def sent(self, actions: list[wc.Action] | None = None) -> list[dict[str, Any]]:
        """The frames sent (decoded), from ``actions`` or from everything so far."""
        source = self.actions if actions is None else actions
        return [json.loads(a.frame) for a in source if isinstance(a, wc.SendFrame)]

    def last_sent(self) -> dict[str, Any]:
        return self.sent()[-1]

    def of(self, kind: type[Any], actions: list[wc.Action] | None = None) -> list[Any]:
        source = self.actions if actions is None else actions
        return [a for a in source if isinstance(a, kind)]

    def reply_subscribe(
        self,
        sent: dict[str, Any],
        server_id: str,
        *,
        seq: int | None = 0,
        epoch: str | None = EPOCH,
        **data: Any,
    ) -> list[wc.Action]:
        payload: dict[str, Any] = {"subscription_id": server_id, "schema": "public"}
        payload["entity"] = "users"
        if seq is not None:
            payload["epoch"], payload["seq"] = epoch, seq
        payload.update(data)
        return self.receive(
            {"id": sent["id"], "type": "response", "success": True, "data": payload}
        )

    def notify(
        self, server_id: str, seq: int | None, row_id: int = 1, change: str = "added"
    ) -> list[wc.Action]:
        message: dict[str, Any] = {
            "type": "notification",
            "operation": "create",
            "subscription_id": server_id,
            "schema": "public",
            "entity": "users",
            "data": {"id": row_id},
            "timestamp": "2025-01-01T00:00:00.000Z",
        }
        if seq is not None:
            message["seq"], message["change"] = seq, change
        return self.receive(message)

    def delivered(self, key: Hashable = "sub") -> list[int | None]:
        """The seqs of the changes delivered for ``key``, in order."""
        return [a.change.seq for a in self.of(wc.DeliverChange) if a.key == key]
