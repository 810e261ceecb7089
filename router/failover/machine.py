"""The failover state machine of one service: events in, actions out, no I/O.

(The states, events and actions are plain data in :mod:`.events`, re-exported here; what
each event does in each state is in :mod:`.handlers`; this module holds the rules, the
transition table and the commit.)

Rules:

1. No asyncio, no aiohttp, no clock: every event carries ``now``; timers are actions
   (:class:`SetTimer`) whose expiry comes back as an event (:class:`TimerFired`).
2. The table *is* the transition: :data:`TRANSITIONS` maps (state, event type) to the
   states that event may lead to. A handler only proposes a :class:`~.handlers.Move`
   (target state, new facts, actions) and changes nothing; :meth:`FailoverMachine.handle`
   commits it only if the table allows its target. An event not in the table for the
   current state, a proposal the table does not allow (:class:`IllegalEvent`) and a
   request the machine turns down (:class:`Refused`: a switchover to an unhealthy
   backend) all raise and leave every field as it was. The docs' diagram is drawn from
   the same table (:mod:`.diagram`).
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
6. Maintenance is an admin state of its own (:class:`AdminDrain`, :class:`AdminReady`),
   not a fake DOWN: a drained backend is no failover or switchover target whatever its
   probes say, until it is made ready. The active cannot be drained.
7. No automatic failback: after a→b, ``a`` is the spare and nothing automatic makes it
   active again except ``b`` failing in turn, and not within ``hold_down`` seconds of
   the last promotion attempt (successful or not): no flapping.
8. A failed promotion goes back to the old active if it still passes its probes (a
   planned switchover that failed, a false alarm), else leaves the service DEGRADED
   (503s, alarm) until the old active passes its probes again or an operator acts; it is
   not retried automatically. FENCE_HOLD resumes the same run (same epoch) when an
   operator confirms the old active is fenced.
9. While PROMOTING, new requests are held (bounded by the hold queue) and, when the old
   active was declared dead, requests in flight to it are aborted at once (replayed or
   answered 502 by the proxy). A planned switchover lets them finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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
from .handlers import HANDLERS, Current, Facts, FailoverSettings

__all__ = [
    "TRANSITIONS",
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
    "Edge",
    "Event",
    "Facts",
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
        AdminDrain: (Edge(A, "maintenance bookkeeping: a drained spare is no target"),),
        AdminReady: (Edge(A, "maintenance bookkeeping"),),
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
        AdminDrain: (Edge(P, "maintenance bookkeeping"),),
        AdminReady: (Edge(P, "maintenance bookkeeping"),),
        TimerFired: (Edge(P, "hold.max_time: refuse held requests"),),
    },
    F: {
        AdminConfirmFenced: (Edge(P, "operator confirms the old active is fenced - resume the run"),),
        AdminFailover: (Edge(P, "operator starts a new promotion"),),
        AdminSwitchover: (Edge(P, "operator starts a new promotion"),),
        AdminResume: (Edge(A, "operator keeps the old active"),),
        BackendDown: (Edge(F, "health bookkeeping"),),
        BackendUp: (Edge(F, "health bookkeeping"),),
        AdminDrain: (Edge(F, "maintenance bookkeeping"),),
        AdminReady: (Edge(F, "maintenance bookkeeping"),),
        TimerFired: (Edge(F, "hold.max_time: refuse held requests"),),
    },
    D: {
        BackendUp: (
            Edge(A, "active passes its probes again"),
            Edge(P, "a spare is healthy again (was: no healthy spare)"),
            Edge(D, "health bookkeeping"),
        ),
        BackendDown: (Edge(D, "health bookkeeping"),),
        AdminDrain: (Edge(D, "maintenance bookkeeping"),),
        AdminReady: (
            Edge(P, "a drained spare is ready again (was: no healthy spare)"),
            Edge(D, "maintenance bookkeeping"),
        ),
        TimerFired: (Edge(P, "hold-down over, a spare healthy"), Edge(D, "stale timer / still no spare")),
        AdminFailover: (Edge(P, "operator failover"),),
        AdminSwitchover: (Edge(P, "operator switchover to a healthy backend"),),
        AdminResume: (Edge(A, "operator resumes the active"),),
    },
}
del A, P, F, D


# -- snapshot and machine -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailoverSnapshot:
    state: State
    active: str
    epoch: int
    target: str | None  # the backend being promoted
    cause: Cause | None  # why the service is in this state
    healthy: tuple[tuple[str, bool], ...]
    hold_down_until: float | None
    maintenance: tuple[str, ...] = ()  # drained backends, in config order


class FailoverMachine:
    """Its whole state is ``settings`` (fixed), ``state`` and ``facts``; both change
    together, in :meth:`handle`, and only there."""

    __slots__ = ("facts", "settings", "state")

    def __init__(self, settings: FailoverSettings, active: str, epoch: int, drained: Iterable[str] = ()) -> None:
        if active not in settings.backends:
            raise ValueError(f"active backend {active!r} is not one of {list(settings.backends)}")
        if epoch < 0:
            raise ValueError(f"epoch: expected an integer >= 0, got {epoch}")
        self.settings = settings
        self.state = State.ACTIVE
        # drained: backends an operator drained, carried over when another router of a
        # pair starts deciding (router/failover/roles.py); unknown names are dropped.
        maintenance = frozenset(b for b in drained if b in settings.backends and b != active)
        self.facts = Facts(active, epoch, dict.fromkeys(settings.backends, True), maintenance)

    @property
    def active(self) -> str:
        return self.facts.active

    @property
    def epoch(self) -> int:
        return self.facts.epoch

    @property
    def cause(self) -> Cause | None:
        return self.facts.cause

    @property
    def healthy(self) -> Mapping[str, bool]:
        """The machine's own record of the health events it was fed (BackendDown/Up): its
        input, so it decides without I/O. The one health store is the detector's."""
        return self.facts.healthy

    @property
    def maintenance(self) -> frozenset[str]:
        return self.facts.maintenance

    def start(self) -> list[Action]:
        return [RouteTo(self.active, self.epoch)]

    def snapshot(self) -> FailoverSnapshot:
        f = self.facts
        return FailoverSnapshot(
            self.state,
            f.active,
            f.epoch,
            f.promotion.new if f.promotion else None,
            f.cause,
            tuple(f.healthy.items()),
            None if f.last_attempt is None else f.last_attempt + self.settings.hold_down,
            tuple(b for b in self.settings.backends if b in f.maintenance),
        )

    def handle(self, event: Event) -> list[Action]:
        """Take one event; return the actions to perform, in order. Raises
        :class:`FailoverError` and changes nothing if the event cannot be taken."""
        edges = TRANSITIONS[self.state].get(type(event))
        if edges is None:
            raise IllegalEvent(f"{type(event).__name__} is not allowed in state {self.state.value}")
        name = getattr(event, "backend", None) or getattr(event, "to", None)
        if name is not None and name not in self.settings.backends:
            raise Refused(f"unknown backend {name!r}; expected one of {list(self.settings.backends)}")
        move = HANDLERS[self.state, type(event)](Current(self.settings, self.state, self.facts), event)
        if move.target not in {edge.target for edge in edges}:  # a handler/table mismatch: a bug
            raise IllegalEvent(f"{self.state.value} --{type(event).__name__}--> {move.target.value} "
                               "is not in TRANSITIONS")
        self.state, self.facts = move.target, move.facts
        return move.actions


def edges() -> Sequence[tuple[State, str, State, str]]:
    """(source, event name, target, guard) for every entry of :data:`TRANSITIONS`."""
    return [
        (src, ev.__name__, edge.target, edge.when)
        for src, by_event in TRANSITIONS.items()
        for ev, targets in by_event.items()
        for edge in targets
    ]
