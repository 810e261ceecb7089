"""Every answer the router makes itself instead of forwarding, in one place.

Rules:

1. A text answer names its cause and ends with the request id; it is never cached
   (``Cache-Control: no-store``) and never carries a traceback.
2. A refused request (no route: the service switches or is degraded) gets 503 +
   Retry-After: browsers get HTML that reloads itself after Retry-After seconds, other
   clients a line of text. A WebSocket upgrade gets the same answer.
3. An answer given while the client's body is unread closes the connection: that body
   must not be parsed as the next request.
4. Each answer is logged once and counted in the metric that says who was at fault
   (``hotspare_bad_requests_total`` for the client, ``hotspare_refused_requests_total``
   for the router); client faults are never reported against a backend.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from router import metrics
from router.errors import RequestBodyTooLarge, UpstreamError
from router.failover.director import NoRoute

from .reply import Reply
from .targets import ALLOW, Answer

if TYPE_CHECKING:
    from .request import ClientRequest

__all__ = [
    "Reply",
    "client_fault",
    "no_route",
    "own_answer",
    "refusal_reply",
    "refuse",
    "switching_page",
    "text",
    "upstream_failed",
    "wants_html",
]

log = logging.getLogger("hotspare.router")


def wants_html(accept: str | None) -> bool:
    """True if the Accept header lists text/html (or text/*) with a non-zero q."""
    if not accept:
        return False
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if media not in ("text/html", "text/*", "application/xhtml+xml"):
            continue
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def switching_page(service: str, retry_after: int) -> str:
    """The page a browser sees while its service switches to the standby server."""
    name = html.escape(service)
    seconds = max(1, retry_after)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{seconds}">
<title>{name}: switching to the standby server</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;line-height:1.5;color:#222}}</style>
</head>
<body>
<h1>One moment, please</h1>
<p>{name} is switching to its standby server. This page will reload by itself in
{seconds} second{"s" if seconds != 1 else ""}.</p>
<p>If you were logged in, you may need to log in again.</p>
</body>
</html>
"""


def refusal_reply(refusal: NoRoute, service: str, accept: str | None) -> Reply:
    """The whole answer to a refused request: status, Retry-After, page or text."""
    headers: list[tuple[str, str]] = [("Retry-After", str(refusal.retry_after)), ("Cache-Control", "no-store")]
    if wants_html(accept):
        body = switching_page(service, refusal.retry_after).encode("utf-8")
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    else:
        body = (f"{service} is switching to its standby server ({refusal.reason}); "
                f"retry in {refusal.retry_after} s\n").encode()
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return Reply(refusal.status, tuple(headers), body)


# -- the answers ------------------------------------------------------------------------

_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_NO_STORE = ("Cache-Control", "no-store")


def text(status: int, body: str, request_id: str, extra: dict[str, str] | None = None, close: bool = False) -> Reply:
    headers = [("X-Request-ID", request_id), _NO_STORE, _TEXT]
    if extra:
        headers += extra.items()
    return Reply(status, tuple(headers), f"{body}\nrequest id: {request_id}\n".encode(), close)


def own_answer(answer: Answer, request_id: str) -> Reply:
    """What the router says itself about a target it will not forward (targets.py)."""
    extra = {"Allow": answer.allow} if answer.allow else None
    if answer.status == 200:  # OPTIONS *: the router's own capabilities
        return Reply(200, (("Allow", ALLOW), ("X-Request-ID", request_id)), b"")
    metrics.BAD_REQUESTS.labels(answer.cause).inc()
    log.info("%s; answered %d", answer.text, answer.status)
    # whatever follows on this connection is not to be trusted
    return text(answer.status, answer.text, request_id, extra, close=True)


def refuse(
    service: str, request: ClientRequest, request_id: str, status: int, body: str, close: bool = False
) -> Reply:
    # close: the unread body must not be parsed as the next request
    if status >= 500:
        metrics.REFUSED.labels(service, "no_route").inc()
        log.warning("%s; answered %d to %s %s id=%s", body, status, request.method, request.path, request_id)
    return text(status, body, request_id, close=close)


def upstream_failed(request: ClientRequest, request_id: str, err: UpstreamError, reason: str) -> Reply:
    log.error("%s; answered %d to %s %s id=%s (not sent again: %s)",
              err.cause, err.status, request.method, request.path, request_id, reason)
    what = "gateway timeout" if err.status == 504 else "bad gateway"
    return text(err.status, f"{what}: {err.cause}\nnot sent again: {reason}", request_id, close=request.body_exists)


def no_route(service: str, request: ClientRequest, request_id: str, exc: NoRoute) -> Reply:
    """503 + Retry-After; the switching page for browsers."""
    reply = refusal_reply(exc, service, request.headers.get("Accept"))
    metrics.REFUSED.labels(service, "no_route").inc()
    log.warning("service %s unavailable (%s); answered %d to %s %s id=%s",
                service, exc.reason, reply.status, request.method, request.path, request_id)
    # close with a body unread: it must not be parsed as the next request
    return Reply(reply.status, (*reply.headers, ("X-Request-ID", request_id)), reply.body, request.body_exists)


def client_fault(request: ClientRequest, request_id: str, fault: Exception) -> Reply:
    if isinstance(fault, RequestBodyTooLarge):
        log.info("request body over %d bytes; answered 413 to %s %s id=%s", fault.limit, request.method, request.path, request_id)
        return text(413, f"payload too large: body over {fault.limit} bytes", request_id, close=True)
    metrics.BAD_REQUESTS.labels("bad_request").inc()
    log.info("%s; answered 400 to %s %s id=%s", fault, request.method, request.path, request_id)
    return text(400, f"bad request: {fault}", request_id, close=True)


def upgrade_refused(request: ClientRequest, request_id: str, backend: str, status: int) -> Reply:
    """The backend declined a WebSocket upgrade and its answer could not be kept."""
    log.error("backend %s refused the websocket upgrade (status %d); answered 502 to GET %s id=%s",
              backend, status, request.path, request_id)
    return text(502, f"bad gateway: backend {backend} refused the websocket upgrade ({status})", request_id)


def upgrade_failed(request: ClientRequest, request_id: str, err: UpstreamError) -> Reply:
    """A WebSocket upgrade that never reached a backend's answer (never sent again)."""
    log.error("%s; answered %d to GET %s id=%s", err.cause, err.status, request.path, request_id)
    what = "gateway timeout" if err.status == 504 else "bad gateway"
    return text(err.status, f"{what}: {err.cause}", request_id)
