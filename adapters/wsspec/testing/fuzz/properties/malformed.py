"""Property ``malformed``: malformed input gets the prescribed error, once.

A malformed frame (:func:`~wsspec.testing.strategies.malformed_frames`) or an invalid
request (:func:`~wsspec.testing.strategies.invalid_requests`) gets an error response
with the code and id docs/protocol.md prescribes, exactly one, and the connection stays
usable (a ping afterwards gets its pong).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from ... import strategies as wst
from ..compare import check_envelope, error_code
from ..entities import Target
from ..report import PropertyFailure
from ..wire import dump

if TYPE_CHECKING:
    from ..runner import Fuzzer

__all__ = ["PER_ENTITY", "check"]

#: Run once per entity (else once, drawing the entity).
PER_ENTITY = False


def check(fuzzer: Fuzzer, data: st.DataObject, target: Target | None) -> None:
    entity = fuzzer.pick(data, target).entity
    bad = data.draw(
        st.one_of(wst.malformed_frames(entity), wst.invalid_requests(entity)), label="frame"
    )
    fuzzer.describe("invalid frame", bad.reason)
    fuzzer.describe("expected error", bad.code)
    main = fuzzer.main
    main.inbox.clear()
    main.send(bad.frame)
    reply = main.take_reply(bad.id)
    if reply.get("type") != "response" or reply.get("success") is not False:
        raise PropertyFailure(f"a malformed frame ({bad.reason}) was not answered with an error")
    check_envelope(reply)
    code = error_code(reply)
    if code != bad.code:
        raise PropertyFailure(
            f"an invalid frame ({bad.reason}) was answered with {code!r}, not {bad.code!r}"
        )
    main.barrier(0)
    stray = [m for m in main.inbox if m.get("type") in ("response", "pong")]
    if stray:
        raise PropertyFailure(f"more than one reply to an invalid frame: {dump(stray[0])}")
