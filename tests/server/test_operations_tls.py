"""TLS (wss://) end to end on every transport, with a certificate the test makes with
trustme: a client that trusts the test's CA is served; one that does not refuses the
server; a plain ws:// client gets no WebSocket; the server keeps serving throughout."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trio
from operations_support import make_certificates, scrape, serving, value
from wsserver_support import TIMEOUT, client, demo_app

pytestmark = pytest.mark.usefixtures("transport")

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_wss_serves_a_client_that_trusts_the_certificate(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    app = demo_app(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serving(app, certificates=certificates) as served:
            assert served.url.startswith("wss://127.0.0.1:")
            async with (
                client(served.url, ssl_context=certificates.client_context) as writer,
                client(served.url, ssl_context=certificates.client_context) as watcher,
            ):
                assert (await watcher.request("subscribe", "users"))["success"]
                created = await writer.request("create", "users", data={"name": "Tess"})
                assert created["success"]
                note = await watcher.recv()
                assert note["type"] == "notification" and note["data"] == created["data"]

            host, port = "127.0.0.1", int(served.url.split(":")[2].split("/")[0])
            # A client with only the system's CAs refuses the test's certificate.
            untrusting = await trio.open_ssl_over_tcp_stream(host, port)
            with pytest.raises(trio.BrokenResourceError) as refused:
                await untrusting.do_handshake()
            assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
            await untrusting.aclose()
            # A plain ws:// handshake on the TLS port is not upgraded.
            plain = await trio.open_tcp_stream(host, port)
            async with plain:
                await plain.send_all(UPGRADE)
                answer = b""
                # uvicorn and hypercorn close it at once; trio-websocket only after its
                # connect_timeout, so a second of silence is the answer too.
                with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await plain.receive_some(4096):
                        answer += chunk
            assert b"101" not in answer
            # Neither hurt the server.
            async with client(served.url, ssl_context=certificates.client_context) as again:
                assert (await again.request("read", "users"))["data"][0]["name"] == "Tess"
            found = await scrape(served.metrics_url)
            assert value(found, "wsspec_requests_total", operation="create", outcome="success") == 1
