"""When a decider must stop deciding: lease timing, pure.

Rules:

1. The member lease is kept alive every ``ttl/3`` seconds.
2. A keepalive (or the grant) that succeeded proves the lease lived at least until the
   moment it was SENT (the answer may come late). The router may decide until
   ``sent + ttl - ttl/4``: a quarter of the TTL before the lease could have expired on
   the server, whatever the answer's delay, so a deposed decider has stopped before
   another can be elected (etcd expires a lease no sooner than ttl after its last
   renewal; the margin absorbs clock rate differences and a late check).
3. A keepalive answered ``0`` (the lease is gone) or a new lease means: not deciding
   until a keepalive of the new lease succeeds and a campaign is won again.
4. Time is given (a monotonic clock reading); nothing here reads a clock or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseClock"]


@dataclass(slots=True)
class LeaseClock:
    ttl: float
    last_sent: float | None = None  # when the last successful keepalive/grant was sent

    @property
    def interval(self) -> float:
        """Rule 1: seconds between keepalives."""
        return self.ttl / 3

    @property
    def deadline(self) -> float | None:
        """Rule 2: the moment this router must have stopped deciding (None: now)."""
        return None if self.last_sent is None else self.last_sent + self.ttl - self.ttl / 4

    def succeeded(self, sent_at: float) -> None:
        """A keepalive or grant sent at ``sent_at`` was answered with a live lease."""
        if self.last_sent is None or sent_at > self.last_sent:
            self.last_sent = sent_at

    def lost(self) -> None:
        """Rule 3: the lease is gone (or replaced)."""
        self.last_sent = None

    def may_decide(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now < deadline

    def left(self, now: float) -> float:
        """Seconds until the deadline (0 when past or unknown)."""
        deadline = self.deadline
        return 0.0 if deadline is None else max(0.0, deadline - now)
