"""Metrics, /healthz and /readyz end to end on every transport (docs/operations.md): real
sockets on 127.0.0.1, the operations endpoint on a port of its own (and, for the ASGI
transports, on the WebSocket port too), scraped over HTTP and read back with
prometheus_client's own parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import wsserver_support
from operations_support import http_get, samples, scrape, serving, value
from prometheus_client import generate_latest
from wsserver_support import TIMEOUT, client, demo_app, wait_until
from wsspec import App
from wsspec.demo import make_models
from wsspec.runtime.metrics import LATENCY_BUCKETS
from wsspec.storage.peewee import PeeweeStorage, changelog

pytestmark = pytest.mark.usefixtures("transport")


def http_url(ws_url: str, path: str) -> str:
    """The ASGI transports answer plain HTTP on the WebSocket port."""
    return ws_url.replace("ws://", "http://").removesuffix("/ws") + path


async def test_requests_notifications_storage_and_connections_are_counted(
    tmp_path: Path,
) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(app) as served,
            client(served.url) as writer,
            client(served.url) as watcher,
        ):
            assert (await watcher.request("subscribe", "users"))["success"]
            created = await writer.request("create", "users", data={"name": "Ann"})
            assert created["success"]
            assert (await watcher.recv())["type"] == "notification"
            user_id = created["data"]["id"]
            assert (await writer.request("read", "users", record_id=user_id))["success"]
            missing = await writer.request("read", "users", record_id=999)
            assert missing["error"]["code"] == "not_found"
            await writer.send({"type": "ping", "id": "p1"})
            assert (await writer.recv())["type"] == "pong"
            await writer.send("this is not JSON")
            garbled = await writer.recv()
            assert garbled["success"] is False

            found = await scrape(served.metrics_url)
            assert value(found, "wsspec_connections") == 2
            assert value(found, "wsspec_connections_opened_total") == 2
            assert value(found, "wsspec_subscriptions") == 1
            requests = {
                (dict(labels)["operation"], dict(labels)["outcome"]): count
                for (name, labels), count in found.items()
                if name == "wsspec_requests_total"
            }
            assert requests == {
                ("subscribe", "success"): 1,
                ("create", "success"): 1,
                ("read", "success"): 1,
                ("read", "not_found"): 1,
                ("ping", "success"): 1,
                ("invalid", garbled["error"]["code"]): 1,
            }
            assert value(found, "wsspec_notifications_sent_total") == 1
            # Latency histograms: one observation per request, cumulative buckets.
            reads = value(found, "wsspec_request_duration_seconds_count", operation="read")
            assert reads == 2
            inf = value(
                found, "wsspec_request_duration_seconds_bucket", operation="read", le="+Inf"
            )
            assert inf == 2
            assert 0 < value(found, "wsspec_request_duration_seconds_sum", operation="read") < 5
            first = repr(float(LATENCY_BUCKETS[0]))
            assert value(
                found, "wsspec_request_duration_seconds_bucket", operation="read", le=first
            ) <= value(found, "wsspec_request_duration_seconds_bucket", operation="read", le="10.0")
            assert value(found, "wsspec_storage_duration_seconds_count", operation="create") == 1
            assert value(found, "wsspec_storage_duration_seconds_count", operation="read_one") == 2
            assert value(found, "wsspec_storage_failures_total", operation="create") == 0
            assert value(found, "wsspec_outbound_queue_frames") == 0
            # The process collector is in the app's registry too.
            assert value(found, "process_resident_memory_bytes") > 0

            if wsserver_support.transport != "trio":
                # The ASGI app answers the same endpoint on the WebSocket port.
                main = samples((await http_get(http_url(served.url, "/metrics"))).body)
                assert value(main, "wsspec_connections") == 2
                assert (
                    value(main, "wsspec_requests_total", operation="ping", outcome="success") == 1
                )
        await wait_until(lambda: app.connection_count == 0)
        # Counters outlive a run of the app; gauges read the live server (none now).
        after = samples(generate_latest(app.metrics.registry))
        assert value(after, "wsspec_connections") == 0
        assert value(after, "wsspec_connections_opened_total") == 2


async def test_a_slow_consumer_close_is_counted(tmp_path: Path) -> None:
    """The engine closes a subscriber that does not read with 1008 (docs/core.md "Flow
    control"); the runtime counts it from the CloseConnection action."""
    app = demo_app(tmp_path, outbound_queue=4, max_in_flight=1, max_queued=1)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(app, close_timeout=2) as served,
            client(served.url) as fast,
            client(served.url, message_queue_size=1) as slow,
        ):
            assert (await slow.request("subscribe", "users"))["success"]
            rows = [{"name": "n" * 5000} for _ in range(150)]
            for _ in range(40):
                assert (await fast.request("create", "users", data=rows))["success"]
                if app.connection_count == 1:
                    break
            await wait_until(lambda: app.connection_count == 1)
            found = await scrape(served.metrics_url)
            assert value(found, "wsspec_slow_consumer_closes_total") == 1
            assert value(found, "wsspec_server_closes_total", code="1008") == 1
            assert value(found, "wsspec_requests_total", operation="create", outcome="success") >= 1


