"""Copying a backend's response body to the client, once its headers came (handler.py
rules 2, 5 and 8).

Rules:

1. The response headers are still buffered (:class:`~.bodies.ProxyResponse`): they leave
   in one send with the first body bytes if those came with them (up to
   ``COALESCE_MAX``: a bigger piece would be copied to join them), and the last piece of
   a body wholly in hand ends the response in that same send; if no body byte came with
   them they go at once, so a slow body never holds them back.
2. The pieces are the ones the socket delivered, never joined; no timer per chunk.
3. Stalls: the backend's by the connection's read timeout, lowered to ``idle`` here;
   the client's by timing only the writes that must wait for it (bodies.py).
4. A backend failure mid-body is reported and the client connection aborted, so a
   truncated body can never look complete. A client that stalls or goes away is not
   the backend's fault: nothing is reported.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest

from router import metrics
from router.errors import UpstreamError
from router.failover.director import Outcome

from .bodies import COALESCE_MAX, ClientStalled, drain, finish, read_failed
from .rawupstream import RawResponse
from .routes import ServiceRuntime
from .upstream import AiohttpResponse

__all__ = ["abort_client", "stream_body"]

log = logging.getLogger("hotspare.router")


async def stream_body(
    svc: ServiceRuntime,
    request: BaseRequest,
    request_id: str,
    upstream: RawResponse | AiohttpResponse,
    resp: web.StreamResponse,
    writer: StreamWriter,
    backend: str,
) -> int:
    """Copy the backend's body to the client. Returns the bytes sent."""
    idle = svc.idle or None
    sent = 0
    try:
        if upstream.nothing_yet():
            writer.send_headers()  # no body byte with them: nothing to wait for
        if idle is not None:
            upstream.set_read_timeout(idle)  # re-armed now: the running timer has first_byte
        protocol = writer.protocol
        first = True
        while True:
            try:
                chunk = await upstream.read()
            except Exception as exc:
                raise read_failed(exc, svc, backend) from exc
            if not chunk:
                break
            if first:
                first = False
                if len(chunk) > COALESCE_MAX:
                    writer.send_headers()
            if upstream.at_eof():  # the last piece: it ends the response
                sent += len(chunk)
                await finish(resp, writer, chunk, idle)
                return sent
            await writer.write(chunk, drain=False)
            sent += len(chunk)
            if protocol.writing_paused:
                await drain(writer, idle)
        await finish(resp, writer, b"", idle)
    except UpstreamError as err:
        _body_failed(svc, request, request_id, upstream, err, backend, sent)
    except ClientStalled:  # the client stopped reading: not the backend's fault
        log.warning(
            "client stopped reading for %ss; aborted %s %s id=%s",
            svc.idle, request.method, request.path, request_id,
        )
        upstream.close()
        abort_client(request)
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        upstream.close()  # the client went away: not the backend's fault
    return sent


def _body_failed(
    svc: ServiceRuntime,
    request: BaseRequest,
    request_id: str,
    upstream: RawResponse | AiohttpResponse,
    err: UpstreamError,
    backend: str,
    sent: int,
) -> None:
    if not err.failure.client_fault:  # (translate's word; never the backend's doing)
        svc.director.report(backend, Outcome.failed(err.failure))
    metrics.UPSTREAM_ERRORS.labels(svc.name, backend, err.failure.value).inc()
    log.error(
        "%s after %d body bytes; aborted the response to %s %s id=%s",
        err.cause, sent, request.method, request.path, request_id,
    )
    upstream.close()
    abort_client(request)


def abort_client(request: BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
