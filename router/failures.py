"""The one word for "the upstream failed": :class:`Failure`, from the edge where
aiohttp/OSError exceptions become ours (:func:`router.edge.translate`) through
``Director.report``, the detector, the probes and the metrics.

Rules:

1. A member's value IS the ``cause`` label of ``hotspare_upstream_errors_total``: those
   values are a contract with dashboards and alert rules; never rename one.
2. ``text`` is the operator's word for it, as detector details and log lines say it
   ("traffic: connect failed; confirming with a probe").
3. Pure: no I/O and no imports of ours, so the detector (which may do no I/O) and the
   data path share it without a door between their rooms.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Failure"]


class Failure(Enum):
    CONNECT = "connect"  # no connection (refused, unreachable, TLS, connect timeout): NOT sent
    RESET = "reset"  # the connection broke after (part of) the request was sent
    TIMEOUT = "timeout"  # no first byte in time, or the body stalled
    FRAMING = "framing"  # a malformed or ambiguously framed response
    STATUS = "status"  # an answer that counts as a failure (fail_on_status; a probe's expect_status)
    SLOW = "slow"  # no first byte after health.timeout yet (reported once; the request goes on)
    BODY = "body"  # a probe's answer lacks health.expect_body
    UNSENDABLE = "unsendable"  # the client's request cannot be encoded: the CLIENT's fault
    ERROR = "error"  # anything else

    @property
    def text(self) -> str:
        return _TEXT[self]

    @property
    def client_fault(self) -> bool:
        """Never the backend's doing: never reported, never evidence (detector rule 7)."""
        return self is Failure.UNSENDABLE


_TEXT = {
    Failure.CONNECT: "connect failed",
    Failure.RESET: "connection reset",
    Failure.TIMEOUT: "timeout",
    Failure.FRAMING: "bad response",
    Failure.STATUS: "unexpected status",
    Failure.SLOW: "slow",
    Failure.BODY: "unexpected body",
    Failure.UNSENDABLE: "client fault",
    Failure.ERROR: "error",
}
