"""The streaming reverse proxy: one client request -> the service's active backend.

Rules:

1. A request that is malformed or ambiguous never reaches a backend: aiohttp's strict
   request parser answers 400 for bad bytes, CL+TE and conflicting Content-Length
   itself; this module adds 400 for HTTP/1.1 without Host.
2. Bodies stream both ways in the chunks the sockets deliver; nothing is held whole
   (bodies.py: the request body as sent upstream, the writes that end a response).
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
6. Failover (the director, router/failover/director.py): while the service switches, the director
   raises MustHold and the request waits in the hold queue for the new active; NoRoute
   is answered 503 + Retry-After (a self-refreshing page for browsers). Request bodies
   are kept in memory up to ``failover.replay_buffer`` while they stream, so that after
   a failure before the response started the request can go again: at once to the new
   route if there is one, else after the detector's verdict on the failed backend
   (:meth:`Director.wait_verdict`). Which requests may go again is decided by
   :func:`replay.replay_refusal_reason`; the others get 502 with the reason. A request failing on a
   reused keep-alive connection the backend had just closed goes again once on a fresh
   connection (safe method or whole body kept) and is not held against the backend.
7. Requests waiting for response headers are registered per backend; when a backend is
   declared dead (``abort_inflight``) they stop waiting at once and follow rule 6.
   No first byte after ``health.timeout`` is reported once as SLOW (evidence for a
   confirming probe, never a failure by itself).
8. Mid-body, ``timeouts.idle`` bounds each side's silence: the backend's through the
   upstream connection's read timeout (aiohttp's ``sock_read``, re-armed by every read
   and stopped while the router is not reading because the client is slow), the
   client's through a deadline on each write that has to wait for it. A backend stall is
   reported, a client stall only logged. The fast path is cheap on purpose: no timer per
   chunk, response headers sent together with the body bytes in hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDictProxy
from prometheus_client import Counter, Gauge, Histogram

from router import metrics
from router.errors import (
    RequestBodyTooLarge,
    RequestUnsendable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.failover.director import (
    OUTCOME_BAD_RESPONSE,
    OUTCOME_CONNECT_FAILED,
    OUTCOME_RESET,
    OUTCOME_SLOW,
    OUTCOME_TIMEOUT,
    MustHold,
    NoRoute,
    Outcome,
    Route,
)

from .accesslog import AccessLog, AccessRecord
from .answers import refusal_reply
from .bodies import (
    COALESCE_MAX,
    ClientStalled,
    ProxyResponse,
    RequestBody,
    drain,
    finish,
    read_failed,
)
from .headers import connection_tokens, request_headers, response_headers, sane_request_id
from .replay import replay_refusal_reason
from .routes import ServiceRuntime, ServiceTable
from .targets import ALLOW, Answer, Target, check_host, parse_target
from .upstream import CONNECTION_REUSED, translate
from .websocket import proxy_websocket

__all__ = ["Proxy"]

log = logging.getLogger("hotspare.router")

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
_OUTCOME = {
    UpstreamConnectError: OUTCOME_CONNECT_FAILED,
    UpstreamResetError: OUTCOME_RESET,
    UpstreamTimeout: OUTCOME_TIMEOUT,
    UpstreamProtocolError: OUTCOME_BAD_RESPONSE,
}
CLIENT_CLOSED = 499  # logged (never sent) when the client went away first
MAX_ATTEMPTS = 4  # first try + stale-connection retry + replays: never a loop


@dataclass(slots=True)
class _Failure:
    """One attempt failed before the response started."""

    err: UpstreamError
    raw: BaseException | None  # what aiohttp raised (None: aborted by failover)
    backend: str
    reused: bool  # on a reused keep-alive connection
    aborted: bool  # the backend was declared dead while we waited
    reported: bool = False  # the director was told already


class _Waiting:
    """A request waiting for response headers from a backend (for abort_inflight)."""

    __slots__ = ("aborted", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.aborted = False


def _request_id(headers: CIMultiDictProxy[str]) -> str:
    """The client's X-Request-ID when sane, unless its Connection header nominates it."""
    given = headers.get("X-Request-ID")
    if given is not None and "Connection" in headers and "x-request-id" in connection_tokens(headers.getall("Connection")):
        given = None
    return sane_request_id(given)


