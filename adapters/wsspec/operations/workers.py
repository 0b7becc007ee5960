"""``wsspec serve|demo --workers N``: N server processes sharing one port, supervised by the
process the command started.

Theory of operation.  The parent binds and listens on the socket once, then starts N
workers, each the same command line with ``--worker INDEX:SOCKET_FD:READY_FD:LIFELINE_FD``
instead of ``--workers``; each inherits the listening socket and accepts on it with its
own server (trio-websocket, uvicorn or hypercorn), runtime, storage threads and, with the
change feed, tailer.  Why one inherited socket rather than ``SO_REUSEPORT``:

* every server takes a socket already bound (trio: a ``SocketListener`` around it;
  uvicorn: ``sockets=``; hypercorn: ``fd://``), so one code path serves all three, while
  ``SO_REUSEPORT`` needs each server to set the option before it binds, which neither
  ``trio.open_tcp_listeners`` nor hypercorn's ``bind`` does;
* ``--port 0`` is one port for all: workers each binding port 0 with ``SO_REUSEPORT``
  would each get a port of their own;
* it behaves the same on every platform (``SO_REUSEPORT`` balances connections only on
  Linux; elsewhere the last socket bound takes them all, or the option does not exist);
  it is also what ``uvicorn --workers``, ``hypercorn --workers`` and gunicorn do.

Its cost: the workers take connections from one accept queue, whoever is free first, so
the balance is less even than ``SO_REUSEPORT``'s hashing (a worker busy on the loop
accepts less, which is the right bias).

A worker reports that it accepts connections with one JSON line on its ``READY_FD`` pipe
(its pid and metrics URL); the parent announces the server once all have.  Workers run in
a session of their own, so a Ctrl-C in a terminal reaches the parent only, which sends
SIGTERM to each worker by its PID: each then shuts down gracefully, once (a second signal
would make a worker exit at once).  Each worker also holds the read end of a *lifeline*
pipe whose write end only the parent holds: if the parent dies without stopping them
(SIGKILL), the pipe reads end-of-file and the worker sends itself SIGTERM, so no worker
outlives its parent.  A worker that ends while the parent did not ask it to is logged at
ERROR with its status; the parent then stops the others and exits with status 1
(restarting is the job of the process manager above it: systemd, Kubernetes).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

import orjson

from ..runtime import SHUTDOWN_TIMEOUT

if TYPE_CHECKING:
    import trio

    from ..cli.serving import Serving

logger = logging.getLogger("wsspec.workers")

#: Seconds every worker has to start accepting (import, open the database, start the
#: tailer) before the parent gives up.
START_TIMEOUT = 60.0
#: Seconds the workers have to shut down gracefully once told, before they are killed:
#: their own shutdown is bounded by the runtime's shutdown_timeout.
STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 5.0
#: Bytes of a worker's ready line read at most.
MAX_READY_LINE = 4096


# --- the worker's side ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What ``--worker INDEX:SOCKET_FD:READY_FD:LIFELINE_FD`` tells a worker."""

    index: int
    socket_fd: int
    ready_fd: int
    lifeline_fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        index, socket_fd, ready_fd, lifeline_fd = (int(part) for part in text.split(":"))
        return cls(index, socket_fd, ready_fd, lifeline_fd)

    def socket(self) -> socket.socket:
        """The listening socket the parent bound."""
        return socket.socket(fileno=self.socket_fd)

    def watch_parent(self) -> None:
        """Stop gracefully (SIGTERM to this process) if the parent dies."""
        threading.Thread(
            target=_watch_lifeline, args=(self.lifeline_fd,), name="wsspec-lifeline", daemon=True
        ).start()


