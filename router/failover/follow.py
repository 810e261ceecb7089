"""The failover :class:`~router.failover.director.Director` of one service: routes as the
failover machine decided and holds requests while it promotes.

Rules:

1. The controller drives it (``route_to``, ``set_mode``, ``release``, ``refuse_held``);
   the data path only asks (``route``, ``wait_for_route``, ``report``, ``could_fail_over``,
   ``wait_verdict``, ``backend_cleared``, ``snapshot``). It decides nothing itself.
2. It keeps no health of its own: ``health_of(backend)`` reads the detector through the
   health checker (None before the checker runs), the one store of backend health. The
   controller calls :meth:`FailoverDirector.wake` after every detector transition, so a
   request waiting in ``wait_verdict`` looks again.
3. ``route()`` answers the active and epoch, raises :class:`MustHold` while a promotion
   runs (``await wait_for_route()`` then), and :class:`NoRoute` while the service is
   refusing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from router import metrics
from router.config import ServiceConfig
from router.health.detector import Health

from .director import BackendView, DirectorSnapshot, MustHold, NoRoute, Outcome, Route
from .hold import Admitted, HoldLimits, HoldQueue, Refusal

__all__ = ["FailoverDirector", "HealthOf"]

HealthOf = Callable[[str], Health | None]  # the detector's verdict; None: not running yet


def _unknown(backend: str) -> Health | None:
    return None


class FailoverDirector:
    """The :class:`~router.failover.director.Director` of one service: routes as the
    failover machine decided; holds requests while it promotes."""

    def __init__(self, service: ServiceConfig, active: str, epoch: int, health_of: HealthOf = _unknown) -> None:
        self._service = service
        self._route = Route(service.backend(active), epoch)
        self.mode = "route"  # route | hold | refuse
        self.refusal: Refusal | None = None
        self.hold = HoldQueue[int](HoldLimits.from_config(service.failover), service.failover.retry_after)
        self._waiters: dict[int, asyncio.Future[Route]] = {}
        self._ids = itertools.count()
        self.on_report: Callable[[str, Outcome], None] | None = None
        self.on_abort: Callable[[str], None] | None = None  # set by the proxy (AbortInflight)
        self.state = "active"
        self._health_of = health_of
        self._changed = asyncio.Event()
        # Seconds wait_verdict waits on top of its caller's bound while the backend is
        # DOWN here: in a router pair the decision comes from the decider through etcd
        # (router/cluster/node.py sets it to the lease TTL); 0 for a router alone.
        self.follow_grace = 0.0
        self.on_change: Callable[[], None] | None = None  # route, mode or health changed (router/workers)

    def wake(self) -> None:
        """Wake every request waiting for a decision (route, mode or health changed)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self.on_change is not None:
            self.on_change()

    def set_mode(self, mode: str, refusal: Refusal | None = None) -> None:
        self.mode, self.refusal = mode, refusal
        self.wake()

    def healthy(self, backend: str) -> bool | None:
        """True for UP and SUSPECT (suspicion alone moves no traffic), None before the
        health checker runs."""
        h = self._health_of(backend)
        return None if h is None else h is not Health.DOWN

    def could_fail_over(self, backend: str) -> bool:
        """Could the failover layer move traffic off ``backend`` (automatic failover on,
        another backend not known to be down)? If not, waiting for its verdict is pointless."""
        return self._service.failover.automatic and any(
            b.name != backend and self.healthy(b.name) is not False for b in self._service.backends
        )

    async def wait_verdict(self, route: Route, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not a deadline API
        """After a failed attempt on ``route``: wait (at most ``timeout`` s) until the
        service routes elsewhere (another backend or epoch, hold, refuse) or the backend's
        detector no longer suspects it (a probe cleared the evidence). The caller then
        asks :meth:`route` again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout + self.follow_grace
        name = route.backend.name
        while self.mode == "route" and self._route.backend.name == name and self._route.epoch == route.epoch:
            if self._health_of(name) in (None, Health.UP):
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                return

    def route(self) -> Route:
        if self.mode == "route":
            return self._route
        if self.mode == "hold":
            raise MustHold("switching to the standby", self._service.failover.retry_after)
        assert self.refusal is not None
        raise NoRoute(self.refusal.reason, self.refusal.retry_after, self.refusal.status)

    async def wait_for_route(self, body_size: int, now: Callable[[], float] = time.monotonic) -> Route:
        """Hold this request until the promotion ends: its Route, or NoRoute (refused,
        queue full, or held longer than hold.max_time)."""
        if self.mode != "hold":
            return self.route()
        key = next(self._ids)
        verdict = self.hold.admit(key, body_size, now())
        if isinstance(verdict, Refusal):
            metrics.REFUSED.labels(self._service.name, "hold_full").inc()
            raise NoRoute(verdict.reason, verdict.retry_after, verdict.status)
        assert isinstance(verdict, Admitted)
        fut: asyncio.Future[Route] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        metrics.HELD.labels(self._service.name).set(len(self.hold))
        try:
            async with asyncio.timeout(max(0.0, verdict.deadline - now())):
                return await fut
        except TimeoutError:
            metrics.REFUSED.labels(self._service.name, "hold_timeout").inc()
            raise NoRoute("held longer than hold.max_time", self._service.failover.retry_after) from None
        finally:
            self.hold.remove(key)
            self._waiters.pop(key, None)
            metrics.HELD.labels(self._service.name).set(len(self.hold))

    def snapshot(self) -> DirectorSnapshot:
        return DirectorSnapshot(
            active=self._route.backend.name,
            epoch=self._route.epoch,
            state=self.state,
            backends=tuple(BackendView(b.name, b.url, self.healthy(b.name)) for b in self._service.backends),
        )

    def report(self, backend_name: str, outcome: Outcome) -> None:
        if self.on_report is not None:
            self.on_report(backend_name, outcome)

    @property
    def service(self) -> ServiceConfig:
        return self._service

    def backend_cleared(self, backend_name: str) -> bool:
        return self._health_of(backend_name) is Health.UP

    # -- driven by the controller ---------------------------------------------------------

    def update(self, service: ServiceConfig) -> None:
        """A reload changed the service's config; keep the decision if still valid."""
        self._service = service
        active = self._route.backend.name
        backend = next((b for b in service.backends if b.name == active), service.backends[0])
        self._route = Route(backend, self._route.epoch)
        self.hold.limits = HoldLimits.from_config(service.failover)

    def route_to(self, backend: str, epoch: int) -> None:
        self._route = Route(self._service.backend(backend), epoch)
        self.set_mode("route")

    def release(self) -> None:
        for key in self.hold.release_all():
            fut = self._waiters.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(self._route)

    def refuse_held(self, refusal: Refusal) -> None:
        for key in self.hold.refuse_all():
            fut = self._waiters.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_exception(NoRoute(refusal.reason, refusal.retry_after, refusal.status))
