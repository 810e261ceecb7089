"""Requests held while a service switches to its spare.

Rules:

1. Pure bookkeeping: no I/O, no clock (``now`` comes in). The proxy keeps a future per
   held request under a key of its choosing; this queue decides admit/refuse, which
   keys have waited too long, and the order of release.
2. The queue is bounded three ways: ``max_requests`` held at once, ``max_bytes`` of
   request bodies kept in memory, and ``max_time`` each request may wait. Over any
   bound a request is refused at once: 503 with Retry-After, never a hang.
3. Release is in arrival order (first held, first sent). Refuse-all empties the queue.

Which held or failed requests may go again is the data path's rule
(:mod:`router.proxy.replay`), and so is the page a refused request gets
(:mod:`router.proxy.answers`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from router.config import FailoverConfig

__all__ = [
    "Admitted",
    "HoldLimits",
    "HoldQueue",
    "Refusal",
]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class HoldLimits:
    max_requests: int = 1000
    max_bytes: int = 64 * 1024 * 1024
    max_time: float = 10.0

    @classmethod
    def from_config(cls, failover: FailoverConfig) -> HoldLimits:
        h = failover.hold
        return cls(h.max_requests, h.max_bytes, h.max_time)


@dataclass(frozen=True, slots=True)
class Admitted:
    deadline: float  # refuse it (expired) if still held at this time


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    retry_after: int
    reason: str


@dataclass(slots=True)
class _Entry:
    size: int
    deadline: float


class HoldQueue(Generic[K]):
    def __init__(self, limits: HoldLimits, retry_after: int) -> None:
        self.limits = limits
        self.retry_after = retry_after
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def admit(self, key: K, size: int, now: float) -> Admitted | Refusal:
        """Hold ``key`` (a request keeping ``size`` body bytes in memory) or refuse it."""
        if size < 0:
            raise ValueError(f"size: expected bytes >= 0, got {size}")
        if key in self._entries:
            raise ValueError(f"request {key!r} is already held")
        lim = self.limits
        if len(self._entries) >= lim.max_requests:
            return self._refusal(f"hold queue full ({lim.max_requests} requests)")
        if self._bytes + size > lim.max_bytes:
            return self._refusal(f"hold queue over its {lim.max_bytes} bytes")
        deadline = now + lim.max_time
        self._entries[key] = _Entry(size, deadline)
        self._bytes += size
        return Admitted(deadline)

    def remove(self, key: K) -> bool:
        """The request left on its own (client hung up). False if it was not held."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True

    def expired(self, now: float) -> list[K]:
        """Keys held ``max_time`` or longer, removed from the queue (refuse them)."""
        out = [k for k, e in self._entries.items() if e.deadline <= now]
        for k in out:
            self.remove(k)
        return out

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._entries.values()), default=None)

    def release_all(self) -> list[K]:
        """Every held key in arrival order; the queue is empty afterwards."""
        return self._drain()

    def refuse_all(self) -> list[K]:
        """Every held key (to be answered with :meth:`refusal`); the queue is empty afterwards."""
        return self._drain()

    def refusal(self, reason: str) -> Refusal:
        return self._refusal(reason)

    def _refusal(self, reason: str) -> Refusal:
        return Refusal(503, self.retry_after, reason)

    def _drain(self) -> list[K]:
        keys = list(self._entries)
        self._entries.clear()
        self._bytes = 0
        return keys
