"""Listener limits: what one client may cost the router before its request reaches the
proxy (docs/security.md).

Rules:

1. Admission is counted per listener: a connection is admitted while the listener holds
   fewer than ``max_connections`` and its client address fewer than
   ``max_connections_per_client``; otherwise it is answered 503 at once and closed,
   counted by the limit it hit. :class:`Admission` is the pure count.
2. Head deadline: from the accept, and from the first byte of each later request on a
   kept-alive connection, the whole request head must arrive within ``header_timeout``
   (slowloris). A connection that sent part of a head is answered 408 and closed; one
   that sent nothing is closed without a word (a browser's preconnect).
3. Between requests a kept-alive connection may idle ``keepalive_timeout``.
4. A malformed head is answered by the router and never forwarded: a request target over
   ``max_request_line`` 414, a header line over ``max_header_size`` or more than
   ``max_headers`` lines 431, anything else 400. One log line with the cause and the
   client address, never a traceback; counted in ``hotspare_bad_requests_total``.
5. None of this is ever held against a backend: nothing here reaches one.
6. Half-close: a client that shuts its sending side after a request (``shutdown(SHUT_WR)``,
   ``nc -N``) still gets its answers. At EOF the requests already received in full are
   answered, then the connection is closed (no keep-alive after EOF). A request whose
   head or body can no longer complete, an idle connection, an upgraded one and a TLS one
   (its EOF is a close_notify; asyncio cannot half-close TLS) are closed at once, as
   before: nothing is left waiting for bytes that cannot come.

The connection that keeps these rules is connection.py; this module holds the pure
parts (the count, the classification, the canned answers).
"""

from __future__ import annotations

import asyncio
import re

from multidict import CIMultiDict

from .reply import Reply

__all__ = ["REFUSED", "TIMED_OUT", "Admission", "HeadError", "bad_head_answer", "client_address", "has_body", "head_error"]

REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 43\r\n\r\n"
    b"service unavailable: too many connections\r\n"
)
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 47\r\n\r\n"
    b"request timeout: the request head came too slow"
)
INTERNAL_ERROR = Reply(500, (("Content-Type", "text/plain; charset=utf-8"),), b"internal error\n", True)
_REASONS = {400: ("Bad Request", "bad request"), 414: ("URI Too Long", "URI too long"),
            431: ("Request Header Fields Too Large", "request header fields too large")}


class Admission:
    """Open connections of one listener, in all and per client address (rule 1)."""

    __slots__ = ("max_per_client", "max_total", "per_client", "total")

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self.per_client: dict[str, int] = {}

    def admit(self, client: str) -> str | None:
        """Count a new connection from ``client`` in; or return the limit it hit."""
        if self.total >= self.max_total:
            return "max_connections"
        held = self.per_client.get(client, 0)
        if held >= self.max_per_client:
            return "max_connections_per_client"
        self.total += 1
        self.per_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        held = self.per_client[client] - 1
        if held:
            self.per_client[client] = held
        else:
            del self.per_client[client]


class HeadError(Exception):
    """A request head refused (rule 4): the status, the metric cause, what was wrong."""

    def __init__(self, status: int, cause: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.cause = cause
        self.why = why


def one_line(exc: BaseException | None) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"\s+", " ", text).strip()[:200]


def head_error(exc: BaseException) -> HeadError:
    """The refusal for what llhttp (or a limit checked in its callbacks) raised."""
    if isinstance(exc, HeadError):
        return exc
    context = exc.__context__
    if isinstance(context, HeadError):
        return context
    return HeadError(400, "bad_request", one_line(exc))


def bad_head_answer(err: HeadError) -> bytes:
    phrase, words = _REASONS.get(err.status, _REASONS[400])
    body = f"{words}: {err.why}\n".encode("utf-8", "backslashreplace")
    return (f"HTTP/1.1 {err.status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def has_body(headers: CIMultiDict[str]) -> bool:
    """Does the request (as llhttp accepted it) carry a body?"""
    if "Transfer-Encoding" in headers:
        return True
    length = headers.get("Content-Length")
    return length is not None and int(length) > 0


def client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unix" if isinstance(peer, str) else "unknown"
