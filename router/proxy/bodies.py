"""Bodies in flight: the client's request body as the proxy streams it upstream (kept
for a replay while it is small), and the writes that end a response to the client.

Rules:

1. Nothing is held whole: pieces move as the sockets deliver them; only a request body
   up to the replay buffer is kept, and only while it fits.
2. A fault of the client (hung up, stalled, too large) is recorded as such
   (``RequestBody.fault``, ``ClientStalled``) so it is never blamed on a backend.
3. Writes to the client are timed only when they must wait for it (``idle``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest

from router.edge import translate
from router.errors import ClientGone, RequestBodyTooLarge, UpstreamError, UpstreamTimeout

from .routes import ServiceRuntime

__all__ = ["COALESCE_MAX", "ClientStalled", "ProxyResponse", "RequestBody", "drain", "finish", "read_failed"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Largest first body piece sent in one write with the response headers: joining them
# copies the piece (Python < 3.12.9 has no safe writelines), a second send is cheaper.
COALESCE_MAX = 32 * 1024


class RequestBody:
    """The client's request body as an async iterator for the upstream request.

    Records a client-side fault (``fault``) so the proxy can tell it from a backend one.
    Keeps what it streamed, up to ``keep`` bytes, so the request can be sent again
    (:meth:`chunks` yields the kept bytes first, then reads on from the client); past
    ``keep`` nothing is kept and ``kept`` is None: the body cannot be sent again.
    """

    __slots__ = ("_idle", "_keep", "_limit", "_request", "done", "expect", "fault", "kept", "received")

    def __init__(self, request: BaseRequest, limit: int | None, idle: float, expect: bool, keep: int) -> None:
        self._request = request
        self._limit = limit
        self._idle = idle or None
        self._keep = keep
        self.expect = expect
        self.fault: Exception | None = None
        self.received = 0
        self.kept: list[bytes] | None = []
        self.done = False  # read to its end

    @property
    def kept_size(self) -> int | None:
        """Bytes of body in hand (all received so far), or None if not kept."""
        return None if self.kept is None else self.received

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.expect:
            self.expect = False
            await self._request.writer.write(_CONTINUE)
        if self.kept:
            for chunk in list(self.kept):
                yield chunk
        if self.done:
            return
        content = self._request.content
        limit = self._limit
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    chunk = await content.readany()
            except TimeoutError:
                self.fault = ClientGone("client stopped sending its body")
                raise self.fault from None
            except Exception as exc:  # the client hung up or sent a broken body
                self.fault = ClientGone(f"client body broken off ({type(exc).__name__})")
                raise self.fault from None
            if not chunk:
                self.done = True
                return
            self.received += len(chunk)
            if limit is not None and self.received > limit:
                self.fault = RequestBodyTooLarge(limit)
                raise self.fault
            if self.kept is not None:
                if self.received <= self._keep:
                    self.kept.append(chunk)
                else:
                    self.kept = None
            yield chunk


class ProxyResponse(web.StreamResponse):
    """A streamed response whose headers wait for the first body bytes, so that a small
    response goes out in one send instead of two (aiohttp's own ``web.Response`` does the
    same; the proxy flushes them at once when no body byte is at hand)."""

    _send_headers_immediately = False


class ClientStalled(Exception):
    """The client took nothing for ``idle`` seconds while the router waited to write."""


def read_failed(exc: Exception, svc: ServiceRuntime, backend: str) -> UpstreamError:
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: idle (or first_byte)
        return UpstreamTimeout(f"backend {backend} stalled for {svc.idle or svc.config.timeouts.first_byte}s mid-body")
    return translate(exc, backend)

async def drain(writer: StreamWriter, idle: float | None) -> None:
    """Wait for the client to take what is buffered, at most ``idle`` seconds."""
    try:
        async with asyncio.timeout(idle):
            await writer.drain()
    except TimeoutError:
        raise ClientStalled from None

async def finish(resp: web.StreamResponse, writer: StreamWriter, chunk: bytes, idle: float | None) -> None:
    """Send ``chunk`` (and the headers, if still buffered) and end the response."""
    if writer.chunked:
        # The last-chunk marker goes with ``chunk``; write_eof then drains: timed.
        try:
            async with asyncio.timeout(idle):
                await resp.write_eof(chunk)
        except TimeoutError:
            raise ClientStalled from None
        return
    await writer.write(chunk, drain=False)  # also sends headers still buffered
    if writer.protocol.writing_paused:
        await drain(writer, idle)
    await resp.write_eof()  # nothing left to send: returns at once
