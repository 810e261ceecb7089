"""What the server reports about itself that is read from its parts: a backend's probe
statistics (from the detector) and the promotion runs a previous router left unfinished
(from the audit log). Used by :mod:`router.server`'s one snapshot.
"""

from __future__ import annotations

from promote.audit import AuditLog
from router.admin.control import ProbeStatistics
from router.config import Config
from router.failover.controller import ServiceController

__all__ = ["probe_statistics", "unfinished_runs"]


def probe_statistics(ctl: ServiceController, backend: str) -> ProbeStatistics | None:
    """The detector's view of ``backend``; None before its first probe."""
    if not ctl.checker.started:
        return None
    prober = ctl.checker.prober(backend)
    snap = prober.detector.snapshot()
    if snap.probe_failures == 0 and snap.probe_successes == 0 and prober.probes_sent == 0:
        return None
    good = f"{snap.probe_successes} good in a row" if snap.probe_successes else ""
    return ProbeStatistics(
        ok=snap.probe_failures == 0,
        health=snap.health.value,
        detail=snap.last_detail or good or "-",
        failures=snap.probe_failures,
        successes=snap.probe_successes,
        probes_sent=prober.probes_sent,
    )


def unfinished_runs(config: Config) -> tuple[str, ...]:
    """Promotion runs with a start and no end in the audit log, one line each."""
    out = []
    for r in AuditLog(config.audit_log_path).unfinished():
        where = ""
        if r.last_step is not None:
            where = f" stopped during step {r.last_step.get('index')}. {r.last_step.get('name')}"
        out.append(f"run {r.run_id} of {r.service} {r.old}->{r.new} epoch {r.epoch} started {r.started}{where}")
    return tuple(out)
