"""Bodies both ways: Content-Length and chunked, HEAD/204/304, 100-continue, limits."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from .conftest import echo_headers, load, read_response, svc


async def _gen(n: int, size: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        yield b"y" * size


async def test_chunked_upload_stays_chunked(backend, router, client) -> None:
    url = await backend()
    _, base = await router([svc(url)])
    async with client.post(base + "/up", data=_gen(20, 10_000)) as resp:
        doc = load(await resp.text())
    assert doc["chunked"] is True
    assert doc["size"] == 200_000
    assert doc["sha256"] == hashlib.sha256(b"y" * 200_000).hexdigest()
    assert "content-length" not in echo_headers(doc)


async def test_chunked_and_length_downloads(backend, router, client) -> None:
    async def h(request: web.Request) -> web.StreamResponse:
        if request.path == "/chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(50):
                await resp.write(bytes([i]) * 1000)
            await resp.write_eof()
            return resp
        return web.Response(body=b"z" * 123_456)

    url = await backend(h)
    _, base = await router([svc(url)])
    async with client.get(base + "/chunked") as resp:
        body = await resp.read()
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert body == b"".join(bytes([i]) * 1000 for i in range(50))
    async with client.get(base + "/len") as resp:
        assert resp.headers["Content-Length"] == "123456"
        assert "Transfer-Encoding" not in resp.headers
        assert await resp.read() == b"z" * 123_456


async def test_head_204_304_have_no_body(backend, router) -> None:
    async def h(request: web.Request) -> web.StreamResponse:
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"q" * 5000)

    url = await backend(h)
    _, base = await router([svc(url)])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Three requests on one keep-alive connection: a stray body byte would corrupt
        # the next response's status line.
        for target, method, status in (("/x", "HEAD", 200), ("/204", "GET", 204), ("/304", "GET", 304)):
            writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status}".encode()), head
            if method == "HEAD":
                assert b"Content-Length: 5000" in head
        writer.write(b"GET /last HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = await read_response(reader)
        assert (status, len(body)) == (200, 5000)
    finally:
        writer.close()


async def test_expect_100_continue(backend, router) -> None:
    url = await backend()
    _, base = await router([svc(url, max_body_size="1KiB")])
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"PUT /f HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 100
        writer.write(b"0123456789")
        status, _, body = await read_response(reader)
        assert status == 200
        assert load(body.decode())["size"] == 10
    finally:
        writer.close()
    # Too large a declared body: 413 straight away, never 100.
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"PUT /f HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 413
        assert b"request id:" in body
    finally:
        writer.close()


async def test_chunked_body_over_limit_is_413(backend, router, client) -> None:
    url = await backend()
    _, base = await router([svc(url, max_body_size="64KiB")])
    async with client.post(base + "/up", data=_gen(100, 10_000)) as resp:
        assert resp.status == 413
        assert "payload too large" in await resp.text()
    async with client.post(base + "/up", data=b"k" * 70_000) as resp:
        assert resp.status == 413
    async with client.post(base + "/up", data=b"k" * 60_000) as resp:
        assert resp.status == 200
