"""Which backend serves a service right now: the seam between proxying and failover.

Rules:

1. ``Director.route()`` is the ONE place the proxy asks "where does this request go?".
   It is called once per request (and again for a replay), is synchronous and cheap,
   and returns a :class:`Route` carrying the backend and the epoch that decided it. The
   epoch goes to the backend as ``X-Hotspare-Epoch``.
2. ``Director.report(backend_name, outcome)`` is told what real traffic showed after
   every upstream attempt. Only backend-side facts are reported: a client that hung up
   or sent too much is never the backend's fault and is never reported.
3. This static version answers "first backend, epoch 0" and ignores reports. The
   failover layer replaces the decision (it may subclass or swap the class in
   :func:`make_director`), keeping these signatures. A director that cannot route now
   raises :class:`NoRoute` (answered 503 with Retry-After by the proxy).
4. No I/O, no asyncio, no clock here: events in, answers out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .config import BackendConfig, ServiceConfig

__all__ = ["BackendView", "Director", "DirectorSnapshot", "NoRoute", "Outcome", "OutcomeKind", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    backend: BackendConfig
    epoch: int


class OutcomeKind(Enum):
    OK = "ok"  # a response came back (see Outcome.status)
    CONNECT_FAILED = "connect_failed"  # refused/unreachable/TLS failed: request NOT sent
    RESET = "reset"  # connection broke after the request was (maybe) sent
    TIMEOUT = "timeout"  # no first byte in time, or the body stalled
    BAD_RESPONSE = "bad_response"  # malformed or ambiguously framed response
    SLOW = "slow"  # no first byte after health.timeout yet (reported once; the request goes on)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None = None  # the backend's status code when kind is OK

    @classmethod
    def ok(cls, status: int) -> Outcome:
        return cls(OutcomeKind.OK, status)


OUTCOME_CONNECT_FAILED = Outcome(OutcomeKind.CONNECT_FAILED)
OUTCOME_RESET = Outcome(OutcomeKind.RESET)
OUTCOME_TIMEOUT = Outcome(OutcomeKind.TIMEOUT)
OUTCOME_BAD_RESPONSE = Outcome(OutcomeKind.BAD_RESPONSE)
OUTCOME_SLOW = Outcome(OutcomeKind.SLOW)


class NoRoute(Exception):
    """No backend can take this request now (service degraded or switching)."""

    def __init__(self, reason: str, retry_after: int = 5, status: int = 503) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True, slots=True)
class BackendView:
    name: str
    url: str
    healthy: bool | None  # None: not probed (no health checking yet)


@dataclass(frozen=True, slots=True)
class DirectorSnapshot:
    active: str
    epoch: int
    state: str  # "active" | "promoting" | "degraded"
    backends: tuple[BackendView, ...]


class Director:
    """Static director: the first backend is active, epoch 0."""

    def __init__(self, service: ServiceConfig) -> None:
        self._service = service
        self._route = Route(service.backends[0], 0)

    @property
    def service(self) -> ServiceConfig:
        return self._service

    def route(self) -> Route:
        return self._route

    def report(self, backend_name: str, outcome: Outcome) -> None:
        """What real traffic to ``backend_name`` showed. No-op in the static version."""

    def update(self, service: ServiceConfig) -> None:
        """A reload changed the service's config; keep the decision if still valid."""
        self._service = service
        active = self._route.backend.name
        backend = next((b for b in service.backends if b.name == active), service.backends[0])
        self._route = Route(backend, self._route.epoch)

    def snapshot(self) -> DirectorSnapshot:
        return DirectorSnapshot(
            active=self._route.backend.name,
            epoch=self._route.epoch,
            state="active",
            backends=tuple(BackendView(b.name, b.url, None) for b in self._service.backends),
        )


def make_director(service: ServiceConfig) -> Director:
    """The factory the router uses; failover swaps in its own director here."""
    return Director(service)
