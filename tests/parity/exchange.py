"""The requests of the parity suite, and the one table of differences between Apache
mod_proxy and hotspare that are allowed (docs/migration-apache.md says the same, with the
same reasons). Everything not listed here must match: status, body, response headers,
and the request the backend received."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from .conftest import LARGE, Backend, Seen

# Request headers the backend receives that may differ: name -> reason.
ALLOWED_BACKEND_HEADERS: dict[str, str] = {
    "x-forwarded-proto": "hotspare sets it so the application can tell HTTPS from HTTP; Apache does not",
    "x-forwarded-server": "Apache adds its own ServerName; hotspare has no server name of its own",
    "via": "hotspare adds 'Via: 1.1 hotspare' as RFC 9110 asks; Apache only with ProxyVia On",
    "x-request-id": "hotspare generates a request id when the client sent none, for log correlation",
    "x-hotspare-epoch": "the fencing token: an application may refuse requests of a stale epoch",
    "connection": "hop-by-hop: each proxy manages its own connection to the backend",
    "keep-alive": "hop-by-hop: each proxy manages its own connection to the backend",
}
# Request framing may differ only for a chunked client body: Apache spools a small one and
# sends Content-Length; hotspare streams it chunked. The body bytes must be the same.
ALLOWED_FRAMING = {"content-length", "transfer-encoding"}
# Response headers that may differ: name -> reason.
ALLOWED_RESPONSE_HEADERS: dict[str, str] = {
    "date": "each proxy's answer is made at a different moment",
    "via": "hotspare adds 'Via: 1.1 hotspare' to responses; Apache only with ProxyVia On",
    "x-request-id": "hotspare echoes the request id in the response",
    "connection": "hop-by-hop: each proxy manages its own client connection",
    "keep-alive": "hop-by-hop: each proxy manages its own client connection",
    "content-length": "framing: a proxy may stream a response chunked that arrived with a length, or the reverse",
    "transfer-encoding": "framing: a proxy may stream a response chunked that arrived with a length, or the reverse",
}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    chunked: bool = False
    expect100: bool = False


def _chunks(data: bytes, size: int = 7000) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen


BODY = b"name=Ada&shelf=QA76" * 50
BIG = bytes(range(256)) * (LARGE // 256)

CASES = [
    Case("get", "GET", "/echo?q=%C3%A9t%C3%A9&x=1", {"X-Custom": "a", "Accept-Language": "fr"}),
    Case("get-with-xff", "GET", "/echo", {"X-Forwarded-For": "203.0.113.9"}),
    Case("head", "HEAD", "/echo"),
    Case("options", "OPTIONS", "/echo"),
    Case("delete", "DELETE", "/echo/item/1"),
    Case("post-fixed", "POST", "/form", {"Content-Type": "application/x-www-form-urlencoded"}, BODY),
    Case("post-chunked", "POST", "/upload", {"Content-Type": "text/plain"}, BODY, chunked=True),
    Case("put-large", "PUT", "/big", {"Content-Type": "application/octet-stream"}, BIG),
    Case("patch-100-continue", "PATCH", "/echo", {"Content-Type": "text/plain"}, BODY, expect100=True),
    Case("get-large", "GET", "/large"),
    Case("chunked-response", "GET", "/chunked"),
    Case("redirect", "GET", "/redirect"),
    Case("cookies", "GET", "/cookie", {"Cookie": "sid=abc; theme=dark"}),
    Case("status-503", "GET", "/status/503"),
    Case("status-404", "GET", "/status/404"),
]


@dataclass(frozen=True)
class Result:
    status: int
    body_len: int
    body_sha256: str
    headers: tuple[tuple[str, str], ...]
    seen: Seen | None


def normalize(value: str, proxy_port: int) -> str:
    return value.replace(f"127.0.0.1:{proxy_port}", "{proxy}")


async def exchange(origin: str, proxy_port: int, backend: Backend, case: Case) -> Result:
    before = len(backend.seen)
    data: object = io.BytesIO(case.body) if case.body is not None else None
    if case.chunked and case.body is not None:
        data = _chunks(case.body)()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(
            case.method, origin + case.path, headers=case.headers, data=data,
            allow_redirects=False, expect100=case.expect100,
        ) as resp:
            digest = hashlib.sha256()
            size = 0
            async for chunk in resp.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
            headers = tuple(
                (k.lower(), normalize(v, proxy_port)) for k, v in resp.headers.items()
            )
            status = resp.status
    seen = backend.seen[before] if len(backend.seen) > before else None
    return Result(status, size, digest.hexdigest(), headers, seen)


def comparable_backend_headers(seen: Seen, proxy_port: int, chunked: bool) -> list[tuple[str, str]]:
    skip = set(ALLOWED_BACKEND_HEADERS) | (ALLOWED_FRAMING if chunked else set())
    return sorted((k.lower(), normalize(v, proxy_port)) for k, v in seen.headers if k.lower() not in skip)


def comparable_response_headers(r: Result) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in r.headers if k not in ALLOWED_RESPONSE_HEADERS)
