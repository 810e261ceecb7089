"""``GET /v1/promotions``: the promotion audit log as the admin API shows it.

Rules (the admin API's rules 1 and 4):

1. Without the admin token, what may quote a program's output or an error message (a
   run's ``alarms`` and ``reason``, a step's ``output`` and ``detail``) is ``null`` and
   the run says ``"redacted": true``.
2. Even with the token no secret leaves: every record goes through
   :class:`promote.redact.Redactor` (the configured steps' secrets, the admin and
   replication tokens, DSN patterns), so records written before redaction existed are
   covered too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from promote.audit import AuditLog
from promote.redact import Redactor, step_secrets

if TYPE_CHECKING:
    from router.admin.control import RouterControl

__all__ = ["promotion_history"]

# Fields of a promotion record that may quote a program's output or an error message.
_PRIVATE_RUN_FIELDS = ("alarms", "reason")
_PRIVATE_STEP_FIELDS = ("output", "detail")


async def promotion_history(router: RouterControl, service: str | None, limit: int, full: bool) -> dict[str, Any]:
    """The last ``limit`` runs (of ``service``, or all), read off the event loop."""
    audit = AuditLog(router.config.audit_log_path)
    runs = await asyncio.to_thread(audit.history, service)
    redactor = _redactor(router)
    out = [_run_view(dataclasses.asdict(r), r.finished, redactor, full)
           for r in runs[-max(0, limit):]] if limit else []
    return {"audit_log": str(audit.path), "bad_lines": audit.bad_lines, "runs": out}


def _redactor(router: RouterControl) -> Redactor:
    cfg = router.config
    steps = [step for sc in cfg.services for step in sc.promote]
    repl = cfg.replication.token if cfg.replication else None
    return Redactor([*step_secrets(steps), cfg.admin.token, repl])


def _run_view(run: dict[str, Any], finished: bool, redactor: Redactor, full: bool) -> dict[str, Any]:
    run = redactor.value(run)
    if not full:
        for key in _PRIVATE_RUN_FIELDS:
            run[key] = None
        for step in run["steps"]:
            for key in _PRIVATE_STEP_FIELDS:
                step[key] = None
    return {**run, "finished": finished, "redacted": not full}
