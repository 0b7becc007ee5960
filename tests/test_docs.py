"""The documentation's runnable examples run, and say what the docs claim they say."""

import pathlib
import subprocess
import sys

import orjson

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_sync_loop_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs/examples/sync_loop.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    frames = {}
    for line in out.splitlines():
        if line.startswith("-> client "):
            client, _, frame = line.removeprefix("-> client ").partition(": ")
            message = orjson.loads(frame)
            frames.setdefault(client, []).append(message)
    alice, bob = frames["alice"], frames["bob"]
    assert [m["type"] for m in alice] == ["response", "notification"]
    assert alice[1]["data"]["name"] == "Ann"
    assert [m.get("id") for m in bob] == ["c1", "c2", "r1", "p1"]
    assert bob[1]["error"]["code"] == "validation_error"
    assert bob[2]["metadata"]["total"] == 1
    assert out.rstrip().endswith("open connections: 0, subscriptions: 0")
