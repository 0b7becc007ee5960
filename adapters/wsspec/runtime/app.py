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

from .metrics import ServerMetrics
from .runtime import ConnectionInfo, Runtime
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

    Operations (docs/operations.md): :attr:`metrics` counts for Prometheus (served at
    ``/metrics`` with ``/healthz`` and ``/readyz``); :meth:`connections` and
    :meth:`close_connections` list and close connections (a revoked token) from any task
    or thread.
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
        #: What the server counts, and the per-app Prometheus registry it is exposed
        #: from (``app.metrics.registry``); kept across runs of the app.
        self.metrics = ServerMetrics()
        self._runtime: Runtime | None = None
        self._shutdown_requested: anyio.Event | None = None
        self._asgi: ASGIApp | None = None
        self._metrics_url: str | None = None

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
    async def running(
        self, *, metrics_address: tuple[str, int] | None = None, **options: Any
    ) -> AsyncIterator[Runtime]:
        """Run the app's runtime (storage threads, timers, hooks) for the body; on exit,
        shut down gracefully. Transports enter it; so does a host application's lifespan
        when the ASGI app is mounted inside it.

        ``metrics_address=(host, port)`` also serves ``/metrics``, ``/healthz`` and
        ``/readyz`` over plain HTTP on that address (port 0 picks one;
        :attr:`metrics_url` says which) for as long as the runtime runs."""
        if self._runtime is not None:
            raise RuntimeError("this app is already being served")
        runtime = Runtime(self, **options)
        self._runtime = runtime
        try:
            async with anyio.create_task_group() as group:
                await group.start(runtime.run)
                try:
                    if metrics_address is not None:
                        from ..operations.http_server import serve_operations

                        host, port = metrics_address
                        self._metrics_url = await group.start(serve_operations, self, host, port)
                    yield runtime
                finally:
                    await runtime.shutdown()
                    # The operations endpoint answers (/readyz: shutting down) until here.
                    group.cancel_scope.cancel()
        finally:
            self._runtime = None
            self._metrics_url = None

    @property
    def metrics_url(self) -> str | None:
        """``http://HOST:PORT/metrics`` while :meth:`running` serves the operations
        endpoint on an address of its own (``metrics_address``; ``--metrics-port``)."""
        return self._metrics_url

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

    # --- revocation: the Go handler's GetConnection and Close --------------------------------

    def connections(self) -> list[ConnectionInfo]:
        """The open connections: id, remote address, when accepted, and a copy of the
        metadata hooks stored (``ctx.metadata``). Safe from any task or thread (from
        another thread it waits for the event loop to answer); empty when not served."""
        runtime = self._runtime
        if runtime is None:
            return []
        return runtime.call_soon_and_wait(runtime.connection_infos)

    def connection(self, connection_id: Any) -> ConnectionInfo | None:
        """One open connection by its id (``ctx.connection_id`` in hooks), or ``None``."""
        runtime = self._runtime
        if runtime is None:
            return None
        return runtime.call_soon_and_wait(lambda: runtime.connection_info(connection_id))

    def close_connections(
        self,
        predicate: Callable[[ConnectionInfo], bool],
        *,
        code: int = 1008,
        reason: str = "revoked",
    ) -> int:
        """Close every open connection ``predicate`` selects, with close ``code`` (1008
        policy violation by default; 1000-1014 as RFC 6455 allows, or 3000-4999) and
        ``reason`` (at most 123 bytes). Returns how many. Safe from any task or thread.

        What was queued for them is dropped and nothing more is read from them; the
        engine sees each end as any other close, so ``before_disconnect`` and
        ``after_disconnect`` hooks run. ``predicate`` runs on the event loop thread for
        every connection before any is closed: keep it quick; if it raises, none is
        closed and the exception reaches the caller."""
        runtime = self._runtime
        if runtime is None:
            return 0
        return runtime.call_soon_and_wait(lambda: runtime.close_where(predicate, code, reason))

    def close_connection(
        self, connection_id: Any, *, code: int = 1008, reason: str = "revoked"
    ) -> bool:
        """Close one connection by id (see :meth:`close_connections`). Whether it was
        open."""
        closed = self.close_connections(
            lambda info: info.id == connection_id, code=code, reason=reason
        )
        return closed > 0

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
