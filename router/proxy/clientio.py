"""The byte side of a client connection (connection.py): writes and their flow
control, pausing reads for its several reasons, closing, and the tunnel after a 101.

Rules:

1. Writes never raise on a closed connection (the task answering it is cancelled);
   :meth:`ClientIO.drain` waits while the socket's buffer is full and raises
   ConnectionResetError once the client is gone.
2. Reading is paused while any reason holds (a full body buffer, too many queued
   requests, an upgrade waiting for its answer, a tunnel peer not taking bytes) and
   resumed when none does.
3. After a 101 the connection is a byte tunnel (websocket.py): bytes go to the sink it
   was given, the bytes after the upgrade head first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from .request import Reading
from .writeflow import WriteFlow

__all__ = ["ClientIO"]

_PAUSE_BODY, _PAUSE_QUEUE, _PAUSE_UPGRADE, _PAUSE_TUNNEL = 1, 2, 4, 8


class ClientIO(WriteFlow, Reading):
    GONE = "the client went away"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._paused = 0
        self._tail: bytes | None = None  # bytes after an upgrade request's head
        self.tunnel: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[], None] | None = None

    def close(self) -> None:
        """Close once what is written is sent."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- flow control (rules 1 and 2) ---------------------------------------------------------

    def _pause(self, why: int) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        if self._paused & why:
            self._paused &= ~why
            if not self._paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_body(self) -> None:
        self._pause(_PAUSE_BODY)

    def resume_body(self) -> None:
        self._resume(_PAUSE_BODY)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        if not self.closed and self.transport is not None:
            self.transport.writelines(data)

    # -- rule 3 ------------------------------------------------------------------------

    def start_tunnel(self, sink: Callable[[bytes], None], on_lost: Callable[[], None]) -> bytes:
        """Bytes from the client go to ``sink`` from now on; returns those already in."""
        self.tunnel = sink
        self._on_lost = on_lost
        tail, self._tail = self._tail or b"", None
        self._resume(_PAUSE_UPGRADE)
        return tail

    def pause_tunnel(self) -> None:
        self._pause(_PAUSE_TUNNEL)

    def resume_tunnel(self) -> None:
        self._resume(_PAUSE_TUNNEL)
