"""Real ``wsspec`` command processes for the benchmarks and the soak-and-fault suite:
start ``wsspec serve``/``wsspec demo`` on 127.0.0.1 port 0, read the URL it prints, watch
its memory and CPU through /proc, and stop it by its PID (SIGTERM, SIGKILL after a grace
period; SIGKILL when the script that started it dies).  Also: temporary databases (a
SQLite file in a temporary directory, a PostgreSQL database created and dropped with
``createdb``/``dropdb``), the change log installed with ``wsspec changelog install``, and
the machine's description for the reports.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

WSSPEC = str(Path(sys.executable).with_name("wsspec"))
DEMO_APP = "wsspec.demo:build_app"
POSTGRES_HOST = os.environ.get("WSSPEC_BENCH_PGHOST", "127.0.0.1")
POSTGRES_PORT = os.environ.get("WSSPEC_BENCH_PGPORT", "5432")
POSTGRES_USER = os.environ.get("WSSPEC_BENCH_PGUSER", "postgres")


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the starting process dies (Linux), so that a
    server never outlives a script killed before its ``finally`` could stop it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WsspecProcess:
    """``wsspec COMMAND ... --port 0``; stderr (its log) goes to ``log_path``."""

    def __init__(
        self,
        command: list[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        role: str = "wsspec",
        ready_timeout: float = 60.0,
    ) -> None:
        self.role = role
        self.log_path = log_path
        self.command = [WSSPEC, *command, "--port", "0"]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        self.url = ""
        self.killed = False
        self.stop_seconds = 0.0
        try:
            self.url = self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self, timeout: float) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"{self.command}: not listening after {timeout} s")
        line = self.process.stdout.readline().decode().strip()
        url = line.split()[-1] if line else ""
        if not url.startswith("ws://127.0.0.1:"):
            raise RuntimeError(f"{self.command} failed to start: {line!r}\n{self.log()[-2000:]}")
        return url

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, by PID."""
        self.killed = True
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(15)
        self._close_pipe()

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status (negative:
        the signal that ended it) and the seconds it took in ``self.stop_seconds`` (0: it
        had already exited)."""
        began = time.monotonic()
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(15)
            self.stop_seconds = time.monotonic() - began
        self._close_pipe()
        return self.process.returncode

    def _close_pipe(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve(
    db_url: str,
    log_path: Path,
    *,
    app: str = DEMO_APP,
    change_feed: bool = False,
    cwd: Path | None = None,
    extra: tuple[str, ...] = (),
    role: str = "wsspec",
    log_level: str = "info",
) -> WsspecProcess:
    """``wsspec serve APP --db URL [--change-feed]`` on a free port."""
    command = ["serve", app, "--db", db_url, "--log-level", log_level, *extra]
    if change_feed:
        command.append("--change-feed")
    return WsspecProcess(command, log_path, cwd=cwd, role=role)


def install_changelog(db_url: str, app: str = DEMO_APP, cwd: Path | None = None) -> str:
    """``wsspec changelog install``; returns its output line."""
    done = subprocess.run(
        [WSSPEC, "changelog", "install", app, "--db", db_url],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wsspec changelog install failed: {done.stderr}")
    return done.stdout.strip()


# --- databases ------------------------------------------------------------------------------


def postgres_url(name: str) -> str:
    return f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


def _pg_command(*args: str) -> list[str]:
    return [*args, "-h", POSTGRES_HOST, "-p", POSTGRES_PORT, "-U", POSTGRES_USER]


def postgres_available() -> bool:
    if shutil.which("createdb") is None:
        return False
    done = subprocess.run(
        _pg_command("pg_isready"), capture_output=True, text=True, timeout=30, check=False
    )
    return done.returncode == 0


@contextlib.contextmanager
def postgres_database(prefix: str = "wsspec_bench") -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), dropped afterwards (``WITH (FORCE)``)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    subprocess.run(_pg_command("createdb", name), check=True, timeout=60)
    try:
        yield postgres_url(name)
    finally:
        for _ in range(30):  # the server may be restarting (the fault suite)
            done = subprocess.run(
                _pg_command(
                    "psql", "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                ),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode == 0:
                break
            time.sleep(1)


@contextlib.contextmanager
def sqlite_database(prefix: str = "wsspec-bench") -> Iterator[str]:
    """A SQLite file in a fresh temporary directory (its URL), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield f"sqlite:///{Path(tmp) / 'app.db'}"


def sqlite_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


@contextlib.contextmanager
def database(kind: str, prefix: str = "wsspec_bench") -> Iterator[str]:
    if kind == "sqlite":
        with sqlite_database(prefix) as url:
            yield url
    elif kind == "postgresql":
        with postgres_database(prefix) as url:
            yield url
    else:
        raise ValueError(kind)


# --- the machine ----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    versions = []
    for package in (
        "trio",
        "trio-websocket",
        "wsproto",
        "uvicorn",
        "hypercorn",
        "peewee",
        "orjson",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    postgres = "unavailable"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            _pg_command("psql", "-d", "postgres", "-tAc", "SHOW server_version"),
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0:
            postgres = f"PostgreSQL {done.stdout.strip()} on the same host"
    import sqlite3

    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"CPython {platform.python_version()}",
        "libraries": ", ".join(versions),
        "sqlite": f"SQLite {sqlite3.sqlite_version}",
        "postgresql": postgres,
        "load_average_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def write_section(page: Path, name: str, text: str, skeleton: str) -> None:
    """Replace what lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in
    ``page`` (created from ``skeleton`` when missing) by ``text``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = page.read_text() if page.exists() else skeleton
    if begin not in content or end not in content:
        content = content.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
