"""Who must see the active down before the decider fails a service over.

Rules:

1. Only LIVE routers count: the members whose ``members/<name>`` key is present (its
   lease alive). A router that died or lost etcd drops out, and the quorum shrinks with
   it: of two routers, when one's lease expires, the other alone is the quorum.
2. The quorum of ``n`` live routers: ``majority`` = floor(n/2) + 1; ``all`` = n; an
   integer k = min(k, n). With two routers the majority is two: one router cut off from
   the active never fences a healthy server (the price: a real failure seen by one
   router only waits until the other sees it too, or leaves).
3. A backend is down for the failover when at least the quorum of live routers publish
   it ``down`` (``suspect`` and ``unknown`` are not down). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Quorum", "Views", "required"]

# router -> service -> backend -> "up" | "suspect" | "down" | "unknown"
Views = Mapping[str, Mapping[str, Mapping[str, str]]]


def required(rule: str | int, live: int) -> int:
    """Rule 2: how many of ``live`` routers must agree (at least 1)."""
    if live < 1:
        return 1
    if rule == "majority":
        return live // 2 + 1
    if rule == "all":
        return live
    if isinstance(rule, int) and not isinstance(rule, bool) and rule >= 1:
        return min(rule, live)
    raise ValueError(f"quorum: expected 'majority', 'all' or an integer >= 1, got {rule!r}")


@dataclass(frozen=True, slots=True)
class Quorum:
    rule: str | int = "majority"

    def seen_down_by(self, views: Views, service: str, backend: str) -> tuple[str, ...]:
        """The live routers that publish ``backend`` of ``service`` down, sorted."""
        return tuple(sorted(r for r, v in views.items() if v.get(service, {}).get(backend) == "down"))

    def down(self, views: Views, service: str, backend: str) -> bool:
        """Rule 3 (``views``: the live routers' views, this router's own included)."""
        return len(self.seen_down_by(views, service, backend)) >= required(self.rule, len(views))

    def describe(self, views: Views, service: str, backend: str) -> str:
        """``seen down by r1 (1 of 2 live routers, 2 needed)`` for logs and alarms."""
        seen = self.seen_down_by(views, service, backend)
        need = required(self.rule, len(views))
        who = ", ".join(seen) or "no router"
        return f"seen down by {who} ({len(seen)} of {len(views)} live routers, {need} needed)"
