"""What each event does in each state: pure functions from what the machine is
(:class:`Current`) and one event to a :class:`Move` — the target state, the machine's new
:class:`Facts` and the actions. They change nothing: :meth:`.machine.FailoverMachine.handle`
commits a Move only when :data:`.machine.TRANSITIONS` allows its target, and a handler
that refuses (:class:`~.events.Refused`) has nothing to undo.

Split from :mod:`.machine` so that module holds the rules, the table and the commit, and
this one the work; :data:`HANDLERS` has one entry per table entry (checked by the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hotspare.causes import Cause

from .events import (
    AbortInflight,
    Action,
    AdminConfirmFenced,
    AdminDrain,
    AdminFailover,
    AdminReady,
    AdminResume,
    AdminSwitchover,
    BackendDown,
    BackendUp,
    CancelTimer,
    HoldTraffic,
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

__all__ = ["HANDLERS", "Current", "Facts", "FailoverSettings", "Move", "Promotion"]

A, P, F, D = State.ACTIVE, State.PROMOTING, State.FENCE_HOLD, State.DEGRADED


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    backends: tuple[str, ...]  # config order
    automatic: bool = True
    hold_down: float = 300.0
    hold_max_time: float = 10.0
    retry_after: int = 5


@dataclass(frozen=True, slots=True)
class Promotion:
    old: str
    new: str
    cause: Cause
    trigger: Trigger
    since: float  # first sign of the trouble (detection-to-switch seconds)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the machine knows besides its state. Replaced whole, never changed in
    place (``healthy`` is a fresh dict at every change)."""

    active: str
    epoch: int
    healthy: Mapping[str, bool]  # by probes; backends start healthy
    maintenance: frozenset[str] = frozenset()  # drained by an operator: no target until ready
    cause: Cause | None = None  # why the service is in its state (None when ACTIVE)
    promotion: Promotion | None = None
    last_attempt: float | None = None  # of a promotion, for hold_down
    down_cause: Cause = Cause.PROBE_FAILED  # why the active went down
    down_since: float | None = None


@dataclass(frozen=True, slots=True)
class Current:
    settings: FailoverSettings
    state: State
    facts: Facts


@dataclass(frozen=True, slots=True)
class Move:
    target: State
    facts: Facts
    actions: list[Action]


# -- building blocks -------------------------------------------------------------------------


def _stay(c: Current, facts: Facts | None = None, actions: list[Action] | None = None) -> Move:
    return Move(c.state, facts or c.facts, actions or [])


def _health(c: Current, backend: str, up: bool) -> Facts:
    return replace(c.facts, healthy={**c.facts.healthy, backend: up})


def _change(c: Current, f: Facts, new: State, cause: Cause, message: str) -> tuple[Facts, StateChanged]:
    """``f`` with the cause of ``new``, and the action that says so (for logs, metrics)."""
    f = replace(f, cause=None if new is A else cause)
    return f, StateChanged(c.state, new, f.active, f.epoch, cause, message)


def _refuse_new(c: Current, reason: str) -> list[Action]:
    return [RefuseTraffic(503, c.settings.retry_after, reason)]


def _refuse_all(c: Current, reason: str) -> list[Action]:
    return [RefuseHeld(503, c.settings.retry_after, reason), *_refuse_new(c, reason)]


def _check_target(c: Current, to: str, *, need_healthy: bool) -> None:
    """A forced failover (``need_healthy=False``) trusts the operator's word, as before
    maintenance was a state: only the pipeline's readiness wait checks its target."""
    if to == c.facts.active:
        raise Refused(f"{to} is already the active backend")
    if need_healthy and to in c.facts.maintenance:
        raise Refused(f"{to} is in maintenance (drained by an operator); make it ready first")
    if need_healthy and not c.facts.healthy[to]:
        raise Refused(f"{to} fails its health checks; a switchover needs a healthy target")


def _since(f: Facts, now: float) -> float:
    return f.down_since if f.down_since is not None else now


def _need_promotion(f: Facts) -> Promotion:
    if f.promotion is None:  # pragma: no cover - PROMOTING and FENCE_HOLD always have one
        raise AssertionError("PROMOTING without a promotion")
    return f.promotion


# -- shared moves ------------------------------------------------------------------------------


