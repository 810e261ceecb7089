"""One connection to a plain-HTTP backend, and the response read on it: an
``asyncio.Protocol`` fed to llhttp (httptools), for the proxy's hot path instead of a
framework client (issue 12). The pool and the sending of a request are in rawpool.py.

Rules:

1. One response at a time per connection (:attr:`UpstreamConnection.resp`); a parser per
   response, so nothing of one answer (a HEAD's announced length) leaks into the next.
2. The response head wakes the requester once the whole packet it came in is parsed:
   the first body bytes are then in hand, as the pieces the socket delivered (no copy).
3. Memory stays bounded: past ``HIGH_WATER`` unread body bytes the socket is paused
   (``pause_reading``) until the reader is down to ``LOW_WATER``.
4. Framing is strict: Content-Length with Transfer-Encoding, or two Content-Lengths, or
   anything llhttp refuses, is a :class:`~router.edge.BadResponse` and the connection is
   never reused. 1xx interim answers (but 101) are skipped; the first one releases a
   body that waits for ``100-continue``.
5. A bodiless answer (204, 304, any answer to HEAD) is whole at its head; bytes after it
   drop the connection, never the answer (as nginx does).
6. Silence is timed by one timer per connection that re-arms itself to the last read
   (first byte, then ``idle``); a socket we paused ourselves is never silent.
7. Failures are raised in the vocabulary :func:`router.edge.translate` knows, the one
   place where they become ours.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from router.edge import BadResponse

from .writeflow import WriteFlow

__all__ = ["HIGH_WATER", "LOW_WATER", "Owner", "RawResponse", "UpstreamConnection"]

HIGH_WATER = 512 * 1024
LOW_WATER = 64 * 1024
# A response head larger than this, or with more lines, is a bad response (rule 4): a
# backend gone wrong must not grow the router's memory without bound.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEAD_LINES = 256
_BODILESS = (204, 304)


class Owner(Protocol):
    """What a connection needs of its pool (rawpool.RawPool)."""

    def release(self, conn: UpstreamConnection, reusable: bool) -> None: ...

    def lost(self, conn: UpstreamConnection) -> None: ...


class _Stray(Exception):
    """Bytes after a complete answer: stop parsing, drop the connection (rule 5)."""


class RawResponse:
    """The backend's answer to one request: head, then the body as the socket gives it."""

    __slots__ = (
        "_buffered", "_chunks", "_conn", "_head_bytes", "_head_fed", "_head_only", "_interim", "_parser", "_paused",
        "_reason", "_until_eof", "_waiter", "complete", "continued", "error", "head", "keep_alive", "lengths",
        "raw", "reason", "status", "te",
    )

    def __init__(self, conn: UpstreamConnection, head_only: bool) -> None:
        self._conn = conn
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self.raw: list[tuple[bytes, bytes, bytes]] = []  # (lowercase name, name, value) as sent
        self.lengths = 0  # Content-Length lines
        self.te: bytes | None = None  # the Transfer-Encoding value
        self._head_bytes = 0
        self._head_fed = 0
        self._reason = b""
        self._interim = False
        self._until_eof = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.head: asyncio.Future[None] = conn.loop.create_future()
        self.continued: asyncio.Future[None] | None = None
        self.status = 0
        self.reason = ""
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None

    # -- llhttp callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stray
        self.raw = []
        self.lengths = 0
        self.te = None
        self._head_bytes = 0
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if len(self.raw) >= MAX_HEAD_LINES:
            raise BadResponse(f"more than {MAX_HEAD_LINES} header lines")
        lname = name.lower()
        if lname == b"content-length":
            self.lengths += 1
        elif lname == b"transfer-encoding":
            self.te = value
        self.raw.append((lname, name, value))

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The head as a multidict (decoded as aiohttp's client does), for whoever wants one."""
        return CIMultiDictProxy(CIMultiDict(
            (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for _, n, v in self.raw))

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise BadResponse(f"a response head over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        if 100 <= code < 200 and code != 101:
            self._interim = True
            if self.continued is not None and not self.continued.done():
                self.continued.set_result(None)
            return
        lengths = self.lengths
        if lengths and (self.te is not None or lengths > 1):
            values = [v.decode("latin-1") for n, _, v in self.raw if n == b"content-length"]
            te = None if self.te is None else self.te.decode("latin-1")
            raise BadResponse(f"ambiguous framing: Content-Length {values}, Transfer-Encoding {te!r}")
        self.status = code
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        bodiless = self._head_only or code in _BODILESS or code == 101
        self._until_eof = not bodiless and not lengths and self.te is None
        if bodiless:
            self._done(self._parser.should_keep_alive() and code != 101)
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            raise _Stray
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self.complete:
            self._done(self._parser.should_keep_alive())

    # -- fed by the connection ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.complete:
                self.fail(BadResponse("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            context = exc.__context__
            if self.complete:  # stray bytes after the answer (rule 5)
                self.keep_alive = False
            elif isinstance(context, BadResponse):
                self.fail(context)
            else:
                self.fail(BadResponse(str(exc) or type(exc).__name__))
        else:
            if not self.head.done():  # every byte of this packet was head: llhttp buffers a
                self._head_fed += len(data)  # header line whole, so bound what it holds here
                if self._head_fed > MAX_HEAD_BYTES:
                    self.fail(BadResponse(f"a response head over {MAX_HEAD_BYTES} bytes"))

    def lost(self, exc: BaseException | None) -> None:
        if self.complete or self.error is not None:
            return
        if not self.head.done():
            self.fail(aiohttp.ServerDisconnectedError() if exc is None else exc)
        elif self._until_eof:
            self._done(False)
        else:
            self.fail(aiohttp.ClientPayloadError("response body broken off"))

    def _done(self, keep_alive: bool) -> None:
        self.complete = True
        self.keep_alive = keep_alive
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.keep_alive = False
        if not self.head.done():
            self.head.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- read by the proxy --------------------------------------------------------------

    def nothing_yet(self) -> bool:
        """No body byte in hand and the body not over: the head should go alone."""
        return not self._chunks and not self.complete

    def at_eof(self) -> bool:
        return self.complete and not self._chunks

    async def read(self) -> bytes:
        """The next piece of body as the socket delivered it; b"" at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= LOW_WATER:
                    self._paused = False
                    self._conn.resume()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def set_read_timeout(self, seconds: float | None) -> None:
        if not self.complete:
            self._conn.arm(seconds)

    def close(self) -> None:
        """Drop what is left of this answer, and the connection with it."""
        self.keep_alive = False
        self.release()

    def release(self) -> None:
        """Done with the answer: the connection goes back to its pool if it is whole."""
        conn = self._conn
        if conn.resp is not self:
            return
        if self.head.done() and not self.head.cancelled():
            self.head.exception()  # retrieved: an unread failure is no error
        whole = conn.detach()
        reusable = whole and self.complete and self.keep_alive and not self._chunks
        if self._paused and reusable:
            conn.resume()
        del self._parser  # it holds this answer's callbacks: a cycle for the GC otherwise
        conn.pool.release(conn, reusable)


class UpstreamConnection(WriteFlow, asyncio.Protocol):
    """One kept-alive connection to a backend."""

    GONE = "backend closed the connection while taking the request"

    def __init__(self, pool: Owner, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.resp: RawResponse | None = None
        self.sender: asyncio.Task[None] | None = None  # the request body going out
        self.closed = False
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self._reading = True
        self._timeout: float | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None or resp.complete:
            self.close()  # bytes nobody asked for: what follows is unknowable
            return
        if self._timeout is not None:
            self._last_read = self.loop.time()
        resp.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.resp is not None:
            self.resp.lost(exc)
        self._wake_writer()
        self.pool.lost(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        assert self.transport is not None
        self.transport.writelines(data)

    def pause(self) -> None:
        if self._reading and self.transport is not None and not self.closed:
            self._reading = False
            self.transport.pause_reading()

    def resume(self) -> None:
        if not self._reading and self.transport is not None and not self.closed:
            self._reading = True
            self.transport.resume_reading()

    def arm(self, seconds: float | None) -> None:
        """Rule 6: fail the response after ``seconds`` without a byte from the backend."""
        self._timeout = seconds or None
        if self._timeout is None:
            return
        self._last_read = now = self.loop.time()
        deadline, timer = now + self._timeout, self._timer
        if timer is None or timer.when() > deadline:  # a shorter timeout (idle) takes over now
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        timeout, resp = self._timeout, self.resp
        if timeout is None or resp is None or resp.complete or resp.error is not None or self.closed:
            return
        now = self.loop.time()
        if not self._reading:  # paused by us: the client is the slow one
            self._last_read = now
        deadline = self._last_read + timeout
        if now < deadline:
            self._timer = self.loop.call_at(deadline, self._check_silence)
            return
        resp.fail(aiohttp.ServerTimeoutError(f"no byte from the backend for {timeout}s"))
        self.close()

    def detach(self) -> bool:
        """End the current exchange; True if the connection may carry another."""
        self.resp = None
        self._timeout = None
        sender, self.sender = self.sender, None
        if sender is not None and not sender.done():
            sender.cancel()
            return False
        return not self.closed and self._reading_ok()

    def _reading_ok(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
