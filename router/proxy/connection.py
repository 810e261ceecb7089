"""One client connection of a proxy listener: an ``asyncio.Protocol`` fed to llhttp
(httptools), the requests it parses answered in order by one task (issue 12: the data
path without a framework server). The limits it keeps are the rules of limits.py.

Rules:

1. Requests are parsed as bytes arrive and answered strictly in order, pipelined or not;
   past ``MAX_QUEUED`` waiting requests the socket is paused. A malformed head after
   valid ones: the valid ones are answered, then the refusal (limits.py rule 4), then
   the connection closes. A request is handed to its handler only once llhttp returned
   from the bytes that completed its head: framing it refuses right after the head
   (Transfer-Encoding other than chunked, say) is that refusal, never a forwarded head.
   A body whose framing breaks later ends that request's body in an error (its handler
   answers 400); nothing after it is read. An upgrade request with a body is 400: llhttp
   would neither check nor parse that body. A method llhttp does not know is 400.
2. A connection is kept alive after an answer only if the answer says so
   (respond.py rule 4), it was whole, and the request's body was read to its end by
   llhttp; otherwise it is closed once the answer is out.
3. Reading is paused while a request body's buffer is over its high-water mark
   (request.py rule 2), while too many requests wait, and after an upgrade request until
   it is answered; writes wait in ``drain`` while the socket's buffer is full
   (clientio.py, the byte side).
4. One timer per connection serves limits.py rules 2 and 3: it re-arms itself to the
   deadline of the current state (a head in progress, or idle keep-alive) when it fires.
5. A client gone mid-answer cancels the task answering it (the access log says 499).
6. After a 101 the connection is a byte tunnel (websocket.py, clientio.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import httptools
from multidict import CIMultiDict

from router import metrics
from router.config import LimitsConfig

from . import limits
from .clientio import _PAUSE_QUEUE, _PAUSE_UPGRADE, ClientIO
from .limits import Admission, HeadError
from .request import BodyReader, ClientRequest
from .respond import Responder

__all__ = ["MAX_QUEUED", "ClientConnection", "Site"]

log = logging.getLogger("hotspare.router")

MAX_QUEUED = 32
Handler = Callable[[ClientRequest], Awaitable[None]]


class Site(Protocol):
    """What a connection needs of its listener (listeners.ProxySite)."""

    limits: LimitsConfig
    admission: Admission
    handler: Handler
    scheme: str

    def note_refused(self, cause: str, client: str) -> None: ...

    def track(self, conn: ClientConnection) -> None: ...

    def forget(self, conn: ClientConnection) -> None: ...


class ClientConnection(ClientIO, asyncio.Protocol):
    def __init__(self, site: Site, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.site = site
        self.limits = site.limits  # a reload's limits apply to connections accepted after it
        self.client = "unknown"
        self._admitted = False
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[str, str]] = []
        self._line = 0  # bytes of the head line in progress (rule of limits.py 4)
        self._queue: deque[ClientRequest] = deque()
        self._task: asyncio.Task[None] | None = None
        self._parsing: BodyReader | None = None
        self._fresh: ClientRequest | None = None
        self._bad: HeadError | None = None
        self.eof = False
        self.stopping = False
        self._head_since: float | None = None
        self._head_bytes = 0
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- life --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        client = limits.client_address(transport)
        cause = self.site.admission.admit(client)
        if cause is not None:
            self.closed = True
            metrics.CONNECTIONS_REFUSED.labels(cause).inc()
            self.site.note_refused(cause, client)
            self.transport.write(limits.REFUSED)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        self._admitted = True
        self.client = client
        metrics.CLIENT_CONNECTIONS.inc()
        self.site.track(self)
        self._head_since = self.loop.time()  # limits.py rule 2: from the accept
        self._arm(self._head_since + self.limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if not self._admitted:
            return
        self._admitted = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.site.admission.release(self.client)
        metrics.CLIENT_CONNECTIONS.dec()
        self.site.forget(self)
        if self._parsing is not None:
            self._parsing.feed_error(ConnectionResetError("the client went away mid-body"))
        self._wake_writer()
        if self._task is not None:
            self._task.cancel()  # rule 5
        if self._on_lost is not None:
            self._on_lost()

    def eof_received(self) -> bool | None:
        """limits.py rule 6: True keeps the transport open for writing."""
        if self.closed or self.tunnel is not None or self.site.scheme == "https":
            return None
        if self._parsing is not None or self._tail is not None:
            return None  # a body that can never complete, or an upgrade: closed now
        if self._task is None and not self._queue:
            return None  # nothing to answer: idle, or a head that can never end
        self.eof = True
        return True

    def stop(self) -> None:
        """Graceful stop: the answer in progress is the last; an idle connection closes."""
        self.stopping = True
        if self._task is None and not self._queue:
            self.close()

    # -- parsing (llhttp callbacks) ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self.closed or self._bad is not None:
            return
        if self._tail is not None:
            self._tail += data
            return
        if self._head_since is not None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._tail = data[exc.args[0]:]
            self._pause(_PAUSE_UPGRADE)  # nothing more is parsed until it is answered
        except httptools.HttpParserError as exc:
            self._refuse_head(exc)
        else:
            if self._head_since is not None:
                self._check_line(data)
        self._fresh = None
        if self._queue and self._task is None and not self.closed:
            self._task = self.loop.create_task(self._serve())

    def _check_line(self, data: bytes) -> None:
        """httptools holds a header line whole until it ends: bound it here."""
        nl = data.rfind(b"\n")
        self._line = self._line + len(data) if nl < 0 else len(data) - nl - 1
        if self._line > self.limits.max_header_size + 2 and len(self._url) + 16 < self._line:
            self._refuse_head(HeadError(431, "headers_too_large", f"a header line over {self.limits.max_header_size} bytes"))

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        if self._head_since is None:  # limits.py rule 2: from the first byte of this head
            self._head_since = self.loop.time()
            self._head_bytes = 1
            self._arm(self._head_since + self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise HeadError(414, "uri_too_long", f"request target over {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        lim = self.limits
        if len(name) + len(value) + 2 > lim.max_header_size:
            raise HeadError(431, "headers_too_large", f"header line {name[:40]!r} over {lim.max_header_size} bytes")
        if len(self._fields) >= lim.max_headers:
            raise HeadError(431, "headers_too_large", f"more than {lim.max_headers} header lines")
        self._fields.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        p = self._parser
        self._head_since = None
        self._line = 0
        v = p.get_http_version()
        version = (int(v[0]), int(v[2])) if len(v) == 3 else (1, 1)
        headers = CIMultiDict(self._fields)
        method = p.get_method().decode("ascii", "replace")
        upgrade = p.should_upgrade()
        body = BodyReader(self) if limits.has_body(headers) else None
        if upgrade and body is not None:  # llhttp neither checks nor parses its framing
            raise HeadError(400, "bad_request", "a request asking for a protocol upgrade carries a body")
        req = ClientRequest(method, self._url.decode("utf-8", "surrogateescape"), version, headers,
                            p.should_keep_alive(), upgrade, body, self.client, self.site.scheme)
        req.out = Responder(self, method, version, req.keep_alive)
        self._parsing = body
        self._fresh = req  # llhttp may still refuse its framing: not answered before it returns
        self._queue.append(req)
        if len(self._queue) >= MAX_QUEUED:
            self._pause(_PAUSE_QUEUE)

    def on_body(self, body: bytes) -> None:
        self._fresh = None
        if self._parsing is not None:
            self._parsing.feed(body)

    def on_message_complete(self) -> None:
        self._fresh = None
        if self._parsing is not None:
            self._parsing.feed_eof()
            self._parsing = None

    def _refuse_head(self, exc: BaseException) -> None:
        """Rule 1: a broken body fails its request; a broken head waits for its turn."""
        self._pause(_PAUSE_QUEUE)
        if self._fresh is not None:  # refused right after its head: never answered as a request
            self._queue.pop()
            self._fresh = self._parsing = None
        if self._parsing is not None:
            self._parsing.feed_error(ValueError(f"broken request body framing ({limits.one_line(exc)})"))
            self._parsing = None
            self._bad = HeadError(0, "", "")  # nothing more is read; its handler answers
            return
        err = limits.head_error(exc)
        metrics.BAD_REQUESTS.labels(err.cause).inc()
        log.info("bad request from %s: %s; answered %d", self.client, err.why, err.status)
        self._bad = err
        if self._task is None and not self._queue:
            self._answer_bad()

    def _answer_bad(self) -> None:
        err = self._bad
        if err is not None and err.status and self.transport is not None and not self.closed:
            self.transport.write(limits.bad_head_answer(err))
        self.close()

    # -- answering ---------------------------------------------------------------------

    async def _serve(self) -> None:
        queue = self._queue
        try:
            while queue:
                req = queue[0]
                req.task = self._task
                await self._answer(req)
                queue.popleft()
                if self.closed:
                    return
                if self._paused & _PAUSE_QUEUE and len(queue) < MAX_QUEUED and self._bad is None:
                    self._resume(_PAUSE_QUEUE)
                out = req.out
                assert out is not None
                if not (out.keep_alive and out.whole) or (req.body is not None and not req.body.eof):
                    self.close()  # rule 2
                    return
        finally:
            self._task = None
        self._queue_done()

    async def _answer(self, req: ClientRequest) -> None:
        out = req.out
        assert out is not None
        try:
            await self.site.handler(req)
        except Exception:
            log.exception("unhandled error answering %s %s from %s", req.method, req.path, self.client)
            if not out.started:
                out.reply(limits.INTERNAL_ERROR)
        if not out.whole and not self.closed:
            out.abort()  # never an answer that looks complete when it is not

    def _queue_done(self) -> None:
        if self.closed:
            return
        if self._tail is not None and self.tunnel is None:  # an upgrade answered plainly
            tail, self._tail = self._tail, None
            self._parser = httptools.HttpRequestParser(self)
            self._resume(_PAUSE_UPGRADE)
            if tail:
                self.data_received(tail)
            if self._task is not None or self.closed:
                return
        if self._bad is not None:
            self._answer_bad()
        elif self.eof or self.stopping:
            self.close()
        else:
            self._idle_since = self.loop.time()
            since = self._head_since
            self._arm(since + self.limits.header_timeout if since is not None
                      else self._idle_since + self.limits.keepalive_timeout)

    # -- rule 4 ------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        t = self._timer
        if t is None or t.when() > deadline:
            if t is not None:
                t.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self.tunnel is not None or self._task is not None:
            return  # busy: armed again when its queue is done
        now = self.loop.time()
        if self._head_since is not None:
            deadline = self._head_since + self.limits.header_timeout
            if now < deadline:
                self._arm(deadline)
                return
            metrics.BAD_REQUESTS.labels("header_timeout").inc()
            if self._head_bytes and self.transport is not None:
                log.info("client %s sent %d bytes of a request head in %ss without finishing it; "
                         "answered 408 and closed", self.client, self._head_bytes, self.limits.header_timeout)
                self.transport.write(limits.TIMED_OUT)
            self.close()
            return
        deadline = self._idle_since + self.limits.keepalive_timeout
        if now < deadline:
            self._arm(deadline)
        else:
            self.close()
