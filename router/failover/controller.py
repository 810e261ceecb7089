"""The I/O shell around one service's failover machine.

Rules:

1. One :class:`~router.failover.FailoverMachine` per service; every event
   (health transitions, promotion results, timers, admin calls) goes through
   :meth:`ServiceController.submit`, and one dispatcher (:meth:`_perform`) performs the
   actions, one branch per action type, ending in an error for an unknown one.
2. The state file is written FIRST: an event's :class:`PersistState` is performed before
   any other of its actions (:meth:`ServiceController._take`). If the write fails, the
   machine is put back exactly as it was before the event (a copy taken before
   ``handle``), nothing else is performed, an alarm is raised (log, ``alarms``,
   ``hotspare_state_write_failures_total``, ``hotspare_state_write_alarm``) and the
   controller goes on: traffic never moves to an epoch that is not on disk, and a full
   disk never stops the router. What follows depends on the event:
   an operator's (``apply``) raises :class:`StateFileError` (the admin API answers 503);
   an automatic one (a backend DOWN, a timer) is tried again every
   ``STATE_WRITE_RETRY`` seconds while it still holds; a successful promotion whose new
   active cannot be recorded becomes a failed one (its epoch, persisted at its start,
   stays burned; the machine's own rules then keep or refuse the old active).
3. Tasks (the health checker, each promotion run) are named and live in the TaskGroup
   of :meth:`ServiceController.run`; cancelling ``run()`` stops them all.
4. :class:`FailoverDirector` is the proxy's seam: ``route()`` answers the active and
   epoch, raises :class:`MustHold` while a promotion runs (``await wait_for_route()``
   then), and :class:`NoRoute` while the service is refusing.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from promote.audit import AuditLog
from promote.pipeline import Pipeline
from router import metrics
from router.config import Config, ServiceConfig
from router.errors import StateFileError
from router.health.detector import Health, Traffic, Transition
from router.health.probes import HealthChecker

from .director import BackendView, DirectorSnapshot, MustHold, NoRoute, Outcome, OutcomeKind, Route
from .feed import EventFeed
from .hold import Admitted, HoldLimits, HoldQueue, Refusal
from .machine import (
    AbortInflight,
    Action,
    BackendDown,
    BackendUp,
    CancelTimer,
    Event,
    FailoverError,
    FailoverMachine,
    FailoverSettings,
    HoldTraffic,
    IllegalEvent,
    PersistState,
    PromotionFailed,
    PromotionOnHold,
    PromotionSucceeded,
    RaiseAlarm,
    RecordFailover,
    RefuseHeld,
    RefuseTraffic,
    ReleaseHeld,
    RouteTo,
    RunPromotion,
    SetTimer,
    State,
    StateChanged,
    Timer,
    TimerFired,
)
from .promotion import promotion_context
from .state import ServiceState, StateFile

__all__ = ["FailoverDirector", "MustHold", "PromotionOutcome", "ServiceController"]

log = logging.getLogger("hotspare.failover")

# Seconds between tries of an automatic failover whose state-file write failed (rule 2).
STATE_WRITE_RETRY = 5.0


_TRAFFIC = {
    OutcomeKind.CONNECT_FAILED: Traffic.REFUSED,
    OutcomeKind.RESET: Traffic.RESET,
    OutcomeKind.TIMEOUT: Traffic.TIMEOUT,
    OutcomeKind.BAD_RESPONSE: Traffic.BAD_RESPONSE,
    OutcomeKind.SLOW: Traffic.SLOW,
}


@dataclass(frozen=True, slots=True)
class PromotionOutcome:
    outcome: str  # "promoted" | "failed" | "fence_hold"
    reason: str = ""
    next_step: int | None = None
    run_id: str | None = None


PromotionRunner = Callable[[RunPromotion], Awaitable[PromotionOutcome]]


class FailoverDirector:
    """The :class:`~router.failover.director.Director` of one service: routes as the
    failover machine decided; holds requests while it promotes."""

    def __init__(self, service: ServiceConfig, active: str, epoch: int) -> None:
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
        self.healthy: dict[str, bool | None] = dict.fromkeys((b.name for b in service.backends), None)
        self.health: dict[str, Health] = {}  # the detector's latest verdict (absent: not probed yet)
        self.probed: Callable[[str], Health | None] = lambda backend: None  # the health checker's view
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        """Wake every request waiting for a decision (route, mode or health changed)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def set_health(self, backend: str, health: Health) -> None:
        self.health[backend] = health
        self.healthy[backend] = health is not Health.DOWN
        self._notify()

    def set_mode(self, mode: str, refusal: Refusal | None = None) -> None:
        self.mode, self.refusal = mode, refusal
        self._notify()

    def could_fail_over(self, backend: str) -> bool:
        """Could the failover layer move traffic off ``backend`` (automatic failover on,
        another backend not known to be down)? If not, waiting for its verdict is pointless."""
        return self._service.failover.automatic and any(
            b.name != backend and self._healthy(b.name) is not False for b in self._service.backends
        )

    async def wait_verdict(self, route: Route, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not a deadline API
        """After a failed attempt on ``route``: wait (at most ``timeout`` s) until the
        service routes elsewhere (another backend or epoch, hold, refuse) or the backend's
        detector no longer suspects it (a probe cleared the evidence). The caller then
        asks :meth:`route` again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        name = route.backend.name
        while self.mode == "route" and self._route.backend.name == name and self._route.epoch == route.epoch:
            if self.health.get(name, Health.UP) is Health.UP:
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
            backends=tuple(BackendView(b.name, b.url, self._healthy(b.name)) for b in self._service.backends),
        )

    def _healthy(self, backend: str) -> bool | None:
        h = self.probed(backend)
        if h is None:
            return self.healthy.get(backend)
        return h is not Health.DOWN

    def report(self, backend_name: str, outcome: Outcome) -> None:
        if self.on_report is not None:
            self.on_report(backend_name, outcome)

    # -- driven by the controller ---------------------------------------------------------

    @property
    def service(self) -> ServiceConfig:
        return self._service

    def backend_cleared(self, backend_name: str) -> bool:
        return self.health.get(backend_name) is Health.UP

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


class ServiceController:
    def __init__(
        self,
        config: Config,
        service: ServiceConfig,
        state_file: StateFile,
        initial: ServiceState,
        run_promotion: PromotionRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
        feed: EventFeed | None = None,
    ) -> None:
        self.service = service
        self.feed = feed if feed is not None else EventFeed()  # what happened, typed (feed.py)
        self._state_file = state_file
        self._clock = clock
        f = service.failover
        self.machine = FailoverMachine(
            FailoverSettings(tuple(b.name for b in service.backends), f.automatic, f.hold_down,
                             f.hold.max_time, f.retry_after),
            initial.active, initial.epoch,
        )
        self.director = FailoverDirector(service, initial.active, initial.epoch)
        self.director.on_report = self._on_report
        self.checker = HealthChecker(service, self._on_transition, clock=clock)
        self.director.probed = self.checker.health
        self._run_promotion = run_promotion or self._default_promotion
        self._audit = AuditLog(config.audit_log_path)
        self._agent_token = config.replication.token if config.replication else None
        # Never in an audit record, log line or API answer (promote.redact).
        self._secrets = (config.admin.token,)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.alarms: list[str] = []
        self._last_run: PromotionOutcome | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._promotions = 0  # promotion tasks running
        self._moved = asyncio.Event()  # set (and replaced) whenever the service may have settled

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                self._perform(self.machine.start())
                tg.create_task(self.checker.run(), name=f"health:{self.service.name}")
                while True:
                    event = await self._events.get()
                    try:
                        self._take(event, operator=False)
                    except FailoverError as exc:
                        # A late event (a promotion ending after an operator resumed the
                        # old active, say): the machine is unchanged; the service goes on.
                        log.error("service %s: dropped %s: %s", self.service.name, type(event).__name__, exc)
                    except StateFileError:
                        pass  # rolled back and alarmed by _take; the service goes on
                    self._nudge()
            finally:
                for handle in self._timers.values():
                    handle.cancel()
                if self._retry is not None:
                    self._retry.cancel()
                self._tg = None

    def settled(self) -> bool:
        """At rest: no event queued, no promotion running, not PROMOTING (a service on
        hold or degraded is at rest: it waits for a person or a probe)."""
        return self._events.empty() and self._promotions == 0 and self.machine.state is not State.PROMOTING

    async def wait_settled(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bound, not a deadline API
        """Return True once :meth:`settled`, False if ``timeout`` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.settled():
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                async with asyncio.timeout(left):
                    await self._moved.wait()
            except TimeoutError:
                return self.settled()
        return True

    def _nudge(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def submit(self, event: Event) -> None:
        """Queue an event (health, timers, promotion results). A refused one is logged."""
        self._events.put_nowait(event)

    def apply(self, event: Event) -> list[Action]:
        """An operator event, now (the admin API): raises :class:`FailoverError`
        (``Refused`` / ``IllegalEvent``) and changes nothing if the machine turns it
        down; else performs its actions and returns them. Needs :meth:`run` running."""
        if self._tg is None:
            raise IllegalEvent(f"service {self.service.name}: the failover controller is not running")
        return self._take(event, operator=True)

    def _take(self, event: Event, *, operator: bool) -> list[Action]:
        """Rule 2: the machine takes ``event``; its state write goes first; a failed write
        puts the machine back and raises :class:`StateFileError` after the alarm."""
        before = copy.deepcopy(self.machine)
        actions = self.machine.handle(event)  # FailoverError: the machine is unchanged
        try:
            for a in actions:
                if isinstance(a, PersistState):
                    self._state_file.save(self.service.name, a.active, a.epoch)
                    metrics.STATE_WRITE_ALARM.labels(self.service.name).set(0)
        except StateFileError as exc:
            self.machine = before
            self._state_write_failed(event, exc, operator)
            raise
        self._perform(actions)
        return actions

    def _state_write_failed(self, event: Event, exc: StateFileError, operator: bool) -> None:
        name, m = self.service.name, self.machine
        metrics.STATE_WRITE_FAILURES.labels(name).inc()
        metrics.STATE_WRITE_ALARM.labels(name).set(1)
        kept = f"{m.state.value} with {m.active} active at epoch {m.epoch}"
        if isinstance(event, PromotionSucceeded):
            then = "the promotion is counted as failed"
        elif operator:
            then = "the operator's request was not carried out"
        else:
            then = f"the automatic move is tried again in {STATE_WRITE_RETRY:g}s"
        self._alarm("state_write_failed", f"{exc}; {type(event).__name__} not applied, the service stays {kept}; {then}")
        if isinstance(event, PromotionSucceeded):
            # The pipeline ran, but the new active is not on disk: traffic must not move.
            self.submit(PromotionFailed(self._clock(), f"the new active could not be recorded: {exc}"))
        elif not operator:
            self._schedule_retry(event)

    def _schedule_retry(self, event: Event) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(STATE_WRITE_RETRY, self._try_again, event)

    def _try_again(self, event: Event) -> None:
        """Re-submit an automatic event whose state write failed, if it still holds."""
        self._retry = None
        backend = getattr(event, "backend", None)
        if isinstance(event, BackendDown) and self.checker.health(event.backend) is not Health.DOWN:
            return  # recovered meanwhile
        if isinstance(event, BackendUp) and backend is not None and self.checker.health(backend) is Health.DOWN:
            return
        self.submit(dataclasses.replace(event, now=self._clock()))

    def _alarm(self, cause: str, message: str) -> None:
        text = f"{cause}: {message}"
        if self.alarms and self.alarms[-1] == text:
            return  # the same failure again (a retry): counted in metrics, not repeated
        log.error("service %s ALARM (%s): %s", self.service.name, cause, message)
        self.alarms.append(text)

    def update(self, service: ServiceConfig) -> None:
        """A reload: new promotion steps and hold limits apply at once; changes to the
        backends' names, health checks or detection need a restart (logged)."""
        old = self.service
        if [b.name for b in service.backends] != [b.name for b in old.backends]:
            log.error("service %s: reload renames, adds or removes backends; failover keeps %s until a restart",
                      service.name, [b.name for b in old.backends])
            return
        if service.health != old.health or service.failover.model_dump(exclude={"hold", "retry_after"}) != \
                old.failover.model_dump(exclude={"hold", "retry_after"}):
            log.warning("service %s: reload: health and detection changes take effect at the next restart",
                        service.name)
        self.service = service
        self.director.update(service)

    # -- inputs ---------------------------------------------------------------------------

    def _on_transition(self, service: str, t: Transition) -> None:
        self.director.set_health(t.backend, t.new)
        if t.new is Health.DOWN:
            self.submit(BackendDown(t.now, t.backend, t.cause, t.since, t.detail))
        elif t.new is Health.UP and t.old is Health.DOWN:
            self.submit(BackendUp(t.now, t.backend))

    def _on_report(self, backend: str, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.OK:
            self.checker.report_traffic(backend, Traffic.OK, outcome.status)
        else:
            self.checker.report_traffic(backend, _TRAFFIC[outcome.kind])

    # -- the one dispatcher ---------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        name = self.service.name
        for a in actions:
            if isinstance(a, StateChanged):
                log.warning("service %s: %s -> %s (%s): %s", name, a.old.value, a.new.value, a.cause, a.message)
                self.director.state = a.new.value
                for s in State:
                    metrics.SERVICE_STATE.labels(name, s.value).set(1 if s is a.new else 0)
                metrics.FENCE_HOLD.labels(name).set(1 if a.new is State.FENCE_HOLD else 0)
            elif isinstance(a, PersistState):
                metrics.EPOCH.labels(name).set(a.epoch)  # written already, first (rule 2)
            elif isinstance(a, RunPromotion):
                assert self._tg is not None
                self._tg.create_task(self._promote(a), name=f"promote:{name}:{a.new}:epoch{a.epoch}")
            elif isinstance(a, RouteTo):
                self.director.route_to(a.backend, a.epoch)
                for b in self.service.backends:
                    metrics.ACTIVE_BACKEND.labels(name, b.name).set(1 if b.name == a.backend else 0)
                metrics.EPOCH.labels(name).set(a.epoch)
            elif isinstance(a, HoldTraffic):
                self.director.set_mode("hold")
            elif isinstance(a, AbortInflight):
                if self.director.on_abort is not None:
                    self.director.on_abort(a.backend)
            elif isinstance(a, ReleaseHeld):
                self.director.release()
            elif isinstance(a, RefuseHeld):
                self.director.refuse_held(Refusal(a.status, a.retry_after, a.reason))
            elif isinstance(a, RefuseTraffic):
                self.director.set_mode("refuse", Refusal(a.status, a.retry_after, a.reason))
            elif isinstance(a, RaiseAlarm):
                self._alarm(str(a.cause), a.message)
            elif isinstance(a, SetTimer):
                self._cancel_timer(a.timer)
                loop = asyncio.get_running_loop()
                self._timers[a.timer] = loop.call_later(a.delay, self._fire, a.timer)
            elif isinstance(a, CancelTimer):
                self._cancel_timer(a.timer)
            elif isinstance(a, RecordFailover):
                metrics.FAILOVERS.labels(name, a.cause.value).inc()
                metrics.DETECTION_TO_SWITCH.labels(name).observe(a.seconds)
            else:
                raise TypeError(f"unknown failover action {a!r}")

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self.submit(TimerFired(self._clock(), timer))

    def _cancel_timer(self, timer: Timer) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    # -- promotion ------------------------------------------------------------------------

    async def _promote(self, a: RunPromotion) -> None:
        self._promotions += 1
        try:
            try:
                result = await self._run_promotion(a)
            except Exception as exc:  # a bug in a runner must not leave the service PROMOTING
                log.exception("service %s: promotion of %s raised", self.service.name, a.new)
                result = PromotionOutcome("failed", f"{type(exc).__name__}: {exc}")
            self._last_run = result
            now = self._clock()
            if result.outcome == "promoted":
                self.submit(PromotionSucceeded(now))
            elif result.outcome == "fence_hold":
                self.submit(PromotionOnHold(now, result.reason or "fencing failed"))
            else:
                self.submit(PromotionFailed(now, result.reason or "promotion failed"))
        finally:
            self._promotions -= 1  # its result is queued: settled once that is taken

    async def _default_promotion(self, a: RunPromotion) -> PromotionOutcome:
        """The configured pipeline, then a readiness wait: ``rise`` good probes in a row
        of the new active within ``hold.max_time``."""
        svc = self.service
        if svc.promote:
            ctx = promotion_context(svc, a.old, a.new, a.epoch, a.cause.name, a.trigger)
            pipeline = Pipeline(svc.promote, fence_failure=svc.fence_failure, audit=self._audit,
                                agent_token=self._agent_token, secrets=self._secrets)
            start_at = self._last_run.next_step if (a.resume and self._last_run) else None
            resumes = self._last_run.run_id if (a.resume and self._last_run) else None
            res = await pipeline.run(ctx, start_at=start_at or 0, resumes=resumes)
            metrics.PROMOTIONS.labels(svc.name, res.outcome).inc()
            if res.outcome != "promoted":
                return PromotionOutcome(res.outcome, res.reason, res.next_step, res.run_id)
        return await self._wait_ready(a.new)

    async def _wait_ready(self, backend: str) -> PromotionOutcome:
        h = self.service.health
        prober = self.checker.prober(backend)
        deadline = self._clock() + self.service.failover.hold.max_time
        good = 0
        while self._clock() < deadline:
            started = self._clock()
            r = await prober.probe_once(started)
            good = good + 1 if r.ok else 0
            if good >= h.rise:
                return PromotionOutcome("promoted")
            await asyncio.sleep(h.fast_interval)  # pacing between probes, not a wait for a condition
        return PromotionOutcome("failed", f"{backend} not ready: {h.rise} good probes not seen "
                                          f"within {self.service.failover.hold.max_time:g}s")
