"""The loop clock the runtime reads (wsspec.runtime.loop.current_clock) is the loop's own
time, read more cheaply: trio's run clock (a MockClock too) and asyncio's loop.time()."""

from __future__ import annotations

import asyncio
import time

import trio
import trio.testing
from wsspec.runtime.loop import current_clock


def test_trio_clock_is_the_runs_clock_mock_clock_included() -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        read = current_clock()
        assert read() == trio.current_time()
        clock.jump(5.0)
        assert read() == trio.current_time() == clock.current_time()

    trio.run(main, clock=clock)


def test_trio_clock_follows_the_system_clock() -> None:
    async def main() -> None:
        read = current_clock()
        before = trio.current_time()
        now = read()
        assert before <= now <= trio.current_time()

    trio.run(main)


def test_asyncio_clock_is_the_loops_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        read = current_clock()
        before = loop.time()
        now = read()
        assert before <= now <= loop.time()

    asyncio.run(main())


def test_asyncio_loop_with_its_own_time_is_asked() -> None:
    class ShiftedLoop(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return time.monotonic() + 1000.0

    async def main() -> None:
        read = current_clock()
        assert read() >= time.monotonic() + 999.0

    loop = ShiftedLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
