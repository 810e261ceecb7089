"""What to do about each alarm: one line for a person and the runbook section to read.

Rules:

1. :data:`ALARM_HINTS` is a pure table, alarm code -> :class:`Hint`. The codes are the
   ones the router raises (router/failover/publish.py rule 2: the machine's
   :class:`~hotspare.causes.Cause` alarms, ``state_write_failed``, ``promotion_alarm``,
   ``audit_write_failed``; router/admin/reload.py: ``reload_refused``; router/cluster/:
   ``etcd_unreachable``, ``promotion_interrupted``, ``cluster_state_invalid``). A test checks
   that every code has a hint whose anchor is a heading of docs/runbook.md.
2. An alarm is shown as ``"code: message"`` (the controller's alarm list); a code this
   table does not know still gets a line, pointing at the runbook's top, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ALARM_HINTS", "RUNBOOK", "Hint", "alarm_hint"]

RUNBOOK = "docs/runbook.md"


@dataclass(frozen=True, slots=True)
class Hint:
    todo: str  # one line: what to do now
    anchor: str  # a heading of docs/runbook.md, as its GitHub anchor

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.anchor}"


ALARM_HINTS: dict[str, Hint] = {
    "spare_unhealthy": Hint(
        "make the spare pass its health checks (is its application running? curl its health path)",
        "spare-not-ready"),
    "promotion_failed": Hint(
        "read the failed step in `hotspare promote --history` / the audit log, fix it, then switch over again",
        "a-promotion-failed"),
    "fence_failed": Hint(
        "make sure the old active is stopped, then confirm it (`hotspare promote --confirm-fenced`) or resume it",
        "fencing-on-hold"),
    "hold_timeout": Hint(
        "held requests were refused: find out why the promotion is slow (audit log) and whether it still runs",
        "held-requests-timed-out"),
    "hold_down": Hint(
        "no automatic failover so soon after the last one: repair a backend, or switch over to a healthy one",
        "failover-held-down"),
    "automatic_off": Hint(
        "automatic failover is off: check the active, then `hotspare switchover --to` the spare if it is down",
        "automatic-failover-off"),
    "state_write_failed": Hint(
        "free space or fix permissions where the state file lives (df -h, ls -ld), then repeat the move",
        "state-file-cannot-be-written"),
    "reload_refused": Hint(
        "the running config was kept: fix the file (`hotspare check-config FILE`) and reload again",
        "reload-refused"),
    "promotion_alarm": Hint(
        "a promotion step raised an alarm: read its output in the audit log and check the node it names",
        "promotion-step-alarm"),
    "audit_write_failed": Hint(
        "promotion records are not being written: free space or fix permissions of the audit log",
        "audit-log-cannot-be-written"),
    # The router pair (router/cluster/): raised by the node, not the machine.
    "etcd_unreachable": Hint(
        "this router serves the last known active and never fails over: check the etcd members and the "
        "network to them", "etcd-unreachable"),
    "promotion_interrupted": Hint(
        "a promotion's decider died during it: check the old and new active by hand, then switch over",
        "promotion-interrupted"),
    "cluster_state_invalid": Hint(
        "a record in etcd is not valid and was not applied: read the key, fix the config or the record",
        "cluster-state-invalid"),
}

_UNKNOWN = Hint("read the alarm's message and the router's log", "operations-runbook")


def alarm_hint(alarm: str) -> dict[str, Any]:
    """``"code: message"`` -> ``{"code", "todo", "runbook"}`` (rule 2)."""
    code = alarm.partition(":")[0].strip()
    hint = ALARM_HINTS.get(code, _UNKNOWN)
    return {"code": code, "todo": hint.todo, "runbook": hint.runbook}
