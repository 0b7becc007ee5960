"""What the serving subcommands (``demo``, ``serve``) share: logging, and running an app
on the chosen server until SIGINT or SIGTERM (their flags are in :mod:`.flags`), as one
process or as ``--workers`` processes (:mod:`wsspec.operations.workers`).

Imported only when such a subcommand runs: it needs the ``server`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from functools import partial

from .. import App
from ..operations import logs

logger = logging.getLogger("wsspec.cli")


def configure_logging(level: str, log_format: str = "text") -> None:
    logs.configure_logging(level, log_format)


@dataclasses.dataclass
class Serving:
    """How to serve, from the flags: where, with TLS or not, with a metrics port or not,
    alone or as worker ``worker`` of ``--workers``."""

    name: str
    args: argparse.Namespace
    certfile: str | None = None
    keyfile: str | None = None
    ssl_context: ssl.SSLContext | None = None
    metrics_address: tuple[str, int] | None = None
    #: A worker's: the listening socket its parent bound, and where to say it is ready.
    worker: int | None = None
    sock: socket.socket | None = None
    ready_fd: int | None = None

    @property
    def scheme(self) -> str:
        return "ws" if self.ssl_context is None else "wss"

    def url(self, port: int) -> str:
        host = self.args.host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{port}{self.args.path}"

    def ready(self, url: str, metrics_url: str | None) -> None:
        """Accepting connections: say so on stdout, or, in a worker, to the parent."""
        if self.ready_fd is not None:
            from ..operations.workers import report_ready

            report_ready(self.ready_fd, url, metrics_url)
            self.ready_fd = None
            return
        print(f"wsspec {self.name} listening on {url}", flush=True)
        if metrics_url is not None:
            print(f"wsspec {self.name} metrics on {metrics_url}", flush=True)


def run_app(app: App, *, name: str, args: argparse.Namespace) -> int:
    """Serve ``app`` on ``args.server`` until SIGINT or SIGTERM, then shut down gracefully
    (a second signal exits at once).  Prints ``wsspec NAME listening on URL`` on stdout
    when ready (and ``wsspec NAME metrics on URL`` with ``--metrics-port``).  With
    ``--workers N`` > 1 this process supervises N worker processes instead."""
    serving = _serving(name, args)
    logs.configure_logging(args.log_level, args.log_format, worker=serving.worker)
    if args.workers > 1 and serving.worker is None:
        from ..operations.workers import supervise

        if not app.change_feed:
            logger.warning(
                "--workers %d without the change feed: a subscriber sees only the writes "
                "made through its own worker process; serve with --change-feed "
                '(docs/operations.md "Workers")',
                args.workers,
            )
        return supervise(serving)
    runner: Callable[[App, Serving], None] = {
        "trio": _run_trio,
        "uvicorn": _run_uvicorn,
        "hypercorn": _run_hypercorn,
    }[args.server]
    runner(app, serving)
    logger.info("stopped")
    return 0


def _serving(name: str, args: argparse.Namespace) -> Serving:
    """The flags, checked: a certificate that does not load is a one-line error at once,
    not a traceback from the server later."""
    serving = Serving(name=name, args=args)
    if (args.certfile is None) != (args.keyfile is None):
        raise SystemExit(f"wsspec {name}: --certfile and --keyfile go together")
    if args.certfile is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise SystemExit(f"wsspec {name}: cannot load --certfile/--keyfile: {exc}") from None
        serving.ssl_context = context
        serving.certfile, serving.keyfile = args.certfile, args.keyfile
    if args.worker is not None:
        from ..operations.workers import WorkerSpec

        spec = WorkerSpec.parse(args.worker)
        serving.worker = spec.index
        serving.sock = spec.socket()
        serving.ready_fd = spec.ready_fd
        spec.watch_parent()
    if args.metrics_port is not None:
        # Each worker is a target of its own: PORT+K (or a free port each, for 0).
        offset = serving.worker or 0
        port = args.metrics_port + offset if args.metrics_port else 0
        serving.metrics_address = (args.host, port)
    return serving


async def _until_signalled(on_first: Callable[[], None]) -> None:
    """Wait for SIGINT or SIGTERM; call ``on_first`` on the first, exit at once on the
    second."""
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        received = 0
        async for signum in signals:
            received += 1
            if received == 1:
                logger.info("%s: shutting down", signal.Signals(signum).name)
                on_first()
            else:
                logger.warning("%s again: exiting now", signal.Signals(signum).name)
                os._exit(1)


def _run_trio(app: App, serving: Serving) -> None:
    import trio

    from .. import serve

    args = serving.args

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run_server(task_status: trio.TaskStatus[str]) -> None:
                try:
                    await serve(
                        app,
                        args.host,
                        args.port,
                        path=args.path,
                        ssl_context=serving.ssl_context,
                        sock=serving.sock,
                        metrics_address=serving.metrics_address,
                        task_status=task_status,
                    )
                finally:
                    done.set()

            url = await nursery.start(run_server)
            serving.ready(url, app.metrics_url)
            nursery.start_soon(_until_signalled, app.request_shutdown)
            await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)


def _run_uvicorn(app: App, serving: Serving) -> None:
    from ..transports.asgi_servers import bind_socket, uvicorn_server

    args = serving.args
    sock = serving.sock if serving.sock is not None else bind_socket(args.host, args.port)
    server = uvicorn_server(
        app,
        path=args.path,
        log_level=args.log_level,
        certfile=serving.certfile,
        keyfile=serving.keyfile,
        metrics_address=serving.metrics_address,
    )
    url = serving.url(sock.getsockname()[1])
    logger.info("serving with uvicorn")
    # uvicorn has no "started" callback: a thread waits for its flag (set once the
    # lifespan ran and it accepts), then announces.
    stopped = threading.Event()

    def announce_when_started() -> None:
        while not server.started:
            if stopped.wait(0.01):
                return
        serving.ready(url, app.metrics_url)

    threading.Thread(target=announce_when_started, name="wsspec-announce", daemon=True).start()
    # uvicorn handles SIGINT and SIGTERM itself: it stops accepting, closes the
    # WebSockets (1012) and runs the lifespan's shutdown; then it raises the signal again
    # with the handlers it found. Those end the process quietly, as the other servers do.
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        stopped.set()


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_hypercorn(app: App, serving: Serving) -> None:
    import trio

    from ..transports.asgi_servers import bind_socket, serve_hypercorn

    args = serving.args
    sock = serving.sock if serving.sock is not None else bind_socket(args.host, args.port)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_signalled, stop.set)
            async with trio.open_nursery() as server:
                await server.start(
                    partial(
                        serve_hypercorn,
                        app,
                        sock,
                        path=args.path,
                        shutdown_trigger=stop.wait,
                        certfile=serving.certfile,
                        keyfile=serving.keyfile,
                        metrics_address=serving.metrics_address,
                    )
                )
                serving.ready(serving.url(sock.getsockname()[1]), app.metrics_url)
                logger.info("serving with hypercorn (trio worker)")
            nursery.cancel_scope.cancel()
        # hypercorn returned: its lifespan shut the runtime down.

    trio.run(main)
