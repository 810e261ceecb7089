"""Rewriting what a backend says about itself into what the client sees.

Rules (Apache's ProxyPassReverse / ProxyPassReverseCookieDomain / ...CookiePath):

1. A Location, Content-Location or URI value that starts with the URL of ANY backend of
   the service (the spare's too: after a failover the old active's URLs may still be
   in pages) is rewritten to the scheme://host the client used, keeping the rest. The
   backend's default port may be written or not ("http://h" and "http://h:80" match).
   A backend URL with a path ("http://h:8001/base") maps that path to "/".
2. Set-Cookie ``Domain=`` values found in ``cookie_domain`` are replaced (case-
   insensitive, a leading dot kept); ``Path=`` values starting with a key of
   ``cookie_path`` (at a segment boundary) have that prefix replaced.
3. Everything is prepared once per config load; per header it is a few ``startswith``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .config import ServiceConfig

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
        self._cookie_domain = {k.lower().lstrip("."): v.lstrip(".") for k, v in service.rewrite.cookie_domain.items()}
        self._cookie_path = tuple(
            sorted(((k.rstrip("/") or "/", v) for k, v in service.rewrite.cookie_path.items()), key=lambda kv: -len(kv[0]))
        )
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
            attr = parts[i]
            name, eq, val = attr.partition("=")
            if not eq:
                continue
            key = name.strip().lower()
            sval = val.strip()
            if key == "domain" and self._cookie_domain:
                dot = "." if sval.startswith(".") else ""
                new = self._cookie_domain.get(sval.lower().lstrip("."))
                if new is not None:
                    parts[i] = f" {name.strip()}={dot}{new}"
                    changed = True
            elif key == "path" and self._cookie_path:
                for old, new in self._cookie_path:
                    if old == "/" or sval == old or sval.startswith(old + "/"):
                        tail = sval[len(old) :] if old != "/" else sval[1:]
                        joined = new.rstrip("/") + "/" + tail.lstrip("/") if tail else new
                        parts[i] = f" {name.strip()}={joined}"
                        changed = True
                        break
        return ";".join(parts) if changed else value
