"""The one place where aiohttp/OSError exceptions from a backend become ours (httpcore's
``map_exceptions``): the proxy (router/proxy) and the health probes (router/health) both
call :func:`translate`, so a refused connection is the same
:class:`~router.failures.Failure` wherever it was seen.

It lives at the top of ``router`` (beside errors.py and failures.py) because the two rooms
that use it may not import each other; it is apart from failures.py because it imports
aiohttp, which the detector (no I/O) must never reach.
"""

from __future__ import annotations

import asyncio

import aiohttp

from router.errors import (
    RequestUnsendable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeout,
)

__all__ = ["BadResponse", "ConnectFailed", "translate"]


class ConnectFailed(Exception):
    """Raised by the proxy's own upstream client (router/proxy/rawpool.py): no connection."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class BadResponse(Exception):
    """Raised by the proxy's own upstream client: the response could not be parsed, or
    its framing is ambiguous (llhttp's verdict, or ours)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def translate(exc: BaseException, backend: str) -> UpstreamError:
    """Turn an exception raised while talking to ``backend`` into an UpstreamError. The
    ``cause`` names the backend (client answers, the proxy's log lines); the ``detail``
    does not (what a probe shows: "connect refused", "connection reset (...)")."""
    name = type(exc).__name__
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamConnectError(f"backend {backend} connect timeout", "connect timeout", status=504)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamConnectError(f"backend {backend} TLS certificate not trusted",
                                    "connect failed: TLS certificate not trusted")
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectFailed):
        os_error = exc.os_error
        why = os_error.strerror or str(os_error) if os_error else str(exc)
        refused = isinstance(os_error, ConnectionRefusedError)
        return UpstreamConnectError(f"backend {backend} unreachable ({why.lower()})",
                                    "connect refused" if refused else f"connect failed: {why}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        return UpstreamTimeout(f"backend {backend} timed out")
    if isinstance(exc, aiohttp.ClientResponseError | BadResponse):
        # Raised by the response parser: bad status line, CL+TE, duplicate lengths...
        return UpstreamProtocolError(f"backend {backend} sent a malformed response ({exc.message})",
                                     f"malformed response ({exc.message})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamResetError(f"backend {backend} broke off the response body", f"connection reset ({name})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamResetError(f"backend {backend} closed the connection", f"connection reset ({name})")
    if isinstance(exc, aiohttp.InvalidURL) or (isinstance(exc, ValueError | TypeError) and not isinstance(exc, OSError)):
        # raised while encoding the request (UnicodeError is a ValueError): not sent
        return RequestUnsendable(f"the request cannot be forwarded ({name}: {str(exc)[:120]})", f"{name}: {exc}")
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return UpstreamResetError(f"backend {backend} connection reset", f"connection reset ({name})")
    return UpstreamResetError(f"backend {backend} failed ({name})", f"{name}: {exc}")
