"""One try of a request on one route: send it, wait for the response headers, stream the
response (handler.py rules 4, 5 and 7).

Rules:

1. An attempt ends in a whole response (:data:`Answered`) or in a :class:`Failed` that
   says what went wrong before the response started; the attempt loop (forward.py)
   decides what follows. It reports to the director what the backend showed: the
   response status here, failures in the loop (it knows which ones are the client's).
2. While it waits for response headers the attempt is watched (inflight.py): a backend
   declared dead stops the wait at once, and no first byte by ``health.timeout`` is
   reported SLOW.
3. A ``fail_on_status`` answer to a request that may go again (not the last try) is
   dropped: the request goes again, as Apache's ``failonstatus`` does.
4. A response whose framing is ambiguous (Content-Length with Transfer-Encoding, or two
   Content-Lengths) is a bad response, never forwarded.
5. The hot path stays lean: one coroutine per attempt (sync helpers for the rest),
   cached metric children, no timer per chunk.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from prometheus_client import Histogram

from router import metrics
from router.edge import translate
from router.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamStatusError,
)
from router.failover.director import Outcome, Route

from . import answers
from .bodies import RequestBody
from .headers import request_pairs, response_headers, response_lines
from .inflight import Inflight
from .rawupstream import RawResponse
from .replay import replay_refusal_reason
from .request import ClientRequest
from .respond import Responder
from .routes import BackendTarget, ServiceRuntime
from .stream import stream_body
from .targets import Target
from .upstream import CONNECTION_REUSED, AiohttpResponse, BackendPool

__all__ = ["Answered", "Attempter", "Failed"]

Upstream = RawResponse | AiohttpResponse
Answered = tuple[str, int]  # (backend name, body bytes sent); the answer went to the client


@dataclass(slots=True)
class Failed:
    """One attempt failed before the response started."""

    err: UpstreamError
    raw: BaseException | None  # what the upstream client raised (None: aborted by failover)
    backend: str
    reused: bool  # on a reused keep-alive connection
    aborted: bool  # the backend was declared dead while we waited
    reported: bool = False  # the director was told already


class Attempter:
    """Runs attempts for one proxy; ``via`` follows the config (set on reload)."""

    __slots__ = ("_durations", "inflight", "via")

    def __init__(self, via: str, inflight: Inflight) -> None:
        self.via = via
        self.inflight = inflight
        self._durations: dict[tuple[str, str], Histogram] = {}  # labels() takes a lock: cached

    async def attempt(
        self, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, started: float,
        route: Route, body: RequestBody | None, last: bool, want: Target,
    ) -> Answered | Failed:
        """One try on ``route``: the whole response, or what failed before it started
        (including, unless ``last``, a ``fail_on_status`` answer to a replayable request)."""
        target = svc.targets[route.backend.name]
        backend = target.config.name
        client_host: str = want.authority or request.headers.get("Host") or target.host_header
        headers = self._headers(svc, request, request_id, route, body, client_host, target.host_header)
        path, _, query = want.path_qs.partition("?")
        pool = target.pool
        pool.acquire()
        upstream: Upstream | None = None
        director = svc.director
        watch = self.inflight.watch(svc.name, backend, director, svc.config.health.timeout, request.task)
        CONNECTION_REUSED.set(False)
        try:
            try:
                upstream = await _send(svc, pool, request.method, target, path, query, headers, body)
            except (Exception, asyncio.CancelledError) as exc:
                if upstream is not None:
                    upstream.close()
                if isinstance(exc, asyncio.CancelledError):
                    if watch.ours():
                        err = UpstreamResetError(f"backend {backend} was declared dead while this request waited on it")
                        return Failed(err, None, backend, False, True)
                    raise
                if body is not None and body.fault is not None:
                    out.reply(answers.client_fault(request, request_id, body.fault))
                    return backend, 0
                return Failed(translate(exc, backend), exc, backend, CONNECTION_REUSED.get(), False)
            finally:
                self.inflight.end(watch)

            status = upstream.status
            director.report(backend, Outcome.ok(status))
            if status in svc.config.failover.fail_on_status and not last and _may_replay(request, body, svc):
                upstream.close()  # its answer is dropped: the request goes again
                dropped = UpstreamStatusError(f"backend {backend} answered {status}")
                return Failed(dropped, None, backend, False, False, reported=True)
            if isinstance(upstream, RawResponse):
                lines, has_date = response_lines(
                    upstream.raw, via=self.via, request_id=request_id, rewriter=svc.rewriter,
                    client_origin=f"{request.scheme}://{client_host}")
                out.start_lines(upstream.status, upstream.reason, lines, upstream.lengths > 0, has_date)
            else:
                out.start(upstream.status, upstream.reason, self._response(svc, request, request_id, upstream, client_host))
            self._observe(svc.name, backend, time.monotonic() - started)
            sent = await stream_body(svc, request, out, request_id, upstream, backend)
            return backend, sent
        finally:
            if upstream is not None:
                upstream.release()
            pool.release()

    def _headers(
        self, svc: ServiceRuntime, request: ClientRequest, request_id: str, route: Route,
        body: RequestBody | None, client_host: str, backend_host: str,
    ) -> list[tuple[str, str]]:
        return request_pairs(
            request.headers,
            host=client_host if svc.preserve_host else backend_host,
            peer=request.remote,
            proto=request.scheme,
            via=self.via,
            request_id=request_id,
            epoch=route.epoch,
            expect_continue=body is not None and body.expect,
        )

    def _response(
        self, svc: ServiceRuntime, request: ClientRequest, request_id: str, upstream: Upstream, client_host: str,
    ) -> CIMultiDict[str]:
        return response_headers(
            upstream.headers, via=self.via, request_id=request_id, rewriter=svc.rewriter,
            client_origin=f"{request.scheme}://{client_host}",
        )

    def _observe(self, service: str, backend: str, seconds: float) -> None:
        key = (service, backend)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = metrics.REQUEST_DURATION.labels(service, backend)
        child.observe(seconds)


def _may_replay(request: ClientRequest, body: RequestBody | None, svc: ServiceRuntime) -> bool:
    """Rule 3: may a request whose answer is in ``fail_on_status`` go again?"""
    fo = svc.config.failover
    return replay_refusal_reason(
        request.method, "Idempotency-Key" in request.headers, 0 if body is None else body.kept_size,
        True, fo.safe_methods, fo.replay_buffer,
    ) is None


async def _send(
    svc: ServiceRuntime, pool: BackendPool, method: str, target: BackendTarget, path: str, query: str,
    out: list[tuple[str, str]], body: RequestBody | None,
) -> Upstream:
    """Send on the backend's pool: the proxy's own client for plain HTTP, aiohttp's for https."""
    t = svc.first_byte
    if pool.raw is not None:
        where = target.base_path + path if query == "" else f"{target.base_path}{path}?{query}"
        return await pool.raw.request(
            method, where or "/", out, body.chunks() if body is not None else None,
            body is not None and body.expect, t.sock_connect, t.sock_read,
        )
    upstream = await pool.session.request(
        method, target.url(path, query), headers=CIMultiDict(out), data=body.chunks() if body is not None else None,
        allow_redirects=False, timeout=t, auto_decompress=False,
    )
    try:
        _check_framing(upstream, target.config.name)
    except UpstreamError:
        upstream.close()
        raise
    return AiohttpResponse(upstream)


def _check_framing(upstream: aiohttp.ClientResponse, backend: str) -> None:
    h = upstream.headers
    lengths = h.getall("Content-Length", ())
    if lengths and ("Transfer-Encoding" in h or len(lengths) > 1):
        raise UpstreamProtocolError(
            f"backend {backend} sent an ambiguously framed response "
            f"(Content-Length {list(lengths)}, Transfer-Encoding {h.get('Transfer-Encoding')!r})"
        )
