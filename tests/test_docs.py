"""The documentation's runnable examples run, and say what the docs claim they say."""

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

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


def test_asyncio_example_serves_two_clients() -> None:
    from websockets.sync.client import connect

    server = subprocess.Popen(
        [sys.executable, str(ROOT / "docs/examples/asyncio_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip().removeprefix("listening on ")
        with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b:
            a.send(
                orjson.dumps(
                    {"id": "s", "type": "subscription", "operation": "subscribe", "entity": "users"}
                ).decode()
            )
            assert orjson.loads(a.recv(timeout=10))["success"] is True
            b.send(
                orjson.dumps(
                    {
                        "id": "c",
                        "type": "request",
                        "operation": "create",
                        "entity": "users",
                        "data": {"name": "Ann"},
                    }
                ).decode()
            )
            created = orjson.loads(b.recv(timeout=10))
            assert created["data"] == {"id": 1, "name": "Ann", "status": None}
            note = orjson.loads(a.recv(timeout=10))
            assert note["type"] == "notification" and note["data"] == created["data"]
            b.send('{"type":"ping","id":9}')
            assert orjson.loads(b.recv(timeout=10))["type"] == "pong"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_starlette_example_serves_the_protocol_beside_other_routes(tmp_path: pathlib.Path) -> None:
    """The command docs/examples/starlette_mount.py gives, run as written (with a free port)."""
    from websockets.sync.client import connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    example = (ROOT / "docs/examples/starlette_mount.py").read_text()
    (written,) = [line for line in example.splitlines() if line.startswith("    uvicorn ")]
    command = written.split()
    assert command[-2] == "--port"
    command[-1] = str(port)
    server = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, "WSSPEC_DB": f"sqlite:///{tmp_path / 'mount.db'}"},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
                    assert page.read() == b"0 WebSocket clients connected\n"
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.1)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            ws.send(
                '{"id":"c","type":"request","operation":"create","entity":"users",'
                '"data":{"name":"Ann"}}'
            )
            created = orjson.loads(ws.recv(timeout=10))
            assert created["success"] is True and created["data"]["name"] == "Ann"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                assert page.read() == b"1 WebSocket clients connected\n"
    finally:
        server.terminate()
        server.wait(timeout=20)
