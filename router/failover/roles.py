"""Decider or follower: how a service's controller changes role (controller rule 8).

Rules:

1. :meth:`Roles.lead` restarts the machine at a given active and epoch (the shared
   record) and writes its first decision FIRST, like any event's; if that write fails
   nothing changes and the controller stays a follower.
2. :meth:`Roles.stand_down` makes the controller decide nothing: no event is taken, its
   timers and promotion runs are cancelled, its director keeps routing as it does.
3. :meth:`Roles.follow` drives a follower's director from outside: route, hold or refuse
   as the record says; held requests are released (to the record's route) or refused when
   the mode leaves ``hold``. It never touches the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from router import metrics
from router.config import ServiceConfig

from .events import Action, IllegalEvent, State
from .follow import FailoverDirector
from .hold import Refusal
from .machine import FailoverMachine
from .publish import Publisher
from .store import Decision, Gate, PromotionHooks, StateStore

__all__ = ["Roles"]


class Roles:
    """A mixin of :class:`~.controller.ServiceController`."""

    service: ServiceConfig
    machine: FailoverMachine
    director: FailoverDirector
    decision: Decision
    deciding: bool
    publisher: Publisher
    _store: StateStore
    _turn: asyncio.Lock
    _runs: set[asyncio.Task[None]]

    if TYPE_CHECKING:
        def _perform(self, actions: list[Action]) -> None: ...
        def _cancel_timers(self) -> None: ...
        def _nudge(self) -> None: ...

    gate: Gate | None
    hooks: PromotionHooks | None

    def join(self, store: StateStore, gate: Gate, hooks: PromotionHooks) -> None:
        """Before :meth:`run`: decisions go to a shared ``store`` from now on, and this
        controller follows until :meth:`lead`."""
        self._store, self.gate, self.hooks, self.deciding = store, gate, hooks, False

    async def lead(self, active: str, epoch: int, drained: tuple[str, ...] = ()) -> None:
        """Rule 1: decide from now on, from ``active`` at ``epoch`` (with the backends the
        previous decider had drained still drained)."""
        async with self._turn:
            self._cancel_timers()
            machine = FailoverMachine(self.machine.settings, active, epoch, drained)
            actions = machine.start()
            decision = dataclasses.replace(self.decision, state=State.ACTIVE.value,
                                           drained=tuple(sorted(machine.maintenance))).after(actions)
            await self._store.save(self.service.name, decision)  # StateFileError: still a follower
            was = self.director.mode
            self.machine, self.decision, self.deciding = machine, decision, True
            self.director.state = State.ACTIVE.value
            self._perform(actions)
            if was == "hold":
                self.director.release()
        self.publisher.notice(f"this router decides now: {active} active at epoch {epoch}")

    @property
    def drained(self) -> frozenset[str]:
        """Backends drained by an operator: the machine's own set while this router decides
        (or runs alone), the shared record's on a follower."""
        return self.machine.maintenance if self.deciding else frozenset(self.decision.drained)

    def stand_down(self) -> None:
        """Rule 2."""
        if self.deciding:
            self.publisher.notice("this router no longer decides; it follows the shared record")
        self.deciding = False
        self._cancel_timers()
        for run in list(self._runs):
            run.cancel()

    def follow(self, d: Decision) -> None:
        """Rule 3: move a follower's director to ``d``."""
        if self.deciding:
            raise IllegalEvent(f"service {self.service.name}: follow() on the deciding router")
        director, was = self.director, self.director.mode
        refusal = d.refusal or Refusal(503, self.service.failover.retry_after, "service unavailable")
        if d.mode == "route":
            director.route_to(d.active, d.epoch)
            if was == "hold":
                director.release()
        elif d.mode == "hold":
            director.set_mode("hold")
        else:
            director.set_mode("refuse", refusal)
            if was == "hold":
                director.refuse_held(refusal)
        director.state = d.state
        self.decision = d
        name = self.service.name
        metrics.EPOCH.labels(name).set(d.epoch)
        for b in self.service.backends:
            metrics.ACTIVE_BACKEND.labels(name, b.name).set(1 if b.name == d.active else 0)
        self._nudge()
