"""The runtime's plumbing against a scripted fake engine: which events it feeds, when, and
how often (ConnectionClosed exactly once, FramesWritten for every frame, hook outcomes,
storage results from the worker threads, bugs contained)."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
import wsspec.runtime.runtime
from wsserver_support import TIMEOUT, client, memory_app, serving, wait_until
from wsspec import HookError

import wsspec_core as core


class FakeEngine:
    """Accepts everyone; answers scripted frames; records every event."""

    instances: list[FakeEngine] = []

    def __init__(self, registry: Any, *, hooks: Any = None, limits: Any = None) -> None:
        self.events: list[Any] = []
        self.hooks_seen: list[Any] = []
        self.metadata: dict[Any, dict[str, Any]] = {}
        self.users = registry.get("public.users")
        FakeEngine.instances.append(self)

    connection_count = property(lambda self: len(self.metadata))
    subscription_count = 0

    def connection_metadata(self, connection_id: Any) -> dict[str, Any] | None:
        return self.metadata.get(connection_id)

    def next_deadline(self) -> float | None:
        return None

    def handle(self, event: Any) -> list[Any]:
        self.events.append(event)
        pong = core.encode(core.Pong(id="x", timestamp="2025-01-01T00:00:00Z"))
        if isinstance(event, core.ConnectionOpened):
            if event.request.query_param("refuse"):
                return [
                    core.RejectConnection(
                        connection_id=event.connection_id, status=403, reason="no"
                    )
                ]
            self.metadata[event.connection_id] = {}
            return [core.AcceptConnection(connection_id=event.connection_id)]
        if isinstance(event, core.ConnectionClosed):
            self.metadata.pop(event.connection_id, None)
            return []
        if isinstance(event, core.MessageReceived):
            cid = event.connection_id
            if event.data == "flood":
                return [core.Send(connection_id=cid, frame=pong) for _ in range(10)]
            if event.data == "close":
                return [
                    core.Send(connection_id=cid, frame=pong),
                    core.CloseConnection(connection_id=cid, code=4000, reason="bye"),
                ]
            if event.data == "hooks":
                context = core.HookContext(
                    hook_type=core.HookType.BEFORE_READ,
                    connection_id=cid,
                    metadata={},
                    request_info=core.RequestInfo(),
                )
                return [
                    core.RunHooks(
                        call_id=7,
                        hook_type=core.HookType.BEFORE_READ,
                        hooks=tuple(HOOKS),
                        context=context,
                    )
                ]
            if event.data == "storage":
                # Writes and reads interleaved, operation ids in the order issued.
                return [
                    core.RunStorage(operation_id=n, operation=self._operation(n))
                    for n in range(1, 41)
                ]
            if event.data == "storage bug":
                return [core.RunStorage(operation_id=99, operation=self._operation(99))]
            return [core.Send(connection_id=cid, frame=pong)]
        if isinstance(event, core.StorageCompleted) and event.operation_id == 99:
            raise RuntimeError("a bug while handling a storage result")
        return []

    def _operation(self, n: int) -> Any:
        if n % 3 == 0:
            return core.Create(entity=self.users, rows=({"name": f"u{n}"},))
        selection = core.Selection(columns=("id",))
        return core.ReadOne(entity=self.users, key=n, filters=core.Filters(), selection=selection)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


HOOKS: list[Any] = []


class JitteryStorage:
    """Takes a random fraction of a millisecond per operation; records the order in which
    writes ran."""

    def __init__(self) -> None:
        self.writes_run: list[str] = []

    def execute(self, operation: Any) -> Any:
        time.sleep(random.random() / 1000)
        if isinstance(operation, core.Create):
            self.writes_run.append(operation.rows[0]["name"])
            return list(operation.rows)
        return {"id": operation.key}


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Any:
    FakeEngine.instances.clear()
    monkeypatch.setattr(wsspec.runtime.runtime, "Engine", FakeEngine)
    return FakeEngine


async def test_connection_closed_is_fed_exactly_once(tmp_path: Path, fake_engine: Any) -> None:
    app = memory_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url:
            engine = FakeEngine.instances[0]
            async with client(url) as c:  # the client closes
                await c.send("hello")
                await c.ws.get_message()
            async with client(url) as c:  # the TCP connection just drops
                await c.ws._stream.aclose()
            async with client(url) as c:  # the engine closes, after the queued frame
                await c.send("close")
                assert (await c.recv())["type"] == "pong"
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await c.ws.get_message()
                assert closed.value.reason.code == 4000
            with pytest.raises(trio_websocket.ConnectionRejected):
                async with client(url + "?refuse=1"):
                    pass
            await wait_until(lambda: len(engine.of(core.ConnectionClosed)) == 4)
            await trio.sleep(0.1)
            closed_ids = [e.connection_id for e in engine.of(core.ConnectionClosed)]
            opened_ids = [e.connection_id for e in engine.of(core.ConnectionOpened)]
            assert sorted(closed_ids) == sorted(opened_ids) == [1, 2, 3, 4]


async def test_every_frame_written_is_reported_once(tmp_path: Path, fake_engine: Any) -> None:
    app = memory_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            engine = FakeEngine.instances[0]
            await c.send("flood")
            for _ in range(10):
                assert (await c.recv())["type"] == "pong"
            await wait_until(lambda: sum(e.count for e in engine.of(core.FramesWritten)) >= 10)
            await trio.sleep(0.1)
            assert sum(e.count for e in engine.of(core.FramesWritten)) == 10
            assert all(e.connection_id == 1 for e in engine.of(core.FramesWritten))


async def test_hooks_run_in_order_and_report_their_outcome(
    tmp_path: Path, fake_engine: Any
) -> None:
    app = memory_app(tmp_path)
    calls: list[str] = []

    def first(ctx: Any) -> None:
        calls.append("first")

    async def second(ctx: Any) -> None:
        await trio.sleep(0)
        calls.append("second")
        raise HookError("validation_error", "no", status=401)

    def third(ctx: Any) -> None:
        calls.append("third")

    HOOKS[:] = [first, second, third]
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            engine = FakeEngine.instances[0]
            await c.send("hooks")
            await wait_until(lambda: bool(engine.of(core.HooksFailed)))
            (failed,) = engine.of(core.HooksFailed)
            assert (failed.call_id, failed.status) == (7, 401)
            assert failed.error == core.ErrorInfo(code="validation_error", message="no")
            assert calls == ["first", "second"]
            HOOKS[:] = [first]
            await c.send("hooks")
            await wait_until(lambda: bool(engine.of(core.HooksCompleted)))
            assert engine.of(core.HooksCompleted)[0].call_id == 7


async def test_storage_results_are_fed_once_each_and_writes_in_commit_order(
    tmp_path: Path, fake_engine: Any
) -> None:
    app = memory_app(tmp_path)
    storage = app.storage = JitteryStorage()
    with trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            engine = FakeEngine.instances[0]
            await c.send("storage")
            await wait_until(lambda: len(engine.of(core.StorageCompleted)) == 40)
            completed = engine.of(core.StorageCompleted)
            assert sorted(e.operation_id for e in completed) == list(range(1, 41))
            writes = [e.result[0]["name"] for e in completed if e.operation_id % 3 == 0]
            assert writes == storage.writes_run == [f"u{n}" for n in range(3, 41, 3)]
            reads = [e for e in completed if e.operation_id % 3]
            assert all(e.result == {"id": e.operation_id} for e in reads)
    # serve() returned: its worker threads are gone.
    assert not [t for t in threading.enumerate() if t.name.startswith("wsspec-storage")]


async def test_a_bug_while_feeding_a_storage_result_is_logged_and_the_server_goes_on(
    tmp_path: Path, fake_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a TrioInternalError that would end the caller's whole trio.run, and not the end
    of every other connection either."""
    app = memory_app(tmp_path)
    with caplog.at_level(logging.ERROR, logger="wsspec.server"), trio.fail_after(TIMEOUT):
        async with serving(app) as url, client(url) as c:
            await c.send("storage bug")
            await wait_until(lambda: "bug" in caplog.text)
            await c.send("hello")
            assert (await c.recv())["type"] == "pong"
    assert "a bug while handling a storage result" in caplog.text