def _own_answer(answer: Answer, request_id: str) -> web.Response:
    """What the router says itself about a target it will not forward (targets.py)."""
    extra = {"Allow": answer.allow} if answer.allow else None
    if answer.status == 200:  # OPTIONS *: the router's own capabilities
        return web.Response(status=200, headers={"Allow": ALLOW, "X-Request-ID": request_id})
    metrics.BAD_REQUESTS.labels(answer.cause).inc()
    log.info("%s; answered %d", answer.text, answer.status)
    resp = _text(answer.status, answer.text, request_id, extra)
    resp.force_close()  # whatever follows on this connection is not to be trusted
    return resp


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
        self._waiting: dict[tuple[str, str], set[_Waiting]] = {}

    def abort_inflight(self, service: str, backend: str) -> None:
        """``backend`` of ``service`` is declared dead: every request waiting on it for
        response headers stops waiting now (it is replayed or answered 502)."""
        waiting = self._waiting.pop((service, backend), set())
        for w in waiting:
            w.aborted = True
            w.task.cancel()
        if waiting:
            log.warning("service %s: backend %s declared dead; %d request(s) waiting on it stopped",
                        service, backend, len(waiting))

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
        request_id = _request_id(headers)
        service_name = "none"
        backend_name = "none"
        status = CLIENT_CLOSED
        sent_bytes = 0
        try:
            version = request.version
            target = parse_target(request.method, request.raw_path, (version.major, version.minor))
            if not isinstance(target, Answer) and "Host" in headers:
                target = check_host(headers.getall("Host")) or target
            if isinstance(target, Answer):
                status = target.status
                return _own_answer(target, request_id)
            host = target.authority or headers.get("Host")
            if host is None and version >= (1, 1):
                status = 400
                metrics.BAD_REQUESTS.labels("bad_request").inc()
                return _text(400, "bad request: HTTP/1.1 request without a Host header", request_id)
            svc = self.table.lookup(host or "", target.path)
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
                    resp = await proxy_websocket(self.via, svc, request, request_id, target)
                    status = resp.status
                    return resp
                resp, backend_name, sent_bytes = await self._forward(svc, request, request_id, started, target)
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
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, started: float, target: Target
    ) -> tuple[web.StreamResponse, str, int]:
        """Forward one plain HTTP request. Returns (response, backend name, body bytes)."""
        method = request.method
        headers = request.headers
        body: RequestBody | None = None
        if request.body_exists:
            limit = svc.max_body_size
            declared = request.content_length
            if limit is not None and declared is not None and declared > limit:
                return self._refuse(svc, request, request_id, 413, f"payload too large: body over {limit} bytes", close=True), "none", 0
            expect = headers.get("Expect")
            if expect is not None:
                if expect.lower() != "100-continue":
                    return self._refuse(svc, request, request_id, 417, "expectation failed: only 100-continue is supported", close=True), "none", 0
            body = RequestBody(request, limit, svc.idle, expect is not None and request.version >= (1, 1),
                         svc.config.failover.replay_buffer)

        director = svc.director
        try:
            route = await self._route(svc, body)
        except NoRoute as exc:
            return self._no_route(svc, request, request_id, exc), "none", 0
        stale_retried = False
        for attempt in range(MAX_ATTEMPTS):
            last = attempt == MAX_ATTEMPTS - 1
            result = await self._attempt(svc, request, request_id, started, route, body, last, target)
            if not isinstance(result, _Failure):
                return result
            f = result
            backend = f.backend
            # 1. A keep-alive connection the backend closed just as we sent: once more on a
            #    fresh connection, not held against the backend.
            if (
                not last and not stale_retried and f.reused
                and isinstance(f.raw, aiohttp.ServerDisconnectedError)
                and (method in svc.config.failover.safe_methods or body is None or
                     (body.kept is not None and body.fault is None))
            ):
                stale_retried = True
                log.info("backend %s closed a kept-alive connection as %s %s id=%s was sent; "
                         "retrying on a fresh connection", backend, method, request.path, request_id)
                continue
            if isinstance(f.err, RequestUnsendable):  # the client's doing: never the backend's
                return self._client_fault(svc, request, request_id, f.err, backend), "none", 0
            if not (f.aborted or f.reported):
                director.report(backend, _OUTCOME.get(type(f.err), OUTCOME_RESET))
            metrics.UPSTREAM_ERRORS.labels(svc.name, backend, f.err.metric_cause).inc()
            # 2. May it go again (to the new active, or to this one once it is cleared)?
            fo = svc.config.failover
            reason = replay_refusal_reason(
                method, "Idempotency-Key" in headers, 0 if body is None else body.kept_size,
                f.err.sent, fo.safe_methods, fo.replay_buffer,
            )
            if reason is None and last:
                reason = f"gave up after {MAX_ATTEMPTS} attempts"
            if reason is None:
                try:
                    again = await self._route_after_failure(svc, route)
                except NoRoute as exc:
                    log.error("%s; no backend to send %s %s id=%s to: %s",
                              f.err.cause, method, request.path, request_id, exc.reason)
                    return self._no_route(svc, request, request_id, exc), backend, 0
                if again is not None:
                    route = again
                    metrics.REPLAYED.labels(svc.name, method if method in _KNOWN_METHODS else "other").inc()
                    log.warning("%s; sending %s %s id=%s again, to %s (epoch %d)",
                                f.err.cause, method, request.path, request_id, route.backend.name, route.epoch)
                    continue
                reason = "no other backend could take it in time"
            metrics.REFUSED.labels(svc.name, "not_replayable").inc()
            return self._upstream_failed(svc, request, request_id, f.err, backend, reason), backend, 0
        raise AssertionError("unreachable: the last attempt always answers")  # pragma: no cover

    async def _route(self, svc: ServiceRuntime, body: RequestBody | None) -> Route:
        """The route for a new request; held while the service switches. NoRoute: refuse."""
        director = svc.director
        try:
            return director.route()
        except MustHold:
            size = body.kept_size if body is not None else 0
            return await director.wait_for_route(size or 0)

    async def _route_after_failure(self, svc: ServiceRuntime, failed: Route) -> Route | None:
        """Where a replayable request goes after ``failed`` did not answer: the new route
        once the failover layer decided, the same one if a probe cleared the backend,
        None if nothing changed in time."""
        director = svc.director
        if director.could_fail_over(failed.backend.name):
            h = svc.config.health
            await director.wait_verdict(failed, h.timeout * 2 + h.fast_interval)
        route = await self._route(svc, None)
        if route.backend.name == failed.backend.name and route.epoch == failed.epoch:
            if not director.backend_cleared(failed.backend.name):
                return None  # nothing changed: the same backend again would fail the same way
        return route

    async def _attempt(
        self,
        svc: ServiceRuntime,
        request: BaseRequest,
        request_id: str,
        started: float,
        route: Route,
        body: RequestBody | None,
        last: bool,
        want: Target,
    ) -> tuple[web.StreamResponse, str, int] | _Failure:
        """One try on ``route``: the whole response, or what failed before it started
        (including, unless ``last``, a ``fail_on_status`` answer to a replayable request)."""
        method = request.method
        headers = request.headers
        target = svc.targets[route.backend.name]
        backend = target.config.name
        client_host: str = want.authority or headers.get("Host") or target.host_header
        out = request_headers(
            headers,
            host=client_host if svc.preserve_host else target.host_header,
            peer=request.remote or "unknown",
            proto=request.scheme,
            via=self.via,
            request_id=request_id,
            epoch=route.epoch,
            expect_continue=body is not None and body.expect,
        )
        path, _, query = want.path_qs.partition("?")
        url = target.url(path, query)
        pool = target.pool
        pool.acquire()
        upstream: aiohttp.ClientResponse | None = None
        task = asyncio.current_task()
        assert task is not None
        waiting = _Waiting(task)
        key = (svc.name, backend)
        self._waiting.setdefault(key, set()).add(waiting)
        director = svc.director
        slow = asyncio.get_running_loop().call_later(
            svc.config.health.timeout, director.report, backend, OUTCOME_SLOW
        )
        CONNECTION_REUSED.set(False)
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
                    if waiting.aborted and task.uncancel() == 0:
                        err = UpstreamResetError(f"backend {backend} was declared dead while this request waited on it")
                        return _Failure(err, None, backend, False, True)
                    raise
                if body is not None and body.fault is not None:
                    return self._client_fault(svc, request, request_id, body.fault, backend), backend, 0
                return _Failure(translate(exc, backend), exc, backend, CONNECTION_REUSED.get(), False)
            finally:
                slow.cancel()
                ws = self._waiting.get(key)
                if ws is not None:
                    ws.discard(waiting)
                    if not ws:
                        del self._waiting[key]

            status = upstream.status
            director.report(backend, Outcome.ok(status))
            fo = svc.config.failover
            if status in fo.fail_on_status and not last and replay_refusal_reason(
                method, "Idempotency-Key" in headers, 0 if body is None else body.kept_size,
                True, fo.safe_methods, fo.replay_buffer,
            ) is None:
                upstream.close()  # its answer is dropped: the request goes again
                dropped = UpstreamStatusError(f"backend {backend} answered {status}")
                return _Failure(dropped, None, backend, False, False, reported=True)
            resp = ProxyResponse(
                status=status,
                reason=upstream.reason,
                headers=response_headers(
                    upstream.headers,
                    via=self.via,
                    request_id=request_id,
                    rewriter=svc.rewriter,
                    client_origin=f"{request.scheme}://{client_host}",
                ),
            )
            try:
                writer = cast(StreamWriter, await resp.prepare(request))  # headers buffered, not sent
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                upstream.close()
                return resp, backend, 0
            self._observe(svc.name, backend, time.monotonic() - started)
            sent = await self._stream_body(svc, request, request_id, upstream, resp, writer, backend)
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
        writer: StreamWriter,
        backend: str,
    ) -> int:
        """Copy the backend's body to the client. Returns the bytes sent.

        The response headers are still buffered (:class:`ProxyResponse`): they leave in
        one send with the first body bytes if those came with them (up to
        ``COALESCE_MAX``: a bigger piece would be copied to join them), and the last
        piece of a body wholly in hand ends the response in that same send; if no body
        byte came with them they go at once, so a slow body never holds them back. The
        pieces are the ones the socket delivered (``readchunk``), never joined. Stalls
        (rule 8): the backend's by the connection's ``sock_read``, lowered to ``idle``
        here; the client's by timing only the writes that must wait for it.
        """
        content = upstream.content
        idle = svc.idle or None
        sent = 0
        try:
            if content.total_bytes == 0 and not content.is_eof():
                writer.send_headers()  # no body byte with them: nothing to wait for
            conn = upstream.connection
            if idle is not None and conn is not None and conn.protocol is not None:
                conn.protocol.read_timeout = idle
                conn.protocol.start_timeout()  # re-armed now: the running timer has first_byte
            protocol = writer.protocol
            first = True
            # (aiohttp's shared empty reader answers readchunk() with "end of an HTTP
            # chunk" for ever once read: only at_eof() says a body has ended.)
            while not content.at_eof():
                try:
                    chunk, _ = await content.readchunk()
                except Exception as exc:
                    raise read_failed(exc, svc, backend) from exc
                if not chunk:
                    if content.at_eof():
                        break
                    continue  # an empty piece at a chunk boundary, not the end
                if first:
                    first = False
                    if len(chunk) > COALESCE_MAX:
                        writer.send_headers()
                if content.at_eof():  # the last piece: it ends the response
                    sent += len(chunk)
                    await finish(resp, writer, chunk, idle)
                    return sent
                await writer.write(chunk, drain=False)
                sent += len(chunk)
                if protocol.writing_paused:
                    await drain(writer, idle)
            await finish(resp, writer, b"", idle)
        except UpstreamError as err:
            self._body_failed(svc, request, request_id, upstream, err, backend, sent)
        except ClientStalled:  # the client stopped reading: not the backend's fault
            log.warning(
                "client stopped reading for %ss; aborted %s %s id=%s",
                svc.idle, request.method, request.path, request_id,
            )
            upstream.close()
            self._abort(request)
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
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, err: UpstreamError, backend: str,
        reason: str,
    ) -> web.Response:
        log.error("%s; answered %d to %s %s id=%s (not sent again: %s)",
                  err.cause, err.status, request.method, request.path, request_id, reason)
        what = "gateway timeout" if err.status == 504 else "bad gateway"
        resp = _text(err.status, f"{what}: {err.cause}\nnot sent again: {reason}", request_id)
        if request.body_exists:
            resp.force_close()
        return resp

    def _no_route(self, svc: ServiceRuntime, request: BaseRequest, request_id: str, exc: NoRoute) -> web.Response:
        """503 + Retry-After; the switching page for browsers."""
        reply = refusal_reply(exc, svc.name, request.headers.get("Accept"))
        resp = web.Response(status=reply.status, body=reply.body, headers=[*reply.headers, ("X-Request-ID", request_id)])
        if request.body_exists:
            resp.force_close()  # the unread body must not be parsed as the next request
        metrics.REFUSED.labels(svc.name, "no_route").inc()
        log.warning("service %s unavailable (%s); answered %d to %s %s id=%s",
                    svc.name, exc.reason, reply.status, request.method, request.path, request_id)
        return resp

    def _client_fault(
        self, svc: ServiceRuntime, request: BaseRequest, request_id: str, fault: Exception, backend: str
    ) -> web.Response:
        if isinstance(fault, RequestBodyTooLarge):
            log.info("request body over %d bytes; answered 413 to %s %s id=%s", fault.limit, request.method, request.path, request_id)
            resp = _text(413, f"payload too large: body over {fault.limit} bytes", request_id)
        else:
            metrics.BAD_REQUESTS.labels("bad_request").inc()
            log.info("%s; answered 400 to %s %s id=%s", fault, request.method, request.path, request_id)
            resp = _text(400, f"bad request: {fault}", request_id)
        resp.force_close()
        return resp

