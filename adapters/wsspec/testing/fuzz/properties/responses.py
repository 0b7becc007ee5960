"""Property ``responses``: every request gets exactly one reply carrying its id.

A pipelined batch of up to 8 random requests (reads, meta, creates, subscribes,
unsubscribes, pings) with random string and numeric ids: each gets exactly one reply
carrying its id (a pong for a ping), of the right type, with ``success`` and ``timestamp``
(docs/protocol.md "Messages"); none is missing, duplicated or unknown.  Requests on one
connection are answered in order, but the check does not rely on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from hypothesis import strategies as st

from wsspec_core import Operation, Ping, Request, Subscribe, Unsubscribe

from ... import strategies as wst
from ..compare import check_envelope
from ..entities import Target
from ..report import PropertyFailure
from ..wire import dump

if TYPE_CHECKING:
    from ..runner import Fuzzer

__all__ = ["PER_ENTITY", "check"]

#: Run once per entity (else once, drawing the entity).
PER_ENTITY = False


def check(fuzzer: Fuzzer, data: st.DataObject, target: Target | None) -> None:
    chosen = fuzzer.pick(data, target)
    entity = chosen.entity
    ids = wst.message_ids().filter(lambda i: not (isinstance(i, str) and i.startswith("fz-")))
    kinds = st.one_of(
        wst.requests(entity, operations=(Operation.READ, Operation.META)),
        wst.requests(entity, operations=(Operation.CREATE,), data=chosen.rows()),
        wst.subscribes(entity),
        st.builds(Unsubscribe, id=ids, subscription_id=st.text(min_size=1, max_size=8)),
        st.builds(Ping, id=ids),
    )
    batch = data.draw(st.lists(kinds, min_size=1, max_size=8), label="requests")
    drawn_ids = data.draw(st.lists(ids, min_size=len(batch), max_size=len(batch), unique=True))
    messages = [attrs.evolve(m, id=i) for m, i in zip(batch, drawn_ids, strict=True)]
    frames = [wst.to_wire(m) for m in messages]
    fuzzer.describe("pipelined frames", "")
    for frame in frames:
        fuzzer.example.append(f"  {dump(frame)}")
    main = fuzzer.main
    main.inbox.clear()
    for frame in frames:
        main.send(frame)
    subscriptions: list[str] = []
    try:
        for message, frame in zip(messages, frames, strict=True):
            reply = main.take_reply(message.id)
            expected_type = "pong" if isinstance(message, Ping) else "response"
            if reply.get("type") != expected_type:
                raise PropertyFailure(
                    f"the reply to {frame['type']} {dump(message.id)} has type "
                    f"{reply.get('type')!r}, not {expected_type!r}"
                )
            if expected_type == "response":
                check_envelope(reply)
            if isinstance(message, Request) and message.operation is Operation.CREATE:
                stored = reply.get("data")
                if reply.get("success") and isinstance(stored, dict):
                    key = stored.get(entity.primary_key.name)
                    if key is not None:
                        fuzzer.track_created(entity, key)
            if isinstance(message, Subscribe) and reply.get("success"):
                subscription_id = (reply.get("data") or {}).get("subscription_id")
                if isinstance(subscription_id, str):
                    subscriptions.append(subscription_id)
        main.barrier(fuzzer.config.grace)
        stray = [m for m in main.inbox if m.get("type") in ("response", "pong")]
        if stray:
            raise PropertyFailure(
                f"a reply nobody asked for (duplicate or unknown id): {dump(stray[0])}"
            )
    finally:
        for subscription_id in subscriptions:
            main.request(
                {
                    "type": "subscription",
                    "operation": "unsubscribe",
                    "subscription_id": subscription_id,
                }
            )
        main.inbox.clear()
