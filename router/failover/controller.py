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
4. :class:`~.follow.FailoverDirector` is the proxy's seam (router/failover/follow.py).
5. What happened is told once, by :class:`~.publish.Publisher`: the operator's log line
   and a typed event on ``self.feed`` (state changes, detector transitions, alarms with
   a stable code, promotion steps, operator commands).
6. Backend health has one store: the detector, read through the health checker (the
   director's ``health_of``, ``_try_again``). ``machine.healthy`` is the pure machine's
   own input state, fed only by the BackendDown/BackendUp events submitted here, so it
   decides without I/O; nothing else keeps health.
7. The store is a :class:`~.store.StateStore` (the state file by default, rule 2 above;
   a cluster's shared store otherwise). Events are taken one at a time: the run loop and
   an operator's :meth:`apply_async` take turns (``_turn``), so an event's store write
   (which may wait on the network) never interleaves with another event.
8. Decider or follower (router/failover/roles.py): a follower takes no event. While
   deciding, the optional :class:`~.store.Gate` says which automatic events (health,
   timers) may be taken; the optional :class:`~.store.PromotionHooks` are told each
   stage of a run (router/failover/promoting.py).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from router import metrics
from router.config import Config, ServiceConfig
from router.errors import StateFileError
from router.health.detector import Health, Transition
from router.health.probes import HealthChecker

from .director import MustHold, Outcome
from .feed import EventFeed
from .follow import FailoverDirector
from .hold import Refusal
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
from .promoting import Promoting
from .publish import Publisher, StepAudit, command_words
from .roles import Roles
from .runs import PromotionOutcome, PromotionRunner
from .state import ServiceState, StateFile
from .store import Decision, FileStore, Gate, PromotionHooks, StateStore, StoreDeposed

__all__ = ["FailoverDirector", "MustHold", "PromotionOutcome", "PromotionRunner", "ServiceController"]

log = logging.getLogger("hotspare.failover")

# Seconds between tries of an automatic failover whose state-file write failed (rule 2).
STATE_WRITE_RETRY = 5.0


class ServiceController(Roles, Promoting):
    def __init__(
        self,
        config: Config,
        service: ServiceConfig,
        state_file: StateFile | StateStore,
        initial: ServiceState,
        run_promotion: PromotionRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
        feed: EventFeed | None = None,
        *,
        gate: Gate | None = None,
        hooks: PromotionHooks | None = None,
        follower: bool = False,
    ) -> None:
        self.service = service
        self.feed = feed if feed is not None else EventFeed()  # what happened, typed (feed.py)
        self._store: StateStore = FileStore(state_file) if isinstance(state_file, StateFile) else state_file
        self.gate, self.hooks = gate, hooks  # rule 8
        self.deciding = not follower
        self._turn = asyncio.Lock()  # rule 7
        self.decision = Decision(initial.active, initial.epoch, "route", State.ACTIVE.value)
        self._clock = clock
        f = service.failover
        self.machine = FailoverMachine(
            FailoverSettings(tuple(b.name for b in service.backends), f.automatic, f.hold_down,
                             f.hold.max_time, f.retry_after),
            initial.active, initial.epoch,
        )
        self.checker = HealthChecker(service, self._on_transition, clock=clock)
        self.director = FailoverDirector(service, initial.active, initial.epoch, self.checker.health)
        self.director.on_report = self._on_report
        self.publisher = Publisher(service.name, self.feed)  # log lines + feed events (publish.py)
        self._run_promotion = run_promotion or self._default_promotion
        self._audit = StepAudit(config.audit_log_path, self.publisher)
        self._agent_token = config.replication.token if config.replication else None
        # Never in an audit record, log line or API answer (promote.redact).
        self._secrets = (config.admin.token,)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.alarms = self.publisher.alarms  # "code: message", newest last (the publisher's list)
        self._last_run: PromotionOutcome | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._promotions = 0  # promotion tasks running
        self._runs: set[asyncio.Task[None]] = set()  # the same tasks, to cancel on stand_down
        self._moved = asyncio.Event()  # set (and replaced) whenever the service may have settled

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                if self.deciding:
                    self._perform(self.machine.start())
                tg.create_task(self.checker.run(), name=f"health:{self.service.name}")
                while True:
                    event = await self._events.get()
                    async with self._turn:
                        await self._take_queued(event)
                    self._nudge()
            finally:
                self._cancel_timers()
                self._tg = None

    async def _take_queued(self, event: Event) -> None:
        if not self.deciding:
            return  # rule 8: a follower decides nothing
        if isinstance(event, BackendDown | BackendUp | TimerFired) and self.gate is not None \
                and not self.gate.admits(self.service.name, event):
            log.debug("service %s: %s not admitted by the gate", self.service.name, event)
            return
        try:
            await self._take(event, operator=False)
        except FailoverError as exc:
            # A late event (a promotion ending after an operator resumed the
            # old active, say): the machine is unchanged; the service goes on.
            log.error("service %s: dropped %s: %s", self.service.name, type(event).__name__, exc)
        except StateFileError:
            pass  # rolled back and alarmed by _take; the service goes on

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

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

    def apply(self, event: Event) -> list[Action] | Awaitable[list[Action]]:
        """:meth:`apply_async`, done now with a store that never suspends (the state
        file); else its awaitable, for the caller to await."""
        if not getattr(self._store, "synchronous", False):
            return self.apply_async(event)
        return _now(self.apply_async(event))

    async def apply_async(self, event: Event) -> list[Action]:
        """An operator event, now (the admin API): raises :class:`FailoverError`
        (``Refused`` / ``IllegalEvent``) and changes nothing if the machine turns it
        down; else performs its actions and returns them. Needs :meth:`run` running,
        and this router deciding the service (rule 8)."""
        if self._tg is None:
            raise IllegalEvent(f"service {self.service.name}: the failover controller is not running")
        if not self.deciding:
            raise IllegalEvent(f"service {self.service.name}: this router does not decide it now; "
                               f"send the command to the router that does")
        async with self._turn:
            try:
                actions = await self._take(event, operator=True)
            except FailoverError as exc:
                self.publisher.notice(f"operator {command_words(event)} refused: {exc}")
                raise
        m = self.machine
        self.publisher.notice(f"operator {command_words(event)}: {m.state.value} with {m.active} active at epoch {m.epoch}")
        return actions

    async def _take(self, event: Event, *, operator: bool) -> list[Action]:
        """Rule 2: the machine takes ``event``; its state write goes first; a failed write
        puts the machine back and raises :class:`StateFileError` after the alarm."""
        before = copy.deepcopy(self.machine)
        actions = self.machine.handle(event)  # FailoverError: the machine is unchanged
        decision = dataclasses.replace(self.decision.after(actions), drained=tuple(sorted(self.machine.maintenance)))
        try:
            await self._store.save(self.service.name, decision)
        except StateFileError as exc:
            self.machine = before
            self._state_write_failed(event, exc, operator)
            raise
        if decision.persist:
            metrics.STATE_WRITE_ALARM.labels(self.service.name).set(0)
        self.decision = decision
        self._perform(actions)
        return actions

    def _state_write_failed(self, event: Event, exc: StateFileError, operator: bool) -> None:
        name, m = self.service.name, self.machine
        if isinstance(exc, StoreDeposed):  # another router decides now: no alarm, no retry
            log.warning("service %s: %s not applied: %s", name, type(event).__name__, exc)
            return
        metrics.STATE_WRITE_FAILURES.labels(name).inc()
        metrics.STATE_WRITE_ALARM.labels(name).set(1)
        kept = f"{m.state.value} with {m.active} active at epoch {m.epoch}"
        if isinstance(event, PromotionSucceeded):
            then = "the promotion is counted as failed"
        elif operator:
            then = "the operator's request was not carried out"
        else:
            then = f"the automatic move is tried again in {STATE_WRITE_RETRY:g}s"
        self.publisher.alarm("state_write_failed", f"{exc}; {type(event).__name__} not applied, the service stays {kept}; {then}")
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
        self.publisher.health_changed(t)
        self.director.wake()  # the detector moved: requests waiting for a verdict look again
        if t.new is Health.DOWN:
            self.submit(BackendDown(t.now, t.backend, t.cause, t.since, t.detail))
        elif t.new is Health.UP and t.old is Health.DOWN:
            self.submit(BackendUp(t.now, t.backend))

    def _on_report(self, backend: str, outcome: Outcome) -> None:
        # One vocabulary (router/failures.py): the proxy's Failure goes on as it is.
        self.checker.report_traffic(backend, outcome.failure, outcome.status)

    # -- the one dispatcher ---------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        name = self.service.name
        for a in actions:
            if isinstance(a, StateChanged):
                self.publisher.state_changed(a)
                self.director.state = a.new.value
                for s in State:
                    metrics.SERVICE_STATE.labels(name, s.value).set(1 if s is a.new else 0)
                metrics.FENCE_HOLD.labels(name).set(1 if a.new is State.FENCE_HOLD else 0)
            elif isinstance(a, PersistState):
                metrics.EPOCH.labels(name).set(a.epoch)  # written already, first (rule 2)
            elif isinstance(a, RunPromotion):
                assert self._tg is not None
                if self.deciding:  # deposed while its write was answered: the decider runs it
                    run = self._tg.create_task(self._promote(a), name=f"promote:{name}:{a.new}:epoch{a.epoch}")
                    self._runs.add(run)
                    run.add_done_callback(self._runs.discard)
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
                self.publisher.alarm(a.cause, a.message)
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



def _now(coro: Coroutine[Any, Any, list[Action]]) -> list[Action]:
    """Run a coroutine that never suspends to its end, synchronously (rule 7: the state
    file's store; an asyncio.Lock that is free is taken without suspending)."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: list[Action] = done.value
        return result
    coro.close()
    raise RuntimeError("a synchronous apply() suspended: its state store must not")
