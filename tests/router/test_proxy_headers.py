"""Header rules through a real router: hop-by-hop, Connection-named, Host, request ids,
redirect and cookie rewriting, service matching, access log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from tests.helpers import wait_for

from .conftest import echo_headers, load, read_response, svc


async def _raw(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        return await read_response(reader)
    finally:
        writer.close()


async def test_hop_by_hop_and_connection_named_headers_removed_both_ways(backend, router) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps([[k, v] for k, v in request.headers.items()]),
            headers={
                "Connection": "X-Backend-Secret, keep-alive",
                "X-Backend-Secret": "s",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-Kept": "yes",
            },
        )

    url = await backend(h)
    _, base = await router([svc(url)])
    status, headers, body = await _raw(
        base,
        b"GET /h HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Client-Secret\r\n"
        b"X-Client-Secret: c\r\nKeep-Alive: 300\r\nTE: trailers\r\nTrailer: X-T\r\n"
        b"Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
        b"Upgrade: h2c\r\nX-Hotspare-Epoch: 99\r\nX-Other: o\r\n\r\n",
    )
    assert status == 200
    got = {k.lower(): v for k, v in json.loads(body)}
    for gone in ("x-client-secret", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection", "upgrade"):
        assert gone not in got, gone
    assert got.get("connection", "keep-alive").lower() == "keep-alive"  # aiohttp's own, not the client's list
    assert got["x-other"] == "o"
    assert got["x-hotspare-epoch"] == "0"  # a client cannot forge the epoch
    assert "x-backend-secret" not in headers
    assert "keep-alive" not in headers
    assert "proxy-authenticate" not in headers
    assert headers["x-kept"] == "yes"


async def test_host_preserved_or_backend(backend, router, client) -> None:
    url = await backend()
    _, base = await router(
        [svc(url, name="keep", path_prefix="/keep"), svc(url, name="swap", path_prefix="/swap", preserve_host=False)]
    )
    async with client.get(base + "/keep", headers={"Host": "library.example"}) as resp:
        assert echo_headers(load(await resp.text()))["host"] == ["library.example"]
    async with client.get(base + "/swap", headers={"Host": "library.example"}) as resp:
        h = echo_headers(load(await resp.text()))
        assert h["host"] == [url.removeprefix("http://")]
        assert h["x-forwarded-host"] == ["library.example"]


async def test_request_id_kept_generated_logged(backend, router, client, tmp_path: Path) -> None:
    url = await backend()
    _, base = await router([svc(url)])
    async with client.get(base + "/a", headers={"X-Request-ID": "abc-123"}) as resp:
        assert resp.headers["X-Request-ID"] == "abc-123"
        assert echo_headers(load(await resp.text()))["x-request-id"] == ["abc-123"]
    async with client.get(base + "/b", headers={"X-Request-ID": "bad id\twith spaces"}) as resp:
        generated = resp.headers["X-Request-ID"]
        assert generated != "bad id\twith spaces" and len(generated) == 24
    log = tmp_path / "access.log"

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    got = await wait_for(lambda: len(lines()) >= 2 and lines(), what="two access-log lines")
    assert '"GET /a HTTP/1.1" 200 ' in got[0] and "rid=abc-123" in got[0]
    assert got[0].startswith("127.0.0.1 - - [")
    assert f"rid={generated}" in got[1]


async def test_service_matching_by_host_and_longest_prefix(backend, router, client) -> None:
    url = await backend()
    ua = await backend(_tag("any-root"))
    ub = await backend(_tag("any-api"))
    uc = await backend(_tag("lib-api-v2"))
    _, base = await router(
        [
            svc(ua, name="root"),
            svc(ub, name="api", path_prefix="/api"),
            svc(uc, name="v2", path_prefix="/api/v2/", hosts=["Library.Example"]),
            svc(url, name="echo", path_prefix="/echo"),
        ]
    )
    cases = [
        ("other", "/", "any-root"),
        ("other", "/apix", "any-root"),
        ("other", "/api", "any-api"),
        ("other", "/api/v2/x", "any-api"),
        ("library.example:8080", "/api/v2/x", "lib-api-v2"),
        ("library.example", "/api/v2", "lib-api-v2"),
        ("library.example", "/api/v1", "any-api"),
    ]
    for host, path, tag in cases:
        async with client.get(base + path, headers={"Host": host}) as resp:
            assert await resp.text() == tag, (host, path)


async def test_no_service_is_404(backend, router, client) -> None:
    url = await backend()
    _, base = await router([svc(url, hosts=["only.example"])])
    async with client.get(base + "/", headers={"Host": "else.example"}) as resp:
        assert resp.status == 404
        text = await resp.text()
        assert "no service" in text and resp.headers["X-Request-ID"] in text


def _tag(tag: str):  # type: ignore[no-untyped-def]
    async def h(request: web.Request) -> web.Response:
        return web.Response(text=tag)

    return h


async def test_location_and_cookie_rewriting(backend, router, client) -> None:
    async def h(request: web.Request) -> web.Response:
        me = f"http://{request.host}"
        resp = web.Response(
            status=302,
            headers={
                "Location": f"{me}/login?next=/x",
                "Content-Location": f"{me}/doc",
                "URI": "http://other.example/keep",
            },
        )
        resp.headers.add("Set-Cookie", "sid=1; Domain=backend.internal; Path=/app/x; HttpOnly")
        return resp

    url = await backend(h)
    _, base = await router(
        [
            svc(
                url,
                "http://127.0.0.1:9",
                preserve_host=False,
                rewrite={"cookie_domain": {"backend.internal": "public.example"}, "cookie_path": {"/app": "/"}},
            )
        ]
    )
    async with client.get(base + "/", headers={"Host": "public.example:8443"}, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "http://public.example:8443/login?next=/x"
        assert resp.headers["Content-Location"] == "http://public.example:8443/doc"
        assert resp.headers["URI"] == "http://other.example/keep"
        assert resp.headers["Set-Cookie"] == "sid=1; Domain=public.example; Path=/; HttpOnly"


async def test_malformed_requests_get_400_and_never_reach_backend(raw_backend, router) -> None:
    rb = await raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    _, base = await router([svc(f"http://127.0.0.1:{rb.port}")])
    bad = [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host on 1.1
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad\x01: 1\r\n\r\n",  # bad header byte
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ]
    for data in bad:
        status, _, _ = await _raw(base, data)
        assert status == 400, data
    assert rb.received == b""
