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
3. Between requests a kept-alive connection may idle ``keepalive_timeout`` (aiohttp's own
   timer, given the value here).
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
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from router import metrics
from router.config import LimitsConfig

__all__ = ["Admission", "GuardedServer", "classify_parse_error"]

log = logging.getLogger("hotspare.router")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 43\r\n\r\n"
    b"service unavailable: too many connections\r\n"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 47\r\n\r\n"
    b"request timeout: the request head came too slow"
)
_REASONS = {400: "bad request", 414: "URI too long", 431: "request header fields too large"}


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


def parser_limits(limits: LimitsConfig) -> tuple[int, int]:
    """(max_line_size, max_field_size) for aiohttp's parser. Its LineTooLong names only
    the limit it hit, so the two must differ for a long target (414) to be told from a
    long header (431): when configured equal, a header line gets one byte more."""
    line, field = limits.max_request_line, limits.max_header_size
    return line, field + 1 if field == line else field


def classify_parse_error(exc: BaseException | None, line_limit: int) -> tuple[int, str]:
    """(status, metric cause) for a request head aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == line_limit:
            return 414, "uri_too_long"
        return 431, "headers_too_large"
    if isinstance(exc, HttpProcessingError) and "Too many headers" in (exc.message or ""):
        return 431, "headers_too_large"
    return 400, "bad_request"


def _one_line(exc: BaseException | None) -> str:
    """aiohttp's parser messages span lines (the bytes, then a caret): keep one, short."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return re.sub(r"\s+", " ", str(text)).strip()[:200]


def _client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unix" if isinstance(peer, str) else "unknown"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with rules 1, 2 and 4 added."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._client: str | None = None  # set once admitted
        self._refused = False
        # rule 2: one timer per connection, not per request: a head in progress has a
        # start time; the timer re-arms itself to that head's deadline when it fires early.
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None
        self._head_bytes = 0
        # rule 6: aiohttp counts the request heads parsed; we count the answers finished,
        # and keep the body of the newest request (the only one that may be incomplete).
        self._eof = False
        self._answered = 0
        self._last_body: StreamReader | None = None

    # -- rule 1 ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = _client_address(transport)
        cause = self._guard.admission.admit(client)
        if cause is not None:
            self._refused = True
            metrics.CONNECTIONS_REFUSED.labels(cause).inc()
            self._guard.note_refused(cause, client)
            writable = cast(asyncio.WriteTransport, transport)  # (uvloop's is no asyncio subclass)
            writable.write(_REFUSED)
            writable.close()
            return
        self._client = client
        metrics.CLIENT_CONNECTIONS.inc()
        super().connection_made(transport)
        self._start_head()  # from the accept

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return  # never admitted, never registered with the server
        self._cancel_head_timer()
        if self._client is not None:
            self._guard.admission.release(self._client)
            metrics.CLIENT_CONNECTIONS.dec()
            self._client = None
        super().connection_lost(exc)

    # -- rule 2 ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_since is None and self._waiter is not None and not self._messages:
            self._start_head()  # the first byte of the next request
        if self._head_since is not None:
            self._head_bytes += len(data)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._messages:
            self._last_body = self._messages[-1][1]
        if self._head_since is not None and (self._messages or self._request_in_progress):
            self._head_since = None  # the whole head is in (the timer, if pending, lets it be)

    def _start_head(self) -> None:
        self._head_since = self._loop.time()
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(
                self._head_since + self._guard.limits.header_timeout, self._head_check)

    def _cancel_head_timer(self) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_check(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._head_since is None or self._messages or self._request_in_progress:
            return  # no head in progress: the next one arms the timer again
        deadline = self._head_since + self._guard.limits.header_timeout
        if self._loop.time() < deadline:  # armed for an earlier head: wait for this one's
            self._head_timer = self._loop.call_at(deadline, self._head_check)
            return
        metrics.BAD_REQUESTS.labels("header_timeout").inc()
        if self._head_bytes:
            log.info("client %s sent %d bytes of a request head in %ss without finishing it; "
                     "answered 408 and closed", self._client, self._head_bytes, self._guard.limits.header_timeout)
            transport.write(_TIMED_OUT)
        self.force_close()

    # -- rule 6 ----------------------------------------------------------------------

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        """True keeps the transport open for writing (asyncio's half-close contract)."""
        if self._refused or self._force_close:
            return None
        if self._upgraded or self._payload_parser is not None or self.ssl_context is not None:
            return None  # the transport closes; connection_lost ends the tunnel or handler
        if self._answered >= self._request_count:
            self._cancel_head_timer()
            self.force_close()  # nothing to answer: idle, or a head that can never end
            return None
        # A declined upgrade's tail is parsed outside data_received: look at the queue first.
        last = self._messages[-1][1] if self._messages else self._last_body
        if last is not None and not last.is_eof():
            return None  # its body can never complete: closed, the handler sees a reset
        self._eof = True
        self._cancel_head_timer()
        return True

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        """aiohttp's last call of every answer, error pages included: here, not in a
        wrapper of ``finish_response``, so counting costs no extra coroutine."""
        super().log_access(request, response, time)
        self._answered += 1
        if self._eof and self._answered >= self._request_count:
            self.force_close()  # the last request before EOF is answered (close flushes)

    # -- rule 4 ----------------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:  # not a parse error: aiohttp's own handling (and traceback)
            return super().handle_error(request, status, exc, message)
        status, cause = classify_parse_error(exc, self._guard.line_limit)
        metrics.BAD_REQUESTS.labels(cause).inc()
        why = _one_line(exc)
        log.info("bad request from %s: %s; answered %d", self._client, why, status)
        resp = web.Response(status=status, text=f"{_REASONS[status]}: {why}\n")
        resp.force_close()
        return resp


Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class GuardedServer(web.Server):
    """``web.Server`` for a proxy listener: its connections follow ``limits``. A reload
    hands new limits to :meth:`set_limits`; they apply to connections accepted after."""

    def __init__(self, handler: Handler, limits: LimitsConfig, **kwargs: Any) -> None:
        super().__init__(handler, handler_cancellation=True, access_log=None, **kwargs)
        self.admission = Admission(limits.max_connections, limits.max_connections_per_client)
        self.limits = limits
        self.line_limit = 0
        self._refusals_logged = 0.0
        self.set_limits(limits)

    def set_limits(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.admission.max_total = limits.max_connections
        self.admission.max_per_client = limits.max_connections_per_client
        line, field = parser_limits(limits)
        self.line_limit = line
        self._kwargs.update(
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=line,
            max_field_size=field,
            max_headers=limits.max_headers,
        )

    def note_refused(self, cause: str, client: str) -> None:
        """One log line per second at most: a flood must not flood the log too."""
        now = self._loop.time()
        if now - self._refusals_logged >= 1.0:
            self._refusals_logged = now
            log.warning("refused a connection from %s (%s %d reached; counted in "
                        "hotspare_connections_refused_total)", client, cause,
                        self.limits.max_connections if cause == "max_connections" else self.limits.max_connections_per_client)

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
