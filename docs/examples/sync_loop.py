"""Drive wsspec_core from a plain synchronous loop: no event loop, no sockets.

Two "clients" are just lists of frames. The loop hands the engine events and carries out
the actions it returns: Send prints the frame (and reports it written, so the engine's
flow control sees a client that reads everything), RunStorage runs the operation on the
in-memory backend and reports back, RunHooks calls plain hooks. Every event carries the
monotonic clock as ``now`` and the wall clock as ``wall`` (docs/core.md "Time"). Run it:

    python docs/examples/sync_loop.py
"""

from __future__ import annotations

import json
import time
from collections import deque

import wsspec_core as ws

users = ws.Entity(
    schema="public",
    name="users",
    table_name="users",
    columns=[
        ws.Column(
            name="id",
            type=ws.ColumnType.INTEGER,
            primary_key=True,
            nullable=False,
            has_default=True,
        ),
        ws.Column(name="name", type=ws.ColumnType.TEXT, nullable=False),
        ws.Column(name="status", type=ws.ColumnType.TEXT),
    ],
)
registry = ws.EntityRegistry([users])
hooks = ws.HookRegistry()


@hooks.on("before_create")
def require_name(ctx: ws.HookContext) -> None:
    if not ctx.data.get("name"):
        raise ws.HookError("validation_error", "name is required", {"field": "name"})


engine = ws.Engine(registry, hooks=hooks)
storage = ws.MemoryStorage(registry)
events: deque[ws.Event] = deque()


def clocks() -> dict[str, float]:
    return {"now": time.monotonic(), "wall": time.time()}


def carry_out(action: ws.Action) -> None:
    """The whole adapter: one branch per action type."""
    now = clocks()["now"]
    if isinstance(action, ws.Send):
        print(f"-> client {action.connection_id}: {action.frame}")
        events.append(ws.FramesWritten(connection_id=action.connection_id, count=1, **clocks()))
    elif isinstance(action, ws.RunStorage):
        try:
            result = storage.execute(action.operation)
        except ws.StorageFailure as exc:
            events.append(
                ws.StorageFailed(operation_id=action.operation_id, error=exc.error, now=now)
            )
        else:
            events.append(
                ws.StorageCompleted(operation_id=action.operation_id, result=result, now=now)
            )
    elif isinstance(action, ws.RunHooks):
        failure = ws.run_hooks_sync(action.hooks, action.context)
        if failure is None:
            events.append(ws.HooksCompleted(call_id=action.call_id, now=now))
        else:
            events.append(
                ws.HooksFailed(call_id=action.call_id, error=ws.hook_failure(failure), now=now)
            )
    elif isinstance(action, ws.AcceptConnection):
        print(f"client {action.connection_id} accepted")
    elif isinstance(action, ws.CloseConnection | ws.RejectConnection):
        print(f"client {action.connection_id} closed: {action}")
    elif isinstance(action, ws.Log):
        print(f"log ({action.level}): {action.message}")
    # PauseReading / ResumeReading / SendPing: nothing to do without a real socket.


def run(event: ws.Event) -> None:
    events.append(event)
    while events:
        for action in engine.handle(events.popleft()):
            carry_out(action)


frames: dict[str, list[dict[str, object]]] = {
    "alice": [
        {
            "id": "s1",
            "type": "subscription",
            "operation": "subscribe",
            "entity": "users",
            "options": {"filters": [{"column": "status", "operator": "eq", "value": "active"}]},
        },
    ],
    "bob": [
        {
            "id": "c1",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "Ann", "status": "active"},
        },
        {
            "id": "c2",
            "type": "request",
            "operation": "create",
            "entity": "users",
            "data": {"name": "", "status": "active"},
        },
        {"id": "r1", "type": "request", "operation": "read", "schema": "public", "entity": "users"},
        {"id": "p1", "type": "ping"},
    ],
}

for client in frames:
    run(ws.ConnectionOpened(connection_id=client, request=ws.RequestInfo(path="/ws"), **clocks()))
for client, messages in frames.items():
    for message in messages:
        run(ws.MessageReceived(connection_id=client, data=json.dumps(message), **clocks()))
for client in frames:
    run(ws.ConnectionClosed(connection_id=client, **clocks()))
print(f"open connections: {engine.connection_count}, subscriptions: {engine.subscription_count}")
