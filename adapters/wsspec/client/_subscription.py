"""One subscription of a :class:`~wsspec.client.Client`: an async context manager and an
async iterator of :class:`Change` and :class:`Resync` items."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from wsspec_core import client as core

from ._errors import error_for

if TYPE_CHECKING:
    from ._client import Client

Item = core.Change | core.Resync


class Subscription:
    """Use as ``async with client.subscribe(...) as sub: async for item in sub``.

    After entering: ``rows`` is the snapshot (``snapshot=True``; ``None`` otherwise),
    ``epoch`` and ``seq`` the position it is consistent with (``None`` without the
    server's change feed), ``reply`` the server's reply. Iterating yields, once each and
    in ``seq`` order, a :class:`Change` per notification, and a :class:`Resync` when the
    subscription could not be resumed without a gap: then replace what you hold with
    ``resync.rows``.
    Iteration ends when the subscription or the client is closed; it raises the
    :class:`~wsspec.client.ClientError` that ended the subscription otherwise (refused
    when resubscribing, or the client stopped after a final refusal).
    """

    def __init__(
        self,
        client: Client,
        key: int,
        *,
        entity: str,
        schema: str | None,
        options: dict[str, Any],
        snapshot: bool,
        timeout: float,
        max_buffered: int,
    ) -> None:
        self._client = client
        self.key = key
        self.entity = entity
        self.schema = schema
        self.options = options
        self.snapshot = snapshot
        self._timeout = timeout
        self._max_buffered = max_buffered
        self.rows: list[Any] | None = None
        self.epoch: str | None = None
        self.seq: int | None = None
        #: The subscribe reply as received (``data.total`` counts the matching rows when
        #: the snapshot is one page of them).
        self.reply: dict[str, Any] = {}
        self._items: deque[Item] = deque()
        self._ready = anyio.Event()
        self._confirmed = False
        self._ended: core.Failure | None = None
        #: The buffer overflowed: deliveries are dropped until the application has taken
        #: every buffered item, then the engine resumes from the last one.
        self._lagging = False
        #: The position of the last buffered item: where to resume from after an overflow.
        self._buffered: tuple[str | None, int | None] = (None, None)

    async def __aenter__(self) -> Subscription:
        client = self._client
        client._subscriptions[self.key] = self
        now = anyio.current_time()
        try:
            client._handle(
                core.SubscribeRequested(
                    key=self.key,
                    entity=self.entity,
                    schema=self.schema,
                    options=self.options,
                    snapshot=self.snapshot,
                    deadline=now + self._timeout,
                    now=now,
                )
            )
            while not self._confirmed and self._ended is None:
                await self._wait()
        except BaseException:
            self._unsubscribe()
            raise
        if not self._confirmed:
            assert self._ended is not None
            raise error_for(self._ended)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._unsubscribe()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        while not self._items:
            if self._ended is not None:
                if self._ended.code == core.CLOSED:
                    raise StopAsyncIteration
                raise error_for(self._ended)
            if self._lagging:
                # Caught up with what was kept: now fetch what was dropped, from the
                # server's log (a replay), or as a Resync if it no longer has it.
                self._lagging = False
                epoch, seq = self._buffered
                self._client._handle(
                    core.SubscriptionLagged(
                        key=self.key, epoch=epoch, seq=seq, now=anyio.current_time()
                    )
                )
                continue
            await self._wait()
        return self._items.popleft()

    async def _wait(self) -> None:
        self._ready = anyio.Event()
        await self._ready.wait()

    def _unsubscribe(self) -> None:
        if self._client._subscriptions.pop(self.key, None) is not None:
            self._client._handle(core.UnsubscribeRequested(key=self.key, now=anyio.current_time()))
        if self._ended is None:
            self._ended = core.Failure(code=core.CLOSED, message="unsubscribed")
        self._ready.set()

    # --- called by the client, from the engine's actions ---------------------------------

    def _confirm(
        self, rows: list[Any] | None, epoch: str | None, seq: int | None, reply: dict[str, Any]
    ) -> None:
        self.rows, self.epoch, self.seq = rows, epoch, seq
        self.reply = reply
        self._buffered = (epoch, seq)
        self._confirmed = True
        self._ready.set()

    def _deliver(self, item: Item) -> bool:
        """Buffer ``item``, or drop it while the buffer is full (``False`` when this
        delivery filled it: the client logs it once)."""
        if self._lagging:
            return True  # dropped: the resume after the application caught up brings it
        if len(self._items) >= self._max_buffered:
            self._lagging = True
            return False
        self._items.append(item)
        if isinstance(item, core.Resync):
            self._buffered = (item.epoch, item.seq)
        elif item.seq is None:
            self._buffered = (None, None)  # no position: an overflow must resync
        else:
            self._buffered = (self._buffered[0], item.seq)
        self._ready.set()
        return True

    def _end(self, failure: core.Failure) -> None:
        self._ended = failure
        self._ready.set()
