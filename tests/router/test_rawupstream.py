"""The proxy's own upstream client (router/proxy/rawpool.py, rawupstream.py), below the
proxy: keep-alive reuse, flow control, bodiless answers with stray bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from multidict import CIMultiDict

from router.edge import BadResponse
from router.proxy.rawpool import CONNECTION_REUSED, RawPool
from router.proxy.rawupstream import HIGH_WATER, MAX_HEAD_BYTES, MAX_HEAD_LINES
from tests.helpers import wait_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Server:
    """A raw backend on port 0 whose close waits for its connection handlers."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._live: set[asyncio.Task[object]] = set()
        self.server: asyncio.Server | None = None

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._live.add(task)
        try:
            await self._handler(reader, writer)
        finally:
            writer.close()
            self._live.discard(task)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        async with asyncio.timeout(2):
            while self._live:
                await asyncio.wait(set(self._live))
        await self.server.wait_closed()


async def _server(handler: Handler) -> tuple[_Server, int]:
    server = _Server(handler)
    return server, await server.start()


async def _heads(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        try:
            yield await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return


def _headers() -> CIMultiDict[str]:
    return CIMultiDict({"Host": "b"})


async def test_a_kept_alive_connection_is_reused_and_said_so() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _heads(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server, port = await _server(answer)
    pool = RawPool("127.0.0.1", port, 4, 10.0)
    try:
        for expected in (False, True):
            resp = await pool.request("GET", "/", _headers(), None, False, 1.0, 1.0)
            assert CONNECTION_REUSED.get() is expected
            assert (resp.status, await resp.read(), resp.at_eof()) == (200, b"ok", True)
            resp.release()
    finally:
        await pool.close()
        await server.close()


async def test_a_reader_that_lags_pauses_the_backend_socket() -> None:
    size = 8 * HIGH_WATER

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * size)
        await writer.drain()

    server, port = await _server(big)
    pool = RawPool("127.0.0.1", port, 4, 10.0)
    try:
        resp = await pool.request("GET", "/", _headers(), None, False, 1.0, 1.0)
        # the backend writes on; we read nothing ...
        await wait_for(lambda: resp._paused, what="the backend socket to be paused")
        assert resp._buffered <= HIGH_WATER + 256 * 1024  # ... paused, not swallowed whole
        got = 0
        while chunk := await resp.read():
            got += len(chunk)
        assert got == size
        resp.release()
    finally:
        await pool.close()
        await server.close()


@pytest.mark.parametrize("method, head", [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\nstray"),
])
async def test_bytes_after_a_bodiless_answer_drop_the_connection_not_the_answer(method: str, head: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _heads(reader):
            writer.write(head)

    server, port = await _server(answer)
    pool = RawPool("127.0.0.1", port, 4, 10.0)
    try:
        for _ in range(2):
            resp = await pool.request(method, "/", _headers(), None, False, 1.0, 1.0)
            assert CONNECTION_REUSED.get() is False  # never reused after stray bytes
            assert await resp.read() == b""
            resp.release()
            # the connection that carried stray bytes is closed and counted off, not pooled
            await wait_for(lambda: pool._count == 0, timeout=5, what="the spoiled connection to close")
    finally:
        await pool.close()
        await server.close()


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (3 * MAX_HEAD_BYTES) + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEAD_LINES + 1)) + b"\r\n",
])
async def test_a_response_head_past_its_bounds_is_a_bad_response(head: bytes) -> None:
    """A backend gone wrong must not grow the router's memory without bound."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()

    server, port = await _server(answer)
    pool = RawPool("127.0.0.1", port, 4, 10.0)
    try:
        with pytest.raises(BadResponse):
            await pool.request("GET", "/", _headers(), None, False, 1.0, 1.0)
    finally:
        await pool.close()
        await server.close()


async def test_a_large_body_in_the_packet_of_its_head_is_no_large_head() -> None:
    """The head bound counts head bytes only (a 1 MiB answer written at once came back
    502 when the bound counted the whole first packet)."""
    body = b"y" * (1 << 20)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in _heads(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    server, port = await _server(answer)
    pool = RawPool("127.0.0.1", port, 4, 10.0)
    try:
        for _ in range(3):
            resp = await pool.request("GET", "/", _headers(), None, False, 1.0, 1.0)
            got = b""
            while chunk := await resp.read():
                got += chunk
            assert got == body
            resp.release()
    finally:
        await pool.close()
        await server.close()
