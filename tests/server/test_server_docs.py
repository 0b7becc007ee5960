"""The server examples in README.md and docs/server.md run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio
from wsserver_support import TIMEOUT, client, serving

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


async def test_readme_serve_example(tmp_path: Path) -> None:
    (block,) = [b for b in python_blocks(ROOT / "README.md") if "# myapp.py" in b]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    app = namespace["build"](f"sqlite:///{tmp_path / 'myapp.db'}")
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url + "?token=s3cret") as c:
            reply = await c.request("create", "orders", data={"item": "tea", "user_id": 1})
            assert reply["success"], reply


def test_server_guide_examples_run(tmp_path: Path) -> None:
    """Every ```python block of docs/server.md that defines main() runs to completion."""
    blocks = [b for b in python_blocks(ROOT / "docs" / "server.md") if "trio.run(main)" in b]
    assert blocks
    for block in blocks:
        subprocess.run([sys.executable, "-c", block], cwd=tmp_path, check=True, timeout=TIMEOUT)
