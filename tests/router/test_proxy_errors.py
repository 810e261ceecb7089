"""What the client gets when the backend fails, and what the Director is told."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from router import metrics
from router.failover.director import Outcome, OutcomeKind

from .conftest import read_response, svc


def _closed_port() -> int:
    """A loopback port with nothing listening (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _record(router_obj, name: str = "app") -> list[tuple[str, Outcome]]:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, Outcome]] = []
    router_obj.directors[name].report = lambda b, o: seen.append((b, o))
    return seen


async def test_connection_refused_is_502_and_reported(router, client, caplog: pytest.LogCaptureFixture) -> None:
    r, base = await router([svc(f"http://127.0.0.1:{_closed_port()}")])
    seen = _record(r)
    async with client.get(base + "/x") as resp:
        text = await resp.text()
        assert resp.status == 502
        assert "unreachable" in text and "connect" in text
        assert resp.headers["X-Request-ID"] in text
    assert seen == [("a", Outcome(OutcomeKind.CONNECT_FAILED))]
    assert any("backend a unreachable" in m and "answered 502 to GET /x id=" in m for m in caplog.messages)


async def test_first_byte_timeout_is_504(backend, router, client) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    url = await backend(slow)
    r, base = await router([svc(url, timeouts={"first_byte": "200ms"})])
    seen = _record(r)
    try:
        async with client.get(base + "/slow") as resp:
            assert resp.status == 504
            assert "timed out" in await resp.text()
    finally:
        release.set()
    assert seen == [("a", Outcome(OutcomeKind.TIMEOUT))]


async def test_reset_before_response_is_502(router, client) -> None:
    async def broken(reader, writer):  # type: ignore[no-untyped-def]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # an unfinished head, then RST
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        r, base = await router([svc(f"http://127.0.0.1:{port}")])
        seen = _record(r)
        async with client.get(base + "/r") as resp:
            assert resp.status == 502
            assert "closed the connection" in await resp.text() or "reset" in await resp.text()
        assert seen == [("a", Outcome(OutcomeKind.RESET))]
    finally:
        server.close()
        await server.wait_closed()


async def test_reset_mid_body_aborts_the_client_connection(router, client) -> None:
    async def half(reader, writer):  # type: ignore[no-untyped-def]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        r, base = await router([svc(f"http://127.0.0.1:{port}")])
        seen = _record(r)
        async with client.get(base + "/half") as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        assert seen[-1] == ("a", Outcome(OutcomeKind.RESET))
    finally:
        server.close()
        await server.wait_closed()


async def test_cl_te_smuggling_never_reaches_backend_as_two_requests(raw_backend, router) -> None:
    rb = await raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    _, base = await router([svc(f"http://127.0.0.1:{rb.port}")])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    try:
        writer.write(smuggle)
        status, _, _ = await read_response(reader)
        assert status == 400
    finally:
        writer.close()
    assert rb.received.count(b"HTTP/1.1\r\n") == 0
    assert b"/admin" not in rb.received


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ],
    ids=["cl+te", "two-lengths"],
)
async def test_ambiguous_backend_framing_is_502(raw_backend, router, client, answer: bytes) -> None:
    rb = await raw_backend(answer)
    r, base = await router([svc(f"http://127.0.0.1:{rb.port}")])
    seen = _record(r)
    async with client.get(base + "/f") as resp:
        assert resp.status == 502
        assert "malformed" in await resp.text() or "ambiguous" in await resp.text()
    assert seen == [("a", Outcome(OutcomeKind.BAD_RESPONSE))]


async def test_client_hangup_is_not_reported_as_backend_failure(backend, router) -> None:
    got_body = asyncio.Event()

    async def h(request: web.Request) -> web.Response:
        await request.read()
        if request.path != "/health":  # not the router's health probe
            got_body.set()
        return web.Response(text="ok")

    url = await backend(h)
    r, base = await router([svc(url)])
    seen = _record(r)
    host, port = base.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    await asyncio.wait_for(_until(lambda: _inflight() == 1), 10)
    writer.transport.abort()
    await asyncio.wait_for(_until(lambda: _inflight() == 0), 10)
    assert all(o.kind is OutcomeKind.OK for _, o in seen)
    assert not got_body.is_set()


def _inflight() -> float | None:
    return metrics.REGISTRY.get_sample_value("hotspare_inflight_requests", {"service": "app"})


async def _until(cond) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import wait_for

    await wait_for(cond, timeout=10)


async def test_body_stall_longer_than_idle_aborts_and_reports_timeout(router, client) -> None:
    release = asyncio.Event()

    async def stall(reader, writer):  # type: ignore[no-untyped-def]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"s" * 100)
        await writer.drain()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        r, base = await router([svc(f"http://127.0.0.1:{port}", timeouts={"idle": "300ms"})])
        seen = _record(r)
        async with client.get(base + "/stall") as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        assert seen[-1] == ("a", Outcome(OutcomeKind.TIMEOUT))
    finally:
        release.set()
        server.close()
        await server.wait_closed()
