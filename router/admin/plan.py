"""What a switchover (or forced failover) would do: the dry-run answer, decided without I/O.

Rules:

1. :func:`switchover_plan` is pure: it takes what the router knows now (the service's
   config, state, active, epoch, the target's health, maintenance flag and replication
   freshness, and what the failover machine would say on a trial copy) and returns the
   ordered steps and the warnings. It never refuses: a refusal the real call would meet
   becomes a warning (DESIGN: "a dry run never refuses").
2. The steps are the planned switchover of DESIGN.md in order: drain (hold new requests,
   let in-flight ones finish), epoch (persisted first: the fencing token), the configured
   promotion steps with templates resolved (final sync among them when configured),
   flip, verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from promote.pipeline import Pipeline
from router.config import ServiceConfig
from router.failover.promotion import promotion_context

__all__ = ["PlanInput", "switchover_plan"]

Kind = Literal["switchover", "failover"]


@dataclass(frozen=True, slots=True)
class PlanInput:
    service: ServiceConfig
    kind: Kind
    state: str
    active: str
    epoch: int
    target: str
    target_healthy: bool | None  # None: not probed yet
    target_maintenance: bool
    replication: Mapping[str, Any] | None  # the target agent's freshness (admin_status)
    refusal: str | None  # what the failover machine would answer, if it would refuse
    lag_warn_seconds: float = 30.0


def switchover_plan(p: PlanInput) -> dict[str, Any]:
    svc, old, new = p.service, p.active, p.target
    epoch = p.epoch + 1
    hold = svc.failover.hold
    warnings: list[str] = []
    if p.refusal:
        warnings.append(f"the router would refuse this now: {p.refusal}")
    if p.target_healthy is False:
        warnings.append(f"target {new} is failing its health checks")
    elif p.target_healthy is None:
        warnings.append(f"target {new} has not been probed yet")
    if p.target_maintenance:
        warnings.append(f"target {new} is in maintenance (drained); POST .../backends/{new}/ready first")
    if p.state != "active":
        warnings.append(f"service {svc.name} is {p.state}, not active")
    warnings += _replication_warnings(p)
    has_final_sync = any(s.agent is not None and s.agent.action == "final-sync" for s in svc.promote)
    if p.kind == "switchover" and not has_final_sync and any(b.agent for b in svc.backends):
        warnings.append(
            f"no 'agent: final-sync' step in {svc.name}'s promote steps: files written on {old} "
            f"since the agents' last pass may be missing on {new}"
        )

    steps: list[dict[str, str]] = []
    if p.kind == "switchover":
        steps.append({"name": "drain", "description": (
            f"hold new requests (at most {hold.max_requests}, {hold.max_time:g}s); "
            f"requests in flight to {old} finish")})
    else:
        steps.append({"name": "drain", "description": (
            f"hold new requests (at most {hold.max_requests}, {hold.max_time:g}s); "
            f"requests in flight to {old} are cut off (replayed if safe)")})
    steps.append({"name": "epoch", "description": f"persist epoch {epoch} (the fencing token) before any step"})
    trigger = "switchover" if p.kind == "switchover" else "manual"
    ctx = promotion_context(svc, old, new, epoch, "ADMIN", trigger)
    pipeline = Pipeline(svc.promote, fence_failure=svc.fence_failure, audit=None)
    for line in pipeline.plan(ctx)[1:]:
        text = line.split(". ", 1)[-1]  # "warm [exec, timeout 30s, ...]: /bin/true"
        steps.append({"name": f"promote: {text.split(' [', 1)[0]}", "description": f"promote: {text}"})
    steps.append({"name": "flip", "description": f"route {svc.name} to {new} at epoch {epoch}; release held requests"})
    steps.append({"name": "verify", "description": (
        f"{new} must pass {svc.health.rise} probes in a row within {hold.max_time:g}s; "
        f"otherwise {old} stays active if it passes its probes")})
    return {
        "dry_run": True,
        "service": svc.name,
        "kind": p.kind,
        "from": old,
        "to": new,
        "epoch": p.epoch,
        "new_epoch": epoch,
        "steps": steps,
        "warnings": warnings,
    }


def _replication_warnings(p: PlanInput) -> list[str]:
    repl = p.replication
    if repl is None:
        return []
    if repl.get("reachable") is False:
        return [f"replication state of {p.target} unknown: its agent is {repl.get('error') or 'unreachable'}"]
    out = []
    if repl.get("role") not in (None, "sink"):
        out.append(f"{p.target}'s agent is {repl.get('role')}, not mirroring {p.active}")
    lag = repl.get("lag_seconds")
    if isinstance(lag, (int, float)) and lag > p.lag_warn_seconds:
        out.append(f"replication behind: {p.target}'s files are {lag:.0f}s behind {p.active}")
    elif repl.get("in_sync") is False:
        pending = repl.get("pending")
        out.append(f"replication behind: {p.target} has {pending if pending is not None else 'some'} "
                   "file(s) not applied yet")
    if repl.get("error"):
        out.append(f"{p.target}'s agent reports: {repl['error']}")
    return out
