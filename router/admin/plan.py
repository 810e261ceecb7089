"""What a switchover (or forced failover) would do: the dry-run answer, decided without I/O.

Rules:

1. :func:`make_plan` is pure: it takes what the router knows now (the service's
   config, state, active, epoch, the target's health, maintenance flag and replication
   freshness, and what the failover machine would say on a trial copy) and returns the
   ordered steps and the warnings. It never refuses: a refusal the real call would meet
   becomes a warning (DESIGN: "a dry run never refuses"). It is the one planner: the
   admin API answers :meth:`Plan.answer`, ``hotspare promote --dry-run`` prints
   :attr:`Plan.pipeline` and the warnings, from what ``GET /v1/status`` told it (what it
   could not learn is ``None`` and becomes a warning, not a guess in silence).
2. The steps are the planned switchover of DESIGN.md in order: drain (hold new requests,
   let in-flight ones finish), epoch (persisted first: the fencing token), the configured
   promotion steps with templates resolved (final sync among them when configured),
   flip, verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hotspare.causes import Cause
from promote.pipeline import Pipeline
from router.config import ServiceConfig
from router.failover.promotion import promotion_context

from .status import SPARE_LAG_LIMIT_SECONDS

__all__ = ["Plan", "PlanInput", "make_plan"]

Kind = Literal["switchover", "failover"]


@dataclass(frozen=True, slots=True)
class PlanInput:
    service: ServiceConfig
    kind: Kind
    state: str | None  # None: unknown (the router did not answer; the CLI plans anyway)
    active: str | None  # None: unknown; another backend than the target is assumed
    epoch: int | None  # None: unknown; the plan shows epoch 0
    target: str
    target_healthy: bool | None  # None: not probed yet
    target_maintenance: bool
    replication: Mapping[str, Any] | None  # the target agent's freshness (.agents)
    refusal: str | None  # what the failover machine would answer, if it would refuse
    lag_warn_seconds: float = SPARE_LAG_LIMIT_SECONDS


@dataclass(frozen=True, slots=True)
class Plan:
    service: str
    kind: Kind
    old: str
    new: str
    epoch: int | None
    new_epoch: int
    steps: tuple[dict[str, str], ...]
    warnings: tuple[str, ...]
    pipeline: tuple[str, ...]  # the promotion pipeline's own lines: a header, one per step

    def answer(self) -> dict[str, Any]:
        """The admin API's dry-run answer (docs/openapi.yaml ``Plan``)."""
        return {
            "dry_run": True,
            "service": self.service,
            "kind": self.kind,
            "from": self.old,
            "to": self.new,
            "epoch": self.epoch,
            "new_epoch": self.new_epoch,
            "steps": list(self.steps),
            "warnings": list(self.warnings),
        }


def make_plan(p: PlanInput) -> Plan:
    svc, new = p.service, p.target
    warnings: list[str] = []
    old = p.active
    if old is None or old not in [b.name for b in svc.backends]:
        others = [b.name for b in svc.backends if b.name != new]
        old = others[0] if others else new
        warnings.append(f"current active unknown; assuming {old}")
    if p.epoch is None:
        warnings.append("epoch unknown (router not reachable); {epoch} is shown as 0")
    epoch = 0 if p.epoch is None else p.epoch + 1
    warnings += _warnings(p, old)
    trigger = "switchover" if p.kind == "switchover" else "manual"
    ctx = promotion_context(svc, old, new, epoch, Cause.ADMIN, trigger)
    pipeline = Pipeline(svc.promote, fence_failure=svc.fence_failure, audit=None).plan(ctx)
    return Plan(svc.name, p.kind, old, new, p.epoch, epoch, _steps(p, old, epoch, pipeline),
                tuple(warnings), tuple(pipeline))


def _warnings(p: PlanInput, old: str) -> list[str]:
    svc, new = p.service, p.target
    warnings: list[str] = []
    if p.refusal:
        warnings.append(f"the router would refuse this now: {p.refusal}")
    elif old == new:
        warnings.append(f"{new} is already the active backend of {svc.name}: a promotion would change nothing")
    if p.target_healthy is False:
        warnings.append(f"target {new} is failing its health checks")
    elif p.target_healthy is None and p.state is not None:
        warnings.append(f"target {new} has not been probed yet")
    if p.target_maintenance:
        warnings.append(f"target {new} is in maintenance (drained); POST .../backends/{new}/ready first")
    if p.state is not None and p.state.lower() != "active":
        warnings.append(f"service {svc.name} is {p.state}, not active")
    warnings += _replication_warnings(p, old)
    has_final_sync = any(s.agent is not None and s.agent.action == "final-sync" for s in svc.promote)
    if p.kind == "switchover" and not has_final_sync and any(b.agent for b in svc.backends):
        warnings.append(
            f"no 'agent: final-sync' step in {svc.name}'s promote steps: files written on {old} "
            f"since the agents' last pass may be missing on {new}"
        )
    return warnings


def _steps(p: PlanInput, old: str, epoch: int, pipeline: list[str]) -> tuple[dict[str, str], ...]:
    svc, new, hold = p.service, p.target, p.service.failover.hold
    fate = "finish" if p.kind == "switchover" else "are cut off (replayed if safe)"
    steps = [
        {"name": "drain", "description": (
            f"hold new requests (at most {hold.max_requests}, {hold.max_time:g}s); "
            f"requests in flight to {old} {fate}")},
        {"name": "epoch", "description": f"persist epoch {epoch} (the fencing token) before any step"},
    ]
    for line in pipeline[1:]:
        text = line.split(". ", 1)[-1]  # "warm [exec, timeout 30s, ...]: /bin/true"
        steps.append({"name": f"promote: {text.split(' [', 1)[0]}", "description": f"promote: {text}"})
    steps.append({"name": "flip", "description": f"route {svc.name} to {new} at epoch {epoch}; release held requests"})
    steps.append({"name": "verify", "description": (
        f"{new} must pass {svc.health.rise} probes in a row within {hold.max_time:g}s; "
        f"otherwise {old} stays active if it passes its probes")})
    return tuple(steps)


def _replication_warnings(p: PlanInput, old: str) -> list[str]:
    repl = p.replication
    if repl is None:
        return []
    if repl.get("reachable") is False:
        return [f"replication state of {p.target} unknown: its agent is {repl.get('error') or 'unreachable'}"]
    out = []
    if repl.get("role") not in (None, "sink"):
        out.append(f"{p.target}'s agent is {repl.get('role')}, not mirroring {old}")
    lag = repl.get("lag_seconds")
    if isinstance(lag, (int, float)) and lag > p.lag_warn_seconds:
        out.append(f"replication behind: {p.target}'s files are {lag:.0f}s behind {old}")
    elif repl.get("in_sync") is False:
        pending = repl.get("pending")
        out.append(f"replication behind: {p.target} has {pending if pending is not None else 'some'} "
                   "file(s) not applied yet")
    if repl.get("error"):
        out.append(f"{p.target}'s agent reports: {repl['error']}")
    return out
