"""Where a service's decision is recorded, and who may make it: the seams between the
failover controller and whatever stores its state (the local state file, or a cluster's
shared store, router/cluster/).

Rules:

1. :class:`StateStore` is the one thing the controller writes through, FIRST, before it
   performs an event's actions (controller rule 2). It is told the whole
   :class:`Decision` an event leaves the service at (active, epoch, traffic mode, machine
   state) and whether the machine asked for a :class:`~.events.PersistState`; it raises
   :class:`~router.errors.StateFileError` (or a subclass) when the decision could not be
   recorded, and then nothing is performed.
2. :class:`FileStore` is the single router's store: it writes the state file exactly as
   before (only when a ``PersistState`` was asked, same bytes), and never suspends (no
   ``await`` inside), so the controller's synchronous ``apply`` stays possible with it.
3. :class:`Gate` says which automatic events (health transitions, timers) the machine may
   take now; a router that is not the decider, or whose peers do not agree, takes none.
4. :class:`PromotionHooks` are told, and may refuse, each stage of a promotion run:
   its start, each step before it runs, its end. A refusal (an exception) before a step
   stops the run there (promote/pipeline.py rule 8).
5. :meth:`Decision.after` is pure: the decision a list of actions leaves the service at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from router.errors import StateFileError

from .events import (
    Action,
    Event,
    HoldTraffic,
    PersistState,
    RefuseTraffic,
    RouteTo,
    RunPromotion,
    StateChanged,
)
from .hold import Refusal
from .runs import PromotionOutcome
from .state import StateFile

__all__ = [
    "Decision",
    "FileStore",
    "Gate",
    "PromotionHooks",
    "StateStore",
    "StoreDeposed",
    "StoreError",
]


class StoreError(StateFileError):
    """The shared store could not be written (unreachable, refused): nothing changed."""


class StoreDeposed(StoreError):
    """Another router wrote first, or this one is no longer the decider: nothing changed."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a service is at after an event: the record every router follows."""

    active: str  # the persisted active (during a promotion: still the old one)
    epoch: int  # the persisted epoch (during a promotion: already the new one)
    mode: str  # route | hold | refuse
    state: str  # the machine's state value
    refusal: Refusal | None = None  # mode refuse: what requests are answered
    persist: bool = False  # the machine asked for a PersistState
    drained: tuple[str, ...] = ()  # backends an operator drained (no target until ready), sorted

    def after(self, actions: Sequence[Action]) -> Decision:
        """Rule 5: this decision moved by ``actions`` (in order); ``persist`` says whether
        one of them was a PersistState."""
        d = replace(self, persist=False)
        for a in actions:
            if isinstance(a, PersistState):
                d = replace(d, active=a.active, epoch=a.epoch, persist=True)
            elif isinstance(a, RouteTo):
                d = replace(d, active=a.backend, epoch=a.epoch, mode="route", refusal=None)
            elif isinstance(a, HoldTraffic):
                d = replace(d, mode="hold", refusal=None)
            elif isinstance(a, RefuseTraffic):
                d = replace(d, mode="refuse", refusal=Refusal(a.status, a.retry_after, a.reason))
            elif isinstance(a, StateChanged):
                d = replace(d, state=a.new.value)
        return d


class StateStore(Protocol):
    async def save(self, service: str, decision: Decision) -> None:
        """Record ``decision`` durably before returning; :class:`StateFileError` if not."""


class Gate(Protocol):
    def admits(self, service: str, event: Event) -> bool:
        """May the machine take this automatic event now?"""


class PromotionHooks(Protocol):
    async def started(self, service: str, run: RunPromotion) -> None:
        """Before the run; raising stops it (counted as a failed promotion)."""

    async def before_step(self, service: str, run: RunPromotion, run_id: str, index: int) -> None:
        """Before step ``index`` runs; raising stops the run there."""

    async def ended(self, service: str, run: RunPromotion, outcome: PromotionOutcome) -> None:
        """After the run (never raises on purpose)."""


class FileStore:
    """Rule 2: the state file, as a :class:`StateStore`."""

    synchronous = True  # save() never suspends

    def __init__(self, state_file: StateFile) -> None:
        self.state_file = state_file

    async def save(self, service: str, decision: Decision) -> None:
        if decision.persist:
            self.state_file.save(service, decision.active, decision.epoch)

