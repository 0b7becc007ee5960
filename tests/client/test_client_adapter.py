"""``wsspec.client`` on asyncio and on trio against real ``wsspec serve`` processes on
127.0.0.1: requests and their typed errors, subscriptions with and without the change
feed, a refused first connection, a final 403, requests while disconnected, keepalive
through a proxy that goes silent, a consumer too slow for its buffer, cancellation.

Every test runs its coroutine with ``anyio.run`` on each backend, inside
``anyio.fail_after``; servers are stopped by PID."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import wsspec.client as wc
from client_servers import HERE, Server, free_port, serving

BACKENDS = ["asyncio", "trio"]
TIMEOUT = 20
FAST = wc.ClientConfig(reconnect_initial=0.05, reconnect_max=0.5, connect_timeout=5)


def run(backend: str, test: Callable[..., Awaitable[None]], *args: Any) -> None:
    async def bounded() -> None:
        with anyio.fail_after(TIMEOUT):
            await test(*args)

    anyio.run(bounded, backend=backend)


# --- requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_crud_returns_data_and_failures_raise_the_protocols_code(
    backend: str, plain_server: Server
) -> None:
    async def scenario() -> None:
        name = f"Ada-{backend}"
        async with wc.connect(plain_server.url) as client:
            created = await client.create("users", {"name": name, "status": "active"})
            assert created == {"id": created["id"], "name": name, "email": None, "status": "active"}
            assert await client.read("users", created["id"]) == created
            mine = [("name", "eq", name)]
            assert await client.read("users", filters=mine, limit=5) == [created]
            response = await client.request(
                "read",
                "users",
                options={"filters": [dict(column="name", operator="eq", value=name)]},
            )
            assert response["success"] is True and response["metadata"]["total"] == 1
            updated = await client.update("users", created["id"], {"name": name + " L."})
            assert updated["name"] == name + " L." and updated["status"] == "active"

            with pytest.raises(wc.RequestError) as missing:
                await client.read("users", 10**9)
            assert missing.value.code == "not_found"
            assert "not found" in missing.value.message
            assert missing.value.response["success"] is False
            with pytest.raises(wc.RequestError) as bad:
                await client.read("users", filters=[("nope", "eq", 1)])
            assert bad.value.code == "invalid_column"
            assert bad.value.details == {"column": "nope"}

            # Pipelined from many tasks at once, each gets its own answer.
            found: dict[int, Any] = {}

            async def read_one(i: int) -> None:
                found[i] = await client.read("users", created["id"], columns=["id"])

            async with anyio.create_task_group() as group:
                for i in range(20):
                    group.start_soon(read_one, i)
            assert found == {i: {"id": created["id"]} for i in range(20)}

            assert await client.delete("users", created["id"]) == {
                "deleted": True,
                "id": created["id"],
            }
            assert (await client.meta("users"))["primary_key"] == "id"
            assert {"schema": "public", "entity": "users"} in await client.meta()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_first_connection_raises_at_once(backend: str) -> None:
    async def scenario() -> None:
        with pytest.raises(wc.ConnectError) as refused:
            async with wc.connect(f"ws://127.0.0.1:{free_port()}/ws"):
                pass
        assert refused.value.code == "connect_failed"

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exception_in_the_block_comes_out_unwrapped(backend: str, plain_server: Server) -> None:
    async def scenario() -> None:
        with pytest.raises(KeyError):
            async with wc.connect(plain_server.url):
                raise KeyError("mine")

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_aclose_fails_what_waits_and_ends_subscriptions(backend: str, plain_server: Server) -> None:
    async def scenario() -> None:
        proxy = Proxy(plain_server.port)
        async with anyio.create_task_group() as group:
            port = await group.start(proxy.serve)
            async with (
                wc.connect(proxy.url(port), config=FAST) as client,
                client.subscribe("users") as sub,
            ):
                proxy.refusing = True  # the server is gone, for good
                proxy.cut()
                failed: list[BaseException] = []

                async def waiting() -> None:
                    try:
                        await client.read("users", timeout=10)
                    except wc.ClientError as exc:
                        failed.append(exc)

                async with anyio.create_task_group() as waiters:
                    waiters.start_soon(waiting)
                    await anyio.sleep(0.1)
                    await client.aclose()
                assert [type(e) for e in failed] == [wc.ClientClosed]
                assert [item async for item in sub] == []  # it ends, without an error
                with pytest.raises(wc.ClientClosed):
                    await client.read("users")
            group.cancel_scope.cancel()

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_request_is_forgotten(backend: str, plain_server: Server) -> None:
    async def scenario() -> None:
        async with wc.connect(plain_server.url) as client:
            with anyio.move_on_after(0):
                await client.read("users")
            assert client._engine.pending_calls == 0
            assert isinstance(await client.read("users", limit=1), list)
            assert client._engine.pending_calls == 0

    run(backend, scenario)


# --- subscriptions ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_subscription_without_the_change_feed(backend: str, plain_server: Server) -> None:
    async def scenario() -> None:
        async with wc.connect(plain_server.url) as client:
            tag = f"plain-{backend}"
            async with client.subscribe("users", filters=[("email", "eq", tag)]) as sub:
                assert (sub.rows, sub.epoch, sub.seq) == (None, None, None)
                await client.create("users", {"name": "no", "email": "other"})
                made = await client.create("users", {"name": "yes", "email": tag})
                change = await anext(sub)
                assert isinstance(change, wc.Change)
                assert (change.operation, change.data, change.seq, change.change) == (
                    "create",
                    made,
                    None,
                    None,
                )
                assert change.message["type"] == "notification"
            # Left: nothing more comes, and iterating ends at once.
            assert [item async for item in sub] == []
            # Snapshots need the feed: the server says so with its own code.
            with pytest.raises(wc.RequestError) as refused:
                async with client.subscribe("users", snapshot=True):
                    pass
            assert refused.value.code == "change_feed_required"

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_snapshot_and_then_each_change_once_with_the_feed(
    backend: str, feed_server: Server
) -> None:
    async def scenario() -> None:
        tag = f"feed-{backend}"
        mine = [("email", "eq", tag), ("status", "eq", "active")]
        async with wc.connect(feed_server.url) as client:
            before = await client.create("users", {"name": "A", "email": tag, "status": "active"})
            async with client.subscribe("users", filters=mine, snapshot=True) as sub:
                assert sub.rows == [before]
                assert isinstance(sub.epoch, str) and isinstance(sub.seq, int)
                made = await client.create("users", {"name": "B", "email": tag, "status": "active"})
                await client.update("users", made["id"], {"status": "away"})
                await client.delete("users", before["id"])
                items = [await anext(sub) for _ in range(3)]
            assert [(c.change, c.operation, c.data["name"]) for c in items] == [
                ("added", "create", "B"),
                ("removed", "update", "B"),
                ("removed", "delete", "A"),
            ]
            seqs = [c.seq for c in items]
            assert seqs == sorted(seqs) and seqs[0] > sub.seq

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_consumer_too_slow_for_its_buffer_gets_everything_once_by_resuming(
    backend: str, feed_server: Server
) -> None:
    async def scenario() -> None:
        tag = f"slow-{backend}"
        async with (
            wc.connect(feed_server.url, max_buffered=4) as client,
            client.subscribe("users", filters=[("email", "eq", tag)]) as sub,
        ):
            made = [
                await client.create("users", {"name": f"u{i}", "email": tag}) for i in range(15)
            ]
            # 15 arrived for 4 places and nothing was taken: the client kept 4, dropped
            # the rest, and once the 4 were taken resumed after them (a server replay).
            items = [await anext(sub) for _ in range(15)]
            assert [c.data for c in items] == made
            assert all(isinstance(c, wc.Change) for c in items)
            with anyio.move_on_after(0.3):
                extra = await anext(sub)
                raise AssertionError(f"one more: {extra}")

    run(backend, scenario)


# --- losing the server ----------------------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of a server's ``port``, to lose the server without
    restarting it: ``cut()`` closes every connection through it; while ``refusing``, new
    connections are closed at once (a server that is down); ``silence()`` leaves the open
    connections open and carrying nothing, like a peer behind a dead NAT."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.refusing = False
        self.silent = anyio.Event()
        self.open: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(self.forward)

    def url(self, port: int) -> str:
        return f"ws://127.0.0.1:{port}/ws"

    async def forward(self, client: anyio.abc.SocketStream) -> None:
        if self.refusing:
            await client.aclose()
            return
        self.connections += 1
        silent = self.silent
        scope = anyio.CancelScope()
        self.open.add(scope)
        with scope:
            async with client, await anyio.connect_tcp("127.0.0.1", self.port) as upstream:

                async def pump(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
                    try:
                        async for chunk in a:
                            if silent.is_set():
                                await anyio.sleep_forever()
                            await b.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass

                async with anyio.create_task_group() as group:
                    group.start_soon(pump, client, upstream)
                    group.start_soon(pump, upstream, client)
        self.open.discard(scope)

    def cut(self) -> None:
        for scope in self.open:
            scope.cancel()

    def silence(self) -> None:
        self.silent.set()
        self.silent = anyio.Event()  # for the connections made from now on


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_while_disconnected_wait_bounded_or_fail_as_asked(
    backend: str, plain_server: Server
) -> None:
    async def scenario() -> None:
        proxy = Proxy(plain_server.port)
        async with anyio.create_task_group() as group:
            port = await group.start(proxy.serve)
            async with wc.connect(proxy.url(port), config=FAST) as client:
                await client.read("users", limit=1)
                proxy.refusing = True
                proxy.cut()
                while client.connected:
                    await anyio.sleep(0.01)
                with pytest.raises(wc.NotConnectedError):
                    await client.read("users", when_disconnected="fail")
                with pytest.raises(wc.RequestTimeout):
                    await client.read("users", timeout=0.3)
                result: list[Any] = []

                async def waiting_create() -> None:
                    result.append(await client.create("users", {"name": "late"}, timeout=15))

                async with anyio.create_task_group() as waiting:
                    waiting.start_soon(waiting_create)
                    await anyio.sleep(0.3)
                    assert result == []
                    proxy.refusing = False  # the server is back
                assert result[0]["name"] == "late"
            group.cancel_scope.cancel()

    run(backend, scenario)


def test_a_403_at_the_handshake_is_final(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    closed = HERE / "closed"
    with serving(HERE, db, app="client_apps:guarded", change_feed=False) as server:

        async def scenario() -> None:
            with pytest.raises(wc.HandshakeRejected) as refused:
                async with wc.connect(server.url):
                    pass
            assert (refused.value.code, refused.value.status) == ("handshake_rejected", 403)

            proxy = Proxy(server.port)
            async with anyio.create_task_group() as group:
                port = await group.start(proxy.serve)
                async with (
                    wc.connect(proxy.url(port) + "?token=ok", config=FAST) as client,
                    client.subscribe("users") as sub,
                ):
                    closed.touch()  # the door shuts for everyone, and the connection drops
                    try:
                        proxy.cut()
                        with pytest.raises(wc.HandshakeRejected) as ended:
                            await anext(sub)
                        assert ended.value.status == 403
                        with pytest.raises(wc.HandshakeRejected):
                            await client.read("users")
                        await anyio.sleep(0.3)  # time for several retries, were there any
                    finally:
                        closed.unlink()
                group.cancel_scope.cancel()

        run("asyncio", scenario)
    refusals = [line for line in server.stderr.splitlines() if "refused: 403" in line]
    assert len(refusals) == 2, refusals  # the token-less one, and one reconnection


@pytest.mark.parametrize("backend", BACKENDS)
def test_keepalive_finds_a_silent_connection_and_the_subscription_goes_on(
    backend: str, feed_server: Server
) -> None:
    async def scenario() -> None:
        proxy = Proxy(feed_server.port)
        config = wc.ClientConfig(
            ping_interval=0.2, pong_timeout=0.6, reconnect_initial=0.05, reconnect_max=0.2
        )
        tag = f"silent-{backend}"
        async with anyio.create_task_group() as group:
            port = await group.start(proxy.serve)
            async with (
                wc.connect(proxy.url(port), config=config) as client,
                wc.connect(feed_server.url) as writer,
                client.subscribe("users", filters=[("email", "eq", tag)]) as sub,
            ):
                first = await writer.create("users", {"name": "1", "email": tag})
                assert (await anext(sub)).data == first
                proxy.silence()
                second = await writer.create("users", {"name": "2", "email": tag})
                # Only a new connection can bring it: the old one carries nothing.
                assert (await anext(sub)).data == second
                assert proxy.connections == 2
            group.cancel_scope.cancel()

    run(backend, scenario)


def test_unencodable_data_is_a_type_error_before_anything_is_sent(plain_server: Server) -> None:
    async def scenario() -> None:
        async with wc.connect(plain_server.url) as client:
            with pytest.raises(wc.InvalidRequest) as bad:
                await client.create("users", {"name": object()})
            assert isinstance(bad.value, TypeError)
            assert json.dumps(await client.read("users", limit=1)) is not None

    run("asyncio", scenario)


def test_wss_with_the_servers_certificate_trusted(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    issued.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    tls = ("--certfile", str(certfile), "--keyfile", str(keyfile))
    db = f"sqlite:///{tmp_path / 'app.db'}"
    with serving(tmp_path, db, change_feed=False, extra=tls) as server:
        assert server.url.startswith("wss://127.0.0.1:")

        async def scenario() -> None:
            async with wc.connect(server.url, ssl_context=trusting) as client:
                made = await client.create("users", {"name": "secure"})
                assert await client.read("users", made["id"]) == made
            # Without the CA the certificate is refused, as a connection failure.
            with pytest.raises(wc.ConnectError) as untrusted:
                async with wc.connect(server.url):
                    pass
            assert "CERTIFICATE_VERIFY_FAILED" in untrusted.value.message

        for backend in BACKENDS:
            run(backend, scenario)
