"""A promotion run as the controller performs it (the :class:`~.events.RunPromotion`
action).

Rules:

1. One task per run, in the controller's TaskGroup; its result comes back to the
   machine as an event (PromotionSucceeded / PromotionOnHold / PromotionFailed), never
   by changing the machine directly. A runner that raises counts as a failed run.
2. The optional :class:`~.store.PromotionHooks` are told the run's start (a refusal
   fails the run before anything ran), each step before it runs (a refusal stops the
   run there, promote/pipeline.py rule 8) and its end.
3. The default runner is the service's configured pipeline, then the readiness wait
   (router/failover/runs.py rule 2).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from promote.pipeline import Pipeline
from router import metrics
from router.config import ServiceConfig
from router.health.probes import HealthChecker

from .events import Event, PromotionFailed, PromotionOnHold, PromotionSucceeded, RunPromotion
from .promotion import promotion_context
from .publish import StepAudit
from .runs import PromotionOutcome, PromotionRunner, wait_ready
from .store import PromotionHooks

__all__ = ["Promoting"]

log = logging.getLogger("hotspare.failover")


class Promoting:
    """A mixin of :class:`~.controller.ServiceController`."""

    service: ServiceConfig
    hooks: PromotionHooks | None
    checker: HealthChecker
    _run_promotion: PromotionRunner
    _last_run: PromotionOutcome | None
    _promotions: int
    _audit: StepAudit
    _agent_token: str | None
    _secrets: tuple[str | None, ...]
    _clock: Callable[[], float]

    def submit(self, event: Event) -> None:
        raise NotImplementedError  # the controller's

    async def _promote(self, a: RunPromotion) -> None:
        self._promotions += 1
        try:
            try:
                if self.hooks is not None:
                    await self.hooks.started(self.service.name, a)
                result = await self._run_promotion(a)
            except Exception as exc:  # a bug in a runner must not leave the service PROMOTING
                log.exception("service %s: promotion of %s raised", self.service.name, a.new)
                result = PromotionOutcome("failed", f"{type(exc).__name__}: {exc}")
            if self.hooks is not None:
                await self.hooks.ended(self.service.name, a, result)
            self._last_run = result
            now = self._clock()
            if result.outcome == "promoted":
                self.submit(PromotionSucceeded(now))
            elif result.outcome == "fence_hold":
                self.submit(PromotionOnHold(now, result.reason or "fencing failed"))
            else:
                self.submit(PromotionFailed(now, result.reason or "promotion failed"))
        finally:
            self._promotions -= 1  # its result is queued: settled once that is taken

    async def _default_promotion(self, a: RunPromotion) -> PromotionOutcome:
        """Rule 3: the configured pipeline, then ``rise`` good probes in a row of the new
        active within ``hold.max_time``."""
        svc = self.service
        if svc.promote:
            ctx = promotion_context(svc, a.old, a.new, a.epoch, a.cause, a.trigger)
            pipeline = Pipeline(svc.promote, fence_failure=svc.fence_failure, audit=self._audit,
                                agent_token=self._agent_token, secrets=self._secrets)
            start_at = self._last_run.next_step if (a.resume and self._last_run) else None
            resumes = self._last_run.run_id if (a.resume and self._last_run) else None
            hooks = self.hooks
            before = None if hooks is None else functools.partial(hooks.before_step, svc.name, a)
            res = await pipeline.run(ctx, start_at=start_at or 0, resumes=resumes, before_step=before)
            metrics.PROMOTIONS.labels(svc.name, res.outcome).inc()
            if res.outcome != "promoted":
                return PromotionOutcome(res.outcome, res.reason, res.next_step, res.run_id)
        return await wait_ready(self.checker.prober(a.new), svc, self._clock)
