"""What the client gets when the backend fails, and what the Director is told."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from router import metrics
from router.failover.director import Outcome
from router.failures import Failure

from .conftest import read_response, svc


def _closed_port() -> int:
    """A loopback port with nothing listening (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


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


async def test_connection_refused_is_502_and_reported(router, client, caplog: pytest.LogCaptureFixture) -> None:
    r, base = await router([svc(f"http://127.0.0.1:{_closed_port()}")])
    seen = _record(r)
    async with client.get(base + "/x") as resp:
        text = await resp.text()
        assert resp.status == 502
        assert "unreachable" in text and "connect" in text
        assert resp.headers["X-Request-ID"] in text
    assert seen == [("a", Outcome(Failure.CONNECT))]
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
    assert seen == [("a", Outcome(Failure.TIMEOUT))]


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
        assert seen == [("a", Outcome(Failure.RESET))]
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
        assert seen[-1] == ("a", Outcome(Failure.RESET))
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
    assert seen == [("a", Outcome(Failure.FRAMING))]


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
    assert all(o.failure is None for _, o in seen)
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
        assert seen[-1] == ("a", Outcome(Failure.TIMEOUT))
    finally:
        release.set()
        server.close()
        await server.wait_closed()


# -- one vocabulary (issue 11): router/edge.py translates, everyone says Failure --------


def test_failure_values_are_the_metric_cause_labels_dashboards_use() -> None:
    # hotspare_upstream_errors_total{cause=...}: a contract (deploy/grafana); never renamed.
    assert {f.value for f in Failure} >= {"connect", "reset", "timeout", "framing", "status"}
    assert [f for f in Failure if f.client_fault] == [Failure.UNSENDABLE]


async def test_translate_is_the_one_place_exceptions_become_ours() -> None:
    from router.edge import translate

    port = _closed_port()
    async with aiohttp.ClientSession() as s:
        try:
            await s.get(f"http://127.0.0.1:{port}/")
        except aiohttp.ClientError as exc:
            refused: BaseException = exc
    cases: list[tuple[BaseException, Failure, int, bool, str]] = [
        (refused, Failure.CONNECT, 502, False, "connect refused"),
        (aiohttp.ConnectionTimeoutError(), Failure.CONNECT, 504, False, "connect timeout"),
        (TimeoutError(), Failure.TIMEOUT, 504, True, "timeout"),
        (aiohttp.ServerDisconnectedError(), Failure.RESET, 502, True, "connection reset (ServerDisconnectedError)"),
        (ConnectionResetError(), Failure.RESET, 502, True, "connection reset (ConnectionResetError)"),
        (UnicodeEncodeError("ascii", "é", 0, 1, "no"), Failure.UNSENDABLE, 400, False, ""),
    ]
    for exc, failure, status, sent, detail in cases:
        err = translate(exc, "a")
        assert (err.failure, err.status, err.sent) == (failure, status, sent), exc
        assert err.cause.startswith("backend a ") or failure is Failure.UNSENDABLE
        assert not detail or err.detail == detail
    assert Outcome.failed(Failure.CONNECT) is Outcome.failed(Failure.CONNECT)  # shared, not allocated
    assert Outcome.ok(200) == Outcome(None, 200)


async def test_upstream_error_metric_keeps_its_cause_label(router, client) -> None:
    _, base = await router([svc(f"http://127.0.0.1:{_closed_port()}")])
    before = metrics.REGISTRY.get_sample_value(
        "hotspare_upstream_errors_total", {"service": "app", "backend": "a", "cause": "connect"}) or 0.0
    async with client.get(base + "/x") as resp:
        assert resp.status == 502
    assert metrics.REGISTRY.get_sample_value(
        "hotspare_upstream_errors_total", {"service": "app", "backend": "a", "cause": "connect"}) == before + 1
