"""Promotion runs as the controller sees them: what a run answered
(:class:`PromotionOutcome`), the signature of a runner (tests pass a stub), and the
readiness wait that ends every run before traffic moves.

Rules:

1. A runner answers, never raises on purpose: ``promoted``, ``failed`` or
   ``fence_hold`` (with the step to resume at and the run id to resume).
2. Ready means ``health.rise`` good probes in a row of the new active, each a fresh
   connection (router/health/probes.py), within ``failover.hold.max_time``: held
   requests are never released to a backend that has not answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from router.config import ServiceConfig
from router.health.probes import BackendProber

from .events import RunPromotion

__all__ = ["PromotionOutcome", "PromotionRunner", "wait_ready"]


@dataclass(frozen=True, slots=True)
class PromotionOutcome:
    outcome: str  # "promoted" | "failed" | "fence_hold"
    reason: str = ""
    next_step: int | None = None
    run_id: str | None = None


PromotionRunner = Callable[[RunPromotion], Awaitable[PromotionOutcome]]


async def wait_ready(prober: BackendProber, service: ServiceConfig, clock: Callable[[], float]) -> PromotionOutcome:
    """Rule 2: ``promoted`` once the backend passed ``rise`` probes in a row, else ``failed``."""
    h, max_time = service.health, service.failover.hold.max_time
    deadline = clock() + max_time
    good = 0
    while clock() < deadline:
        r = await prober.probe_once(clock())
        good = good + 1 if r.ok else 0
        if good >= h.rise:
            return PromotionOutcome("promoted")
        await asyncio.sleep(h.fast_interval)  # pacing between probes, not a wait for a condition
    return PromotionOutcome("failed", f"{prober.backend.name} not ready: {h.rise} good probes not seen "
                                      f"within {max_time:g}s")
