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

from router.edge import translate
from router.errors import ClientGone, RequestBodyTooLarge, UpstreamError, UpstreamTimeout

from .request import BodyReader
from .respond import Responder, Writer
from .routes import ServiceRuntime

__all__ = ["ClientStalled", "RequestBody", "drain", "finish", "read_failed"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestBody:
    """The client's request body as an async iterator for the upstream request.

    Records a client-side fault (``fault``) so the proxy can tell it from a backend one.
    Keeps what it streamed, up to ``keep`` bytes, so the request can be sent again
    (:meth:`chunks` yields the kept bytes first, then reads on from the client); past
    ``keep`` nothing is kept and ``kept`` is None: the body cannot be sent again.
    """

    __slots__ = ("_client", "_idle", "_keep", "_limit", "_reader", "done", "expect", "fault", "kept", "received")

    def __init__(self, reader: BodyReader, client: Writer, limit: int | None, idle: float, expect: bool, keep: int) -> None:
        self._reader = reader
        self._client = client
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
            self._client.write(_CONTINUE)
        if self.kept:
            for chunk in list(self.kept):
                yield chunk
        if self.done:
            return
        content = self._reader
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


class ClientStalled(Exception):
    """The client took nothing for ``idle`` seconds while the router waited to write."""


def read_failed(exc: Exception, svc: ServiceRuntime, backend: str) -> UpstreamError:
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: idle (or first_byte)
        return UpstreamTimeout(f"backend {backend} stalled for {svc.idle or svc.config.timeouts.first_byte}s mid-body")
    return translate(exc, backend)

async def drain(out: Responder, idle: float | None) -> None:
    """Wait for the client to take what is buffered, at most ``idle`` seconds."""
    try:
        async with asyncio.timeout(idle):
            await out.conn.drain()
    except TimeoutError:
        raise ClientStalled from None


async def finish(out: Responder, chunk: bytes, idle: float | None) -> None:
    """Send ``chunk`` (and the head, if still buffered) and end the response; wait
    (timed) while the client's buffer is full."""
    out.end(chunk)
    if out.conn.write_paused:
        await drain(out, idle)
