"""The operations flags of ``wsspec demo`` / ``wsspec serve`` as a user runs them: real
processes stopped by PID; TLS, --metrics-port and --log-format json together on every
server; the flags' checks; the JSON log format; what a --workers process is started
with."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from operations_support import command, make_certificates, samples, value
from websockets.sync.client import connect
from wsserver_support import demo_app
from wsspec.cli import build_parser
from wsspec.cli.flags import worker_arguments
from wsspec.cli.serving import run_app
from wsspec.operations.logs import JsonFormatter


def fetch(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("server", ["trio", "uvicorn", "hypercorn"])
def test_demo_serves_wss_metrics_and_json_logs(tmp_path: Path, server: str) -> None:
    certificates = make_certificates(tmp_path)
    args = ["demo", "--port", "0", "--db", "sqlite:///demo.db", "--server", server]
    args += ["--certfile", certificates.certfile, "--keyfile", certificates.keyfile]
    args += ["--metrics-port", "0", "--log-format", "json"]
    with command(args, tmp_path, lines=2) as demo:
        listening, metrics = demo.lines
        assert listening.startswith("wsspec demo listening on wss://127.0.0.1:")
        assert metrics.startswith("wsspec demo metrics on http://127.0.0.1:")
        url, metrics_url = listening.split()[-1], metrics.split()[-1]
        with connect(url, ssl=certificates.client_context, open_timeout=10) as ws:
            ws.send(
                '{"id":"1","type":"request","operation":"create","entity":"users",'
                '"data":{"name":"Jo"}}'
            )
            assert json.loads(ws.recv(timeout=10))["success"] is True
            status, body = fetch(metrics_url)
            assert status == 200
            found = samples(body)
            assert value(found, "wsspec_connections") == 1
            assert value(found, "wsspec_requests_total", operation="create", outcome="success") == 1
        status, body = fetch(metrics_url.removesuffix("/metrics") + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        assert demo.stop() == 0
    lines = [json.loads(line) for line in demo.stderr.splitlines()]
    assert lines, "no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= line.keys(), line
        assert line["time"].endswith("Z")
    (opened,) = [line for line in lines if line["message"].startswith("connection 1 opened")]
    assert opened["connection_id"] == 1
    assert opened["remote_address"].startswith("127.0.0.1:")
    assert any(line["message"] == "stopped" for line in lines) or server == "uvicorn"


def test_flags_are_checked_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process: a certificate that does not load, or half of one, is a one-line error
    before any server starts (what the command prints on stderr, with status 1)."""
    certificates = make_certificates(tmp_path)
    app = demo_app(tmp_path)
    cases = [
        (["--certfile", certificates.certfile], "--certfile and --keyfile go together"),
        (
            ["--certfile", str(tmp_path / "missing.pem"), "--keyfile", certificates.keyfile],
            "cannot load --certfile/--keyfile",
        ),
    ]
    for extra, message in cases:
        args = build_parser().parse_args(["demo", "--port", "0", *extra])
        with pytest.raises(SystemExit, match=message):
            run_app(app, name="demo", args=args)
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["demo", "--workers", "0"])
    assert refused.value.code == 2 and "must be 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--log-format", "--certfile", "--keyfile", "--metrics-port", "--workers"):
        assert flag in out
    assert "--worker " not in out  # internal


def test_a_worker_is_started_with_every_flag_but_workers() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "myapp:build",
            "--db",
            "sqlite:///x.db",
            "--change-feed",
            "--workers",
            "3",
            "--metrics-port",
            "9100",
            "--server",
            "hypercorn",
        ]
    )
    again = worker_arguments(args)
    assert again[0] == "serve" and again[-1] == "myapp:build"
    assert "--workers" not in again and "--change-feed" in again
    reparsed = build_parser().parse_args(again)
    for name in ("db", "change_feed", "metrics_port", "server", "host", "port", "path"):
        assert getattr(reparsed, name) == getattr(args, name), name
    assert reparsed.workers == 1


def test_json_log_lines_carry_extra_fields_and_tracebacks() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "wsspec.server", logging.INFO, __file__, 1, "connection %s opened", (7,), None
    )
    record.connection_id = 7
    record.database = Path("/srv/app.db")  # no JSON type: written as its str()
    line = json.loads(formatter.format(record))
    assert line["message"] == "connection 7 opened"
    assert (line["level"], line["logger"], line["connection_id"]) == ("INFO", "wsspec.server", 7)
    assert line["database"] == "/srv/app.db"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "wsspec.server", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = json.loads(formatter.format(failed))
    assert line["level"] == "ERROR" and "ValueError: boom" in line["exception"]
    assert "\n" not in formatter.format(failed)
