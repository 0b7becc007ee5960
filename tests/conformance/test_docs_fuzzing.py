"""The Python examples of docs/fuzzing.md run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .engine_server import EngineServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "fuzzing.md"


def _examples() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {"__name__": "docs_fuzzing"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_backend_example() -> None:
    _examples()["test_backend_filters_like_the_core"]()


def test_malformed_frames_example() -> None:
    namespace = _examples()
    with EngineServer() as server:
        namespace["check_malformed_frames"](server.url)