def _fail_over(c: Current, f: Facts, now: float) -> Move:
    """The active is down and automatic failover is on: promote, or say why not."""
    s = c.settings
    if f.last_attempt is not None and now < f.last_attempt + s.hold_down:
        left = f.last_attempt + s.hold_down - now
        msg = (f"active {f.active} DOWN ({f.down_cause}); no automatic failover within "
               f"hold_down ({s.hold_down:g}s) of the last one: {left:.0f}s left")
        out: list[Action] = []
        if c.state is not D or f.cause is not Cause.HOLD_DOWN:
            f, changed = _change(c, f, D, Cause.HOLD_DOWN, msg)
            out.append(changed)
        return Move(D, f, [*out, SetTimer(Timer.HOLD_DOWN, left), *_refuse_new(c, msg),
                           RaiseAlarm(Cause.HOLD_DOWN, msg)])
    spares = [b for b in s.backends if b != f.active and f.healthy[b]]
    spare = next((b for b in spares if b not in f.maintenance), None)
    if spare is not None:
        return _promote(c, f, spare, f.down_cause, "failover", _since(f, now))
    drained = [b for b in spares if b in f.maintenance]
    note = f" outside maintenance (drained: {', '.join(drained)})" if drained else ""
    msg = f"active {f.active} DOWN ({f.down_cause}) and no spare passes its probes{note}; not failing over"
    out = []
    if c.state is not D or f.cause is not Cause.SPARE_UNHEALTHY:
        f, changed = _change(c, f, D, Cause.SPARE_UNHEALTHY, msg)
        out.append(changed)
    return Move(D, f, [*out, *_refuse_new(c, msg), RaiseAlarm(Cause.SPARE_UNHEALTHY, msg)])


def _promote(c: Current, f: Facts, new: str, cause: Cause, trigger: Trigger, since: float) -> Move:
    old = f.active
    f = replace(f, promotion=Promotion(old, new, cause, trigger, since), epoch=f.epoch + 1)
    f, changed = _change(c, f, P, cause, f"promoting {new} in place of {old} ({trigger}, {cause}, epoch {f.epoch})")
    out: list[Action] = [
        changed,
        PersistState(old, f.epoch),
        CancelTimer(Timer.HOLD_DOWN),
        HoldTraffic(),
        SetTimer(Timer.HOLD, c.settings.hold_max_time),
    ]
    if trigger != "switchover":
        out.append(AbortInflight(old))
    out.append(RunPromotion(old, new, f.epoch, cause, trigger))
    return Move(P, f, out)


def _resume(c: Current, f: Facts, cause: Cause, msg: str) -> Move:
    f, changed = _change(c, replace(f, down_since=None), A, cause, msg)
    return Move(A, f, [changed, CancelTimer(Timer.HOLD), CancelTimer(Timer.HOLD_DOWN),
                       RouteTo(f.active, f.epoch), ReleaseHeld(f.active, f.epoch)])


# -- in every state ---------------------------------------------------------------------------


def _mark_down(c: Current, e: BackendDown) -> Move:
    return _stay(c, _health(c, e.backend, False))


def _mark_up(c: Current, e: BackendUp) -> Move:
    return _stay(c, _health(c, e.backend, True))


def _ignore(c: Current, e: object) -> Move:
    return _stay(c)


def _drain(c: Current, e: AdminDrain) -> Move:
    if e.backend == c.facts.active:
        raise Refused(f"{e.backend} is the active backend; switch over to another backend first")
    return _stay(c, replace(c.facts, maintenance=c.facts.maintenance | {e.backend}))


def _ready(c: Current, e: AdminReady) -> Move:
    return _stay(c, replace(c.facts, maintenance=c.facts.maintenance - {e.backend}))


# -- ACTIVE -------------------------------------------------------------------------------------


def _active_down(c: Current, e: BackendDown) -> Move:
    f = _health(c, e.backend, False)
    if e.backend != f.active:
        return _stay(c, f, [RaiseAlarm(Cause.SPARE_UNHEALTHY, f"spare {e.backend} DOWN ({e.detail or e.cause}): "
                                       f"no failover possible while it stays down")])
    f = replace(f, down_cause=e.cause, down_since=e.since if e.since is not None else e.now)
    if not c.settings.automatic:
        return _stay(c, f, [RaiseAlarm(Cause.AUTOMATIC_OFF, f"active {f.active} DOWN ({e.detail or e.cause}); "
                                       "automatic failover is off: an operator must act")])
    return _fail_over(c, f, e.now)


