"""``wsspec watch`` and ``wsspec call`` as real subprocesses against real servers: what
they print, their exit statuses, a watch that lives through a SIGKILLed server and a
resume the server cannot honour, and a clean stop on SIGINT."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import wsspec.client as wc
from client_servers import WSSPEC, Server, database, free_port, install_changelog, serving
from test_client_resume import trim_log
from wsspec.cli import main
from wsspec.cli.watch import parse_filter


def wsspec(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WSSPEC, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_filter_values_are_json_when_they_parse_else_strings() -> None:
    assert parse_filter("age:gte:18") == {"column": "age", "operator": "gte", "value": 18}
    assert parse_filter('status:in:["a","b"]')["value"] == ["a", "b"]
    assert parse_filter("status:eq:active")["value"] == "active"
    assert parse_filter("email:eq:null")["value"] is None
    assert parse_filter("note:eq:a:b")["value"] == "a:b"  # the value keeps its colons
    assert parse_filter('name:eq:"42"')["value"] == "42"  # quoted: the string "42"
    for bad in ("status", "status:eq", ":eq:1", "status::1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_filter(bad)


def test_call_prints_the_response_and_exits_1_on_an_error(plain_server: Server) -> None:
    server = plain_server
    created = wsspec(
        "call", server.url, "create", "users", "--data", '{"name": "Ann", "status": "active"}'
    )
    assert created.returncode == 0, created.stderr
    response = json.loads(created.stdout)
    assert response["success"] is True and response["data"]["name"] == "Ann"
    assert created.stdout.count("\n") == 1  # one JSON line

    found = wsspec(
        "call",
        server.url,
        "read",
        "users",
        "--filter",
        'status:in:["active","x"]',
        "--filter",
        "name:eq:Ann",
        "--limit",
        "5",
        "--loop",
        "trio",
    )
    assert found.returncode == 0, found.stderr
    read = json.loads(found.stdout)
    assert read["data"] == [response["data"]] and read["metadata"]["limit"] == 5

    missing = wsspec("call", server.url, "update", "users", "--id", "999999", "--data", "{}")
    assert missing.returncode == 1
    error = json.loads(missing.stdout)
    assert error["success"] is False and error["error"]["code"] == "not_found"


def test_call_refuses_what_it_cannot_send(
    plain_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server = plain_server
    assert main(["call", server.url, "read"]) == 2
    assert "needs an ENTITY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_json:
        main(["call", server.url, "create", "users", "--data", "{nope"])
    assert bad_json.value.code == 2 and "not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["call", server.url, "drop", "users"])
    assert "invalid choice: 'drop'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["call", "http://example.com/ws", "meta"])
    assert "not a ws:// or wss:// URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["watch", server.url, "users", "--max-backoff", "0"])
    assert "expected a positive number of seconds" in capsys.readouterr().err


def test_nothing_listening_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    done = wsspec("watch", url, "users")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "wsspec watch: connect_failed: OSError: All connection attempts failed"
    ]
    assert main(["call", url, "meta"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "wsspec call: connect_failed: OSError: All connection attempts failed\n"


def test_a_missing_client_extra_is_named() -> None:
    code = (
        "import sys\n"
        "sys.modules['wsproto'] = None  # as if the client extra were not installed\n"
        "from wsspec.cli import main\n"
        "raise SystemExit(main(['call', 'ws://127.0.0.1:1/ws', 'meta']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "wsspec call needs the 'client' extra (module 'wsproto' is not installed): "
        "pip install 'wsspec[client]'"
    )


class Lines:
    """A subprocess's stdout, line by line, with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(
            target=lambda: [self.queue.put(line) for line in stream], daemon=True
        ).start()

    def next(self, timeout: float = 15) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.queue.get(timeout=timeout))
        return found

    def empty_for(self, seconds: float) -> bool:
        time.sleep(seconds)
        return self.queue.empty()


def create(url: str, row: dict[str, Any]) -> dict[str, Any]:
    async def run() -> Any:
        async with wc.connect(url) as client:
            return await client.create("users", row)

    made: dict[str, Any] = anyio.run(run)
    return made


def test_watch_prints_each_change_once_across_a_sigkill_and_a_resync(tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as (db, sql):
        install_changelog(db)
        sql("INSERT INTO users (name, status) VALUES ('Ann', 'active')")
        with serving(tmp_path, db) as server:
            watch = subprocess.Popen(
                [
                    WSSPEC,
                    "watch",
                    server.url,
                    "users",
                    "--filter",
                    "status:eq:active",
                    "--snapshot",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                lines = Lines(watch)
                snapshot = lines.next()
                assert snapshot["type"] == "snapshot" and snapshot["entity"] == "users"
                assert [row["name"] for row in snapshot["rows"]] == ["Ann"]
                assert snapshot["seq"] == 1

                bob = create(server.url, {"name": "Bob", "status": "active"})
                note = lines.next()
                assert (note["type"], note["change"], note["seq"], note["data"]) == (
                    "notification",
                    "added",
                    2,
                    bob,
                )
                create(server.url, {"name": "Away", "status": "away"})  # seq 3, not ours

                server.kill()
                sql("INSERT INTO users (name, status) VALUES ('Cy', 'active')")  # seq 4
                sql("UPDATE users SET status = 'away' WHERE name = 'Ann'")  # seq 5
                server.start()
                # Replayed after the reconnection, as the server sent them.
                cy, ann = lines.next(), lines.next()
                assert (cy["seq"], cy["change"], cy["data"]["name"]) == (4, "added", "Cy")
                assert (ann["seq"], ann["change"], ann["data"]["name"]) == (5, "removed", "Ann")

                server.kill()
                sql("INSERT INTO users (name, status) VALUES ('Dee', 'active')")  # seq 6
                sql("INSERT INTO users (name, status) VALUES ('Eve', 'away')")  # seq 7
                trim_log(db)  # the log keeps only seq 7: the watch's position is gone
                server.start()
                resync = lines.next()
                assert resync["type"] == "resync" and resync["reason"] == "not_recovered"
                assert resync["seq"] == 7 and resync["entity"] == "users"
                assert sorted(row["name"] for row in resync["rows"]) == ["Bob", "Cy", "Dee"]
                fay = create(server.url, {"name": "Fay", "status": "active"})
                assert lines.next()["data"] == fay
                assert lines.empty_for(0.3)
            finally:
                if watch.poll() is None:
                    os.kill(watch.pid, signal.SIGINT)
                status = watch.wait(10)
                assert watch.stderr is not None
                stderr = watch.stderr.read()
                for stream in (watch.stdout, watch.stderr):
                    if stream is not None:
                        stream.close()
            assert status == 0, stderr
            assert "Traceback" not in stderr
            assert "reconnecting in" in stderr
