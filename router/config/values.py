"""Small value types of the deployment file: ``host:port``, http URLs, paths relative to
the config file, names and status-code sets. Pure; each raises ``ValueError`` with what
was expected and what was found."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationInfo

__all__ = ["ConfigPath", "HostPort", "HttpUrl", "Name", "is_loopback", "parse_hostport", "status_set"]


def parse_hostport(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ("127.0.0.1", 8080); ``"[::1]:80"`` -> ("::1", 80)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^\s:\[\]]*):(\d{1,5})", value.strip())
    if not m:
        raise ValueError(f"expected 'host:port' (like '127.0.0.1:8080'), got {value!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"expected a port 0-65535, got {port}")
    return (host or "0.0.0.0", port)


def _check_hostport(value: str) -> str:
    parse_hostport(value)
    return value.strip()


HostPort = Annotated[str, AfterValidator(_check_hostport)]


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"expected a valid port in URL, got {value!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without query or fragment, got {value!r}")
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME)]


def status_set(values: list[int | str]) -> frozenset[int]:
    """Expand ``[200, "3xx"]`` into the set of status codes it names."""
    codes: set[int] = set()
    for v in values:
        if isinstance(v, int) and 100 <= v <= 599:
            codes.add(v)
        elif isinstance(v, str) and re.fullmatch(r"[1-5]xx", v.strip().lower()):
            first = int(v.strip()[0]) * 100
            codes.update(range(first, first + 100))
        elif isinstance(v, str) and re.fullmatch(r"[1-5]\d\d", v.strip()):
            codes.add(int(v))
        else:
            raise ValueError(f"expected status codes like 200 or '2xx', got {v!r}")
    return frozenset(codes)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
