"""Which backend serves a service right now: the seam between proxying and failover.

Rules:

1. ``Director.route()`` is the ONE place the proxy asks "where does this request go?".
   It is called once per request (and again for a replay), is synchronous and cheap,
   and returns a :class:`Route` carrying the backend and the epoch that decided it. The
   epoch goes to the backend as ``X-Hotspare-Epoch``.
2. ``Director.report(backend_name, outcome)`` is told what real traffic showed after
   every upstream attempt. Only backend-side facts are reported: a client that hung up
   or sent too much is never the backend's fault and is never reported.
3. A director that cannot route now raises :class:`NoRoute` (answered 503 with
   Retry-After by the proxy), or :class:`MustHold` while the service switches (the
   proxy then waits in ``wait_for_route``). After a failed attempt the proxy may ask
   ``could_fail_over``/``wait_verdict``/``backend_cleared`` to decide whether to go again.
4. This module holds the protocol and its value types only: no I/O, no asyncio, nothing
   of the failover machinery. :class:`router.failover.follow.FailoverDirector`
   implements it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from router.config import BackendConfig, ServiceConfig
from router.failures import Failure

__all__ = ["BackendView", "Director", "DirectorSnapshot", "MustHold", "NoRoute", "Outcome", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    backend: BackendConfig
    epoch: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt showed: a response (``status``) or a :class:`Failure` (the one
    vocabulary, router/failures.py; never a client fault)."""

    failure: Failure | None = None  # None: a response came back (see status)
    status: int | None = None  # the backend's status code when failure is None

    @classmethod
    def ok(cls, status: int) -> Outcome:
        """Shared per status too: one report per request on the data path."""
        done = _OK.get(status)
        if done is None:
            done = _OK[status] = cls(None, status)
        return done

    @classmethod
    def failed(cls, failure: Failure) -> Outcome:
        """The shared instance for ``failure`` (no allocation on the data path)."""
        return _FAILED[failure]


_FAILED = {f: Outcome(f) for f in Failure}
_OK: dict[int, Outcome] = {}  # bounded: a status has three digits


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


class MustHold(NoRoute):
    """The service is switching: ``await director.wait_for_route(body_size)``."""


class Director(Protocol):
    """What the data path may ask the failover layer, and all it may ask (the
    import-linter contract in pyproject.toml keeps router.proxy to this module)."""

    @property
    def service(self) -> ServiceConfig: ...

    def route(self) -> Route:
        """Where a new request goes now; :class:`MustHold` while the service switches,
        :class:`NoRoute` when nothing can take it."""

    async def wait_for_route(self, body_size: int) -> Route:
        """Hold a request (``body_size`` bytes kept) until the switch ends; NoRoute if it
        is refused or held too long."""

    def report(self, backend_name: str, outcome: Outcome) -> None:
        """What real traffic to ``backend_name`` showed (backend-side facts only)."""

    def could_fail_over(self, backend_name: str) -> bool:
        """Could traffic move off ``backend_name`` (automatic failover on, another
        backend not known to be down)? If not, waiting for a verdict is pointless."""

    async def wait_verdict(self, route: Route, timeout: float) -> None:  # noqa: ASYNC109 - a bound
        """After a failed attempt on ``route``: wait until the service routes elsewhere
        or the backend is cleared, at most ``timeout`` seconds."""

    def backend_cleared(self, backend_name: str) -> bool:
        """True when the detector has seen ``backend_name`` and holds it UP (a probe
        cleared any suspicion); False when unprobed, suspected or down."""

    def update(self, service: ServiceConfig) -> None:
        """A reload changed the service's config."""

    def snapshot(self) -> DirectorSnapshot:
        """The route, epoch, state and backends' health, for observers."""
