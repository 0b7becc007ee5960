"""``/metrics``, ``/healthz`` and ``/readyz``: what each answers, whichever HTTP server asks
(the ASGI transport's routes, or :mod:`.http_server` on ``--metrics-port``).

* ``/healthz``: alive. 200 while the app's runtime exists (during a graceful shutdown too:
  a liveness probe must not restart a server that is finishing its work), else 503.
* ``/readyz``: worth sending clients to. 200 when the runtime runs and is not shutting
  down, the database answers a cheap query (``SELECT 1``, or the change log's last ``seq``
  with the change feed on) run in a worker thread within ``PROBE_TIMEOUT``, and, with the
  change feed, the engine has routed everything committed before the check within
  ``CATCH_UP``. Else 503. The body is a JSON object saying which check failed.
* ``/metrics``: the app's registry in Prometheus' text format. With the change feed it
  first reads the log's last ``seq`` (the same probe) for ``wsspec_change_feed_lag_entries``.

At most one probe runs at a time per server: a database that hangs costs one thread, not
one per scrape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from ..runtime import App, Runtime

logger = logging.getLogger("wsspec.operations")

#: The paths answered; any other is the caller's (404, or the WebSocket endpoint).
PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
#: Seconds the database probe may take before /readyz says the database does not answer.
PROBE_TIMEOUT = 2.0
#: Seconds the change feed gets to route what the log held when /readyz read its end.
CATCH_UP = 1.0

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


async def respond(app: App, path: str) -> Reply:
    """The answer to ``GET path`` (one of :data:`PATHS`) for ``app``."""
    if path == "/healthz":
        if app._runtime is None:
            return Reply(503, _TEXT, b"not running\n")
        return Reply(200, _TEXT, b"ok\n")
    if path == "/readyz":
        ready, report = await readiness(app)
        return Reply(200 if ready else 503, _JSON, orjson.dumps(report) + b"\n")
    if path == "/metrics":
        runtime = app._runtime
        if runtime is not None and runtime.engine.change_feed:
            # On failure the lag keeps its last value; /readyz says what is wrong.
            with contextlib.suppress(Exception):
                await probe(runtime)
        return Reply(200, CONTENT_TYPE_LATEST, generate_latest(app.metrics.registry))
    return Reply(404, _TEXT, b"not found\n")


async def readiness(app: App) -> tuple[bool, dict[str, Any]]:
    """Whether ``app`` is ready for clients, and the report /readyz returns."""
    runtime = app._runtime
    if runtime is None or not runtime.running:
        return False, {"ready": False, "status": "not running"}
    if runtime.shutting_down:
        return False, {"ready": False, "status": "shutting down"}
    report: dict[str, Any] = {"ready": False}
    engine = runtime.engine
    try:
        log_end = await probe(runtime)
    except TimeoutError:
        report["database"] = f"no answer within {PROBE_TIMEOUT} s"
        _log_change(runtime, f"database: {report['database']}")
        return False, report
    except Exception as exc:
        # The operator's log gets the database's message; the body, which anyone who can
        # reach the port reads, only its kind.
        report["database"] = f"unreachable ({type(exc).__name__})"
        _log_change(runtime, f"database unreachable: {type(exc).__name__}: {exc}")
        return False, report
    report["database"] = "ok"
    if not engine.change_feed:
        report["change_feed"] = "off"
    else:
        assert log_end is not None
        with anyio.move_on_after(CATCH_UP):
            while engine.position < log_end:
                await anyio.sleep(0.01)
        if engine.position < log_end:
            report["change_feed"] = (
                f"behind: routed through seq {engine.position}, log at {log_end}"
            )
            _log_change(runtime, f"change feed {report['change_feed']}")
            return False, report
        report["change_feed"] = f"caught up (seq {engine.position})"
    report["ready"] = True
    _log_change(runtime, None)
    return True, report


async def probe(runtime: Runtime) -> int | None:
    """Run the database probe in a worker thread (one at a time), within PROBE_TIMEOUT.
    Returns the change log's last ``seq`` with the change feed on (also kept for the lag
    metric), else ``None``."""
    app = runtime.app
    feed = runtime.engine.change_feed
    if runtime.probe_limiter is None:
        runtime.probe_limiter = anyio.CapacityLimiter(1)
    with anyio.fail_after(PROBE_TIMEOUT):
        # abandon_on_cancel: a database that hangs must not hang the probe; the thread
        # keeps the limiter until it returns, so no second one starts meanwhile.
        log_end = await anyio.to_thread.run_sync(
            check_storage,
            app.storage,
            feed,
            limiter=runtime.probe_limiter,
            abandon_on_cancel=True,
        )
    if feed:
        app.metrics.change_log_end = log_end
    return log_end


def check_storage(storage: Any, change_log: bool) -> int | None:
    """Blocking: raise unless the storage's database answers; return the change log's
    last ``seq`` when ``change_log``.

    A storage with a ``ping()`` method is asked that; a ``PeeweeStorage`` runs
    ``SELECT 1`` (or reads the log's end) on this thread's connection and releases it;
    any other storage (``MemoryStorage``) has no database to lose."""
    ping = getattr(storage, "ping", None)
    if callable(ping):
        ping()
        return None
    from ..storage.peewee import PeeweeStorage, changelog

    if not isinstance(storage, PeeweeStorage):
        return None
    try:
        if change_log:
            storage._connection()  # set up as the storage sets up its connections
            return changelog.last_seq(storage.database)
        storage._connection().execute("SELECT 1").fetchone()
        return None
    except Exception:
        # A connection the database dropped must not go back to the pool for the next
        # probe to fail on again.
        storage._connections.drop()
        raise
    finally:
        storage.close()


def _log_change(runtime: Runtime, problem: str | None) -> None:
    """Log readiness when it changes (a probe every few seconds must not flood the log)."""
    if problem == runtime.readiness_problem:
        return
    previous, runtime.readiness_problem = runtime.readiness_problem, problem
    if problem is not None:
        logger.warning("not ready: %s", problem)
    elif previous is not None:
        logger.info("ready again")
