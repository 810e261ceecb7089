"""Header rules of a forwarding proxy (RFC 9110 §7.6, RFC 9112 §9.6), both directions.

Rules:

1. Hop-by-hop headers never cross the proxy: Connection, Keep-Alive, Proxy-Connection,
   TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate,
   and every header NAMED in a Connection header, whatever its name: a nominated
   X-Forwarded-For, Via or X-Request-ID is the client's to drop, so the router starts
   that header afresh instead of extending the client's list (as Apache does). Framing is the proxy's own business on
   each side (aiohttp writes Content-Length or chunked itself).
2. Towards the backend: X-Forwarded-For gets the client address appended,
   X-Forwarded-Proto and X-Forwarded-Host are set, Via gets "1.1 <via_name>", Host is
   the client's (or the backend's when preserve_host is off), X-Request-ID is kept when
   sane or generated, X-Hotspare-Epoch is set from the route (a client's is dropped:
   only the router speaks for the epoch). Expect: 100-continue is
   passed on (the client's 100 is sent when the backend's arrives).
3. Towards the client: Via added, X-Request-ID echoed, backend URLs in Location,
   Content-Location and URI rewritten, Set-Cookie Domain/Path mapped (rewrite.py).
4. The sets here are built once at import; per request there is one pass over the
   headers and no config walking.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator

from multidict import CIMultiDict, MultiMapping

from .rewrite import Rewriter

__all__ = [
    "HOP_BY_HOP",
    "connection_tokens",
    "new_request_id",
    "request_headers",
    "request_pairs",
    "response_headers",
    "response_lines",
    "sane_request_id",
]

HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)

# Request headers the router consumes itself or must not let a client forge.
_REQUEST_DROP: frozenset[str] = HOP_BY_HOP | {
    "expect",
    "x-hotspare-epoch",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
    "x-request-id",
    "host",
}
# For a WebSocket the client library writes its own handshake headers.
_WS_DROP: frozenset[str] = _REQUEST_DROP | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}
_RESPONSE_DROP: frozenset[str] = HOP_BY_HOP | {"x-request-id", "via"}
_RESPONSE_REWRITTEN: frozenset[str] = frozenset({"location", "content-location", "uri"})
_RESPONSE_DROP_B = frozenset(n.encode() for n in _RESPONSE_DROP)
_RESPONSE_REWRITTEN_B = frozenset(n.encode() for n in _RESPONSE_REWRITTEN)
_SE = "surrogateescape"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class _RequestIds:
    """Request ids: a random per-process prefix (64 bits) and a counter, 24 hex digits
    like before. Unique within the process, not guessable from outside it, and without
    a getrandom(2) call per request. A fork starts a new prefix (register_at_fork)."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = ""
        self._count: Iterator[int] = iter(())
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> str:
        n = next(self._count)
        if n > 0xFFFFFFFF:  # 4 billion ids: take a new prefix rather than repeat one
            self.reseed()
            n = next(self._count)
        return f"{self._prefix}{n:08x}"


_IDS = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reseed)
new_request_id = _IDS.next


def sane_request_id(value: str | None) -> str:
    """The client's X-Request-ID if it is short and plain, else a new one (it is logged)."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in Connection header values, lowercased."""
    names: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


def request_headers(
    src: MultiMapping[str],
    *,
    host: str,
    peer: str,
    proto: str,
    via: str,
    request_id: str,
    epoch: int,
    websocket: bool = False,
    expect_continue: bool = False,
) -> CIMultiDict[str]:
    """Headers to send to the backend for a client request with headers ``src``.

    ``host`` is the Host to send (the client's, or the backend's host:port); ``via`` is
    the full Via token such as "1.1 hotspare".
    """
    return CIMultiDict(request_pairs(src, host=host, peer=peer, proto=proto, via=via, request_id=request_id,
                                     epoch=epoch, websocket=websocket, expect_continue=expect_continue))


