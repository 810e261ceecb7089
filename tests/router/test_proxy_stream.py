"""The response copy's cheap path keeps its promises: headers are never held back by a
slow body, small bodies arrive whole and framed, and ``timeouts.idle`` still bounds a
silent backend and a client that stops reading, each blamed on the right side."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp import web

from router import metrics
from router.failover.director import Outcome
from router.failures import Failure
from tests.helpers import wait_for

from .conftest import read_response, svc


def _record(router_obj, name: str = "app") -> list[tuple[str, Outcome]]:  # type: ignore[no-untyped-def]
    """What the proxy reports, still passed on to the director (its detector must
    hear it: an unsuspected backend would be tried again)."""
    seen: list[tuple[str, Outcome]] = []
    director = router_obj.directors[name]
    report = director.report

    def tee(b: str, o: Outcome) -> None:
        seen.append((b, o))
        report(b, o)

    director.report = tee
    return seen


def _inflight() -> float | None:
    return metrics.REGISTRY.get_sample_value("hotspare_inflight_requests", {"service": "app"})


async def _raw_server(handler) -> tuple[asyncio.Server, str]:  # type: ignore[no-untyped-def]
    """A bare TCP backend: ``handler(reader, writer)`` after the request head is read.
    The router's health probes get a plain 200."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /health "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_headers_are_not_held_back_by_a_slow_body(router) -> None:  # type: ignore[no-untyped-def]
    """The backend sends its head, then waits until the client has seen that head: if
    the router kept the headers for the first body bytes, this would never finish."""
    client_saw_head = asyncio.Event()

    async def head_then_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: 1\r\n\r\n")
        await writer.drain()
        await client_saw_head.wait()
        writer.write(b"hello")
        await writer.drain()
        await reader.read()  # until the router closes the pooled connection

    server, url = await _raw_server(head_then_body)
    try:
        _r, base = await router([svc(url)])
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nX-Test: 1\r\n" in head
        client_saw_head.set()
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        writer.close()
    finally:
        client_saw_head.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("chunked", [False, True])
async def test_small_bodies_arrive_whole_on_one_keepalive_connection(backend, router, chunked: bool) -> None:  # type: ignore[no-untyped-def]
    """Bodies that came with the backend's headers (one send) are framed right, with
    Content-Length or chunked, and the connection serves the next request."""

    async def small(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["tail"] or 0)
        body = bytes(range(256)) * (n // 256) + b"z" * (n % 256)
        if not chunked:
            return web.Response(body=body)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write_eof(body)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:[0-9]*}", small)
    url = await backend(app)
    _r, base = await router([svc(url)])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for n in (0, 1, 100, 5000, 70000):
            writer.write(f"GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            status, headers, body = await asyncio.wait_for(read_response(reader), 10)
            assert status == 200, n
            assert len(body) == n
            assert body == bytes(range(256)) * (n // 256) + b"z" * (n % 256)
            if chunked:
                assert headers.get("transfer-encoding") == "chunked"
            else:
                assert headers.get("content-length") == str(n)
            assert headers["x-request-id"]
    finally:
        writer.close()


async def test_backend_silent_after_its_head_is_an_idle_timeout(router, client) -> None:  # type: ignore[no-untyped-def]
    """Head alone, then nothing: ``idle`` (300 ms) ends it, not ``first_byte`` (60 s)."""
    release = asyncio.Event()

    async def head_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
        await writer.drain()
        await release.wait()

    server, url = await _raw_server(head_only)
    try:
        r, base = await router([svc(url, timeouts={"idle": "300ms", "first_byte": "60s"})])
        seen = _record(r)
        async with asyncio.timeout(20):  # far below first_byte
            async with client.get(base + "/stall") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert seen[-1] == ("a", Outcome(Failure.TIMEOUT))
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_client_that_stops_reading_is_cut_off_and_not_blamed_on_the_backend(
    backend, router, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """A big download to a client that reads nothing: after ``idle`` the router aborts
    the client's connection; the backend is reported OK only, never TIMEOUT."""

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 256 * 1024 * 1024
        await resp.prepare(request)
        chunk = b"b" * 65536
        try:
            for _ in range(4096):
                await resp.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return resp

    url = await backend(big)
    r, base = await router([svc(url, timeouts={"idle": "300ms"})])
    seen = _record(r)
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="hotspare.router")
    try:
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        await wait_for(lambda: _inflight() == 1, what="the request in flight")
        await wait_for(lambda: _inflight() == 0, timeout=20, what="the router to give up on the client")
        assert "client stopped reading for 0.3s" in caplog.text
        assert seen and all(o.failure is None for _, o in seen)
    finally:
        sock.close()


async def test_the_router_adds_no_headers_of_its_own_client_library(backend, router) -> None:  # type: ignore[no-untyped-def]
    """A bare request (no User-Agent, Accept, Accept-Encoding) reaches the backend
    without the ones aiohttp's client would add; a POST body gets no Content-Type."""
    from .conftest import echo_headers, load

    url = await backend()
    _r, base = await router([svc(url)])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for req in (b"GET /bare HTTP/1.1\r\nHost: a\r\n\r\n",
                    b"POST /bare HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"):
            writer.write(req)
            status, _headers, body = await asyncio.wait_for(read_response(reader), 10)
            assert status == 200
            h = echo_headers(load(body.decode()))
            for name in ("user-agent", "accept", "accept-encoding", "content-type"):
                assert name not in h, (name, h[name])
            assert h["x-hotspare-epoch"] and h["x-request-id"]
    finally:
        writer.close()
