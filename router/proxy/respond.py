"""Writing one answer to the client: the head serialized by us, the body framed by us
(Content-Length as given, else chunked for HTTP/1.1, else until close), on the client
connection (connection.py) without a framework object in between.

Rules:

1. A whole answer (:meth:`Responder.reply`, the router's own) is one write: head and body.
2. A streamed answer's head waits for the first body bytes (:meth:`Responder.start`),
   and leaves with them in one send; the last piece and the end of
   the body go in that same call.
3. Bodiless answers (HEAD, 1xx, 204, 304) carry no body; 204 and 304 lose a
   Content-Length, any of them a Transfer-Encoding (RFC 9110 §8.6, RFC 9112 §6.1).
4. ``Connection: close`` is written when the connection ends after this answer (the
   client asked, the answer is close-delimited, the router closes or drains); an HTTP/1.0
   client kept alive is told ``Connection: keep-alive``. ``Date`` is added when missing
   (formatted once per second).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from multidict import CIMultiDict

from .reply import Reply

__all__ = ["Responder", "Writer"]

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_LAST = b"0\r\n\r\n"
_JOIN_MAX = 16 * 1024
_date_second = -1
_date_line = ""


def _date() -> str:
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date_line


class Writer(Protocol):
    """What a responder needs of its connection."""

    write_paused: bool
    stopping: bool

    def write(self, data: bytes) -> None: ...

    def writelines(self, data: Iterable[bytes]) -> None: ...

    async def drain(self) -> None: ...

    def abort(self) -> None: ...


class Responder:
    """The answer to one request."""

    __slots__ = ("_chunked", "_conn", "_head", "_head_only", "_version", "keep_alive", "started", "status", "whole")

    def __init__(self, conn: Writer, method: str, version: tuple[int, int], keep_alive: bool) -> None:
        self._conn = conn
        self._version = version
        self._head_only = method == "HEAD"
        self._head: bytes | None = None  # serialized, not sent yet
        self._chunked = False
        self.keep_alive = keep_alive
        self.status = 0
        self.started = False  # head serialized (sent or waiting for body bytes)
        self.whole = False  # the last byte is written

    @property
    def conn(self) -> Writer:
        return self._conn

    def _first_line(self, status: int, reason: str | None) -> str:
        if self._conn.stopping:
            self.keep_alive = False
        major, minor = self._version
        return f"HTTP/{major}.{minor} {status} {reason or _REASONS.get(status, '')}\r\n"

    def _last_lines(self, has_date: bool) -> str:
        """Date if missing, Connection as rule 4 says, the blank line."""
        out = "" if has_date else _date()
        minor = self._version[1]
        if not self.keep_alive:
            if minor:
                out += "Connection: close\r\n"
        elif not minor:
            out += "Connection: keep-alive\r\n"
        return out + "\r\n"

    def _serialize(self, status: int, reason: str | None, headers: Iterable[tuple[str, str]], has_date: bool) -> bytes:
        first = self._first_line(status, reason)
        lines = [f"{name}: {value}\r\n" for name, value in headers]
        return "".join((first, *lines, self._last_lines(has_date))).encode("utf-8", "surrogateescape")

    def reply(self, r: Reply) -> None:
        """Rule 1: a whole answer of the router's own."""
        if r.close:
            self.keep_alive = False
        self.status = r.status
        self.started = True
        body = b"" if self._head_only else r.body
        headers = [*r.headers, ("Content-Length", str(len(r.body)))]
        head = self._serialize(r.status, r.reason, headers, False)
        self._conn.write(head + body if len(body) < 65536 else head)
        if body and len(body) >= 65536:
            self._conn.write(body)
        self.whole = True

    def start(self, status: int, reason: str | None, headers: CIMultiDict[str]) -> bool:
        """Rule 2: the head of a streamed answer, kept until the first body bytes.
        Returns False for a bodiless answer (its head is then all there is)."""
        self.status = status
        self.started = True
        bodiless = self._head_only or status in (204, 304) or 100 <= status < 200
        if bodiless:
            if status in (204, 304) or 100 <= status < 200:
                headers.popall("Content-Length", None)
            headers.popall("Transfer-Encoding", None)
        elif "Content-Length" not in headers:
            if self._version >= (1, 1):
                self._chunked = True
                headers["Transfer-Encoding"] = "chunked"
            else:
                self.keep_alive = False  # the end of the body is the close
        self._head = self._serialize(status, reason, headers.items(), "Date" in headers)
        return not bodiless

    def start_lines(self, status: int, reason: str | None, lines: list[bytes], has_length: bool, has_date: bool) -> bool:
        """:meth:`start` for header lines already in bytes (headers.response_lines)."""
        self.status = status
        self.started = True
        bodiless = self._head_only or status in (204, 304) or 100 <= status < 200
        if bodiless:
            if has_length and (status in (204, 304) or 100 <= status < 200):
                lines = [line for line in lines if line[:15].lower() != b"content-length:"]
        elif not has_length:
            if self._version >= (1, 1):
                self._chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # the end of the body is the close
        first = self._first_line(status, reason).encode("utf-8", "surrogateescape")
        self._head = b"".join((first, *lines, self._last_lines(has_date).encode()))
        return not bodiless

    def _send(self, parts: tuple[bytes, ...] | list[bytes]) -> None:
        """Small pieces are joined (a copy of a few KiB costs less than uvloop's vectored
        write); large ones go as they are, without a copy."""
        if sum(map(len, parts)) <= _JOIN_MAX:
            self._conn.write(b"".join(parts))
        else:
            self._conn.writelines(parts)

    def send_head(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._conn.write(head)

    def write(self, chunk: bytes) -> None:
        head, self._head = self._head, None
        if self._chunked:
            frame = (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            self._send(frame if head is None else (head, *frame))
        elif head is None:
            self._conn.write(chunk)
        else:
            self._send((head, chunk))

    def end(self, chunk: bytes = b"") -> None:
        """The last piece (maybe empty) and the end of the body, in one call."""
        head, self._head = self._head, None
        parts: list[bytes] = [] if head is None else [head]
        if self._chunked:
            if chunk:
                parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            parts.append(_LAST)
        elif chunk:
            parts.append(chunk)
        if len(parts) == 1:
            self._conn.write(parts[0])
        elif parts:
            self._send(parts)
        self.whole = True

    def end_head_only(self) -> None:
        """A bodiless answer: its head is all there is."""
        self.send_head()
        self.whole = True

    def switch(self, headers: CIMultiDict[str]) -> None:
        """A 101: the backend's head (its Upgrade and Connection kept); a tunnel follows."""
        self.status = 101
        self.started = True
        self.keep_alive = False
        lines = ["HTTP/1.1 101 Switching Protocols\r\n", *(f"{n}: {v}\r\n" for n, v in headers.items()), "\r\n"]
        self._conn.write("".join(lines).encode("utf-8", "surrogateescape"))
        self.whole = True

    def abort(self) -> None:
        """The body cannot be completed: the connection is dropped, never reused, so a
        truncated body cannot look whole."""
        self.keep_alive = False
        self._conn.abort()
