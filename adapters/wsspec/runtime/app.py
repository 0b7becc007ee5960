"""The App: what a wsspec server serves (storage, entities, hooks, limits), whichever
transport serves it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from wsspec_core import (
    ChangeCommitted,
    EntityRegistry,
    Hook,
    HookRegistry,
    HookType,
    Limits,
    Operation,
    encode_json,
)

from .runtime import Runtime
from .storage_lanes import Storage
from .tailer import Retention

if TYPE_CHECKING:
    from ..transports.asgi import ASGIApp

#: Worker threads running read operations (writes have one thread of their own).
STORAGE_THREADS = 8


class App:
    """A wsspec server: storage, the entities it exposes, hooks and limits.

    >>> app = App(PeeweeStorage.from_url("sqlite:///app.db"))   # doctest: +SKIP
    >>> @app.hook("before_read")                                 # doctest: +SKIP
    ... def only_mine(ctx): ctx.add_filter("user_id", "eq", ctx.metadata["user_id"])

    Serve it with :func:`wsspec.serve` (trio + trio-websocket) or as an ASGI application,
    :attr:`asgi` (uvicorn, hypercorn, mounted in Starlette or FastAPI).

    The entities default to ``storage.entities()``.  Storage operations run in worker
    threads: reads on ``storage_threads`` threads, writes on one thread of their own;
    ``storage_threads=0`` runs them inline on the event loop instead, which is faster and
    only right for storage that never blocks (``MemoryStorage``).  While the app is served,
    the counters, :meth:`broadcast`, :meth:`notify_change` and :meth:`request_shutdown` act
    on the running server; call them from the event loop thread that runs it.

    ``change_feed=True`` makes every committed change in the database's change log reach
    subscribers (with ``seq``, ``change`` and the ``added``/``modified``/``removed``
    semantics of docs/protocol.md), including other processes' writes and plain SQL:
    one tailer per server reads the log (docs/changefeed.md). Off by default. A
    ``MemoryStorage(change_log_epoch=...)`` keeps such a log in the process.
    ``retention`` says how much of the log the server keeps and how often it trims it
    (:class:`~wsspec.runtime.Retention`; default: 100,000 changes and 24 h, every minute).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        registry: EntityRegistry | None = None,
        hooks: HookRegistry | None = None,
        limits: Limits | None = None,
        storage_threads: int = STORAGE_THREADS,
        change_feed: bool = False,
        retention: Retention | None = None,
    ) -> None:
        self.storage = storage
        if registry is None:
            entities = getattr(storage, "entities", None)
            if entities is None:
                raise TypeError("this storage has no entities(): pass App(..., registry=...)")
            registry = EntityRegistry(entities())
        registry.validate()
        self.registry = registry
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.limits = limits if limits is not None else Limits()
        if storage_threads < 0:
            raise ValueError("storage_threads must be 0 (inline) or more")
        self.storage_threads = storage_threads
        #: Notify subscribers of every change in the database's change log, whoever made
        #: it (docs/changefeed.md): the storage must be a ``PeeweeStorage`` whose database
        #: has the log installed (``wsspec changelog install``), else serving fails at
        #: start. Settable until the app is served (``wsspec serve --change-feed``).
        self.change_feed = change_feed
        self.retention = retention if retention is not None else Retention()
        self._runtime: Runtime | None = None
        self._shutdown_requested: anyio.Event | None = None
        self._asgi: ASGIApp | None = None

    def hook(self, hook_type: HookType | str) -> Callable[[Hook], Hook]:
        """Decorator: ``@app.hook("before_connect")``. Hooks may be plain or ``async``."""
        return self.hooks.on(hook_type)

    @property
    def asgi(self) -> ASGIApp:
        """This app as an ASGI application: ``uvicorn myapp:app.asgi`` (or a module-level
        ``asgi = app.asgi``), or mounted at a route of a Starlette/FastAPI app together
        with :meth:`running` as (part of) its lifespan (docs/server.md "ASGI")."""
        if self._asgi is None:
            from ..transports.asgi import ASGIApp

            self._asgi = ASGIApp(self)
        return self._asgi

    @contextlib.asynccontextmanager
    async def running(self, **options: Any) -> AsyncIterator[Runtime]:
        """Run the app's runtime (storage threads, timers, hooks) for the body; on exit,
        shut down gracefully. Transports enter it; so does a host application's lifespan
        when the ASGI app is mounted inside it."""
        if self._runtime is not None:
            raise RuntimeError("this app is already being served")
        runtime = Runtime(self, **options)
        self._runtime = runtime
        try:
            async with anyio.create_task_group() as group:
                await group.start(runtime.run)
                try:
                    yield runtime
                finally:
                    await runtime.shutdown()
        finally:
            self._runtime = None

    @property
    def connection_count(self) -> int:
        """Open connections as the engine counts them (0 when not serving)."""
        return self._runtime.engine.connection_count if self._runtime is not None else 0

    @property
    def subscription_count(self) -> int:
        return self._runtime.engine.subscription_count if self._runtime is not None else 0

    def broadcast(
        self,
        payload: Mapping[str, Any],
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> int:
        """Queue ``payload`` (one JSON text frame) for every open connection, or for those
        whose connection metadata (the dict hooks see as ``ctx.metadata``) ``predicate``
        accepts.  Returns how many connections it was queued for.  It counts against each
        connection's outbound limit like any other frame."""
        return self._require_runtime().broadcast(encode_json(payload), predicate)

    def notify_change(
        self,
        entity: str,
        operation: Operation | str,
        row: dict[str, Any],
        *,
        schema: str | None = None,
    ) -> None:
        """Report a write made outside the server (another process, a batch job) so that
        matching subscribers are notified.  ``row`` is the full row after the write, or
        for a delete the full row as it was; it is coerced to the column types."""
        runtime = self._require_runtime()
        runtime.feed(
            ChangeCommitted(
                schema=schema,
                entity=entity,
                operation=Operation(operation.lower() if isinstance(operation, str) else operation),
                row=row,
                **runtime.now(),
            )
        )

    def request_shutdown(self) -> None:
        """Start a graceful shutdown of :func:`wsspec.serve`: stop accepting, let the engine
        finish in-flight work and close every connection with 1001; ``serve`` then returns.
        Does nothing when the app is not being served that way (an ASGI server shuts down
        on its own signals)."""
        if self._shutdown_requested is not None:
            self._shutdown_requested.set()

    def _require_runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the app is not being served")
        return self._runtime
