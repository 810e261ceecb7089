"""Reloading the router from its file: ``POST /v1/reload`` and SIGHUP alike.

Rules:

1. The new file is parsed and validated whole (``load_config``, off the event loop),
   then the state file is re-checked against it and a promotion under way must still
   find its target; only then does the router apply it.
2. A refusal keeps the running config whole, logs one line, counts
   ``hotspare_reload_failures_total{cause}``, and answers 400 (config) or 409 (state
   file) as :class:`~.errors.ApiError`; a refused state check also raises an alarm on
   every service. The router never stops for it.
3. What happened is told on the router's event feed too (a router-wide notice; the
   services' alarms), as the log says it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from router import metrics
from router.config import ServiceConfig, load_config
from router.errors import ConfigError, StateFileError
from router.failover.feed import AlarmRaised, Notice
from router.failover.state import ServiceState

from .errors import ApiError

if TYPE_CHECKING:
    from router.admin.control import RouterControl

__all__ = ["reload_from_source"]

log = logging.getLogger("hotspare.admin")


async def reload_from_source(router: RouterControl, via: str) -> dict[str, Any]:
    """Reload the router from its file: the answer's body, or :class:`ApiError` (rule 2)."""
    path = router.config.source
    if path is None:
        raise ApiError(409, "this router was not started from a file; nothing to reload")
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        metrics.RELOAD_FAILURES.labels("config").inc()
        _notice(router, "reload refused (%s), keeping the running config: %s", via, "; ".join(exc.errors))
        raise ApiError(400, f"{path}: reload refused, the running config is kept", errors=exc.errors) from None
    try:
        await asyncio.to_thread(router.state_file.check, new.services, _running_states(router))
        _check_targets(router, new.services)
        router.reload(new)
    except StateFileError as exc:
        metrics.RELOAD_FAILURES.labels("state_file").inc()
        _notice(router, "reload refused (%s), keeping the running config: %s", via, exc)
        for name, ctl in router.controllers.items():
            ctl.alarms.append(f"reload_refused: {exc}")
            router.events.publish(AlarmRaised(at=router.events.clock(), service=name,
                                              message=f"ALARM (reload_refused): {exc}", code="reload_refused"))
        raise ApiError(409, f"reload refused, the running config is kept: {exc}", errors=[str(exc)]) from None
    _notice(router, "configuration reloaded from %s through %s", path, via, level=logging.WARNING)
    return {"reloaded": True, "source": str(path), "services": [s.name for s in new.services]}


def _notice(router: RouterControl, fmt: str, *args: object, level: int = logging.ERROR) -> None:
    """The log line (as before the feed existed) and the same text as a router-wide notice."""
    log.log(level, fmt, *args)
    router.events.publish(Notice(at=router.events.clock(), service=None, message=fmt % args))


def _running_states(router: RouterControl) -> dict[str, ServiceState]:
    return {name: ServiceState(ctl.machine.active, ctl.machine.epoch) for name, ctl in router.controllers.items()}


def _check_targets(router: RouterControl, services: list[ServiceConfig]) -> None:
    """A promotion under way must still find its target in the new config."""
    for sc in services:
        ctl = router.controllers.get(sc.name)
        target = ctl.machine.snapshot().target if ctl is not None else None
        if target is not None and target not in {b.name for b in sc.backends}:
            raise StateFileError(f"service {sc.name!r} is promoting {target!r}, which the new config does "
                                 f"not name; reload after the promotion ends")
