"""The ``wsspec`` command, as a user runs it: a real subprocess, stopped with SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from websockets.asyncio.client import connect
from wsserver_support import TIMEOUT, in_asyncio

WSSPEC = str(Path(sys.executable).with_name("wsspec"))


async def create_and_read(url: str) -> tuple[dict, dict]:
    async with connect(url) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "request",
                    "operation": "create",
                    "entity": "users",
                    "data": {"name": "Cli", "status": "active"},
                }
            )
        )
        created = json.loads(await ws.recv())
        await ws.send(
            json.dumps(
                {
                    "id": "2",
                    "type": "request",
                    "operation": "read",
                    "schema": "public",
                    "entity": "users",
                }
            )
        )
        return created, json.loads(await ws.recv())


async def run_until_sigint(args: list[str], cwd: Path) -> tuple[str, str, int, tuple]:
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            [WSSPEC, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the command exited before printing its URL"
                line += chunk
            url = line.decode().split()[-1]
            replies = await in_asyncio(create_and_read, url)
            process.send_signal(signal.SIGINT)
            status = await process.wait()
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
            return line.decode(), stderr.decode(), status, replies
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize("server", ["trio", "uvicorn", "hypercorn"])
async def test_demo_starts_answers_and_stops_on_sigint(tmp_path: Path, server: str) -> None:
    line, stderr, status, (created, read) = await run_until_sigint(
        ["demo", "--port", "0", "--db", "sqlite:///demo.db", "--server", server], tmp_path
    )
    assert line.startswith("wsspec demo listening on ws://127.0.0.1:")
    assert line.rstrip().endswith("/ws") and ":0/" not in line
    assert created["success"] and created["data"]["id"] == 1
    assert [u["name"] for u in read["data"]] == ["Cli"]
    assert status == 0
    assert "connection 1 opened from 127.0.0.1:" in stderr
    assert "connection 1 closed" in stderr
    assert "stopped" in stderr
    if server != "uvicorn":  # uvicorn handles the signals itself
        assert "SIGINT: shutting down" in stderr
    assert (tmp_path / "demo.db").exists()


async def test_serve_runs_a_users_app(tmp_path: Path) -> None:
    line, _, status, (created, _) = await run_until_sigint(
        ["serve", "wsspec.demo:build_app", "--port", "0", "--db", "sqlite:///mine.db"], tmp_path
    )
    assert line.startswith("wsspec serve listening on ws://127.0.0.1:")
    assert created["success"]
    assert status == 0


def test_help_explains_every_flag() -> None:
    for command in ("demo", "serve"):
        out = subprocess.run(
            [WSSPEC, command, "--help"], capture_output=True, text=True, check=True, timeout=TIMEOUT
        ).stdout
        for flag in ("--host", "--port", "--path", "--db", "--server", "--log-level"):
            assert flag in out
    out = subprocess.run(
        [WSSPEC, "--help"], capture_output=True, text=True, check=True, timeout=TIMEOUT
    ).stdout
    assert "demo" in out and "serve" in out


BLOCK_IMPORT = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from wsspec.cli import main
raise SystemExit(main({argv!r}))
"""


@pytest.mark.parametrize(
    ("argv", "module"),
    [(["demo", "--port", "0"], "trio"), (["serve", "x:y"], "anyio"), (["demo"], "anyio")],
)
def test_without_the_server_extra_the_command_says_what_to_install(
    tmp_path: Path, argv: list[str], module: str
) -> None:
    script = BLOCK_IMPORT.format(module=module, argv=argv)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"wsspec {argv[0]} needs the 'server' extra (module {module!r} is not installed): "
        "pip install 'wsspec[server]'"
    ]
    # --help works without it.
    script = BLOCK_IMPORT.format(module=module, argv=[argv[0], "--help"])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "--server" in done.stdout


def test_the_demo_default_database_is_the_demo_app_default() -> None:
    import wsspec.cli.demo
    import wsspec.demo

    assert wsspec.cli.demo.DEFAULT_DB == wsspec.demo.DEFAULT_DB
