"""WebSocket pass-through: the upgrade goes to the active backend on a connection of its
own; after the backend's 101 the two connections are a byte tunnel until one side closes.

Rules:

1. The backend handshake happens first; only when it succeeds does the client get its
   101 (the backend's, with its Sec-WebSocket-Accept and subprotocol: the client's own
   handshake headers went through). A backend that answers the upgrade with anything
   else has answered the request: that answer (up to ``REFUSAL_BODY_MAX`` of body) goes
   to the client and the connection stays HTTP (as Apache, nginx and HAProxy do). One
   that cannot be reached gets the client a 502/504 like any request.
2. Frames are relayed as bytes, both ways, untouched: close codes, pings and pongs are
   the two ends' business. Memory stays bounded: a side whose peer does not take its
   bytes is paused (``pause_reading``) until the peer has drained.
3. When one side closes (or vanishes) the other is closed too, and the tunnel ends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict

from router.edge import BadResponse, ConnectFailed, translate
from router.failover.director import Outcome, Route
from router.failures import Failure

from . import answers
from .headers import request_headers, response_headers
from .rawpool import encode_head

if TYPE_CHECKING:
    from .connection import ClientConnection
    from .request import ClientRequest
    from .respond import Responder
    from .routes import ServiceRuntime
    from .targets import Target

__all__ = ["proxy_websocket"]

REFUSAL_BODY_MAX = 1024 * 1024
_CONNECT_FAILED = Outcome.failed(Failure.CONNECT)


class _Upstream(asyncio.Protocol):
    """The backend's side: its answer to the upgrade, then the tunnel (rule 2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._fields: list[tuple[str, str]] = []
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.status = 0
        self.body = bytearray()
        self.tail = b""
        self.answered: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.client: ClientConnection | None = None
        self._draining: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers = CIMultiDict(self._fields)
        self._fields = []
        if 100 <= self.status < 200 and self.status != 101:
            self.status = 0  # an interim answer: the real one follows

    def on_body(self, body: bytes) -> None:
        if len(self.body) <= REFUSAL_BODY_MAX:
            self.body += body

    def on_message_complete(self) -> None:
        if self.status and not self.answered.done():
            self.answered.set_result(None)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.write(data)
            if client.write_paused and self._draining is None and self.transport is not None:
                self.transport.pause_reading()
                self._draining = self.loop.create_task(self._drain(client))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tail = data[exc.args[0]:]
            if not self.answered.done():
                self.answered.set_result(None)
        except httptools.HttpParserError as exc:
            if not self.answered.done():
                self.answered.set_exception(BadResponse(str(exc) or type(exc).__name__))

    async def _drain(self, client: ClientConnection) -> None:
        try:
            await client.drain()
        except ConnectionError:
            return
        finally:
            self._draining = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_tunnel()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_tunnel()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            if self.status and not self._parser.should_keep_alive():  # a close-delimited answer
                self.answered.set_result(None)
            else:
                self.answered.set_exception(ConnectionResetError("backend closed the connection"))
        if not self.gone.done():
            self.gone.set_result(None)
        if self.client is not None:
            self.client.close()
        if self._draining is not None:
            self._draining.cancel()


async def _open(svc: ServiceRuntime, route: Route, head: bytes) -> _Upstream:
    """Connect, send the upgrade, wait for the backend's answer (its head, or a whole
    plain answer)."""
    target = svc.targets[route.backend.name]
    loop = asyncio.get_running_loop()
    t = svc.first_byte
    try:
        async with asyncio.timeout(t.sock_connect):
            _, up = await loop.create_connection(
                lambda: _Upstream(loop), target.host, target.port, ssl=target.pool.tunnel_ssl(),
                server_hostname=target.host if target.scheme == "https" else None)
    except OSError as exc:
        raise ConnectFailed(exc) from exc
    try:
        assert up.transport is not None
        up.transport.write(head)
        async with asyncio.timeout(t.sock_read):
            await up.answered
    except BaseException:
        if up.transport is not None:
            up.transport.close()
        raise
    return up


async def proxy_websocket(
    via: str, svc: ServiceRuntime, request: ClientRequest, out: Responder, request_id: str, want: Target,
    route: Route,
) -> None:
    """Upgrade on ``route`` (the handler asked the director: a refusal never gets here)."""
    target = svc.targets[route.backend.name]
    backend = target.config.name
    client_host: str = want.authority or request.headers.get("Host") or target.host_header
    headers = request_headers(
        request.headers, host=client_host if svc.preserve_host else target.host_header, peer=request.remote,
        proto=request.scheme, via=via, request_id=request_id, epoch=route.epoch,
    )
    headers["Connection"] = "Upgrade"
    headers["Upgrade"] = request.headers.get("Upgrade", "websocket")
    try:
        head = encode_head("GET", (target.base_path + want.path_qs) or "/", headers, False)
        up = await _open(svc, route, head)
    except Exception as exc:
        err = translate(exc, backend)
        if err.failure is Failure.CONNECT:  # the only one a failed upgrade proves
            svc.director.report(backend, _CONNECT_FAILED)
        out.reply(answers.upgrade_failed(request, request_id, err))
        return
    svc.director.report(backend, Outcome.ok(up.status))
    keep = frozenset({"upgrade", "connection"}) if up.status == 101 else frozenset()
    back = response_headers(up.headers, via=via, request_id=request_id, rewriter=svc.rewriter,
                            client_origin=f"{request.scheme}://{client_host}", keep=keep)
    try:
        if up.status != 101:
            if len(up.body) > REFUSAL_BODY_MAX:
                out.reply(answers.upgrade_refused(request, request_id, backend, up.status))
                return
            back.popall("Content-Length", None)
            out.reply(answers.Reply(up.status, tuple(back.items()), bytes(up.body), reason=None))
            return
        await _tunnel(out, up, back)
    finally:
        if up.transport is not None:
            up.transport.close()


async def _tunnel(out: Responder, up: _Upstream, headers: CIMultiDict[str]) -> None:
    """Rules 2 and 3: the client's 101, then bytes both ways until one side closes."""
    conn: ClientConnection = out.conn  # type: ignore[assignment]
    transport = up.transport
    assert transport is not None
    out.switch(headers)
    if up.tail:
        conn.write(up.tail)
    up.client = conn
    gone = up.gone
    client_lost = asyncio.get_running_loop().create_future()

    def lost() -> None:
        if not client_lost.done():
            client_lost.set_result(None)

    early = conn.start_tunnel(transport.write, lost)
    if early:
        transport.write(early)
    await asyncio.wait((gone, client_lost), return_when=asyncio.FIRST_COMPLETED)
    conn.close()
