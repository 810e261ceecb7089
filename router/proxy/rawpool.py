"""The keep-alive pool of one plain-HTTP backend, and one request sent on it (the
connection and its response are in rawupstream.py).

Rules:

1. At most ``limit`` connections (0: no limit), open or opening; a request beyond them
   waits for one. An idle connection lives ``keepalive`` seconds (one sweep timer per
   pool, not one per connection); the most recently used one is taken first.
2. Whether a request got a reused connection is set in :data:`CONNECTION_REUSED` (in the
   requesting task): the stale keep-alive race is retried once (forward.py).
3. The request is framed as aiohttp's client framed it: the client's Content-Length
   kept, else chunked; no body on a method that takes one: ``Content-Length: 0``. A head
   aiohttp would refuse to encode (control characters, not UTF-8) raises ValueError
   (the client's fault, translated at the edge).
4. A body goes out from its own task while the answer is awaited, so an early answer is
   seen; with ``Expect: 100-continue`` it starts only after the backend's 100 (and never
   if the final answer comes first), else the head goes with its first piece (as
   aiohttp's client does). A connection whose body did not go out whole is never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections import deque
from collections.abc import AsyncIterator, Callable

import aiohttp
from multidict import CIMultiDict

from router.edge import ConnectFailed

from .rawupstream import RawResponse, UpstreamConnection

__all__ = ["CONNECTION_REUSED", "Headers", "RawPool", "encode_head"]

Headers = CIMultiDict[str] | list[tuple[str, str]]

CONNECTION_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("hotspare_connection_reused", default=False)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but tab, CR and LF
_TARGET_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class RawPool:
    """Connections to one backend (``host``, ``port``)."""

    def __init__(self, host: str, port: int, limit: int, keepalive: float) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.keepalive = keepalive
        self._idle: list[UpstreamConnection] = []
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self._all_lost: asyncio.Future[None] | None = None

    async def acquire(self, connect_timeout: float | None) -> tuple[UpstreamConnection, bool]:
        """A connection (reused or new) and whether it was reused."""
        while True:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn, True
            if not self.limit or self._count < self.limit:
                break
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # pass the slot on
                else:
                    self._waiters.remove(fut)
                raise
        return await self._connect(connect_timeout), False

    async def _connect(self, seconds: float | None) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, loop)  # noqa: E731
        self._count += 1
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(factory, self.host, self.port)
        except TimeoutError:
            self._gone()
            raise aiohttp.ConnectionTimeoutError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            self._gone()
            raise ConnectFailed(exc) from exc
        except BaseException:
            self._gone()
            raise
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if not reusable or self._closed or conn.closed:
            conn.close()  # counted off when it is lost
            return
        loop = conn.loop
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.idle_since + self.keepalive, self._expire)
        self._wake()

    def lost(self, conn: UpstreamConnection) -> None:
        """A connection closed (either side): its slot is free."""
        if conn in self._idle:
            self._idle.remove(conn)
        self._gone()

    def _gone(self) -> None:
        self._count -= 1
        self._wake()
        if self._count == 0 and self._all_lost is not None and not self._all_lost.done():
            self._all_lost.set_result(None)

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _expire(self) -> None:
        self._sweep = None
        if not self._idle:
            return
        loop = self._idle[0].loop
        limit = loop.time() - self.keepalive
        for conn in [c for c in self._idle if c.idle_since <= limit]:
            conn.close()
        fresh = [c for c in self._idle if c.idle_since > limit]
        if fresh:
            self._sweep = loop.call_at(min(c.idle_since for c in fresh) + self.keepalive, self._expire)

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        if self._count > 0:  # closed ones are counted off in connection_lost: wait for it
            self._all_lost = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._all_lost

    async def request(
        self, method: str, target: str, headers: Headers, body: AsyncIterator[bytes] | None,
        expect: bool, connect: float | None, first_byte: float | None,
    ) -> RawResponse:
        """Send one request; returns once the answer's head is in (rules 2-4)."""
        conn, reused = await self.acquire(connect)
        CONNECTION_REUSED.set(reused)
        resp = RawResponse(conn, method == "HEAD")
        conn.resp = resp
        try:
            head = encode_head(method, target, headers, body is not None)
        except ValueError:
            resp.release()
            raise
        if body is None:
            conn.write(head)
            conn.arm(first_byte)
        else:
            if expect:
                resp.continued = conn.loop.create_future()
            chunked = not _has_length(headers)
            conn.sender = asyncio.get_running_loop().create_task(
                _send_body(conn, resp, head, body, chunked, first_byte), name="hotspare-upstream-body")
        try:
            await resp.head
        except BaseException:
            resp.close()
            raise
        return resp


def _has_length(headers: Headers) -> bool:
    if isinstance(headers, CIMultiDict):
        return "Content-Length" in headers
    return any(name.lower() == "content-length" for name, _ in headers)


def encode_head(method: str, target: str, headers: Headers, has_body: bool) -> bytes:
    """Rule 3: the request head as aiohttp's client would have written it."""
    if _TARGET_FORBIDDEN.search(target) or _TARGET_FORBIDDEN.search(method):
        raise ValueError("forbidden character in the request target")
    items = headers.items() if isinstance(headers, CIMultiDict) else headers
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in items]
    if has_body:
        if not _has_length(headers):
            lines.append("Transfer-Encoding: chunked")
    elif method not in _GET_METHODS and not _has_length(headers):
        lines.append("Content-Length: 0")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # One pass for every name and value: no control byte, and no CR or LF but the
    # separators (a value with "\r\n" in it would add a line).
    if _CONTROL.search(text) or text.count("\r") != len(lines) or text.count("\n") != len(lines):
        raise ValueError("Forbidden control character detected in headers.")
    return text.encode("utf-8")


async def _send_body(
    conn: UpstreamConnection, resp: RawResponse, head: bytes, body: AsyncIterator[bytes], chunked: bool,
    first_byte: float | None,
) -> None:
    """Rule 4: the head, then (after a 100 if asked for) the body, framed. Without a 100
    to wait for, the head leaves with the first piece of body: a body that breaks before
    its first byte sends nothing at all."""
    try:
        pending: bytes | None = head
        if resp.continued is not None:
            conn.write(head)
            pending = None
            conn.arm(first_byte)
            await resp.continued
        async for chunk in body:
            if not chunk:
                continue
            # framed around the piece, not joined to it: no copy
            parts = (b"%x\r\n" % len(chunk), chunk, b"\r\n") if chunked else (chunk,)
            conn.writelines(parts if pending is None else (pending, *parts))
            pending = None
            if conn.write_paused:
                async with asyncio.timeout(first_byte or None):
                    await conn.drain()
        last = b"0\r\n\r\n" if chunked else b""
        if pending is not None or last:
            conn.write(last if pending is None else pending + last)
        conn.arm(first_byte)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # the client's body broke off, or the backend went away
        if isinstance(exc, TimeoutError):
            exc = aiohttp.ServerTimeoutError("backend stopped taking the request body")
        if not resp.head.done():
            resp.fail(exc)
