"""What a listening socket needs besides the proxy: TLS contexts and the HTTPS redirect.

Rules:

1. An HTTPS listener loads its cert/key once at start; a bad file is a startup error
   naming the listener (a reload does not re-bind listeners: restart for that).
2. A plain listener with ``redirect_to_https`` answers every request with 308 (method
   and body preserved by the client) to the same host and target on https, at
   ``https_port`` (omitted from the URL when 443).
"""

from __future__ import annotations

import ssl

from aiohttp import web
from aiohttp.web_request import BaseRequest

from router.config import ListenerConfig
from router.errors import ConfigError

from .headers import sane_request_id
from .routes import normalize_host

__all__ = ["make_redirect_handler", "server_ssl_context"]


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


def make_redirect_handler(https_port: int | None):  # type: ignore[no-untyped-def]
    port = https_port or 443
    suffix = "" if port == 443 else f":{port}"

    async def redirect(request: BaseRequest) -> web.StreamResponse:
        request_id = sane_request_id(request.headers.get("X-Request-ID"))
        host = request.headers.get("Host")
        if not host:
            return web.Response(status=400, text=f"bad request: no Host header\nrequest id: {request_id}\n")
        name = normalize_host(host)
        if ":" in name:
            name = f"[{name}]"
        location = f"https://{name}{suffix}{request.raw_path}"
        return web.Response(
            status=308,
            text=f"moved to {location}\n",
            headers={"Location": location, "X-Request-ID": request_id},
        )

    return redirect
