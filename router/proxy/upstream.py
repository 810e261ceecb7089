"""Connections to backends: one keep-alive pool per backend, and the hooks that bend
aiohttp's client to a proxy's needs. (aiohttp/OSError exceptions become ours in
router/edge.py, the one place, shared with the probes.)

Plain-HTTP requests go through the proxy's own client (:attr:`BackendPool.raw`,
rawpool.py and rawupstream.py: a Protocol per connection, llhttp, ``pause_reading``);
https backends through aiohttp's, per the rules below (a WebSocket upgrade opens a
connection of its own, websocket.py; :meth:`BackendPool.tunnel_ssl` gives its TLS).
:class:`AiohttpResponse` lets stream.py read either the same way.

Rules:

1. One ``aiohttp.ClientSession`` (one ``TCPConnector``) per distinct backend setting
   (origin, TLS options, pool limits). A reload keeps pools whose settings did not change;
   the others are retired and closed once their in-flight requests are done.
2. The sessions do nothing on their own: no redirects, no cookies, no decompression, no
   automatic headers (User-Agent, Accept, Accept-Encoding, Content-Type).
3. :func:`router.edge.translate` maps a low-level exception to an :class:`UpstreamError`
   saying whether the request may have reached the backend (``sent``) and what to
   answer. A request aiohttp cannot even encode is the client's fault (``RequestUnsendable``).
4. Whether the last connection a request used was a reused keep-alive one is recorded
   in the context variable :data:`CONNECTION_REUSED` (set by the pool's connector in the
   requesting task): a backend that closes an idle keep-alive connection just as a
   request goes out is a race, not a failure, and the proxy retries once on a fresh
   connection (as HAProxy and nginx do).
5. A bodiless answer (204, 304, or any answer to HEAD) that arrives with bytes after its
   head keeps the answer and drops the bytes and the connection (as nginx does), instead
   of failing the request on them.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict

from router.config import BackendConfig, PoolConfig

from .rawpool import CONNECTION_REUSED, RawPool

__all__ = ["CONNECTION_REUSED", "AiohttpResponse", "BackendPool", "PoolKey", "pool_key"]


_BODILESS = (b"204", b"304")


class _ResponseHandler(ResponseHandler):
    """aiohttp's connection protocol, with rule 6: bytes after a bodiless answer's head
    are the backend's mistake, not a reason to lose the answer."""

    def data_received(self, data: bytes) -> None:
        if (
            self._payload_parser is None
            and not self._upgraded
            and data[:5] == b"HTTP/"
            and (self._skip_payload or data[9:12] in _BODILESS)
        ):
            end = data.find(b"\r\n\r\n")
            if end != -1 and end + 4 < len(data):
                data = data[: end + 4]
                self._should_close = True  # never reused: what follows is unknowable
        super().data_received(data)


class _TrackingConnector(aiohttp.TCPConnector):
    """A TCPConnector that tells the requesting task whether it got a reused connection."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._factory = functools.partial(_ResponseHandler, loop=self._loop)  # type: ignore[assignment]
        self._seen: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - aiohttp signature
        conn = await super().connect(req, traces, timeout)
        proto = conn.protocol
        reused = proto in self._seen
        if not reused and proto is not None:
            self._seen.add(proto)
        CONNECTION_REUSED.set(reused)
        return conn

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class _ProxyClientRequest(aiohttp.ClientRequest):
    """aiohttp's request, minus its per-request rebuild of the skip list (sorted and
    copied into two new multidicts for every request when ``skip_auto_headers`` is
    set). The result is the same as with the session's ``skip_auto_headers``: no
    automatic headers at all, and a body's own Content-Type is not added either."""

    _SKIP: CIMultiDict[None] = CIMultiDict((h, None) for h in sorted(_SKIP_AUTO))

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = self._SKIP


@dataclass(frozen=True, slots=True)
class PoolKey:
    origin: str
    ca_file: str | None
    verify_tls: bool
    max_connections: int
    keepalive_timeout: float


def pool_key(backend: BackendConfig, pool: PoolConfig) -> PoolKey:
    parts = urlsplit(backend.url)
    return PoolKey(
        origin=f"{parts.scheme}://{parts.netloc}",
        ca_file=str(backend.ca_file) if backend.ca_file else None,
        verify_tls=backend.verify_tls,
        max_connections=pool.max_connections,
        keepalive_timeout=pool.keepalive_timeout,
    )


def _ssl_context(key: PoolKey) -> ssl.SSLContext | bool:
    if not key.origin.startswith("https:"):
        return True  # unused for http
    if not key.verify_tls:
        return False
    ctx = ssl.create_default_context(cafile=key.ca_file)
    return ctx


class BackendPool:
    """The keep-alive pool of one backend setting, with an in-flight count so a retired
    pool closes only after its last request."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        connector = _TrackingConnector(
            limit=key.max_connections,
            limit_per_host=0,
            keepalive_timeout=key.keepalive_timeout,
            ssl=_ssl_context(key),
            enable_cleanup_closed=False,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            request_class=_ProxyClientRequest,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )
        parts = urlsplit(key.origin)
        # Plain HTTP goes through the proxy's own client (rawpool.py); https stays on
        # aiohttp's.
        self.raw: RawPool | None = None
        if parts.scheme == "http":
            self.raw = RawPool(parts.hostname or "", parts.port or 80, key.max_connections, key.keepalive_timeout)
        self.inflight = 0
        self.retired = False
        self._closed = asyncio.Event()

    def acquire(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1
        if self.retired and self.inflight == 0:
            self._closed.set()

    def retire(self) -> None:
        self.retired = True
        if self.inflight == 0:
            self._closed.set()

    async def wait_idle(self) -> None:
        await self._closed.wait()

    def tunnel_ssl(self) -> ssl.SSLContext | None:
        """The TLS context of a WebSocket tunnel to this backend (None: plain HTTP)."""
        if self.raw is not None:
            return None
        ctx = _ssl_context(self.key)
        if isinstance(ctx, ssl.SSLContext):
            return ctx
        ctx = ssl.create_default_context()
        if not self.key.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def close(self) -> None:
        if self.raw is not None:
            await self.raw.close()
        await self.session.close()



class AiohttpResponse:
    """aiohttp's response seen through the interface of the proxy's own client
    (rawupstream.RawResponse), so stream.py copies either the same way."""

    __slots__ = ("_r", "headers", "reason", "status")

    def __init__(self, r: aiohttp.ClientResponse) -> None:
        self._r = r
        self.status = r.status
        self.reason = r.reason
        self.headers = r.headers

    def nothing_yet(self) -> bool:
        content = self._r.content
        return content.total_bytes == 0 and not content.is_eof()

    def at_eof(self) -> bool:
        return self._r.content.at_eof()

    async def read(self) -> bytes:
        # (aiohttp's shared empty reader answers readchunk() with "end of an HTTP
        # chunk" for ever once read: only at_eof() says a body has ended.)
        content = self._r.content
        while not content.at_eof():
            chunk, _ = await content.readchunk()
            if chunk:
                return chunk
        return b""

    def set_read_timeout(self, seconds: float | None) -> None:
        conn = self._r.connection
        if seconds is not None and conn is not None and conn.protocol is not None:
            conn.protocol.read_timeout = seconds
            conn.protocol.start_timeout()  # re-armed now: the running timer has first_byte

    def close(self) -> None:
        self._r.close()

    def release(self) -> None:
        self._r.release()
