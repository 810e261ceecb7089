"""Which role this node's agent plays, decided from the router's ``/v1/status``.
No I/O: the agent feeds each poll's result (or its failure) with ``now``.

Rules:

1. The node's service is the one with a backend named NODE. Its ``active`` == NODE ->
   ``source``; another backend -> ``sink`` mirroring that backend; no such service ->
   an error the operator must fix (logged, role unchanged).
2. The router unreachable -> the last role stays; ``router_ok`` turns false, and the
   status says since when. Before the first answer the role is ``unknown``; an agent
   that starts while the router is unreachable takes the role its roots remember from
   its last run (highest epoch), else stays ``unknown`` and neither serves nor mirrors.
3. A change of role is reported once, as a ``RoleChange`` with the epoch; a node that
   was ``source`` and becomes ``sink`` is a role reversal (its first reconcile
   quarantines its own newer files).
4. The router is the only authority on the epoch: an epoch a caller sends is believed
   only up to what the router's status shows (:func:`router_epoch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Role", "RoleChange", "RoleTracker", "router_epoch"]

RoleKind = Literal["unknown", "source", "sink"]


@dataclass(frozen=True, slots=True)
class Role:
    kind: RoleKind
    service: str | None = None
    active: str | None = None  # the backend mirrored from, for a sink
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class RoleChange:
    old: Role
    new: Role

    @property
    def reversal(self) -> bool:
        return self.old.kind == "source" and self.new.kind == "sink"


class RoleTracker:
    def __init__(self, node: str) -> None:
        self.node = node
        self.role = Role("unknown")
        self.router_ok = False
        self.router_error: str | None = None
        self.unreachable_since: float | None = None

    def router_failed(self, error: str, now: float) -> None:
        if self.router_ok or self.unreachable_since is None:
            self.unreachable_since = now
        self.router_ok = False
        self.router_error = error

    def observe(self, status: Any, now: float) -> RoleChange | None:
        """Feed one ``/v1/status`` body; return the role change, if any."""
        services = status.get("services") if isinstance(status, dict) else None
        if not isinstance(services, list):
            self.router_failed("router status has no 'services' list", now)
            return None
        for svc in services:
            if not isinstance(svc, dict):
                continue
            names = [b.get("name") for b in svc.get("backends") or [] if isinstance(b, dict)]
            if self.node not in names:
                continue
            active = svc.get("active")
            try:
                epoch = int(svc.get("epoch") or 0)
            except (TypeError, ValueError):
                epoch = 0
            self.router_ok, self.router_error, self.unreachable_since = True, None, None
            if not isinstance(active, str) or not active:
                new = Role("unknown", str(svc.get("name")), None, epoch)
            elif active == self.node:
                new = Role("source", str(svc.get("name")), active, epoch)
            else:
                new = Role("sink", str(svc.get("name")), active, epoch)
            if new.kind == "unknown" and self.role.kind != "unknown":
                return None  # no active right now (promoting): keep serving/mirroring
            if (new.kind, new.active) == (self.role.kind, self.role.active):
                self.role = new  # epoch may move without a change of side
                return None
            change = RoleChange(self.role, new)
            self.role = new
            return change
        self.router_failed(f"no service in the router's status has a backend named {self.node!r}", now)
        return None


def router_epoch(status: Any, node: str) -> int | None:
    """The epoch the router's status shows for the service with a backend named
    ``node``; None if the status has no such service (or no readable epoch)."""
    services = status.get("services") if isinstance(status, dict) else None
    for svc in services if isinstance(services, list) else []:
        if not isinstance(svc, dict):
            continue
        names = [b.get("name") for b in svc.get("backends") or [] if isinstance(b, dict)]
        if node in names:
            epoch = svc.get("epoch")
            return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    return None
