"""The attempt loop of one plain HTTP request: route it, try it, and after a failure
before the response started decide whether and where it goes again (handler.py rule 6).

Rules:

1. The body is checked before any route is asked for: a declared length over
   ``max_body_size`` is 413 and an ``Expect`` other than 100-continue 417, both without
   reading a byte of it.
2. While the service switches the request is held (``MustHold`` -> ``wait_for_route``);
   ``NoRoute`` is answered 503 + Retry-After (answers.py).
3. After a failed attempt, in this order: a reused keep-alive connection the backend
   closed just as the request went out is a race, not a failure: once more on a fresh
   connection, not held against the backend. A request that cannot be encoded is the
   client's fault (400, never reported). Anything else is reported (unless it was
   already: an abort, a dropped ``fail_on_status`` answer) and counted by cause.
4. It goes again only if :func:`replay.replay_refusal_reason` allows it, to the new route
   once the failover layer decided, or to the same backend once a probe cleared it;
   otherwise 502/504 with the reason. At most ``MAX_ATTEMPTS`` tries: never a loop.
"""

from __future__ import annotations

import logging

import aiohttp

from router import metrics
from router.errors import RequestUnsendable
from router.failover.director import MustHold, NoRoute, Outcome, Route

from . import answers
from .attempt import Answered, Attempter, Failed
from .bodies import RequestBody
from .replay import replay_refusal_reason
from .request import ClientRequest
from .respond import Responder
from .routes import ServiceRuntime
from .targets import Target

__all__ = ["KNOWN_METHODS", "MAX_ATTEMPTS", "Forwarder"]

log = logging.getLogger("hotspare.router")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
MAX_ATTEMPTS = 4  # first try + stale-connection retry + replays: never a loop


class Forwarder:
    """Forwards plain HTTP requests; one per proxy."""

    __slots__ = ("attempts",)

    def __init__(self, attempts: Attempter) -> None:
        self.attempts = attempts

    async def forward(
        self, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, started: float,
        target: Target,
    ) -> Answered:
        """Forward one plain HTTP request; its answer goes to ``out``. Returns (backend
        name, body bytes sent)."""
        body: RequestBody | None = None
        if request.body_exists:
            refused = _check_body(svc, request, request_id)
            if isinstance(refused, answers.Reply):
                out.reply(refused)
                return "none", 0
            body = refused
        try:
            route = await _route(svc, body)
        except NoRoute as exc:
            out.reply(answers.no_route(svc.name, request, request_id, exc))
            return "none", 0
        return await self._attempts(svc, request, out, request_id, started, target, body, route)

    async def _attempts(
        self, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, started: float,
        target: Target, body: RequestBody | None, route: Route,
    ) -> Answered:
        stale_retried = False
        for attempt in range(MAX_ATTEMPTS):
            last = attempt == MAX_ATTEMPTS - 1
            result = await self.attempts.attempt(svc, request, out, request_id, started, route, body, last, target)
            if not isinstance(result, Failed):
                return result
            f = result
            if not last and not stale_retried and _stale_connection(f, svc, request, body):
                stale_retried = True
                log.info("backend %s closed a kept-alive connection as %s %s id=%s was sent; "
                         "retrying on a fresh connection", f.backend, request.method, request.path, request_id)
                continue
            if isinstance(f.err, RequestUnsendable):  # the client's doing: never the backend's
                out.reply(answers.client_fault(request, request_id, f.err))
                return "none", 0
            if not (f.aborted or f.reported):
                svc.director.report(f.backend, Outcome.failed(f.err.failure))
            metrics.UPSTREAM_ERRORS.labels(svc.name, f.backend, f.err.failure.value).inc()
            reason = _replay_refusal(svc, request, body, f, last)
            if reason is None:
                try:
                    again = await _route_after_failure(svc, route)
                except NoRoute as exc:
                    log.error("%s; no backend to send %s %s id=%s to: %s",
                              f.err.cause, request.method, request.path, request_id, exc.reason)
                    out.reply(answers.no_route(svc.name, request, request_id, exc))
                    return f.backend, 0
                if again is not None:
                    route = again
                    _replaying(svc, request, request_id, f, route)
                    continue
                reason = "no other backend could take it in time"
            metrics.REFUSED.labels(svc.name, "not_replayable").inc()
            out.reply(answers.upstream_failed(request, request_id, f.err, reason))
            return f.backend, 0
        raise AssertionError("unreachable: the last attempt always answers")  # pragma: no cover


def _check_body(svc: ServiceRuntime, request: ClientRequest, request_id: str) -> RequestBody | answers.Reply:
    """Rule 1: the body to stream (and keep for a replay), or the refusal."""
    limit = svc.max_body_size
    declared = request.content_length
    if limit is not None and declared is not None and declared > limit:
        return answers.refuse(svc.name, request, request_id, 413, f"payload too large: body over {limit} bytes", close=True)
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() != "100-continue":
        return answers.refuse(svc.name, request, request_id, 417, "expectation failed: only 100-continue is supported",
                              close=True)
    assert request.body is not None and request.out is not None
    return RequestBody(request.body, request.out.conn, limit, svc.idle, expect is not None and request.version >= (1, 1),
                       svc.config.failover.replay_buffer)


async def _route(svc: ServiceRuntime, body: RequestBody | None) -> Route:
    """The route for a new request; held while the service switches. NoRoute: refuse."""
    director = svc.director
    try:
        return director.route()
    except MustHold:
        size = body.kept_size if body is not None else 0
        return await director.wait_for_route(size or 0)


async def _route_after_failure(svc: ServiceRuntime, failed: Route) -> Route | None:
    """Where a replayable request goes after ``failed`` did not answer: the new route
    once the failover layer decided, the same one if a probe cleared the backend,
    None if nothing changed in time."""
    director = svc.director
    if director.could_fail_over(failed.backend.name):
        h = svc.config.health
        await director.wait_verdict(failed, h.timeout * 2 + h.fast_interval)
    route = await _route(svc, None)
    if route.backend.name == failed.backend.name and route.epoch == failed.epoch:
        if not director.backend_cleared(failed.backend.name):
            return None  # nothing changed: the same backend again would fail the same way
    return route


def _stale_connection(f: Failed, svc: ServiceRuntime, request: ClientRequest, body: RequestBody | None) -> bool:
    """Rule 3: the backend closed a kept-alive connection just as the request went out,
    and the request can go once more (safe method, or no body, or the whole body kept)."""
    return (
        f.reused and isinstance(f.raw, aiohttp.ServerDisconnectedError)
        and (request.method in svc.config.failover.safe_methods or body is None
             or (body.kept is not None and body.fault is None))
    )


def _replay_refusal(svc: ServiceRuntime, request: ClientRequest, body: RequestBody | None, f: Failed, last: bool) -> str | None:
    """Rule 4: None if the request may go again, else why not."""
    fo = svc.config.failover
    reason = replay_refusal_reason(
        request.method, "Idempotency-Key" in request.headers, 0 if body is None else body.kept_size,
        f.err.sent, fo.safe_methods, fo.replay_buffer,
    )
    if reason is None and last:
        reason = f"gave up after {MAX_ATTEMPTS} attempts"
    return reason


def _replaying(svc: ServiceRuntime, request: ClientRequest, request_id: str, f: Failed, route: Route) -> None:
    method = request.method
    metrics.REPLAYED.labels(svc.name, method if method in KNOWN_METHODS else "other").inc()
    log.warning("%s; sending %s %s id=%s again, to %s (epoch %d)",
                f.err.cause, method, request.path, request_id, route.backend.name, route.epoch)