def request_pairs(
    src: MultiMapping[str],
    *,
    host: str,
    peer: str,
    proto: str,
    via: str,
    request_id: str,
    epoch: int,
    websocket: bool = False,
    expect_continue: bool = False,
) -> list[tuple[str, str]]:
    """:func:`request_headers` as a list of (name, value), in order (the proxy's own
    client writes them as they are: no multidict to build)."""
    drop = _WS_DROP if websocket else _REQUEST_DROP
    conn = src.getall("Connection", ())
    nominated: frozenset[str] = connection_tokens(conn) if conn else frozenset()
    if nominated:
        drop = drop | nominated
    out = [(name, value) for name, value in src.items() if name.lower() not in drop]
    # Every name below was dropped above.
    out.append(("Host", host))
    xff = () if "x-forwarded-for" in nominated else src.getall("X-Forwarded-For", ())
    out.append(("X-Forwarded-For", ", ".join((*xff, peer)) if xff else peer))
    out.append(("X-Forwarded-Proto", proto))
    client_host = src.get("Host")
    if client_host:
        out.append(("X-Forwarded-Host", client_host))
    prior_via = () if "via" in nominated else src.getall("Via", ())
    out.append(("Via", ", ".join((*prior_via, via)) if prior_via else via))
    out.append(("X-Request-ID", request_id))
    out.append(("X-Hotspare-Epoch", str(epoch)))
    if expect_continue:
        # Passed on like Apache does: the upstream client then waits for the backend's
        # 100 before pulling the body, and our body iterator sends the client its 100 then.
        out.append(("Expect", "100-continue"))
    return out


def response_headers(
    src: MultiMapping[str],
    *,
    via: str,
    request_id: str,
    rewriter: Rewriter,
    client_origin: str,
    keep: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """Headers to send to the client for a backend response with headers ``src``.

    ``client_origin`` is "scheme://host[:port]" as the client addressed us; ``keep``
    names hop-by-hop headers to let through anyway (none for plain HTTP).
    """
    drop = _RESPONSE_DROP - keep if keep else _RESPONSE_DROP
    conn = src.getall("Connection", ())
    if conn:
        drop = drop | (connection_tokens(conn) - keep)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in src.items():
        lname = name.lower()
        if lname in drop:
            continue
        if lname in _RESPONSE_REWRITTEN:
            value = rewriter.location(value, client_origin)
        elif lname == "set-cookie" and rewriter.cookies:
            value = rewriter.set_cookie(value)
        out.add(name, value)
    prior_via = src.getall("Via", ())
    out.add("Via", ", ".join((*prior_via, via)) if prior_via else via)  # dropped above: add()
    out.add("X-Request-ID", request_id)
    return out


_DROP_CACHE: dict[tuple[bytes, ...], frozenset[bytes]] = {}


def _response_drop(conn: tuple[bytes, ...]) -> frozenset[bytes]:
    """The names a response with these Connection values loses (cached: a backend says
    the same few things, "keep-alive" above all)."""
    drop = _DROP_CACHE.get(conn)
    if drop is None:
        drop = _RESPONSE_DROP_B | {t.encode("latin-1") for t in connection_tokens(v.decode("latin-1") for v in conn)}
        if len(_DROP_CACHE) < 256:
            _DROP_CACHE[conn] = drop
    return drop


def response_lines(
    raw: list[tuple[bytes, bytes, bytes]],
    *,
    via: str,
    request_id: str,
    rewriter: Rewriter,
    client_origin: str,
) -> tuple[list[bytes], bool]:
    """:func:`response_headers` for a head as the proxy's own client gives it: (lowercase
    name, name, value) bytes. Returns the header lines to send (each ending in CRLF) and
    whether one of them is Date. Bytes that need no rewriting go out as they came."""
    drop = _RESPONSE_DROP_B
    conn = [v for n, _, v in raw if n == b"connection"]
    if conn:
        drop = _response_drop(tuple(conn))
    out: list[bytes] = []
    prior_via: list[str] = []
    has_date = False
    for lname, name, value in raw:
        if lname in drop:
            if lname == b"via":
                prior_via.append(value.decode("utf-8", _SE))
            continue
        if lname in _RESPONSE_REWRITTEN_B:
            if rewriter.locations:
                value = rewriter.location(value.decode("utf-8", _SE), client_origin).encode("utf-8", _SE)
        elif lname == b"set-cookie":
            if rewriter.cookies:
                value = rewriter.set_cookie(value.decode("utf-8", _SE)).encode("utf-8", _SE)
        elif lname == b"date":
            has_date = True
        out.append(b"%s: %s\r\n" % (name, value))
    if prior_via:
        out.append(f"Via: {', '.join((*prior_via, via))}\r\n".encode("utf-8", _SE))
    else:
        out.append(f"Via: {via}\r\n".encode())
    out.append(f"X-Request-ID: {request_id}\r\n".encode())
    return out, has_date
