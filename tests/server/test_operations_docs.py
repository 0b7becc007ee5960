"""docs/operations.md's revoked-token example runs as written and prints what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from wsserver_support import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def test_revoked_token_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/operations.md").read_text(), re.S)
    (example,) = [block for block in blocks if "trio.run(main)" in block]
    out = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout.splitlines()
    opened = [line.split()[2] for line in out if line.startswith("open:")]
    assert sorted(opened) == ["alice", "bob"]
    rest = [line for line in out if not line.startswith("open:")]
    # The revocation and alice's disconnect hook race; bob's hook runs at the shutdown.
    assert sorted(rest[:3]) == [
        "after_disconnect: alice",
        "alice was closed: 4001 token revoked",
        "closed: 1",
    ]
    assert rest[3].startswith("bob: ") and '"id":"still-here"' in rest[3]
    assert rest[4:] == ["after_disconnect: bob"]