async def test_healthz_and_readyz_with_the_database_reachable(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as served:
            base = served.metrics_url.removesuffix("/metrics")
            alive = await http_get(base + "/healthz")
            assert (alive.status, alive.body) == (200, b"ok\n")
            ready = await http_get(base + "/readyz")
            assert ready.status == 200
            assert json.loads(ready.body) == {"ready": True, "database": "ok", "change_feed": "off"}
            if wsserver_support.transport != "trio":
                main = await http_get(http_url(served.url, "/readyz"))
                assert main.status == 200 and json.loads(main.body)["ready"] is True
                other = await http_get(http_url(served.url, "/elsewhere"))
                assert other.status == 404


async def test_readyz_fails_while_the_database_is_unreachable(tmp_path: Path) -> None:
    """A PostgreSQL that refuses connections (nothing listens on port 1): alive, not ready,
    and the body names no internals."""
    storage = PeeweeStorage.from_url("postgresql://postgres@127.0.0.1:1/nowhere")
    user, post = make_models(storage.database)
    storage.register("public.users", user)
    storage.register("public.posts", post)
    app = App(storage)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as served:
            base = served.metrics_url.removesuffix("/metrics")
            assert (await http_get(base + "/healthz")).status == 200
            ready = await http_get(base + "/readyz")
            assert ready.status == 503
            report = json.loads(ready.body)
            assert report["ready"] is False
            assert report["database"] == "unreachable (OperationalError)"
            # Twice: a failed probe does not leave the next one stuck.
            assert (await http_get(base + "/readyz")).status == 503
            # Metrics are still served.
            assert value(await scrape(served.metrics_url), "wsspec_connections") == 0


async def test_readyz_and_lag_follow_the_change_feed(tmp_path: Path) -> None:
    """With the change feed: /readyz says the engine routed the log up to its end as read,
    the position and lag gauges say where it is; plain SQL from outside counts too."""
    app = demo_app(tmp_path)
    storage = app.storage
    assert isinstance(storage, PeeweeStorage)
    with storage.database.connection_context():
        changelog.install(storage.database, list(storage.models().values()))
    app.change_feed = True
    with trio.fail_after(TIMEOUT):
        async with serving(app) as served, client(served.url) as writer:
            base = served.metrics_url.removesuffix("/metrics")
            assert (await writer.request("subscribe", "users"))["success"]
            for name in ("Ann", "Bob", "Cy"):
                assert (await writer.request("create", "users", data={"name": name}))["success"]
                assert (await writer.recv())["type"] == "notification"
            ready = await http_get(base + "/readyz")
            assert ready.status == 200
            assert json.loads(ready.body)["change_feed"] == "caught up (seq 3)"
            found = await scrape(served.metrics_url)
            assert value(found, "wsspec_change_feed_position") == 3
            assert value(found, "wsspec_change_feed_lag_entries") == 0

            def outside_write() -> None:
                database = storage.database
                with database.connection_context():
                    database.execute_sql("INSERT INTO users (name) VALUES ('Dee')")

            await trio.to_thread.run_sync(outside_write)
            ready = await http_get(base + "/readyz")
            assert json.loads(ready.body)["change_feed"] == "caught up (seq 4)"
            assert (await writer.recv())["data"]["name"] == "Dee"


async def test_operations_http_server_bounds_and_methods(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app) as served:
            base = served.metrics_url.removesuffix("/metrics")
            head = await http_get(served.metrics_url, method="HEAD")
            assert head.status == 200 and head.body == b""
            assert int(head.headers["content-length"]) > 0
            assert (await http_get(base + "/metrics", method="POST")).status == 405
            assert (await http_get(base + "/nothing")).status == 404
            assert (await http_get(base + "/healthz?verbose=1")).status == 200
            huge = await http_get(base + "/metrics?" + "x" * 20000)
            assert huge.status == 431
            # Garbage instead of HTTP: answered 400, the server keeps serving.
            stream = await trio.open_tcp_stream("127.0.0.1", int(base.rsplit(":", 1)[1]))
            async with stream:
                await stream.send_all(b"hello\r\n\r\n")
                assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")
            assert (await http_get(base + "/healthz")).status == 200
