"""Which service a request belongs to: Host (port ignored), then longest path prefix.

Rules:

1. Everything is computed once per config load (:class:`ServiceTable`); a lookup is a
   dict get for the host and at most one dict get per path segment.
2. Services that list ``hosts`` answer only those hosts; a service without ``hosts``
   answers any host. A host-specific service wins over an any-host one; within one
   table the longest ``path_prefix`` wins. Prefixes match whole segments: "/api" takes
   "/api" and "/api/x", not "/apix".
3. Each service carries what the proxy needs per request, prepared here: its director,
   rewriter, the per-backend pools and base URLs, client timeouts, the body limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from router.config import BackendConfig, Config, ServiceConfig
from router.failover.director import Director

from .rewrite import Rewriter
from .upstream import BackendPool

__all__ = ["BackendTarget", "ServiceRuntime", "ServiceTable", "normalize_host"]


def normalize_host(host: str) -> str:
    """'Example.COM:8080' -> 'example.com'; '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    colon = host.rfind(":")
    if colon >= 0 and host.count(":") == 1:
        host = host[:colon]
    return host.rstrip(".")


def _norm_prefix(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


@dataclass(slots=True)
class BackendTarget:
    """One backend as the proxy uses it."""

    config: BackendConfig
    pool: BackendPool
    base: str  # "http://127.0.0.1:8001" or with a path: "http://h:1/base"
    host_header: str  # netloc of the backend URL (for preserve_host: false)
    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 80
    base_path: str = ""  # "" or "/base" (no trailing slash)

    def url(self, path: str, query: str | None) -> URL:
        """The upstream URL for an origin-form ``path`` (and raw ``query``), built from
        parts: whatever the client sent, the host and port are the backend's."""
        return URL.build(scheme=self.scheme, host=self.host, port=self.port,
                         path=self.base_path + path, query_string=query or "", encoded=True)


@dataclass(slots=True)
class ServiceRuntime:
    config: ServiceConfig
    director: Director
    rewriter: Rewriter
    targets: dict[str, BackendTarget]
    first_byte: aiohttp.ClientTimeout
    idle: float
    max_body_size: int | None
    preserve_host: bool
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.config.name


def make_target(backend: BackendConfig, pool: BackendPool) -> BackendTarget:
    parts = urlsplit(backend.url)
    return BackendTarget(
        config=backend,
        pool=pool,
        base=f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}",
        host_header=parts.netloc,
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=parts.port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


def client_timeout(service: ServiceConfig) -> aiohttp.ClientTimeout:
    t = service.timeouts
    # sock_read starts when the request is fully sent (first byte) and is re-armed by
    # each read; the proxy lowers it to ``idle`` once the headers are in.
    return aiohttp.ClientTimeout(total=None, sock_connect=t.connect or None, sock_read=t.first_byte or None)


class ServiceTable:
    """Host/prefix -> service, for one config."""

    def __init__(self, config: Config, services: dict[str, ServiceRuntime]) -> None:
        self.config = config
        self.services = services
        self._by_host: dict[str, dict[str, ServiceRuntime]] = {}
        self._any_host: dict[str, ServiceRuntime] = {}
        for sc in config.services:
            rt = services[sc.name]
            prefix = _norm_prefix(sc.path_prefix)
            if sc.hosts:
                for h in sc.hosts:
                    self._by_host.setdefault(normalize_host(h), {})[prefix] = rt
            else:
                self._any_host[prefix] = rt

    @staticmethod
    def _longest(table: dict[str, ServiceRuntime], path: str) -> ServiceRuntime | None:
        if not table:
            return None
        p = path
        while True:
            rt = table.get(p)
            if rt is not None:
                return rt
            cut = p.rfind("/")
            if cut <= 0:
                return table.get("/")
            p = p[:cut]

    def lookup(self, host: str, path: str) -> ServiceRuntime | None:
        """The service for a request to ``host`` (raw Host header) and ``path``."""
        if self._by_host:
            table = self._by_host.get(normalize_host(host))
            if table is not None:
                rt = self._longest(table, path)
                if rt is not None:
                    return rt
        return self._longest(self._any_host, path)
