"""A proxy listener: the listening socket, its connections (connection.py), TLS
contexts and the HTTPS redirect.

Rules:

1. An HTTPS listener loads its cert/key once at start; a bad file is a startup error
   naming the listener (a reload does not re-bind listeners: restart for that).
2. A plain listener with ``redirect_to_https`` answers every request with 308 (method
   and body preserved by the client) to the same host and target on https, at
   ``https_port`` (omitted from the URL when 443).
3. :meth:`ProxySite.stop` is the graceful stop of limits and connections: the socket
   closes first; idle connections close at once, busy ones after the answer in
   progress (``Connection: close``); after ``grace`` seconds the rest are cut.
4. New limits (a reload) apply to connections accepted after :meth:`set_limits`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

from router.config import LimitsConfig, ListenerConfig
from router.errors import ConfigError

from .answers import Reply
from .connection import ClientConnection, Handler
from .headers import sane_request_id
from .limits import Admission
from .request import ClientRequest
from .routes import normalize_host

__all__ = ["ProxySite", "make_redirect_handler", "server_ssl_context"]

log = logging.getLogger("hotspare.router")


class ProxySite:
    """One listening socket and the connections accepted on it."""

    def __init__(self, handler: Handler, limits: LimitsConfig, tls: bool) -> None:
        self.handler = handler
        self.limits = limits
        self.scheme = "https" if tls else "http"
        self.admission = Admission(limits.max_connections, limits.max_connections_per_client)
        self.connections: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self._refusals_logged = 0.0
        self._all_gone: asyncio.Future[None] | None = None

    def set_limits(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.admission.max_total = limits.max_connections
        self.admission.max_per_client = limits.max_connections_per_client

    async def start(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ClientConnection(self, loop), host, port, ssl=ssl_ctx, backlog=1024, reuse_address=True)
        name = self.server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start_on(self, sock: socket.socket, ssl_ctx: ssl.SSLContext | None) -> None:
        """Serve an already bound listening socket (a worker process's, inherited from
        the decider: router/workers/)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ClientConnection(self, loop), sock=sock, ssl=ssl_ctx, backlog=1024)

    def track(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    def note_refused(self, cause: str, client: str) -> None:
        """One log line per second at most: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._refusals_logged >= 1.0:
            self._refusals_logged = now
            log.warning("refused a connection from %s (%s %d reached; counted in "
                        "hotspare_connections_refused_total)", client, cause,
                        self.limits.max_connections if cause == "max_connections" else self.limits.max_connections_per_client)

    async def stop(self, grace: float) -> None:
        """Rule 3."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.stop()
        if self.connections:
            self._all_gone = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(grace):
                    await self._all_gone
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


def server_ssl_context(listener: ListenerConfig, index: int) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(listener.cert), str(listener.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"listen[{index}]: cannot load cert {listener.cert} / key {listener.key}: {exc}"]
        ) from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _text(status: int, text: str, close: bool, *extra: tuple[str, str]) -> Reply:
    return Reply(status, (("Content-Type", "text/plain; charset=utf-8"), *extra), text.encode(), close)


def make_redirect_handler(https_port: int | None) -> Handler:
    port = https_port or 443
    suffix = "" if port == 443 else f":{port}"

    async def redirect(request: ClientRequest) -> None:
        out = request.out
        assert out is not None
        request_id = sane_request_id(request.headers.get("X-Request-ID"))
        host = request.headers.get("Host")
        if not host:
            out.reply(_text(400, f"bad request: no Host header\nrequest id: {request_id}\n", request.body_exists))
            return
        name = normalize_host(host)
        if ":" in name:
            name = f"[{name}]"
        location = f"https://{name}{suffix}{request.raw_path}"
        out.reply(_text(308, f"moved to {location}\n", request.body_exists,
                        ("Location", location), ("X-Request-ID", request_id)))

    return redirect
