"""Issue 10, the data path: what an anonymous client can make the router do. Real router,
real backends (aiohttp, or raw sockets where a backend must misbehave byte-exactly) and a
decoy listener that must never be contacted, all on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from router import metrics
from router.health.detector import Health
from router.server import Router

from .conftest import echo_headers, svc

FAST = {"health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 1, "fall": 2},
        "failover": {"traffic_failures": 1}}


class Decoy:
    """A listener that counts connections: the router must never open one to it."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")
            writer.close()

        self._server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def decoy() -> AsyncIterator[Decoy]:
    d = Decoy()
    await d.start()
    yield d
    await d.close()


class Recorder:
    """Echo backend that also counts what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        doc = {"method": request.method, "target": request.raw_path,
               "headers": [[k, v] for k, v in request.headers.items()], "size": len(body)}
        if request.raw_path != "/health":  # the router's own probes are not client traffic
            self.seen.append(doc)
        return web.json_response(doc)


async def raw(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the router sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                out += chunk
        return out
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def start(router: Callable[..., Awaitable[tuple[Router, str]]], backend: Any, rec: Recorder,
                **kw: Any) -> tuple[Router, int, float]:
    a = await backend(rec.handle)
    b = await backend(rec.handle)
    r, base = await router([svc(a, b, **{**FAST, **kw})])
    return r, int(base.rsplit(":", 1)[1]), upstream_errors()


def upstream_errors() -> float:
    """hotspare_upstream_errors_total of service app, all backends and causes (the
    registry is the process's: compare before and after, never with zero)."""
    total = 0.0
    for metric in metrics.REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "hotspare_upstream_errors_total" and sample.labels.get("service") == "app":
                total += sample.value
    return total


def untouched(r: Router, errors_before: float) -> None:
    """Nothing a client did counted against a backend."""
    snap = r.directors["app"].snapshot()
    assert (snap.active, snap.epoch, snap.state) == ("a", 0, "active")
    health = getattr(r.directors["app"], "health", {})
    assert all(h is Health.UP for h in health.values()), health
    assert upstream_errors() == errors_before


async def test_connect_is_405_and_opens_nothing(router, backend, decoy: Decoy) -> None:
    rec = Recorder()
    r, port, errors = await start(router, backend, rec)
    for target in (f"@127.0.0.1:{decoy.port}", f"127.0.0.1:{decoy.port}"):
        answer = await raw(port, f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(answer) == 405 and b"Allow: GET" in answer and b"SECRET" not in answer
    assert decoy.accepted == 0 and rec.seen == []
    untouched(r, errors)


async def test_targets_that_are_not_origin_form_never_reach_a_backend(router, backend, decoy: Decoy) -> None:
    rec = Recorder()
    r, port, errors = await start(router, backend, rec)
    cases = {
        f"GET @127.0.0.1:{decoy.port} HTTP/1.1": 400,
        f"GET 127.0.0.1:{decoy.port}/x HTTP/1.1": 400,
        f"GET http://u@127.0.0.1:{decoy.port}/x HTTP/1.1": 400,
        f"GET ftp://127.0.0.1:{decoy.port}/x HTTP/1.1": 400,
        "GET * HTTP/1.1": 400,
        "GET /\r\n": 400,  # HTTP/0.9: never forwarded
        "GET / HTTP/2.0": 505,
        "GET / HTTP/1.1\r\nHost: y": 400,  # two Host lines
        "GET / HTTP/1.1\r\nX-A: 1\r\nHost: a@b": 400,  # (two again, and not a host)
    }
    for line, want in cases.items():
        answer = await raw(port, f"{line}\r\nHost: x\r\n\r\n".encode())
        assert status_of(answer) == want, (line, answer[:200])
        assert b"SECRET" not in answer
    assert decoy.accepted == 0 and rec.seen == []
    untouched(r, errors)


async def test_options_asterisk_is_answered_by_the_router(router, backend) -> None:
    rec = Recorder()
    r, port, errors = await start(router, backend, rec)
    answer = await raw(port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200 and b"Allow: GET, HEAD, POST" in answer
    assert rec.seen == []
    untouched(r, errors)


async def test_absolute_form_is_routed_by_its_authority_and_only_its_path_forwarded(
    router, backend, decoy: Decoy
) -> None:
    rec = Recorder()
    a = await backend(rec.handle)
    other = Recorder()
    o = await backend(other.handle)
    _, base = await router([svc(a, name="app", hosts=["library.example"]), svc(o, name="other")])
    port = int(base.rsplit(":", 1)[1])
    answer = await raw(port, (f"GET http://library.example/search?q=1 HTTP/1.1\r\n"
                              f"Host: 127.0.0.1:{decoy.port}\r\nConnection: close\r\n\r\n").encode())
    assert status_of(answer) == 200
    (seen,) = rec.seen
    assert seen["target"] == "/search?q=1"
    assert echo_headers(seen)["host"] == ["library.example"]
    assert other.seen == [] and decoy.accepted == 0


async def test_connection_nominated_forwarding_headers_are_started_afresh(router, backend, client) -> None:
    rec = Recorder()
    _, port, _ = await start(router, backend, rec)
    async with client.get(f"http://127.0.0.1:{port}/x", headers={
        "Connection": "X-Forwarded-For, Via, X-Request-ID, X-Secret",
        "X-Forwarded-For": "6.6.6.6", "Via": "1.1 evil", "X-Request-ID": "chosen-by-client",
        "X-Secret": "s",
    }) as resp:
        assert resp.status == 200
        h = echo_headers(json.loads(await resp.text()))
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["via"] == ["1.1 hotspare"]
    assert h["x-request-id"] != ["chosen-by-client"]
    assert "x-secret" not in h


async def test_limits_on_the_request_head_answer_414_and_431(router, backend, caplog) -> None:
    rec = Recorder()
    r, port, errors = await start(router, backend, rec)
    long_target = "/" + "a" * 9000
    assert status_of(await raw(port, f"GET {long_target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())) == 414
    assert status_of(await raw(port, f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 9000}\r\n\r\n".encode())) == 431
    many = "".join(f"X-H{i}: v\r\n" for i in range(150))
    assert status_of(await raw(port, f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())) == 431
    assert status_of(await raw(port, b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n")) == 400
    assert rec.seen == []
    assert not [rec_ for rec_ in caplog.records if rec_.exc_info], "a malformed request logged a traceback"
    assert metrics.REGISTRY.get_sample_value("hotspare_bad_requests_total", {"cause": "uri_too_long"})
    untouched(r, errors)


async def test_client_faults_never_count_against_a_backend_under_concurrency(router, backend) -> None:
    """Thirty of each at once, with traffic_failures 1 and fall 2: nothing moves."""
    rec = Recorder()
    r, port, errors = await start(router, backend, rec, max_body_size="1KiB")
    bad = [
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET @127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Odd: \xff\xfe\r\n\r\n",
    ]

    async def hang_up_mid_body() -> bytes:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        writer.transport.abort()
        return b"HTTP/1.1 499 hung up"

    jobs = [raw(port, data) for data in bad for _ in range(30)] + [hang_up_mid_body() for _ in range(30)]
    answers = await asyncio.gather(*jobs)
    assert all(status_of(a) < 500 for a in answers), sorted({a[:40] for a in answers})
    untouched(r, errors)  # traffic reports are synchronous: a wrong one would show already


async def _raw_backend(answer: bytes) -> tuple[asyncio.AbstractServer, str]:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /health"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_204_with_stray_bytes_reaches_the_client_as_a_204(router, client) -> None:
    server, url = await _raw_backend(b"HTTP/1.1 204 No Content\r\n\r\nGARBAGE-AFTER-THE-HEAD")
    try:
        r, base = await router([svc(url, **FAST)])
        for _ in range(3):  # and again: the spoiled connection was not reused
            async with client.get(f"{base}/x") as resp:
                assert resp.status == 204
                assert await resp.read() == b""
        untouched_single(r)
    finally:
        server.close()


def untouched_single(r: Router) -> None:
    snap = r.directors["app"].snapshot()
    assert (snap.active, snap.epoch, snap.state) == ("a", 0, "active")


async def test_a_websocket_upgrade_answered_200_is_passed_through_and_stays_http(router, backend) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"plain page for {request.path}", headers={"X-From": "backend"})

    url = await backend(page)
    r, base = await router([svc(url, **FAST)])
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"X-From: backend" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert await reader.readexactly(length) == b"plain page for /ws"
        writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # still HTTP
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"plain page for /after")
    finally:
        writer.close()
    untouched_single(r)
