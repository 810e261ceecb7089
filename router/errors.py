"""The router's own exceptions. Low-level errors (aiohttp, OSError) become these at the
edge, once, and carry what they mean for the client (the status to answer with)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from router.failures import Failure


class ConfigError(Exception):
    """The deployment file is not valid. ``errors`` holds one line per problem, each
    starting with its dotted key path. ``hints`` are lines printed after them (what to
    run to fix several errors at once); they are not errors themselves."""

    def __init__(self, errors: list[str], source: Path | None = None, *, hints: Sequence[str] = ()) -> None:
        self.errors = list(errors)
        self.source = source
        self.hints = list(hints)
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.errors))

    def report(self) -> str:
        head = f"{self.source}: " if self.source else ""
        n = len(self.errors)
        lines = [f"{head}{n} configuration error{'s' if n != 1 else ''}:"]
        lines += [f"  {e}" for e in self.errors]
        lines += self.hints
        return "\n".join(lines)


class StateFileError(Exception):
    """The state file exists but cannot be read or trusted. The router stops: a silent
    reset to the first backend could send traffic to a fenced node."""


# -- proxying (router core) -------------------------------------------------------------
#
# aiohttp and OSError exceptions from the backend side become one of these in ONE place
# (router.edge.translate), for the proxy and the probes alike. Each carries its
# :class:`~router.failures.Failure` (what is reported to the director and the detector,
# and the metric's ``cause`` label), the status the client is answered with, a short
# operator-readable ``cause``, a ``detail`` without the backend's name (what a probe
# shows) and whether the request may have reached the backend (``sent``): the failover
# layer's replay rules depend on that last bit.


class UpstreamError(Exception):
    """The backend did not give a usable response."""

    status = 502
    failure = Failure.ERROR
    sent = True  # the request may have reached the backend

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.detail = detail or self.failure.text


class UpstreamConnectError(UpstreamError):
    """No connection to the backend: the request was certainly NOT sent (safe to send to
    another backend whatever its method). A connect timeout is one too, answered 504."""

    failure = Failure.CONNECT
    sent = False

    def __init__(self, cause: str, detail: str = "", status: int = 502) -> None:
        super().__init__(cause, detail)
        self.status = status


class UpstreamResetError(UpstreamError):
    """The connection broke after the request (or part of it) was sent."""

    failure = Failure.RESET


class UpstreamTimeout(UpstreamError):
    """The backend did not answer (first byte) or stalled (idle) in time."""

    status = 504
    failure = Failure.TIMEOUT


class UpstreamProtocolError(UpstreamError):
    """The backend's response was malformed or ambiguously framed (CL+TE, duplicate
    Content-Length): answered 502 and the connection is discarded, never reused."""

    failure = Failure.FRAMING


class UpstreamStatusError(UpstreamError):
    """The backend answered with a status in ``failover.fail_on_status`` (a 503 from a
    server that is going down): for a request that may go again, that answer is
    dropped and the request replayed, as Apache's ``failonstatus`` does."""

    failure = Failure.STATUS


class RequestUnsendable(UpstreamError):
    """The client's request could not be put on the wire at all (a header aiohttp's
    client refuses to encode, say): nothing reached the backend, and the fault is the
    client's. Answered 400; never reported against the backend."""

    status = 400
    failure = Failure.UNSENDABLE
    sent = False


class RequestBodyTooLarge(Exception):
    """The client's body is larger than the service's max_body_size (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class ClientGone(Exception):
    """The client hung up or stalled while we read its body. Never a backend failure."""
