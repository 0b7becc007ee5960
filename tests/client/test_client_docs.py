"""docs/client.md and docs/examples/python_client.py: the example runs as the docs say, on
asyncio and on trio, against ``wsspec demo``; the guide's Python blocks are valid,
formatted Python, and its engine walkthrough does what its comments say."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import wsspec.client as wc
from client_servers import WSSPEC

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "client.md"
EXAMPLE = ROOT / "docs" / "examples" / "python_client.py"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guides_python_blocks_compile_and_are_formatted() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    for block in blocks:
        compile(block, str(GUIDE), "exec")
        checked = subprocess.run(
            [ruff, "format", "--check", "--line-length", "100", "-"],
            input=block,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, f"not ruff-formatted:\n{block}\n{checked.stdout}"


def test_the_engine_walkthrough_does_what_it_says() -> None:
    (walkthrough,) = [b for b in python_blocks() if "ClientEngine(" in b]
    namespace: dict[str, object] = {}
    exec(compile(walkthrough, str(GUIDE), "exec"), namespace)
    actions = namespace["actions"]
    assert isinstance(actions, list)
    (completed,) = actions
    assert type(completed).__name__ == "CompleteCall" and completed.call_id == "c1"
    assert namespace["deadline"] == 15.1  # the first ping: ping_interval after opening


def test_the_go_readme_example_rewritten_runs_on_both_loops(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [WSSPEC, "demo", "--port", "0", "--db", f"sqlite:///{tmp_path / 'demo.db'}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs: list[subprocess.Popen[str]] = []
    try:
        assert demo.stdout is not None
        url = demo.stdout.readline().split()[-1]
        assert url.startswith("ws://"), url

        async def create_first() -> None:
            async with wc.connect(url) as client:
                await client.create("users", {"name": "Ann", "status": "active"})

        anyio.run(create_first)
        for loop in ("asyncio", "trio"):
            runs.append(
                subprocess.Popen(
                    [sys.executable, str(EXAMPLE), url, "--loop", loop, "--changes", "2"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for run in runs:  # both subscribed before the changes are made
            assert run.stdout is not None
            lines = [run.stdout.readline() for _ in range(2)]
            assert lines[0].startswith("Users: [{'id': 1, 'name': 'Ann'"), lines
            assert lines[1] == "Subscribed\n", lines

        async def make_changes() -> None:
            async with wc.connect(url) as client:
                await client.create("users", {"name": "Away", "status": "away"})
                bob = await client.create("users", {"name": "Bob", "status": "active"})
                await client.update("users", bob["id"], {"email": "bob@example.com"})

        anyio.run(make_changes)
        for run in runs:
            out, err = run.communicate(timeout=20)
            assert run.returncode == 0, err
            assert out.splitlines() == [
                "User create: {'id': 3, 'name': 'Bob', 'email': None, 'status': 'active'}",
                "User update: {'id': 3, 'name': 'Bob', 'email': 'bob@example.com', "
                "'status': 'active'}",
            ]
    finally:
        for process in [*runs, demo]:
            if process.poll() is None:
                process.terminate()
            process.wait(10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def test_the_example_without_a_server_fails_with_one_typed_error() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "ws://127.0.0.1:9/ws"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "wsspec.client.ConnectError: connect_failed" in done.stderr
