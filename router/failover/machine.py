"""The failover state machine of one service: events in, actions out, no I/O.

(The states, events and actions themselves are plain data in :mod:`.failover_events`,
re-exported here; this module holds the transition table and the machine.)

Rules:

1. No asyncio, no aiohttp, no clock: every event carries ``now``; timers are actions
   (:class:`SetTimer`) whose expiry comes back as an event (:class:`TimerFired`).
2. The allowed moves are data: :data:`TRANSITIONS` maps (state, event type) to the
   states that event may lead to. An event not in the table for the current state, or
   one the machine refuses (a switchover to an unhealthy backend), raises and changes
   nothing. The docs' diagram is drawn from the same table (``failover_diagram``).
3. Every change of state carries a typed :class:`~hotspare.causes.Cause`.
4. The epoch is the fencing token. Every promotion attempt takes a new one and persists
   it (still on the old active) BEFORE the pipeline runs, as the pipeline expects: a
   token is never issued twice, even across a router crash. Success persists the new
   active with that same epoch BEFORE :class:`RouteTo`. The dispatcher performs actions
   in order and stops at the first that fails, so traffic never reaches a new active
   whose epoch is not on disk. A failed attempt burns its epoch: the epoch grows by one
   at every change of active, and by one more for each attempt that did not change it.
5. Never fail over to a backend that fails its own probes: stay, refuse with 503 and
   Retry-After, raise an alarm. (Backends start healthy until a probe says otherwise.)
6. No automatic failback: after a→b, ``a`` is the spare and nothing automatic makes it
   active again except ``b`` failing in turn, and not within ``hold_down`` seconds of
   the last promotion attempt (successful or not): no flapping.
7. A failed promotion goes back to the old active if it still passes its probes (a
   planned switchover that failed, a false alarm), else leaves the service DEGRADED
   (503s, alarm) until the old active passes its probes again or an operator acts; it is
   not retried automatically. FENCE_HOLD resumes the same run (same epoch) when an
   operator confirms the old active is fenced.
8. While PROMOTING, new requests are held (bounded by the hold queue) and, when the old
   active was declared dead, requests in flight to it are aborted at once (replayed or
   answered 502 by the proxy). A planned switchover lets them finish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hotspare.causes import Cause

from .events import (
    AbortInflight,
    Action,
    AdminConfirmFenced,
    AdminFailover,
    AdminResume,
    AdminSwitchover,
    BackendDown,
    BackendUp,
    CancelTimer,
    Event,
    FailoverError,
    HoldTraffic,
    IllegalEvent,
    PersistState,
    PromotionFailed,
    PromotionOnHold,
    PromotionSucceeded,
    RaiseAlarm,
    RecordFailover,
    Refused,
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
    Trigger,
)

__all__ = [
    "TRANSITIONS",
    "AbortInflight",
    "Action",
    "AdminConfirmFenced",
    "AdminFailover",
    "AdminResume",
    "AdminSwitchover",
    "BackendDown",
    "BackendUp",
    "CancelTimer",
    "Edge",
    "Event",
    "FailoverError",
    "FailoverMachine",
    "FailoverSettings",
    "FailoverSnapshot",
    "HoldTraffic",
    "IllegalEvent",
    "PersistState",
    "PromotionFailed",
    "PromotionOnHold",
    "PromotionSucceeded",
    "RaiseAlarm",
    "RecordFailover",
    "RefuseHeld",
    "RefuseTraffic",
    "Refused",
    "ReleaseHeld",
    "RouteTo",
    "RunPromotion",
    "SetTimer",
    "State",
    "StateChanged",
    "Timer",
    "TimerFired",
    "Trigger",
]


# -- the table --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    target: State
    when: str  # the guard, in words (drawn on the diagram)


A, P, F, D = State.ACTIVE, State.PROMOTING, State.FENCE_HOLD, State.DEGRADED

TRANSITIONS: Mapping[State, Mapping[type[Event], tuple[Edge, ...]]] = {
    A: {
        BackendDown: (
            Edge(P, "active down, a spare healthy"),
            Edge(D, "active down, no healthy spare / hold-down"),
            Edge(A, "spare down (alarm) / automatic off (alarm)"),
        ),
        BackendUp: (Edge(A, "health bookkeeping"),),
        AdminSwitchover: (Edge(P, "operator switchover to a healthy backend"),),
        AdminFailover: (Edge(P, "operator failover"),),
        TimerFired: (Edge(A, "stale timer"),),
    },
    P: {
        PromotionSucceeded: (Edge(A, "pipeline ok and new active ready (epoch+1 persisted first)"),),
        PromotionFailed: (
            Edge(A, "pipeline failed, old active still passes its probes"),
            Edge(D, "pipeline failed / new active not ready, old active down"),
        ),
        PromotionOnHold: (Edge(F, "fencing failed, policy hold"),),
        BackendDown: (Edge(P, "health bookkeeping"),),
        BackendUp: (Edge(P, "health bookkeeping"),),
        TimerFired: (Edge(P, "hold.max_time: refuse held requests"),),
    },
    F: {
        AdminConfirmFenced: (Edge(P, "operator confirms the old active is fenced - resume the run"),),
        AdminFailover: (Edge(P, "operator starts a new promotion"),),
        AdminSwitchover: (Edge(P, "operator starts a new promotion"),),
        AdminResume: (Edge(A, "operator keeps the old active"),),
        BackendDown: (Edge(F, "health bookkeeping"),),
        BackendUp: (Edge(F, "health bookkeeping"),),
        TimerFired: (Edge(F, "hold.max_time: refuse held requests"),),
    },
    D: {
        BackendUp: (
            Edge(A, "active passes its probes again"),
            Edge(P, "a spare is healthy again (was: no healthy spare)"),
            Edge(D, "health bookkeeping"),
        ),
        BackendDown: (Edge(D, "health bookkeeping"),),
        TimerFired: (Edge(P, "hold-down over, a spare healthy"), Edge(D, "stale timer / still no spare")),
        AdminFailover: (Edge(P, "operator failover"),),
        AdminSwitchover: (Edge(P, "operator switchover to a healthy backend"),),
        AdminResume: (Edge(A, "operator resumes the active"),),
    },
}
del A, P, F, D


# -- settings and snapshot ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    backends: tuple[str, ...]  # config order
    automatic: bool = True
    hold_down: float = 300.0
    hold_max_time: float = 10.0
    retry_after: int = 5


@dataclass(frozen=True, slots=True)
class FailoverSnapshot:
    state: State
    active: str
    epoch: int
    target: str | None  # the backend being promoted
    cause: Cause | None  # why the service is in this state
    healthy: tuple[tuple[str, bool], ...]
    hold_down_until: float | None


@dataclass(slots=True)
class _Promotion:
    old: str
    new: str
    cause: Cause
    trigger: Trigger
    since: float


# -- the machine -------------------------------------------------------------------------


class FailoverMachine:
    def __init__(self, settings: FailoverSettings, active: str, epoch: int) -> None:
        if active not in settings.backends:
            raise ValueError(f"active backend {active!r} is not one of {list(settings.backends)}")
        if epoch < 0:
            raise ValueError(f"epoch: expected an integer >= 0, got {epoch}")
        self.settings = settings
        self.state = State.ACTIVE
        self.active = active
        self.epoch = epoch
        self.cause: Cause | None = None
        self.healthy: dict[str, bool] = dict.fromkeys(settings.backends, True)
        self._promotion: _Promotion | None = None
        self._last_attempt: float | None = None
        self._down_cause: Cause = Cause.PROBE_FAILED  # why the active went down
        self._down_since: float | None = None

    def start(self) -> list[Action]:
        return [RouteTo(self.active, self.epoch)]

    def snapshot(self) -> FailoverSnapshot:
        until = None
        if self._last_attempt is not None:
            until = self._last_attempt + self.settings.hold_down
        return FailoverSnapshot(
            self.state,
            self.active,
            self.epoch,
            self._promotion.new if self._promotion else None,
            self.cause,
            tuple(self.healthy.items()),
            until,
        )

    def handle(self, event: Event) -> list[Action]:
        """Take one event; return the actions to perform, in order."""
        allowed = TRANSITIONS[self.state].get(type(event))
        if allowed is None:
            raise IllegalEvent(f"{type(event).__name__} is not allowed in state {self.state.value}")
        name = getattr(event, "backend", None) or getattr(event, "to", None)
        if name is not None and name not in self.healthy:
            raise Refused(f"unknown backend {name!r}; expected one of {list(self.settings.backends)}")
        before = self.state
        handler = getattr(self, f"_{before.value}_{type(event).__name__}")
        actions: list[Action] = handler(event)
        if self.state not in {e.target for e in allowed}:  # pragma: no cover - table/code mismatch
            raise AssertionError(f"{before} --{type(event).__name__}--> {self.state} is not in TRANSITIONS")
        return actions

    # -- ACTIVE ---------------------------------------------------------------------------

    def _active_BackendDown(self, e: BackendDown) -> list[Action]:
        self.healthy[e.backend] = False
        if e.backend != self.active:
            return [RaiseAlarm(Cause.SPARE_UNHEALTHY, f"spare {e.backend} DOWN ({e.detail or e.cause}): "
                               f"no failover possible while it stays down")]
        self._down_cause, self._down_since = e.cause, e.since if e.since is not None else e.now
        if not self.settings.automatic:
            return [RaiseAlarm(Cause.AUTOMATIC_OFF, f"active {self.active} DOWN ({e.detail or e.cause}); "
                               "automatic failover is off: an operator must act")]
        return self._fail_over(e.now)

    def _active_BackendUp(self, e: BackendUp) -> list[Action]:
        self.healthy[e.backend] = True
        return []

    def _active_AdminSwitchover(self, e: AdminSwitchover) -> list[Action]:
        self._check_target(e.to, need_healthy=True)
        return self._promote(e.now, e.to, Cause.ADMIN, "switchover", e.now)

    def _active_AdminFailover(self, e: AdminFailover) -> list[Action]:
        self._check_target(e.to, need_healthy=False)
        return self._promote(e.now, e.to, Cause.ADMIN, "manual", e.now)

    def _active_TimerFired(self, e: TimerFired) -> list[Action]:
        return []

    # -- PROMOTING ------------------------------------------------------------------------

    def _promoting_PromotionSucceeded(self, e: PromotionSucceeded) -> list[Action]:
        p = self._need_promotion()
        old, epoch = self.active, self.epoch
        self._promotion = None
        self._last_attempt = e.now
        self._down_since = None
        self.active = p.new
        return [
            PersistState(p.new, epoch),
            self._move(State.ACTIVE, Cause.PROMOTED, f"{p.new} is the active (epoch {epoch}), was {old}"),
            CancelTimer(Timer.HOLD),
            RouteTo(p.new, epoch),
            ReleaseHeld(p.new, epoch),
            RecordFailover(old, p.new, p.cause, max(0.0, e.now - p.since)),
        ]

    def _promoting_PromotionFailed(self, e: PromotionFailed) -> list[Action]:
        p = self._need_promotion()
        self._promotion = None
        self._last_attempt = e.now
        if self.healthy[self.active]:
            msg = f"promotion of {p.new} failed ({e.reason}); {self.active} passes its probes and stays active"
            return [
                self._move(State.ACTIVE, Cause.PROMOTION_FAILED, msg),
                CancelTimer(Timer.HOLD),
                RouteTo(self.active, self.epoch),
                ReleaseHeld(self.active, self.epoch),
                RaiseAlarm(Cause.PROMOTION_FAILED, msg),
            ]
        msg = f"promotion of {p.new} failed ({e.reason}); {self.active} stays active but DOWN"
        return [
            self._move(State.DEGRADED, Cause.PROMOTION_FAILED, msg),
            CancelTimer(Timer.HOLD),
            *self._refuse_all(f"promotion of {p.new} failed"),
            RaiseAlarm(Cause.PROMOTION_FAILED, msg + ": an operator must act"),
        ]

    def _promoting_PromotionOnHold(self, e: PromotionOnHold) -> list[Action]:
        p = self._need_promotion()  # kept: AdminConfirmFenced resumes it
        self._last_attempt = e.now
        msg = (f"fencing {p.old} failed ({e.reason}); traffic held until an operator confirms "
               f"it is fenced (failover to {p.new}) or resumes {p.old}")
        return [self._move(State.FENCE_HOLD, Cause.FENCE_FAILED, msg), RaiseAlarm(Cause.FENCE_FAILED, msg)]

    def _promoting_BackendDown(self, e: BackendDown) -> list[Action]:
        self.healthy[e.backend] = False
        return []

    def _promoting_BackendUp(self, e: BackendUp) -> list[Action]:
        self.healthy[e.backend] = True
        return []

    def _promoting_TimerFired(self, e: TimerFired) -> list[Action]:
        if e.timer is not Timer.HOLD:
            return []
        p = self._need_promotion()
        msg = f"promotion of {p.new} still running after {self.settings.hold_max_time:g}s"
        return [*self._refuse_all(msg), RaiseAlarm(Cause.HOLD_TIMEOUT, msg + ": refusing held requests")]

    # -- FENCE_HOLD -----------------------------------------------------------------------

    def _fence_hold_AdminConfirmFenced(self, e: AdminConfirmFenced) -> list[Action]:
        p = self._need_promotion()
        return [
            self._move(State.PROMOTING, Cause.ADMIN, f"operator confirmed {p.old} is fenced; "
                       f"resuming the promotion of {p.new} (epoch {self.epoch})"),
            HoldTraffic(),
            SetTimer(Timer.HOLD, self.settings.hold_max_time),
            RunPromotion(p.old, p.new, self.epoch, p.cause, p.trigger, resume=True),
        ]

    def _fence_hold_AdminFailover(self, e: AdminFailover) -> list[Action]:
        self._check_target(e.to, need_healthy=False)
        return self._promote(e.now, e.to, Cause.ADMIN, "manual", self._since(e.now))

    def _fence_hold_AdminSwitchover(self, e: AdminSwitchover) -> list[Action]:
        self._check_target(e.to, need_healthy=True)
        return self._promote(e.now, e.to, Cause.ADMIN, "manual", self._since(e.now))

    def _fence_hold_AdminResume(self, e: AdminResume) -> list[Action]:
        self._promotion = None
        return self._resume(Cause.ADMIN, f"operator resumed {self.active}")

    def _fence_hold_BackendDown(self, e: BackendDown) -> list[Action]:
        self.healthy[e.backend] = False
        return []

    def _fence_hold_BackendUp(self, e: BackendUp) -> list[Action]:
        self.healthy[e.backend] = True
        return []

    def _fence_hold_TimerFired(self, e: TimerFired) -> list[Action]:
        if e.timer is not Timer.HOLD:
            return []
        return self._refuse_all("waiting for an operator to confirm fencing")

    # -- DEGRADED -------------------------------------------------------------------------

    def _degraded_BackendUp(self, e: BackendUp) -> list[Action]:
        self.healthy[e.backend] = True
        if e.backend == self.active:
            return self._resume(Cause.RECOVERED, f"{self.active} passes its probes again")
        if self.cause is Cause.SPARE_UNHEALTHY and self.settings.automatic:
            return self._fail_over(e.now)
        return []

    def _degraded_BackendDown(self, e: BackendDown) -> list[Action]:
        self.healthy[e.backend] = False
        return []

    def _degraded_TimerFired(self, e: TimerFired) -> list[Action]:
        if e.timer is not Timer.HOLD_DOWN or self.cause is not Cause.HOLD_DOWN:
            return []
        return self._fail_over(e.now)

    def _degraded_AdminFailover(self, e: AdminFailover) -> list[Action]:
        self._check_target(e.to, need_healthy=False)
        return self._promote(e.now, e.to, Cause.ADMIN, "manual", e.now)

    def _degraded_AdminSwitchover(self, e: AdminSwitchover) -> list[Action]:
        # The active is down: there is nothing to sync from, so this is a failover.
        self._check_target(e.to, need_healthy=True)
        return self._promote(e.now, e.to, Cause.ADMIN, "manual", e.now)

    def _degraded_AdminResume(self, e: AdminResume) -> list[Action]:
        return self._resume(Cause.ADMIN, f"operator resumed {self.active}")

    # -- shared moves -----------------------------------------------------------------------

    def _fail_over(self, now: float) -> list[Action]:
        """The active is down and automatic failover is on: promote, or say why not."""
        s = self.settings
        out: list[Action] = []
        if self._last_attempt is not None and now < self._last_attempt + s.hold_down:
            left = self._last_attempt + s.hold_down - now
            msg = (f"active {self.active} DOWN ({self._down_cause}); no automatic failover within "
                   f"hold_down ({s.hold_down:g}s) of the last one: {left:.0f}s left")
            if self.state is not State.DEGRADED or self.cause is not Cause.HOLD_DOWN:
                out.append(self._move(State.DEGRADED, Cause.HOLD_DOWN, msg))
            return [*out, SetTimer(Timer.HOLD_DOWN, left), *self._refuse_new(msg), RaiseAlarm(Cause.HOLD_DOWN, msg)]
        spare = next((b for b in s.backends if b != self.active and self.healthy[b]), None)
        if spare is None:
            msg = (f"active {self.active} DOWN ({self._down_cause}) and no spare passes its probes; "
                   f"not failing over")
            if self.state is not State.DEGRADED or self.cause is not Cause.SPARE_UNHEALTHY:
                out.append(self._move(State.DEGRADED, Cause.SPARE_UNHEALTHY, msg))
            return [*out, *self._refuse_new(msg), RaiseAlarm(Cause.SPARE_UNHEALTHY, msg)]
        return self._promote(now, spare, self._down_cause, "failover", self._since(now))

    def _promote(self, now: float, new: str, cause: Cause, trigger: Trigger, since: float) -> list[Action]:
        old = self.active
        self._promotion = _Promotion(old, new, cause, trigger, since)
        self.epoch += 1
        out: list[Action] = [
            self._move(State.PROMOTING, cause,
                       f"promoting {new} in place of {old} ({trigger}, {cause}, epoch {self.epoch})"),
            PersistState(old, self.epoch),
            CancelTimer(Timer.HOLD_DOWN),
            HoldTraffic(),
            SetTimer(Timer.HOLD, self.settings.hold_max_time),
        ]
        if trigger != "switchover":
            out.append(AbortInflight(old))
        out.append(RunPromotion(old, new, self.epoch, cause, trigger))
        return out

    def _resume(self, cause: Cause, msg: str) -> list[Action]:
        self._down_since = None
        return [
            self._move(State.ACTIVE, cause, msg),
            CancelTimer(Timer.HOLD),
            CancelTimer(Timer.HOLD_DOWN),
            RouteTo(self.active, self.epoch),
            ReleaseHeld(self.active, self.epoch),
        ]

    def _refuse_new(self, reason: str) -> list[Action]:
        return [RefuseTraffic(503, self.settings.retry_after, reason)]

    def _refuse_all(self, reason: str) -> list[Action]:
        return [RefuseHeld(503, self.settings.retry_after, reason), *self._refuse_new(reason)]

    def _move(self, new: State, cause: Cause, message: str) -> StateChanged:
        old, self.state, self.cause = self.state, new, (None if new is State.ACTIVE else cause)
        return StateChanged(old, new, self.active, self.epoch, cause, message)

    def _check_target(self, to: str, *, need_healthy: bool) -> None:
        if to == self.active:
            raise Refused(f"{to} is already the active backend")
        if need_healthy and not self.healthy[to]:
            raise Refused(f"{to} fails its health checks; a switchover needs a healthy target")

    def _since(self, now: float) -> float:
        return self._down_since if self._down_since is not None else now

    def _need_promotion(self) -> _Promotion:
        if self._promotion is None:  # pragma: no cover - PROMOTING always has one
            raise AssertionError("PROMOTING without a promotion")
        return self._promotion


def edges() -> Sequence[tuple[State, str, State, str]]:
    """(source, event name, target, guard) for every entry of :data:`TRANSITIONS`."""
    return [
        (src, ev.__name__, edge.target, edge.when)
        for src, by_event in TRANSITIONS.items()
        for ev, targets in by_event.items()
        for edge in targets
    ]
