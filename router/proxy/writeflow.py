"""The writing half of a protocol's flow control, shared by the client connection
(clientio.py) and the raw upstream connection (rawupstream.py).

Rules:

1. The transport calls :meth:`WriteFlow.pause_writing` when its buffer passes the high
   water mark and :meth:`WriteFlow.resume_writing` below the low one; :meth:`drain`
   waits in between, so a slow peer holds the writer, never memory.
2. :meth:`drain` raises ConnectionResetError (``GONE`` names the peer) once the
   connection is closed; whoever closes it calls :meth:`_wake_writer` so a waiting
   writer sees it at once.
"""

from __future__ import annotations

import asyncio

__all__ = ["WriteFlow"]


class WriteFlow:
    """Mixed into an ``asyncio.Protocol`` that sets ``loop``, ``closed``,
    ``write_paused = False`` and ``_drain = None`` in its ``__init__``."""

    GONE = "the peer closed the connection"
    loop: asyncio.AbstractEventLoop
    closed: bool
    write_paused: bool
    _drain: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    async def drain(self) -> None:
        """Rule 1: wait until the peer takes what is buffered for it; rule 2."""
        while self.write_paused and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self.closed:
            raise ConnectionResetError(self.GONE)
