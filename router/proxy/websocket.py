"""WebSocket pass-through: the upgrade goes to the active backend, then frames are
relayed both ways until one side closes.

Rules:

1. The backend handshake happens first; only when it succeeds does the client get its
   101 (with the subprotocol the backend chose). A backend that answers the upgrade
   with anything else has answered the request: that answer goes to the client and the
   connection stays HTTP (as Apache, nginx and HAProxy do). One that cannot be reached
   gets the client a 502/504 like any request.
2. Text, binary, ping and pong frames are relayed as they are (no automatic pings or
   pongs by the router: each end answers its own peer through us).
3. The first side to close decides: its close code and reason go to the other side,
   then both handshakes are completed. A side that vanishes without a close frame makes
   the router close the other with 1011 (backend gone) or 1001 (client gone).
4. The two relay tasks are owned here and cancelled when the session ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.web_request import BaseRequest

from router.edge import translate
from router.failover.director import Outcome, Route
from router.failures import Failure

from . import answers
from .headers import request_headers, response_headers
from .upstream import WS_REFUSAL, UpgradeRefused

if TYPE_CHECKING:
    from .routes import ServiceRuntime
    from .targets import Target

__all__ = ["proxy_websocket"]

log = logging.getLogger("hotspare.router")

_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})
_CONNECT_FAILED = Outcome.failed(Failure.CONNECT)


def _sendable(code: Any, fallback: int) -> int:
    if isinstance(code, int) and (1000 <= code <= 4999) and code not in _UNSENDABLE:
        return code
    return fallback


async def _relay(src: Any, dst: Any) -> tuple[int | None, str]:
    """Copy frames src -> dst until src closes; return (close code or None, reason)."""
    while True:
        msg = await src.receive()
        t = msg.type
        if t is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif t is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif t is WSMsgType.PING:
            await dst.ping(msg.data)
        elif t is WSMsgType.PONG:
            await dst.pong(msg.data)
        elif t is WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        else:  # CLOSING, CLOSED, ERROR: gone without a close frame
            return None, ""


def _plain_answer(
    via: str, svc: ServiceRuntime, request: BaseRequest, request_id: str, refused: UpgradeRefused,
    client_host: str,
) -> web.Response:
    """The backend declined the upgrade with a plain answer: it is the client's answer."""
    headers = response_headers(
        refused.headers, via=via, request_id=request_id, rewriter=svc.rewriter,
        client_origin=f"{request.scheme}://{client_host}",
    )
    headers.popall("Content-Length", None)
    return web.Response(status=refused.status, reason=refused.reason, headers=headers, body=refused.body)


async def proxy_websocket(
    via: str, svc: ServiceRuntime, request: BaseRequest, request_id: str, want: Target, route: Route
) -> web.StreamResponse:
    """Upgrade on ``route`` (the handler asked the director: a refusal never gets here)."""
    target = svc.targets[route.backend.name]
    backend = target.config.name
    headers = request.headers
    client_host: str = want.authority or headers.get("Host") or target.host_header
    out = request_headers(
        headers,
        host=client_host if svc.preserve_host else target.host_header,
        peer=request.remote or "unknown",
        proto=request.scheme,
        via=via,
        request_id=request_id,
        epoch=route.epoch,
        websocket=True,
    )
    protocols = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    path, _, query = want.path_qs.partition("?")
    WS_REFUSAL.set(None)
    try:
        upstream = await target.pool.ws_session.ws_connect(
            target.url(path, query),
            headers=out,
            protocols=protocols,
            autoping=False,
            autoclose=False,
            max_msg_size=0,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        svc.director.report(backend, Outcome.ok(exc.status))
        refused = WS_REFUSAL.get()
        if refused is not None and refused.body is not None:
            return _plain_answer(via, svc, request, request_id, refused, client_host)
        return answers.upgrade_refused(request, request_id, backend, exc.status)
    except Exception as exc:
        err = translate(exc, backend)
        if err.failure is Failure.CONNECT:  # the only one a failed upgrade proves
            svc.director.report(backend, _CONNECT_FAILED)
        return answers.upgrade_failed(request, request_id, err)
    try:
        return await _session(svc, request, request_id, backend, upstream)
    finally:
        if not upstream.closed:
            await upstream.close()


async def _session(
    svc: ServiceRuntime, request: BaseRequest, request_id: str, backend: str, upstream: aiohttp.ClientWebSocketResponse
) -> web.WebSocketResponse:
    """The client's 101, then frames both ways until one side closes (rules 2 to 4)."""
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=False,
        autoclose=False,
        max_msg_size=0,
        compress=False,
    )
    client.headers["X-Request-ID"] = request_id
    await client.prepare(request)
    svc.director.report(backend, Outcome.ok(101))
    to_backend = asyncio.create_task(_relay(client, upstream), name=f"ws {request_id} client->backend")
    to_client = asyncio.create_task(_relay(upstream, client), name=f"ws {request_id} backend->client")
    try:
        done, _ = await asyncio.wait({to_backend, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (to_backend, to_client):
            t.cancel()
        await asyncio.gather(to_backend, to_client, return_exceptions=True)
    first = to_backend if to_backend in done else to_client
    code: int | None = None
    reason = ""
    if not first.cancelled() and first.exception() is None:
        code, reason = first.result()
    if first is to_backend:  # the client closed (or vanished) first
        await upstream.close(code=_sendable(code, 1001), message=reason.encode())
        await client.close(code=_sendable(code, 1001), message=reason.encode())
    else:
        await client.close(code=_sendable(code, 1011), message=reason.encode())
        await upstream.close(code=_sendable(code, 1011), message=reason.encode())
    return client
