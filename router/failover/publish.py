"""One service's voice: what the controller tells people, said once and the same way in
the log and in the typed event feed (:mod:`.feed`).

Rules:

1. Each kind of news has one method here; it writes the operator's log line (same text
   as before the feed existed: people, alert rules and tests read it) and publishes the
   typed event. An event's ``message`` is that line without its ``service NAME:`` prefix
   (the service is the event's own field), as the admin API's event list showed it.
2. Every alarm has a stable ``code`` (a :class:`~hotspare.causes.Cause` value for the
   machine's alarms, ``state_write_failed``, ``promotion_alarm``, ``audit_write_failed``)
   that dashboards and the admin API may match on; the text is for people.
3. The promotion pipeline (another package) has no per-step hook: its steps are learnt
   from the audit records it writes, through :class:`StepAudit`, an :class:`AuditLog`
   that also publishes a :class:`~.feed.PromotionStep` at each ``step_end`` record and an
   alarm at each ``alarm`` record, on the event loop, as the pipeline writes them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hotspare.causes import Cause
from promote.audit import AuditLog
from router.health.detector import Transition

from . import events as machine
from . import feed

__all__ = ["Publisher", "StepAudit", "command_words"]

log = logging.getLogger("hotspare.failover")

_COMMANDS = {
    "AdminSwitchover": "switchover",
    "AdminFailover": "failover",
    "AdminConfirmFenced": "confirm-fenced",
    "AdminResume": "resume",
    "AdminDrain": "drain",
    "AdminReady": "ready",
}


def command_words(event: object) -> str:
    """An operator's command in a few words: ``switchover to b``, ``resume``."""
    kind = _COMMANDS.get(type(event).__name__, type(event).__name__)
    to = getattr(event, "to", None)
    backend = getattr(event, "backend", None)
    if to is not None:
        return f"{kind} to {to}"
    return f"{kind} {backend}" if backend is not None else kind


class Publisher:
    """The log lines and feed events of one service; ``alarms`` is the service's alarm
    list as ``"code: message"`` (what ``/v1/status`` shows), a repeat not added twice."""

    def __init__(self, service: str, events: feed.EventFeed) -> None:
        self.service = service
        self.feed = events
        self.alarms: list[str] = []

    def state_changed(self, a: machine.StateChanged) -> None:
        text = f"{a.old.value} -> {a.new.value} ({a.cause}): {a.message}"
        log.warning("service %s: %s", self.service, text)
        self.feed.publish(feed.StateChanged(
            at=self.feed.clock(), service=self.service, message=text,
            old=a.old.value, new=a.new.value, active=a.active, epoch=a.epoch, cause=a.cause,
        ))

    def health_changed(self, t: Transition) -> None:
        """The detector moved a backend. The health checker logged the line already
        (router/health/probes.py); this is the same line, on the feed."""
        text = f"backend {t.backend} {t.new.value.upper()} ({t.detail})"
        self.feed.publish(feed.HealthChanged(
            at=self.feed.clock(), service=self.service, message=text,
            backend=t.backend, old=t.old.value, new=t.new.value, cause=t.cause,
        ))

    def alarm(self, code: str | Cause, message: str) -> None:
        code = str(code)
        text = f"{code}: {message}"
        if self.alarms and self.alarms[-1] == text:
            return  # the same failure again (a retry): counted in metrics, not repeated
        log.error("service %s ALARM (%s): %s", self.service, code, message)
        self.alarms.append(text)
        self._alarm_event(code, f"ALARM ({code}): {message}")

    def notice(self, message: str) -> None:
        """An operator's command and what became of it. INFO: the admin API logs its own
        WARNING line for the same command; the feed carries this one."""
        log.info("service %s: %s", self.service, message)
        self.feed.publish(feed.Notice(at=self.feed.clock(), service=self.service, message=message))

    # -- the promotion pipeline's records (rule 3) ----------------------------------------

    def audited(self, event: str, run: str, fields: dict[str, Any]) -> None:
        if event == "step_end":
            detail = fields.get("detail") or ""
            text = (f"promotion {run}: step {fields.get('index')} {fields.get('name')} attempt "
                    f"{fields.get('attempt')}: {fields.get('status')} in {float(fields.get('duration') or 0):.2f}s"
                    + (f" ({detail})" if detail else ""))
            self.feed.publish(feed.PromotionStep(
                at=self.feed.clock(), service=self.service, message=text, run=run,
                index=int(fields.get("index") or 0), name=str(fields.get("name", "")),
                outcome=str(fields.get("status", "")),
            ))
        elif event == "alarm":
            # The pipeline logged it ("promotion RUN of SERVICE: ALARM: text").
            self._alarm_event("promotion_alarm", f"promotion {run} of {self.service}: ALARM: {fields.get('text', '')}")

    def audit_failed(self, run: str, text: str) -> None:
        self._alarm_event("audit_write_failed", f"promotion {run}: {text}")

    def _alarm_event(self, code: str, message: str) -> None:
        self.feed.publish(feed.AlarmRaised(at=self.feed.clock(), service=self.service, message=message, code=code))


class StepAudit(AuditLog):
    """The promotion audit log that also tells the feed (rule 3). Writing is unchanged:
    the pipeline sees the same records, the same errors."""

    def __init__(self, path: str | os.PathLike[str], publisher: Publisher) -> None:
        super().__init__(path)
        self._publisher = publisher
        self._failed: set[str] = set()  # audit failures already on the feed (one per text)

    async def write(self, event: str, run: str, **fields: Any) -> dict[str, Any]:
        try:
            return await super().write(event, run, **fields)
        except OSError as exc:
            # The pipeline's own words for it (promote/pipeline.py), alarmed once per text.
            text = f"audit log {self.path} cannot be written: {exc.strerror or exc}"
            if text not in self._failed:
                self._failed.add(text)
                self._publisher.audit_failed(run, text)
            raise
        finally:
            self._publisher.audited(event, run, fields)  # the step ended, recorded or not
