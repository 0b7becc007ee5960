"""Revocation end to end on every transport (docs/operations.md "Revocation"): the App
lists its connections with what hooks stored, and closes those a predicate selects, from
the event loop's own task or from another thread; disconnect hooks run as for any
close."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
import wsserver_support
from operations_support import scrape, serving, value
from wsserver_support import TIMEOUT, client, demo_app, wait_until
from wsspec import App, HookContext, HookError

pytestmark = pytest.mark.usefixtures("transport")


def token_app(tmp_path: Path) -> tuple[App, list[str]]:
    """The demo app with a token check that stores the token and the user, and an
    after_disconnect hook that records whose connection ended."""
    app = demo_app(tmp_path)
    disconnected: list[str] = []

    @app.hook("before_connect")
    def authenticate(ctx: HookContext) -> None:
        token = ctx.request_info.query_param("token") if ctx.request_info else None
        if token is None:
            raise HookError("unauthorized", "no token")
        ctx.metadata["token"] = token
        ctx.metadata["user"] = token.partition("-")[0]

    @app.hook("after_disconnect")
    def gone(ctx: HookContext) -> None:
        disconnected.append(ctx.metadata["token"])

    return app, disconnected


async def closed_with(c: wsserver_support.Client) -> Any:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            await c.ws.get_message()
    return closed.value.reason


async def test_revoked_token_is_closed_from_another_thread(tmp_path: Path) -> None:
    app, disconnected = token_app(tmp_path)
    started = datetime.datetime.now(datetime.UTC)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(app) as served,
            client(served.url + "?token=alice-1") as alice,
            client(served.url + "?token=bob-1") as bob,
        ):
            assert (await alice.request("subscribe", "users"))["success"]
            # From another thread (a revocation job): wait for the loop's answer.
            listed = await trio.to_thread.run_sync(app.connections)
            assert sorted(info.metadata["token"] for info in listed) == ["alice-1", "bob-1"]
            for info in listed:
                assert info.remote_address is not None
                assert info.remote_address.startswith("127.0.0.1:")
                assert started - datetime.timedelta(seconds=1) <= info.connected_at
                assert info.connected_at <= datetime.datetime.now(datetime.UTC)
                assert info.request.path == "/ws"
                assert info.metadata["user"] == info.metadata["token"].partition("-")[0]
            (alice_info,) = [info for info in listed if info.metadata["user"] == "alice"]
            assert await trio.to_thread.run_sync(app.connection, alice_info.id) == alice_info

            revoked = {"alice-1"}
            closed = await trio.to_thread.run_sync(
                lambda: app.close_connections(
                    lambda info: info.metadata["token"] in revoked,
                    code=4001,
                    reason="token revoked",
                )
            )
            assert closed == 1
            # The engine is told at once, before alice has even read the close frame: her
            # subscription is gone (nothing is routed to her any more) and the disconnect
            # hooks run, as for any end.
            assert app.subscription_count == 0
            await wait_until(lambda: disconnected == ["alice-1"])
            reason = await closed_with(alice)
            assert (reason.code, reason.reason) == (4001, "token revoked")
            # Bob is untouched.
            assert (await bob.request("read", "users"))["success"]
            assert [info.metadata["token"] for info in app.connections()] == ["bob-1"]
            assert app.connection(alice_info.id) is None

            found = await scrape(served.metrics_url)
            assert value(found, "wsspec_server_closes_total", code="4001") == 1
            assert value(found, "wsspec_slow_consumer_closes_total") == 0


async def test_close_from_the_event_loop_and_from_a_hook(tmp_path: Path) -> None:
    """From a task of the loop serving the app (trio and hypercorn run in the test's own
    loop; uvicorn in a thread of its own, where this is the cross-thread path), and from a
    hook: a second login of the same user closes the first connection (the Go README's
    "one session per user")."""
    app, disconnected = token_app(tmp_path)

    @app.hook("after_connect")
    def one_session_per_user(ctx: HookContext) -> None:
        app.close_connections(
            lambda info: (
                info.metadata["user"] == ctx.metadata["user"] and info.id != ctx.connection_id
            ),
            code=4002,
            reason="signed in elsewhere",
        )

    with trio.fail_after(TIMEOUT):
        async with serving(app) as served:
            async with client(served.url + "?token=carol-1") as first:
                assert (await first.request("read", "users"))["success"]
                async with client(served.url + "?token=carol-2") as second:
                    reason = await closed_with(first)
                    assert (reason.code, reason.reason) == (4002, "signed in elsewhere")
                    assert (await second.request("read", "users"))["success"]
                    await wait_until(lambda: disconnected == ["carol-1"])
                    (info,) = app.connections()
                    assert app.close_connection(info.id, code=1000, reason="bye") is True
                    reason = await closed_with(second)
                    assert (reason.code, reason.reason) == (1000, "bye")
                    assert app.close_connection(info.id) is False
            await wait_until(lambda: disconnected == ["carol-1", "carol-2"])


async def test_bad_close_codes_and_failing_predicates_close_nothing(tmp_path: Path) -> None:
    app, _ = token_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as served, client(served.url + "?token=dan-1") as dan:
            with pytest.raises(ValueError, match="close code 1005"):
                app.close_connections(lambda info: True, code=1005)
            with pytest.raises(ValueError, match="123 bytes"):
                app.close_connections(lambda info: True, reason="x" * 124)

            def broken(info: Any) -> bool:
                raise LookupError("the revocation list is unavailable")

            # From another thread the predicate's exception reaches the caller too.
            with pytest.raises(LookupError):
                await trio.to_thread.run_sync(lambda: app.close_connections(broken))
            assert (await dan.request("read", "users"))["success"]
            assert len(app.connections()) == 1
    # Not being served: nothing to list or close.
    assert app.connections() == [] and app.close_connections(lambda info: True) == 0
