"""The one thing anyio does not offer: handing a callback to the event loop from another
thread without waiting for it to run.

``anyio.from_thread.run_sync`` blocks the calling thread until the loop has run the
function; a storage worker that waited like that would serve one batch per loop round
trip. trio's ``TrioToken.run_sync_soon`` and asyncio's ``loop.call_soon_threadsafe`` both
queue the call and return at once, and both run queued calls in FIFO order, which the
write lane relies on (completions reported in commit order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sniffio

#: ``schedule(function, argument)``: run ``function(argument)`` on the loop thread soon.
#: Raises ``LoopClosed`` once the loop has finished.
Schedule = Callable[[Callable[[Any], None], Any], None]


class LoopClosed(Exception):
    """The event loop the callback was meant for has finished."""


def current_scheduler() -> Schedule:
    """The thread-safe scheduler of the running event loop (trio or asyncio)."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()

        def schedule_trio(function: Callable[[Any], None], argument: Any) -> None:
            try:
                token.run_sync_soon(function, argument)
            except trio.RunFinishedError:
                raise LoopClosed from None

        return schedule_trio
    if library == "asyncio":
        import asyncio
        import contextvars

        loop = asyncio.get_running_loop()
        # A callback runs outside any task, where sniffio cannot tell the loop (trio says
        # for its whole run; asyncio only inside a task), and anyio, which the callback
        # uses (start a task, make an Event), would raise NoEventLoopError: run callbacks
        # in a context that says asyncio.
        context = contextvars.Context()
        context.run(sniffio.current_async_library_cvar.set, "asyncio")

        def schedule_asyncio(function: Callable[[Any], None], argument: Any) -> None:
            try:
                loop.call_soon_threadsafe(function, argument, context=context)
            except RuntimeError:  # "Event loop is closed"
                raise LoopClosed from None

        return schedule_asyncio
    raise RuntimeError(f"wsspec runs on trio or asyncio, not {library}")


def current_clock() -> Callable[[], float]:
    """The running loop's monotonic clock, callable from loop callbacks too (where
    ``anyio.current_time`` cannot tell which loop it is on). trio's is the one a
    ``MockClock`` drives."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        # The run's clock object's own method: what trio.current_time() returns (it asks
        # the runner, which asks this clock), in one call instead of three; the runtime
        # reads the clock several times per message.
        return trio.lowlevel.current_clock().current_time
    if library == "asyncio":
        import asyncio
        import time

        loop = asyncio.get_running_loop()
        if type(loop).time is asyncio.BaseEventLoop.time:
            # What BaseEventLoop.time() returns, without its Python frame around it; a
            # loop that keeps its own time (uvloop) is asked itself.
            return time.monotonic
        return loop.time
    raise RuntimeError(f"wsspec runs on trio or asyncio, not {library}")
