"""The promotion context: what the pipeline is told about one move ``old -> new``.

Built here once, for the real run (the controller), the admin API's dry-run plan and
``hotspare promote --dry-run``, so the three can never describe a move differently.
"""

from __future__ import annotations

from typing import Any

from hotspare.causes import Cause
from promote.pipeline import PromotionContext
from router.config import ServiceConfig
from router.health.probes import probe_url

__all__ = ["promotion_context"]


def promotion_context(
    service: ServiceConfig, old: str, new: str, epoch: int, cause: Cause, trigger: Any
) -> PromotionContext:
    o, n = service.backend(old), service.backend(new)
    return PromotionContext(
        service=service.name,
        old_name=o.name,
        old_url=o.url,
        old_address=o.db_address,
        old_agent=o.agent,
        new_name=n.name,
        new_url=n.url,
        new_agent=n.agent,
        new_health_url=probe_url(n, service.health),
        epoch=epoch,
        cause=cause,
        trigger=trigger,
    )