def _watch_lifeline(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass  # the parent never writes; only end-of-file matters
    except OSError:
        pass
    logger.error("the --workers parent process is gone: shutting down")
    os.kill(os.getpid(), signal.SIGTERM)


def report_ready(fd: int, url: str, metrics_url: str | None) -> None:
    """Tell the parent this worker accepts connections."""
    try:
        line = {"pid": os.getpid(), "url": url, "metrics_url": metrics_url}
        os.write(fd, orjson.dumps(line) + b"\n")
    finally:
        os.close(fd)


# --- the parent's side --------------------------------------------------------------------------


@dataclasses.dataclass
class _Worker:
    index: int
    process: trio.Process
    ready_fd: int
    report: dict[str, Any] | None = None


def supervise(serving: Serving) -> int:
    """Run ``serving.args.workers`` workers until SIGINT or SIGTERM; the exit status."""
    import trio

    return trio.run(_supervise, serving)


async def _supervise(serving: Serving) -> int:
    import trio

    from ..cli.flags import worker_arguments
    from ..transports.asgi_servers import bind_socket

    args = serving.args
    command = [sys.executable, "-m", "wsspec.cli", *worker_arguments(args)]
    sock = bind_socket(args.host, args.port)
    lifeline_read, lifeline_write = os.pipe()
    workers: list[_Worker] = []
    stopping = trio.Event()
    failures: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, stopping, workers)
            for index in range(args.workers):
                ready_read, ready_write = os.pipe()
                try:
                    spec = f"{index}:{sock.fileno()}:{ready_write}:{lifeline_read}"
                    process = await trio.lowlevel.open_process(
                        [*command, "--worker", spec],
                        pass_fds=(sock.fileno(), ready_write, lifeline_read),
                        start_new_session=True,
                    )
                finally:
                    os.close(ready_write)
                worker = _Worker(index, process, ready_read)
                workers.append(worker)
                nursery.start_soon(_watch, worker, stopping, failures)
            logger.info(
                "started %d workers: pids %s",
                len(workers),
                ", ".join(str(w.process.pid) for w in workers),
            )
            if await _all_ready(workers, stopping, failures):
                _announce(serving, sock.getsockname()[1], workers)
            # The workers hold the socket; the parent accepts nothing.
            sock.close()
            os.close(lifeline_read)
            lifeline_read = -1
            await stopping.wait()
            await _stop(workers, failures)
            nursery.cancel_scope.cancel()
    finally:
        sock.close()
        for fd in (lifeline_read, lifeline_write, *(w.ready_fd for w in workers)):
            if fd >= 0:
                os.close(fd)
    if failures:
        return 1
    return 0 if all(w.process.returncode == 0 for w in workers) else 1


async def _all_ready(workers: list[_Worker], stopping: trio.Event, failures: list[str]) -> bool:
    """Read each worker's ready line. ``False`` if one ends first, if they take longer than
    START_TIMEOUT (then stopping is set), or if stopping is set meanwhile (a signal)."""
    import trio

    ready = False
    async with trio.open_nursery() as waiting:

        async def give_up_when_stopping() -> None:
            await stopping.wait()
            waiting.cancel_scope.cancel()

        waiting.start_soon(give_up_when_stopping)
        with trio.move_on_after(START_TIMEOUT) as timer:
            for worker in workers:
                fd, worker.ready_fd = worker.ready_fd, -1
                worker.report = await _read_ready(fd)
                if worker.report is None:
                    break  # it ended first: _watch says how, and stops the others
            else:
                ready = True
        if timer.cancelled_caught:
            failures.append(f"the workers did not start within {START_TIMEOUT:.0f} s")
            logger.error("%s", failures[-1])
            stopping.set()
        waiting.cancel_scope.cancel()
    return ready


async def _read_ready(fd: int) -> dict[str, Any] | None:
    import trio

    async with trio.lowlevel.FdStream(fd) as stream:
        line = b""
        while not line.endswith(b"\n") and len(line) < MAX_READY_LINE:
            chunk = await stream.receive_some(MAX_READY_LINE)
            if not chunk:
                return None
            line += chunk
    report: dict[str, Any] = orjson.loads(line)
    return report


def _announce(serving: Serving, port: int, workers: list[_Worker]) -> None:
    name = serving.name
    print(f"wsspec {name} listening on {serving.url(port)}", flush=True)
    for worker in workers:
        assert worker.report is not None
        line = f"wsspec {name} worker {worker.index} pid {worker.process.pid}"
        metrics_url = worker.report.get("metrics_url")
        if metrics_url:
            line += f" metrics on {metrics_url}"
        print(line, flush=True)


async def _watch(worker: _Worker, stopping: trio.Event, failures: list[str]) -> None:
    status = await worker.process.wait()
    how = f"exited with status {status}" if status >= 0 else _signalled(status)
    if stopping.is_set():
        log = logger.info if status == 0 else logger.error
        log("worker %d (pid %d) %s", worker.index, worker.process.pid, how)
        return
    failures.append(f"worker {worker.index} {how}")
    logger.error(
        "worker %d (pid %d) %s unexpectedly: stopping the others",
        worker.index,
        worker.process.pid,
        how,
    )
    stopping.set()


def _signalled(status: int) -> str:
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


async def _stop(workers: list[_Worker], failures: list[str]) -> None:
    """SIGTERM to every running worker; SIGKILL to those still running after
    STOP_TIMEOUT."""
    import trio

    for worker in workers:
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT):
        for worker in workers:
            await worker.process.wait()
    for worker in workers:
        if worker.process.returncode is None:
            failures.append(f"worker {worker.index} did not stop")
            logger.error(
                "worker %d (pid %d) still running after %.0f s: killing it",
                worker.index,
                worker.process.pid,
                STOP_TIMEOUT,
            )
            worker.process.kill()
            await worker.process.wait()


async def _signals(stopping: trio.Event, workers: list[_Worker]) -> None:
    """The first SIGINT or SIGTERM stops the workers gracefully; a second kills them and
    exits at once."""
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        received = 0
        async for signum in signals:
            name = signal.Signals(signum).name
            received += 1
            if received == 1:
                logger.info("%s: stopping %d workers", name, len(workers))
                stopping.set()
                continue
            logger.warning("%s again: killing the workers", name)
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.kill()
            os._exit(1)
