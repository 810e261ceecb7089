"""The streaming reverse proxy: one client request -> the service's active backend.

Rules:

1. A request that is malformed or ambiguous never reaches a backend: aiohttp's strict
   request parser answers 400 for bad bytes, CL+TE and conflicting Content-Length
   itself; this module adds 400 for HTTP/1.1 without Host.
2. Bodies stream both ways in the chunks the sockets deliver; nothing is held whole.
   Flow control is aiohttp's (its readers pause the socket at their high-water mark,
   writers drain). ``max_body_size`` is enforced on the declared length before any byte
   is read (413, never 100-continue) and on the bytes counted while streaming.
3. ``Expect: 100-continue`` is answered by the router, lazily: "100 Continue" goes out
   when the backend connection is up and the body is first pulled, so a refused
   backend or a too-large body is answered without the client sending it.
4. Per request the proxy asks the service's Director for a Route and reports what the
   backend showed after the attempt. A client fault (hung up, stalled, too large) is
   never reported as a backend failure.
5. Backend trouble before the response starts becomes a short text answer naming the
   cause and the request id (502/504, translated once in upstream.translate); after the
   response started, the client connection is aborted so a truncated body can never
   look complete. Never a traceback to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from aiohttp.web_request import BaseRequest
from prometheus_client import Counter, Gauge, Histogram
from yarl import URL

from . import metrics
from .accesslog import AccessLog, AccessRecord
from .director import (
    OUTCOME_BAD_RESPONSE,
    OUTCOME_CONNECT_FAILED,
    OUTCOME_RESET,
    OUTCOME_TIMEOUT,
    NoRoute,
    Outcome,
)
from .errors import (
    ClientGone,
    RequestBodyTooLarge,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeout,
)
from .headers import request_headers, response_headers, sane_request_id
from .routes import ServiceRuntime, ServiceTable
from .upstream import translate
from .websocket import proxy_websocket

__all__ = ["Proxy"]

log = logging.getLogger("hotspare.router")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
_OUTCOME = {
    UpstreamConnectError: OUTCOME_CONNECT_FAILED,
    UpstreamResetError: OUTCOME_RESET,
    UpstreamTimeout: OUTCOME_TIMEOUT,
    UpstreamProtocolError: OUTCOME_BAD_RESPONSE,
}
CLIENT_CLOSED = 499  # logged (never sent) when the client went away first


class _Body:
    """The client's request body as an async iterator for the upstream request.

    Records a client-side fault (``fault``) so the proxy can tell it from a backend one.
    """

    __slots__ = ("_idle", "_limit", "_request", "expect", "fault", "received")

    def __init__(self, request: BaseRequest, limit: int | None, idle: float, expect: bool) -> None:
        self._request = request
        self._limit = limit
        self._idle = idle or None
        self.expect = expect
        self.fault: Exception | None = None
        self.received = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.expect:
            self.expect = False
            await self._request.writer.write(_CONTINUE)
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
                return
            self.received += len(chunk)
            if limit is not None and self.received > limit:
                self.fault = RequestBodyTooLarge(limit)
                raise self.fault
            yield chunk


def _text(status: int, text: str, request_id: str, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"X-Request-ID": request_id, "Cache-Control": "no-store"}
    if extra:
        headers.update(extra)
    return web.Response(status=status, text=f"{text}\nrequest id: {request_id}\n", headers=headers)


class Proxy:
    """The request handler. ``table`` is swapped whole on reload; a request keeps the
    table (and so the config) it started with."""

    def __init__(self, table: ServiceTable, access_log: AccessLog, ws_handler: Callable[..., object] | None = None) -> None:
        self.table = table
        self.access_log = access_log
        self.via = f"1.1 {table.config.via_name}"
        self._request_children: dict[tuple[str, str, str, int], Counter] = {}
        self._inflight_children: dict[str, Gauge] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}

    def set_table(self, table: ServiceTable) -> None:
        self.table = table
        self.via = f"1.1 {table.config.via_name}"

    # -- metrics helpers (children cached: labels() takes a lock and builds tuples) -----

    def _count(self, service: str, backend: str, method: str, status: int) -> None:
        key = (service, backend, method, status // 100)
        child = self._request_children.get(key)
        if child is None:
            m = method if method in _KNOWN_METHODS else "other"
            child = metrics.REQUESTS.labels(service, backend, m, metrics.code_class(status))
            self._request_children[key] = child
        child.inc()

    def _observe(self, service: str, backend: str, seconds: float) -> None:
        key = (service, backend)
        child = self._duration_children.get(key)
        if child is None:
            child = metrics.REQUEST_DURATION.labels(service, backend)
            self._duration_children[key] = child
        child.observe(seconds)

    def _inflight(self, service: str) -> Gauge:
        child = self._inflight_children.get(service)
        if child is None:
            child = metrics.INFLIGHT.labels(service)
            self._inflight_children[service] = child
        return child

    # -- the handler -----------------------------------------------------------------

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        headers = request.headers
        request_id = sane_request_id(headers.get("X-Request-ID"))
        service_name = "none"
        backend_name = "none"
        status = CLIENT_CLOSED
        sent_bytes = 0
        try:
            host = headers.get("Host")
            if host is None and request.version >= (1, 1):
                status = 400
                return _text(400, "bad request: HTTP/1.1 request without a Host header", request_id)
            raw_path = request.raw_path
            path = raw_path.partition("?")[0]
            svc = self.table.lookup(host or "", path)
            if svc is None:
                status = 404
                return _text(404, "not found: no service for this host and path", request_id)
            service_name = svc.name
            inflight = self._inflight(service_name)
            inflight.inc()
            try:
                upgrade = headers.get("Upgrade")
                if upgrade is not None and upgrade.lower() == "websocket" and request.method == "GET":
                    backend_name = svc.director.route().backend.name
                    resp = await proxy_websocket(self, svc, request, request_id)
                    status = resp.status
                    return resp
                resp, backend_name, sent_bytes = await self._forward(svc, request, request_id, started)
                status = resp.status
                return resp
            finally:
                inflight.dec()
        finally:
            self._count(service_name, backend_name, request.method, status)
            if self.access_log.enabled:
                self.access_log.write(
                    AccessRecord(
                        peer=request.remote or "-",
                        method=request.method,
                        target=request.raw_path,
                        version=f"HTTP/{request.version.major}.{request.version.minor}",
                        status=status,
                        bytes_sent=sent_bytes,
                        referer=headers.get("Referer", ""),
                        user_agent=headers.get("User-Agent", ""),
                        request_id=request_id,
                        duration=time.monotonic() - started,
                        service=service_name,
                        backend=backend_name,
                    )
                )

    async def _forward(
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, started: float
    ) -> tuple[web.StreamResponse, str, int]:
        """Forward one plain HTTP request. Returns (response, backend name, body bytes)."""
        method = request.method
        headers = request.headers
        body: _Body | None = None
        if request.body_exists:
            limit = svc.max_body_size
            declared = request.content_length
            if limit is not None and declared is not None and declared > limit:
                return self._refuse(svc, request, request_id, 413, f"payload too large: body over {limit} bytes", close=True), "none", 0
            expect = headers.get("Expect")
            if expect is not None:
                if expect.lower() != "100-continue":
                    return self._refuse(svc, request, request_id, 417, "expectation failed: only 100-continue is supported", close=True), "none", 0
            body = _Body(request, limit, svc.idle, expect is not None and request.version >= (1, 1))

        try:
            route = svc.director.route()
        except NoRoute as exc:
            return self._refuse(svc, request, request_id, exc.status, f"service unavailable: {exc.reason}", extra={"Retry-After": str(exc.retry_after)}), "none", 0
        target = svc.targets[route.backend.name]
        backend = target.config.name

        out = request_headers(
            headers,
            host=headers.get("Host", target.host_header) if svc.preserve_host else target.host_header,
            peer=request.remote or "unknown",
            proto=request.scheme,
            via=self.via,
            request_id=request_id,
            epoch=route.epoch,
            expect_continue=body is not None and body.expect,
        )
        url = URL(target.base + request.raw_path, encoded=True)
        pool = target.pool
        pool.acquire()
        upstream: aiohttp.ClientResponse | None = None
        try:
            try:
                upstream = await pool.session.request(
                    method,
                    url,
                    headers=out,
                    data=body.chunks() if body is not None else None,
                    allow_redirects=False,
                    timeout=svc.first_byte,
                    auto_decompress=False,
                )
                self._check_framing(upstream, backend)
            except (Exception, asyncio.CancelledError) as exc:
                if upstream is not None:
                    upstream.close()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if body is not None and body.fault is not None:
                    return self._client_fault(svc, request, request_id, body.fault, backend), backend, 0
                err = translate(exc, backend)
                return self._upstream_failed(svc, request, request_id, err, backend), backend, 0

            status = upstream.status
            svc.director.report(backend, Outcome.ok(status))
            resp = web.StreamResponse(
                status=status,
                reason=upstream.reason,
                headers=response_headers(
                    upstream.headers,
                    via=self.via,
                    request_id=request_id,
                    rewriter=svc.rewriter,
                    client_origin=f"{request.scheme}://{headers.get('Host', target.host_header)}",
                ),
            )
            try:
                await resp.prepare(request)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                upstream.close()
                return resp, backend, 0
            self._observe(svc.name, backend, time.monotonic() - started)
            sent = await self._stream_body(svc, request, request_id, upstream, resp, backend)
            return resp, backend, sent
        finally:
            if upstream is not None:
                upstream.release()
            pool.release()

    @staticmethod
    def _check_framing(upstream: aiohttp.ClientResponse, backend: str) -> None:
        h = upstream.headers
        lengths = h.getall("Content-Length", ())
        if lengths and ("Transfer-Encoding" in h or len(lengths) > 1):
            raise UpstreamProtocolError(
                f"backend {backend} sent an ambiguously framed response "
                f"(Content-Length {list(lengths)}, Transfer-Encoding {h.get('Transfer-Encoding')!r})"
            )

    async def _stream_body(
        self,
        svc: ServiceRuntime,
        request: BaseRequest,
        request_id: str,
        upstream: aiohttp.ClientResponse,
        resp: web.StreamResponse,
        backend: str,
    ) -> int:
        """Copy the backend's body to the client. Returns the bytes sent."""
        sent = 0
        content = upstream.content
        idle = svc.idle or None
        writing = False  # which side a stall belongs to when the idle deadline passes
        try:
            # One deadline for the whole copy, pushed forward after every chunk: cheaper
            # than a timer per read and per write.
            async with asyncio.timeout(idle) as deadline:
                loop = asyncio.get_running_loop()
                while True:
                    try:
                        chunk = await content.readany()
                    except Exception as exc:
                        raise translate(exc, backend) from exc
                    if not chunk:
                        break
                    writing = True
                    await resp.write(chunk)
                    writing = False
                    sent += len(chunk)
                    if idle is not None:
                        deadline.reschedule(loop.time() + idle)
            await resp.write_eof()
        except UpstreamError as err:
            self._body_failed(svc, request, request_id, upstream, err, backend, sent)
        except TimeoutError:
            if writing:  # the client stopped reading: not the backend's fault
                log.warning(
                    "client stopped reading for %ss; aborted %s %s id=%s",
                    svc.idle, request.method, request.path, request_id,
                )
                upstream.close()
                self._abort(request)
            else:
                stalled = UpstreamTimeout(f"backend {backend} stalled for {svc.idle}s mid-body")
                self._body_failed(svc, request, request_id, upstream, stalled, backend, sent)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            upstream.close()  # the client went away: not the backend's fault
        return sent

    def _body_failed(
        self,
        svc: ServiceRuntime,
        request: BaseRequest,
        request_id: str,
        upstream: aiohttp.ClientResponse,
        err: UpstreamError,
        backend: str,
        sent: int,
    ) -> None:
        svc.director.report(backend, _OUTCOME.get(type(err), OUTCOME_RESET))
        metrics.UPSTREAM_ERRORS.labels(svc.name, backend, err.metric_cause).inc()
        log.error(
            "%s after %d body bytes; aborted the response to %s %s id=%s",
            err.cause, sent, request.method, request.path, request_id,
        )
        upstream.close()
        self._abort(request)

    @staticmethod
    def _abort(request: BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    # -- answers the router gives itself ------------------------------------------------

    def _refuse(
        self,
        svc: ServiceRuntime,
        request: BaseRequest,
        request_id: str,
        status: int,
        text: str,
        extra: dict[str, str] | None = None,
        close: bool = False,
    ) -> web.Response:
        resp = _text(status, text, request_id, extra)
        if close:
            resp.force_close()  # the unread body must not be parsed as the next request
        if status >= 500:
            metrics.REFUSED.labels(svc.name, "no_route").inc()
            log.warning("%s; answered %d to %s %s id=%s", text, status, request.method, request.path, request_id)
        return resp

    def _upstream_failed(
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, err: UpstreamError, backend: str
    ) -> web.Response:
        svc.director.report(backend, _OUTCOME.get(type(err), OUTCOME_RESET))
        metrics.UPSTREAM_ERRORS.labels(svc.name, backend, err.metric_cause).inc()
        log.error("%s; answered %d to %s %s id=%s", err.cause, err.status, request.method, request.path, request_id)
        what = "gateway timeout" if err.status == 504 else "bad gateway"
        resp = _text(err.status, f"{what}: {err.cause}", request_id)
        if request.body_exists:
            resp.force_close()
        return resp

    def _client_fault(
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, fault: Exception, backend: str
    ) -> web.Response:
        if isinstance(fault, RequestBodyTooLarge):
            log.info("request body over %d bytes; answered 413 to %s %s id=%s", fault.limit, request.method, request.path, request_id)
            resp = _text(413, f"payload too large: body over {fault.limit} bytes", request_id)
        else:
            log.info("%s; answered 400 to %s %s id=%s", fault, request.method, request.path, request_id)
            resp = _text(400, f"bad request: {fault}", request_id)
        resp.force_close()
        return resp

