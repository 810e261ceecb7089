"""The streaming reverse proxy: one client request -> the service's active backend.

This module is the request handler (called by connection.py) and its bookkeeping (request id, metrics, access
log); the work is done in: forward.py (the attempt loop, replays), attempt.py (one
try), stream.py (the response body), inflight.py (abort registry, SLOW timer),
answers.py (every answer the router makes itself), websocket.py (upgrades).

Rules:

1. A request that is malformed or ambiguous never reaches a backend: llhttp's strict
   request parser refuses bad bytes, CL+TE and conflicting Content-Length (400, by
   connection.py); this module adds 400 for HTTP/1.1 without Host.
2. Bodies stream both ways in the chunks the sockets deliver; nothing is held whole
   (bodies.py: the request body as sent upstream, the writes that end a response).
   Flow control is the connections' own (readers pause the socket at their high-water
   mark, writers drain). ``max_body_size`` is enforced on the declared length before any byte
   is read (413, never 100-continue) and on the bytes counted while streaming.
3. ``Expect: 100-continue`` is answered by the router, lazily: "100 Continue" goes out
   when the backend connection is up and the body is first pulled, so a refused
   backend or a too-large body is answered without the client sending it.
4. Per request the proxy asks the service's Director for a Route and reports what the
   backend showed after the attempt. A client fault (hung up, stalled, too large) is
   never reported as a backend failure.
5. Backend trouble before the response starts becomes a short text answer naming the
   cause and the request id (502/504, translated once in router/edge.py); after the
   response started, the client connection is aborted so a truncated body can never
   look complete. Never a traceback to the client.
6. Failover (the director, router/failover/director.py): while the service switches, the director
   raises MustHold and the request waits in the hold queue for the new active; NoRoute
   is answered 503 + Retry-After (a self-refreshing page for browsers). A WebSocket
   upgrade is never held: MustHold and NoRoute both get it that same 503. Request bodies
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

import time
from collections.abc import Callable

from multidict import CIMultiDict
from prometheus_client import Counter

from router import metrics
from router.failover.director import NoRoute

from . import answers
from .accesslog import AccessLog, AccessRecord
from .attempt import Attempter
from .forward import KNOWN_METHODS, Forwarder
from .headers import connection_tokens, sane_request_id
from .inflight import Inflight
from .request import ClientRequest
from .respond import Responder
from .routes import ServiceRuntime, ServiceTable
from .targets import Answer, Target, check_host, parse_target
from .websocket import proxy_websocket

__all__ = ["Proxy"]

CLIENT_CLOSED = 499  # logged (never sent) when the client went away first
_INFLIGHT: dict[str, list[int]] = {}  # per service, shared by every proxy of the process (as the gauge is)


def _request_id(headers: CIMultiDict[str]) -> str:
    """The client's X-Request-ID when sane, unless its Connection header nominates it."""
    given = headers.get("X-Request-ID")
    if given is not None and "Connection" in headers and "x-request-id" in connection_tokens(headers.getall("Connection")):
        given = None
    return sane_request_id(given)


