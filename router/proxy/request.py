"""A client's request as the proxy's own connection (connection.py) parsed it: the head,
and the body as the socket delivers it. Small on purpose: no framework object per request.

Rules:

1. The head is whole when a request exists: method, raw target, version, headers (a
   ``CIMultiDict`` of str, decoded UTF-8 with surrogateescape so the bytes go back out
   unchanged), the keep-alive wish llhttp read from Connection and the version.
2. The body is a :class:`BodyReader`: the pieces llhttp delivers, never joined. Past
   ``HIGH_WATER`` unread bytes the connection stops reading from the socket until the
   reader is down to ``LOW_WATER`` (memory stays bounded on a fast sender and a slow
   backend).
3. A body that can no longer complete (the client went away, sent broken framing) ends
   in the error the reader raises at once, bytes still in hand or not (so a broken body
   is never relayed further); one read to its end is ``complete``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

if TYPE_CHECKING:
    from .respond import Responder
    from .targets import Target

__all__ = ["HIGH_WATER", "LOW_WATER", "BodyReader", "ClientRequest", "Reading"]

HIGH_WATER = 512 * 1024
LOW_WATER = 64 * 1024


class Reading:
    """What a body reader needs of its connection."""

    def pause_body(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def resume_body(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class BodyReader:
    """A request body in flight (rule 2)."""

    __slots__ = ("_chunks", "_conn", "_paused", "_size", "_waiter", "complete", "eof", "error")

    def __init__(self, conn: Reading) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.eof = False  # llhttp saw its end
        self.complete = False  # read to its end
        self.error: BaseException | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause_body()
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def feed_error(self, exc: BaseException) -> None:
        if not self.eof and self.error is None:
            self.error = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def readany(self) -> bytes:
        """The next piece as the socket delivered it; b"" at the end."""
        while True:
            if self.error is not None:
                raise self.error  # a broken body relays nothing more, not even what is in hand
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._paused and self._size <= LOW_WATER:
                    self._paused = False
                    self._conn.resume_body()
                return chunk
            if self.eof:
                self.complete = True
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class ClientRequest:
    """One request of a client connection (rule 1). ``out`` writes its answer."""

    __slots__ = (
        "body", "body_exists", "content_length", "headers", "keep_alive", "method", "out",
        "raw_path", "remote", "scheme", "target", "task", "upgrade", "version",
    )

    def __init__(
        self, method: str, raw_path: str, version: tuple[int, int], headers: CIMultiDict[str],
        keep_alive: bool, upgrade: bool, body: BodyReader | None, remote: str, scheme: str,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.body = body
        self.body_exists = body is not None
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None else None
        self.remote = remote
        self.scheme = scheme
        self.out: Responder | None = None
        self.target: Target | None = None  # set by the handler once parsed (targets.py)
        self.task: asyncio.Task[Any] | None = None  # the task answering it (set by the connection)

    @property
    def path(self) -> str:
        """The target without its query (for log lines)."""
        return self.raw_path.partition("?")[0]
