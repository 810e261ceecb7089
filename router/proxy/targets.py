"""Which requests a gateway forwards (RFC 9112 §2.3, §3.2), decided before any backend
is involved. Pure: strings in, a :class:`Target` or a :class:`Answer` out.

Rules:

1. Only HTTP/1.0 and HTTP/1.1 are forwarded: an HTTP/0.9 request line (no version) is
   400, any other version 505.
2. origin-form (``/path?query``) is forwarded as it came.
3. absolute-form (``http://host[:port]/path?query``, http or https) is routed by its
   authority, which stands in for Host (§3.2.2: the Host header is then ignored), and
   only its path and query go on. Userinfo (``user@``) is refused, as RFC 9110 §4.2.4
   asks.
4. CONNECT (authority-form) is 405: the router opens no tunnels to anywhere.
5. asterisk-form (``*``) belongs to OPTIONS, which the router answers itself (200 with
   Allow); with any other method it is 400.
6. Host (RFC 9112 §3.2): more than one, or one that is not a host[:port], is 400; an
   HTTP/1.1 request without one is 400 (the proxy checks, once absolute-form is known).
7. Anything else is 400: a target that does not start with "/" would let the upstream
   URL be read as a different host (``@host:port``). Control bytes, space and ``#`` are
   refused wherever they are. The upstream URL is built from parts (the backend's
   origin, its base path and this path), never by joining strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ALLOW", "Answer", "Target", "check_host", "parse_target"]

ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
_BAD_BYTES = re.compile(r"[\x00-\x20\x7f#]")
_ABSOLUTE = re.compile(r"(?i)(https?)://([^/?]*)(.*)")
# host (reg-name or IPv4), or [IPv6], then an optional port
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")


@dataclass(frozen=True, slots=True)
class Target:
    """What goes upstream: ``path_qs`` is the origin-form target (path and query, as
    sent, always starting with "/"); ``authority`` replaces Host when the client used
    absolute-form (None: the Host header stands)."""

    path: str
    path_qs: str
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The router answers ``status`` itself (a refusal, or OPTIONS *); ``cause`` is the
    metric label."""

    status: int
    cause: str
    text: str
    allow: str | None = None


def _origin(raw: str, authority: str | None) -> Target:
    path, _, _ = raw.partition("?")
    return Target(path=path, path_qs=raw, authority=authority)


def parse_target(method: str, raw: str, version: tuple[int, int]) -> Target | Answer:
    """Classify the request target ``raw`` of a ``method`` request at HTTP ``version``."""
    if version < (1, 0):
        return Answer(400, "http_version", "bad request: HTTP/0.9 requests are not served")
    if version >= (2, 0):
        return Answer(505, "http_version", f"HTTP version {version[0]}.{version[1]} not supported: use HTTP/1.1")
    if method == "CONNECT":
        return Answer(405, "connect_method", "method not allowed: this gateway opens no tunnels (CONNECT)", ALLOW)
    if _BAD_BYTES.search(raw):
        return Answer(400, "bad_target", "bad request: control bytes, space or '#' in the request target")
    if raw.startswith("/"):
        return _origin(raw, None)
    if raw == "*":
        if method == "OPTIONS":
            return Answer(200, "options_asterisk", "", ALLOW)
        return Answer(400, "bad_target", f"bad request: '*' is a target for OPTIONS only, not {method}")
    m = _ABSOLUTE.fullmatch(raw)
    if m is None:
        return Answer(400, "bad_target", "bad request: the request target must start with '/' or 'http://'")
    authority, rest = m.group(2), m.group(3)
    if "@" in authority:
        return Answer(400, "bad_target", "bad request: userinfo ('user@') in the request target")
    if not _AUTHORITY.fullmatch(authority):
        return Answer(400, "bad_target", "bad request: the request target's host is not a valid host[:port]")
    if rest.startswith("?"):
        rest = "/" + rest
    return _origin(rest or "/", authority)


_GOOD_HOSTS: set[str] = set()  # hosts seen valid (bounded): a client names the same few


def check_host(values: list[str]) -> Answer | None:
    """Rule 6: the request's Host header lines, or the refusal they earn."""
    if len(values) > 1:
        return Answer(400, "bad_host", "bad request: more than one Host header")
    if values and values[0] and values[0] not in _GOOD_HOSTS:
        if not _AUTHORITY.fullmatch(values[0]):
            return Answer(400, "bad_host", "bad request: the Host header is not a valid host[:port]")
        if len(_GOOD_HOSTS) < 1024:
            _GOOD_HOSTS.add(values[0])
    return None
