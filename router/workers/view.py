"""What a follower of a decider must know of one service, and how it follows it.

Rules:

1. :class:`ServiceView` is the whole decision of one service as the decider's director
   has it: ``active``, ``epoch``, ``mode`` (route, hold, refuse), the ``refusal`` when
   refusing, the observers' ``state`` and every backend's ``health`` (up, suspect, down;
   None before the first probe). A worker process gets it over its channel; a router of
   a pair reads the same fields from its store. It is a full view, never a delta: a
   follower that missed one has lost nothing once the next arrives.
2. :func:`view_of` reads a view off a director (the decider's side); :func:`follow`
   drives a follower's :class:`~router.failover.follow.FailoverDirector` to it with the
   director's own verbs (``route_to``, ``set_mode``, ``release``, ``refuse_held``,
   ``wake``). A view in ``route`` mode releases the follower's held requests at the
   view's epoch; one in ``refuse`` mode refuses them: exactly what the decider's machine
   does with its own (ReleaseHeld comes with every RouteTo, RefuseHeld with every
   RefuseTraffic).
3. ``to_dict``/``from_dict`` are plain JSON-able data; ``from_dict`` checks every field
   and raises ValueError naming the bad one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.failover.follow import FailoverDirector
from router.failover.hold import Refusal
from router.health.detector import Health

__all__ = ["ServiceView", "follow", "view_of"]

_MODES = ("route", "hold", "refuse")


@dataclass(frozen=True, slots=True)
class ServiceView:
    active: str
    epoch: int
    mode: str  # route | hold | refuse
    refusal: Refusal | None
    state: str
    health: Mapping[str, Health | None]

    def to_dict(self) -> dict[str, Any]:
        r = self.refusal
        return {
            "active": self.active,
            "epoch": self.epoch,
            "mode": self.mode,
            "refusal": None if r is None else {"status": r.status, "retry_after": r.retry_after, "reason": r.reason},
            "state": self.state,
            "health": {b: (None if h is None else h.value) for b, h in self.health.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServiceView:
        def field(name: str, kind: type) -> Any:
            v = d.get(name)
            if not isinstance(v, kind) or isinstance(v, bool):
                raise ValueError(f"service view: {name!r} must be {kind.__name__}, got {v!r}")
            return v

        mode = field("mode", str)
        if mode not in _MODES:
            raise ValueError(f"service view: 'mode' must be one of {_MODES}, got {mode!r}")
        raw = d.get("refusal")
        refusal = None
        if raw is not None:
            refusal = Refusal(int(raw["status"]), int(raw["retry_after"]), str(raw["reason"]))
        if mode == "refuse" and refusal is None:
            raise ValueError("service view: mode 'refuse' needs a 'refusal'")
        health = {str(b): (None if h is None else Health(h)) for b, h in field("health", dict).items()}
        return cls(field("active", str), field("epoch", int), mode, refusal, field("state", str), health)


def view_of(director: FailoverDirector, health_of: Callable[[str], Health | None]) -> ServiceView:
    """The decider's side: the view its director holds now."""
    snap = director.snapshot()
    return ServiceView(snap.active, snap.epoch, director.mode, director.refusal, director.state,
                       {b.name: health_of(b.name) for b in director.service.backends})


def follow(director: FailoverDirector, view: ServiceView, health: dict[str, Health | None]) -> None:
    """The follower's side (rule 2). ``health`` is the dict the director's ``health_of``
    reads; it is replaced in place."""
    health.clear()
    health.update(view.health)
    snap = director.snapshot()
    if (snap.active, snap.epoch) != (view.active, view.epoch):
        director.route_to(view.active, view.epoch)
    director.state = view.state
    if view.mode == "route":
        director.set_mode("route")
        director.release()
    elif view.mode == "hold":
        director.set_mode("hold")
    else:
        assert view.refusal is not None
        director.set_mode("refuse", view.refusal)
        director.refuse_held(view.refusal)
    director.wake()  # health may have changed alone: requests waiting for a verdict look again
