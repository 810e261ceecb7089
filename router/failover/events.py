"""What goes into and comes out of the failover state machine (:mod:`.machine`):
its states, its events (each carrying ``now``) and its actions (performed, in order, by
the controller's one dispatcher). Plain frozen data, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from hotspare.causes import Cause

__all__ = [
    "AbortInflight",
    "Action",
    "AdminConfirmFenced",
    "AdminDrain",
    "AdminFailover",
    "AdminReady",
    "AdminResume",
    "AdminSwitchover",
    "BackendDown",
    "BackendUp",
    "CancelTimer",
    "Event",
    "FailoverError",
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


class State(Enum):
    ACTIVE = "active"  # traffic goes to the active backend
    PROMOTING = "promoting"  # the pipeline runs; new requests are held
    FENCE_HOLD = "fence_hold"  # fencing failed, policy `hold`: waiting for an operator
    DEGRADED = "degraded"  # no usable backend: 503 + Retry-After, alarm


class Timer(Enum):
    HOLD = "hold"  # held requests have waited hold.max_time
    HOLD_DOWN = "hold_down"  # the hold-down after the last promotion is over


# The promotion pipeline's own words: failover = automatic, manual = forced by an operator.
Trigger = Literal["failover", "switchover", "manual"]


class FailoverError(Exception):
    """An event the machine cannot take. The machine is unchanged."""


class IllegalEvent(FailoverError):
    """The event is not allowed in the current state (a bug in the caller)."""


class Refused(FailoverError):
    """The event is allowed but its request cannot be honoured (bad or unhealthy target)."""


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendDown:
    now: float
    backend: str
    cause: Cause  # PROBE_FAILED or TRAFFIC_ERRORS, from the detector
    since: float | None = None  # first sign of the trouble (for detection-to-switch)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendUp:
    now: float
    backend: str


@dataclass(frozen=True, slots=True)
class PromotionSucceeded:
    now: float


@dataclass(frozen=True, slots=True)
class PromotionFailed:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class PromotionOnHold:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class AdminSwitchover:
    """Planned: the target must be healthy; the pipeline may do a final sync first."""

    now: float
    to: str


@dataclass(frozen=True, slots=True)
class AdminFailover:
    """Forced by an operator (the active is known dead, or fencing was confirmed by
    hand): the target's health is not checked here, the pipeline's readiness wait is."""

    now: float
    to: str


@dataclass(frozen=True, slots=True)
class AdminConfirmFenced:
    """Operator, in FENCE_HOLD: the old active is fenced; resume the held promotion."""

    now: float


@dataclass(frozen=True, slots=True)
class AdminResume:
    """Operator: route to the current active again (leave DEGRADED or FENCE_HOLD)."""

    now: float


@dataclass(frozen=True, slots=True)
class AdminDrain:
    """Operator: put a backend other than the active in maintenance. It is no failover or
    switchover target, whatever its probes say, until :class:`AdminReady` (HAProxy's
    MAINT: an admin state of its own, not a fake DOWN that the next good probe undoes)."""

    now: float
    backend: str


@dataclass(frozen=True, slots=True)
class AdminReady:
    """Operator: maintenance is over; the backend is a target again while its probes pass."""

    now: float
    backend: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    now: float
    timer: Timer


Event = (
    BackendDown
    | BackendUp
    | PromotionSucceeded
    | PromotionFailed
    | PromotionOnHold
    | AdminSwitchover
    | AdminFailover
    | AdminConfirmFenced
    | AdminResume
    | AdminDrain
    | AdminReady
    | TimerFired
)


# -- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChanged:
    """For logs and metrics: one per change of state."""

    old: State
    new: State
    active: str
    epoch: int
    cause: Cause
    message: str


@dataclass(frozen=True, slots=True)
class PersistState:
    active: str
    epoch: int


@dataclass(frozen=True, slots=True)
class RunPromotion:
    old: str
    new: str
    epoch: int  # the epoch the new active will have: the fencing token (already persisted)
    cause: Cause
    trigger: Trigger
    resume: bool = False  # continue the run that stopped in FENCE_HOLD, after its fence step


@dataclass(frozen=True, slots=True)
class RouteTo:
    backend: str
    epoch: int


@dataclass(frozen=True, slots=True)
class HoldTraffic:
    """New requests go to the hold queue instead of a backend."""


@dataclass(frozen=True, slots=True)
class AbortInflight:
    """The backend is declared dead: requests waiting on it stop waiting now (replayable
    ones join the hold queue, the others get their 502 at once)."""

    backend: str


@dataclass(frozen=True, slots=True)
class ReleaseHeld:
    backend: str
    epoch: int


@dataclass(frozen=True, slots=True)
class RefuseHeld:
    status: int
    retry_after: int
    reason: str


@dataclass(frozen=True, slots=True)
class RefuseTraffic:
    """New requests are answered ``status`` with Retry-After until the next RouteTo or
    HoldTraffic."""

    status: int
    retry_after: int
    reason: str


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    cause: Cause
    message: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class RecordFailover:
    """A change of active completed (failovers_total, detection-to-switch seconds)."""

    old: str
    new: str
    cause: Cause
    seconds: float


Action = (
    StateChanged
    | PersistState
    | RunPromotion
    | RouteTo
    | HoldTraffic
    | AbortInflight
    | ReleaseHeld
    | RefuseHeld
    | RefuseTraffic
    | RaiseAlarm
    | SetTimer
    | CancelTimer
    | RecordFailover
)
