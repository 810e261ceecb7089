"""Rewriting what a backend says about itself into what the client sees.

Rules (Apache's ProxyPassReverse / ProxyPassReverseCookieDomain / ...CookiePath):

1. A Location, Content-Location or URI value that starts with the URL of ANY backend of
   the service (the spare's too: after a failover the old active's URLs may still be
   in pages) is rewritten to the scheme://host the client used, keeping the rest. The
   backend's default port may be written or not ("http://h" and "http://h:80" match).
   A backend URL with a path ("http://h:8001/base") maps that path to "/".
2. Set-Cookie attributes are mapped exactly as Apache's mod_proxy does (parity matters
   more than elegance here): a ``Domain=`` value that ENDS with a key of
   ``cookie_domain`` (case-insensitive) is replaced whole by its value; a ``Path=``
   value that STARTS with a key of ``cookie_path`` is replaced whole by its value
   ("/app/x" with {"/app": "/"} becomes "/"). Keys are tried in config order.
3. Everything is prepared once per config load; per header it is a few ``startswith``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from router.config import ServiceConfig

__all__ = ["Rewriter"]

_DEFAULT_PORT = {"http": 80, "https": 443}


def _prefixes(url: str) -> list[tuple[str, str]]:
    """(backend prefix, path it maps from) pairs for one backend URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORT[parts.scheme]
    path = parts.path.rstrip("/")
    out = [f"{parts.scheme}://{host}:{port}{path}"]
    if port == _DEFAULT_PORT[parts.scheme]:
        out.append(f"{parts.scheme}://{host}{path}")
    return [(p, path) for p in out]


class Rewriter:
    """Precomputed rewriting rules of one service."""

    __slots__ = ("_cookie_domain", "_cookie_path", "_prefixes", "cookies", "locations")

    def __init__(self, service: ServiceConfig) -> None:
        self.locations = service.rewrite.location
        pairs: list[tuple[str, str]] = []
        for b in service.backends:
            pairs.extend(_prefixes(b.url))
        # Longest first, so "http://h:1/base" wins over "http://h:1".
        self._prefixes = tuple(sorted({p.lower(): p for p, _ in pairs}.keys(), key=len, reverse=True))
        self._cookie_domain = tuple((k.lower(), v) for k, v in service.rewrite.cookie_domain.items())
        self._cookie_path = tuple(service.rewrite.cookie_path.items())
        self.cookies = bool(self._cookie_domain or self._cookie_path)

    def location(self, value: str, client_origin: str) -> str:
        """``value`` with a leading backend URL replaced by ``client_origin``."""
        if not self.locations:
            return value
        low = value[:200].lower()
        for prefix in self._prefixes:
            if low.startswith(prefix):
                rest = value[len(prefix) :]
                if not rest:
                    return client_origin + "/"
                if rest[0] in "/?#":
                    return client_origin + rest
        return value

    def set_cookie(self, value: str) -> str:
        parts = value.split(";")
        changed = False
        for i in range(1, len(parts)):
            name, eq, val = parts[i].partition("=")
            if not eq:
                continue
            key = name.strip().lower()
            sval = val.strip()
            new: str | None = None
            if key == "domain":
                low = sval.lower()
                new = next((v for k, v in self._cookie_domain if low.endswith(k)), None)
            elif key == "path":
                new = next((v for k, v in self._cookie_path if sval.startswith(k)), None)
            if new is not None:
                parts[i] = f" {name.strip()}={new}"
                changed = True
        return ";".join(parts) if changed else value
