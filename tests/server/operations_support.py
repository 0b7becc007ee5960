"""Helpers of the operations tests (tests/server/test_operations_*.py): an app served on
the current transport with TLS and the metrics endpoint, an HTTP GET over a real socket,
Prometheus text read back into samples, certificates made by trustme, and ``wsspec``
processes stopped by PID."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import trustme
import wsserver_support
from prometheus_client.parser import text_string_to_metric_families
from wsspec import App

WSSPEC = str(Path(sys.executable).with_name("wsspec"))


@dataclasses.dataclass(frozen=True)
class Certificates:
    """A CA made for the test, and a server certificate it signed for 127.0.0.1."""

    certfile: str
    keyfile: str
    #: A client context that trusts only that CA.
    client_context: ssl.SSLContext

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


def make_certificates(folder: Path) -> Certificates:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "server.pem", folder / "server.key"
    server.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    server.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return Certificates(str(certfile), str(keyfile), client_context)


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    #: The operations endpoint on its own port (``metrics_address``).
    metrics_url: str


@contextlib.asynccontextmanager
async def serving(
    app: App, *, certificates: Certificates | None = None, **options: Any
) -> AsyncIterator[Served]:
    """``wsserver_support.serving`` on the current transport, with the operations endpoint
    on a port of its own and, given ``certificates``, TLS (wss://)."""
    options["metrics_address"] = ("127.0.0.1", 0)
    if certificates is not None:
        if wsserver_support.transport == "trio":
            options["ssl_context"] = certificates.server_context()
        else:
            options["certfile"] = certificates.certfile
            options["keyfile"] = certificates.keyfile
    async with wsserver_support.serving(app, **options) as url:
        await wsserver_support.wait_until(lambda: app.metrics_url is not None)
        assert app.metrics_url is not None
        if certificates is not None:
            url = url.replace("ws://", "wss://")
        yield Served(url, app.metrics_url)


@dataclasses.dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_get(
    url: str, *, method: str = "GET", ssl_context: ssl.SSLContext | None = None
) -> HttpReply:
    """One HTTP/1.1 request over a real socket, read to the end (the servers close)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    stream: trio.abc.Stream
    if parts.scheme == "https":
        stream = await trio.open_ssl_over_tcp_stream(
            parts.hostname, parts.port, ssl_context=ssl_context
        )
    else:
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        request = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return HttpReply(int(lines[0].split(" ")[1]), headers, body)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def samples(text: bytes | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(sample name, labels): value}."""
    found = {}
    for family in text_string_to_metric_families(
        text.decode() if isinstance(text, bytes) else text
    ):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value, 0 when absent (a counter not yet incremented)."""
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = await http_get(metrics_url)
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain"), reply.headers
    return samples(reply.body)


class Command:
    """A ``wsspec`` process started with its output piped, stopped by PID."""

    def __init__(self, args: list[str], cwd: Path, *, lines: int = 1, timeout: float = 30) -> None:
        self.process = subprocess.Popen(
            [WSSPEC, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stderr = ""
        #: The first ``lines`` lines it printed on stdout (its announcements).
        self.lines: list[str] = []
        reader = threading.Thread(target=self._read_lines, args=(lines,), daemon=True)
        reader.start()
        reader.join(timeout)
        if len(self.lines) < lines:
            self.stop()
            raise AssertionError(f"wsspec {args[0]} did not start: {self.lines} {self.stderr}")

    def _read_lines(self, count: int) -> None:
        assert self.process.stdout is not None
        while len(self.lines) < count:
            line = self.process.stdout.readline()
            if not line:
                return
            self.lines.append(line.rstrip("\n"))

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` s; its status."""
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        return self.finish()

    def finish(self) -> int:
        """Collect stderr of an exited process; its status."""
        assert self.process.returncode is not None
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.stderr = self.process.stderr.read()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self.process.returncode


@contextlib.contextmanager
def command(args: list[str], cwd: Path, *, lines: int = 1) -> Iterator[Command]:
    started = Command(args, cwd, lines=lines)
    try:
        yield started
    finally:
        started.stop()