class Proxy:
    """The request handler. ``table`` is swapped whole on reload; a request keeps the
    table (and so the config) it started with."""

    def __init__(self, table: ServiceTable, access_log: AccessLog, ws_handler: Callable[..., object] | None = None) -> None:
        self.table = table
        self.access_log = access_log
        self.via = f"1.1 {table.config.via_name}"
        self._inflight = Inflight()
        self._forwarder = Forwarder(Attempter(self.via, self._inflight))
        self._request_children: dict[tuple[str, str, str, int], Counter] = {}

    def abort_inflight(self, service: str, backend: str) -> None:
        """``backend`` of ``service`` is declared dead: every request waiting on it for
        response headers stops waiting now (it is replayed or answered 502)."""
        self._inflight.abort(service, backend)

    def set_table(self, table: ServiceTable) -> None:
        self.table = table
        self.via = self._forwarder.attempts.via = f"1.1 {table.config.via_name}"

    # -- the handler -----------------------------------------------------------------

    async def handle(self, request: ClientRequest) -> None:
        started = time.monotonic()
        out = request.out
        assert out is not None
        request_id = _request_id(request.headers)
        service_name = backend_name = "none"
        sent_bytes = 0
        status = CLIENT_CLOSED
        try:
            svc = self._service(request, out, request_id)
            if svc is None:
                status = out.status
                return
            service_name = svc.name
            inflight = self._inflight_gauge(service_name)
            inflight[0] += 1
            try:
                backend_name, sent_bytes = await self._forward(svc, request, out, request_id, started)
                status = out.status or CLIENT_CLOSED
            finally:
                inflight[0] -= 1
        finally:
            self._count(service_name, backend_name, request.method, status)
            if self.access_log.enabled:
                self._log_access(request, request_id, started, status, sent_bytes, service_name, backend_name)

    def _service(self, request: ClientRequest, out: Responder, request_id: str) -> ServiceRuntime | None:
        """The service of the request, or None when the router answered it itself."""
        headers = request.headers
        target = parse_target(request.method, request.raw_path, request.version)
        if not isinstance(target, Answer) and "Host" in headers:
            target = check_host(headers.getall("Host")) or target
        if isinstance(target, Answer):
            out.reply(answers.own_answer(target, request_id))
            return None
        host = target.authority or headers.get("Host")
        if host is None and request.version >= (1, 1):
            metrics.BAD_REQUESTS.labels("bad_request").inc()
            out.reply(answers.text(400, "bad request: HTTP/1.1 request without a Host header", request_id))
            return None
        svc = self.table.lookup(host or "", target.path)
        if svc is None:
            out.reply(answers.text(404, "not found: no service for this host and path", request_id))
            return None
        request.target = target
        return svc

    async def _forward(
        self, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, started: float,
    ) -> tuple[str, int]:
        target = request.target
        assert target is not None
        upgrade = request.headers.get("Upgrade")
        if request.upgrade and upgrade is not None and upgrade.lower() == "websocket" and request.method == "GET":
            return await self._websocket(svc, request, out, request_id, target), 0
        return await self._forwarder.forward(svc, request, out, request_id, started, target)

    async def _websocket(
        self, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, target: Target
    ) -> str:
        try:
            route = svc.director.route()
        except NoRoute as exc:  # MustHold too: a held upgrade would help nobody
            out.reply(answers.no_route(svc.name, request, request_id, exc))
            return "none"
        await proxy_websocket(self.via, svc, request, out, request_id, target, route)
        return route.backend.name

    # -- bookkeeping (metric children cached: labels() takes a lock and builds tuples) --

    def _count(self, service: str, backend: str, method: str, status: int) -> None:
        key = (service, backend, method, status // 100)
        child = self._request_children.get(key)
        if child is None:
            m = method if method in KNOWN_METHODS else "other"
            child = metrics.REQUESTS.labels(service, backend, m, metrics.code_class(status))
            self._request_children[key] = child
        child.inc()

    @staticmethod
    def _inflight_gauge(service: str) -> list[int]:
        """The in-flight count of ``service``: a plain int per request, read by the gauge
        when /metrics is scraped (no lock on the hot path)."""
        cell = _INFLIGHT.get(service)
        if cell is None:
            cell = _INFLIGHT[service] = [0]
            metrics.INFLIGHT.labels(service).set_function(lambda: cell[0])
        return cell

    def _log_access(
        self, request: ClientRequest, request_id: str, started: float, status: int, sent_bytes: int,
        service: str, backend: str,
    ) -> None:
        headers = request.headers
        self.access_log.write(
            AccessRecord(
                peer=request.remote,
                method=request.method,
                target=request.raw_path,
                version=f"HTTP/{request.version[0]}.{request.version[1]}",
                status=status,
                bytes_sent=sent_bytes,
                referer=headers.get("Referer", ""),
                user_agent=headers.get("User-Agent", ""),
                request_id=request_id,
                duration=time.monotonic() - started,
                service=service,
                backend=backend,
            )
        )