def _active_switchover(c: Current, e: AdminSwitchover) -> Move:
    _check_target(c, e.to, need_healthy=True)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "switchover", e.now)


def _active_failover(c: Current, e: AdminFailover) -> Move:
    _check_target(c, e.to, need_healthy=False)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "manual", e.now)


# -- PROMOTING ----------------------------------------------------------------------------------


def _promoting_succeeded(c: Current, e: PromotionSucceeded) -> Move:
    p, old, epoch = _need_promotion(c.facts), c.facts.active, c.facts.epoch
    f = replace(c.facts, promotion=None, last_attempt=e.now, down_since=None, active=p.new)
    f, changed = _change(c, f, A, Cause.PROMOTED, f"{p.new} is the active (epoch {epoch}), was {old}")
    return Move(A, f, [
        PersistState(p.new, epoch),
        changed,
        CancelTimer(Timer.HOLD),
        RouteTo(p.new, epoch),
        ReleaseHeld(p.new, epoch),
        RecordFailover(old, p.new, p.cause, max(0.0, e.now - p.since)),
    ])


def _promoting_failed(c: Current, e: PromotionFailed) -> Move:
    p = _need_promotion(c.facts)
    f = replace(c.facts, promotion=None, last_attempt=e.now)
    if f.healthy[f.active]:
        msg = f"promotion of {p.new} failed ({e.reason}); {f.active} passes its probes and stays active"
        f, changed = _change(c, f, A, Cause.PROMOTION_FAILED, msg)
        return Move(A, f, [changed, CancelTimer(Timer.HOLD), RouteTo(f.active, f.epoch),
                           ReleaseHeld(f.active, f.epoch), RaiseAlarm(Cause.PROMOTION_FAILED, msg)])
    msg = f"promotion of {p.new} failed ({e.reason}); {f.active} stays active but DOWN"
    f, changed = _change(c, f, D, Cause.PROMOTION_FAILED, msg)
    return Move(D, f, [changed, CancelTimer(Timer.HOLD), *_refuse_all(c, f"promotion of {p.new} failed"),
                       RaiseAlarm(Cause.PROMOTION_FAILED, msg + ": an operator must act")])


def _promoting_on_hold(c: Current, e: PromotionOnHold) -> Move:
    p = _need_promotion(c.facts)  # kept: AdminConfirmFenced resumes it
    msg = (f"fencing {p.old} failed ({e.reason}); traffic held until an operator confirms "
           f"it is fenced (failover to {p.new}) or resumes {p.old}")
    f, changed = _change(c, replace(c.facts, last_attempt=e.now), F, Cause.FENCE_FAILED, msg)
    return Move(F, f, [changed, RaiseAlarm(Cause.FENCE_FAILED, msg)])


def _promoting_timer(c: Current, e: TimerFired) -> Move:
    if e.timer is not Timer.HOLD:
        return _stay(c)
    p = _need_promotion(c.facts)
    msg = f"promotion of {p.new} still running after {c.settings.hold_max_time:g}s"
    return _stay(c, actions=[*_refuse_all(c, msg), RaiseAlarm(Cause.HOLD_TIMEOUT, msg + ": refusing held requests")])


# -- FENCE_HOLD ---------------------------------------------------------------------------------


def _fence_hold_confirmed(c: Current, e: AdminConfirmFenced) -> Move:
    p = _need_promotion(c.facts)
    f, changed = _change(c, c.facts, P, Cause.ADMIN, f"operator confirmed {p.old} is fenced; "
                         f"resuming the promotion of {p.new} (epoch {c.facts.epoch})")
    return Move(P, f, [changed, HoldTraffic(), SetTimer(Timer.HOLD, c.settings.hold_max_time),
                       RunPromotion(p.old, p.new, f.epoch, p.cause, p.trigger, resume=True)])


def _fence_hold_failover(c: Current, e: AdminFailover) -> Move:
    _check_target(c, e.to, need_healthy=False)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "manual", _since(c.facts, e.now))


