"""Copying a backend's response body to the client, once its headers came (handler.py
rules 2, 5 and 8).

Rules:

1. The response head is still buffered (respond.py): it leaves in one send with the
   first body bytes if those came with it, and the last piece of a body wholly in hand
   ends the response in that same send; if no body byte came with it, it goes at once,
   so a slow body never holds it back.
2. The pieces are the ones the socket delivered, never joined; no timer per chunk.
3. Stalls: the backend's by the connection's read timeout, lowered to ``idle`` here;
   the client's by timing only the writes that must wait for it (bodies.py).
4. A backend failure mid-body is reported and the client connection aborted, so a
   truncated body can never look complete. A client that stalls or goes away is not
   the backend's fault: nothing is reported.
"""

from __future__ import annotations

import logging

from router import metrics
from router.errors import UpstreamError
from router.failover.director import Outcome

from .bodies import ClientStalled, drain, finish, read_failed
from .rawupstream import RawResponse
from .request import ClientRequest
from .respond import Responder
from .routes import ServiceRuntime
from .upstream import AiohttpResponse

__all__ = ["stream_body"]

log = logging.getLogger("hotspare.router")


async def stream_body(
    svc: ServiceRuntime,
    request: ClientRequest,
    out: Responder,
    request_id: str,
    upstream: RawResponse | AiohttpResponse,
    backend: str,
) -> int:
    """Copy the backend's body to the client. Returns the bytes sent."""
    idle = svc.idle or None
    sent = 0
    try:
        if upstream.nothing_yet():
            out.send_head()  # no body byte with it: nothing to wait for
        if idle is not None:
            upstream.set_read_timeout(idle)  # re-armed now: the running timer has first_byte
        conn = out.conn
        while True:
            try:
                chunk = await upstream.read()
            except Exception as exc:
                raise read_failed(exc, svc, backend) from exc
            if not chunk:
                break
            sent += len(chunk)
            if upstream.at_eof():  # the last piece: it ends the response
                await finish(out, chunk, idle)
                return sent
            out.write(chunk)
            if conn.write_paused:
                await drain(out, idle)
        await finish(out, b"", idle)
    except UpstreamError as err:
        _body_failed(svc, request, out, request_id, upstream, err, backend, sent)
    except ClientStalled:  # the client stopped reading: not the backend's fault
        log.warning(
            "client stopped reading for %ss; aborted %s %s id=%s",
            svc.idle, request.method, request.path, request_id,
        )
        upstream.close()
        out.abort()
    except ConnectionError:
        upstream.close()  # the client went away: not the backend's fault
    return sent


def _body_failed(
    svc: ServiceRuntime,
    request: ClientRequest,
    out: Responder,
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
    out.abort()