def _fence_hold_switchover(c: Current, e: AdminSwitchover) -> Move:
    _check_target(c, e.to, need_healthy=True)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "manual", _since(c.facts, e.now))


def _fence_hold_resume(c: Current, e: AdminResume) -> Move:
    return _resume(c, replace(c.facts, promotion=None), Cause.ADMIN, f"operator resumed {c.facts.active}")


def _fence_hold_timer(c: Current, e: TimerFired) -> Move:
    if e.timer is not Timer.HOLD:
        return _stay(c)
    return _stay(c, actions=_refuse_all(c, "waiting for an operator to confirm fencing"))


# -- DEGRADED -----------------------------------------------------------------------------------


def _spare_unblocked(c: Current, f: Facts, backend: str, now: float) -> Move:
    """A spare may have become a target (probes pass again, or maintenance is over): fail
    over to it if the service is degraded for want of one."""
    usable = f.healthy[backend] and backend not in f.maintenance
    if usable and f.cause is Cause.SPARE_UNHEALTHY and c.settings.automatic:
        return _fail_over(c, f, now)
    return _stay(c, f)


def _degraded_up(c: Current, e: BackendUp) -> Move:
    f = _health(c, e.backend, True)
    if e.backend == f.active:
        return _resume(c, f, Cause.RECOVERED, f"{f.active} passes its probes again")
    return _spare_unblocked(c, f, e.backend, e.now)


def _degraded_ready(c: Current, e: AdminReady) -> Move:
    if e.backend not in c.facts.maintenance:
        return _stay(c)
    return _spare_unblocked(c, _ready(c, e).facts, e.backend, e.now)


def _degraded_timer(c: Current, e: TimerFired) -> Move:
    if e.timer is not Timer.HOLD_DOWN or c.facts.cause is not Cause.HOLD_DOWN:
        return _stay(c)
    return _fail_over(c, c.facts, e.now)


def _degraded_failover(c: Current, e: AdminFailover) -> Move:
    _check_target(c, e.to, need_healthy=False)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "manual", e.now)


def _degraded_switchover(c: Current, e: AdminSwitchover) -> Move:
    # The active is down: there is nothing to sync from, so this is a failover.
    _check_target(c, e.to, need_healthy=True)
    return _promote(c, c.facts, e.to, Cause.ADMIN, "manual", e.now)


def _degraded_resume(c: Current, e: AdminResume) -> Move:
    return _resume(c, c.facts, Cause.ADMIN, f"operator resumed {c.facts.active}")


Handler = Callable[[Current, Any], Move]

HANDLERS: Mapping[tuple[State, type], Handler] = {
    (A, BackendDown): _active_down,
    (A, BackendUp): _mark_up,
    (A, AdminSwitchover): _active_switchover,
    (A, AdminFailover): _active_failover,
    (A, AdminDrain): _drain,
    (A, AdminReady): _ready,
    (A, TimerFired): _ignore,
    (P, PromotionSucceeded): _promoting_succeeded,
    (P, PromotionFailed): _promoting_failed,
    (P, PromotionOnHold): _promoting_on_hold,
    (P, BackendDown): _mark_down,
    (P, BackendUp): _mark_up,
    (P, AdminDrain): _drain,
    (P, AdminReady): _ready,
    (P, TimerFired): _promoting_timer,
    (F, AdminConfirmFenced): _fence_hold_confirmed,
    (F, AdminFailover): _fence_hold_failover,
    (F, AdminSwitchover): _fence_hold_switchover,
    (F, AdminResume): _fence_hold_resume,
    (F, BackendDown): _mark_down,
    (F, BackendUp): _mark_up,
    (F, AdminDrain): _drain,
    (F, AdminReady): _ready,
    (F, TimerFired): _fence_hold_timer,
    (D, BackendUp): _degraded_up,
    (D, BackendDown): _mark_down,
    (D, AdminDrain): _drain,
    (D, AdminReady): _degraded_ready,
    (D, TimerFired): _degraded_timer,
    (D, AdminFailover): _degraded_failover,
    (D, AdminSwitchover): _degraded_switchover,
    (D, AdminResume): _degraded_resume,
}
