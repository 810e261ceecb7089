"""The promotion pipeline: run a service's steps in order, within their deadlines.

Rules:

1. The router calls :meth:`Pipeline.run` after it has persisted the new epoch; the
   epoch is every step's fencing token (``{epoch}``, ``HOTSPARE_EPOCH``, agent calls).
2. What happens next is decided by :class:`~.decide.RunDecider` (no I/O); this module
   only performs its actions, one dispatcher branch per action type.
3. Every attempt is bounded by its step's ``timeout`` (``asyncio.timeout``); runners
   record progress in an :class:`~.attempt.Attempt` as they go, so a timed-out step
   still reports its output tail and sessions ended.
4. Every run is written to the audit log: start, each step's start and end, alarms, end.
   A cancelled run (router stopping) records its current step as ``cancelled`` and no
   end, so it shows as unfinished. ``CancelledError`` always propagates.
5. A dry run executes nothing and writes nothing: it asks :meth:`Pipeline.plan` for
   lines, never :meth:`Pipeline.run`.
6. A runner's unexpected exception fails that step (with its type in the detail), it
   never kills the router's failover.
7. No secret leaves a run: every detail, output tail, audit record, log line and plan
   line goes through :class:`~.redact.Redactor` (the steps' declared secrets, the agent
   token, any ``secrets`` the caller adds, and the DSN/NAME=value patterns) first.
8. ``before_step`` (optional) is awaited before every attempt of a step; if it raises,
   that attempt is not made and the run ends ``failed`` with its message (audited like
   any end). The caller uses it to record progress, guarded, before a step may run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shlex
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from hotspare.causes import Cause

from .attempt import Attempt, Runtime, TailBuffer
from .audit import AuditLog
from .config import Step
from .decide import Action, Alarm, Backoff, Finish, Outcome, RunDecider, RunStep, StepPolicy
from .errors import StepFailed
from .redact import Redactor, redact_dsn, step_secrets
from .sql.match import describe_match, sql_match
from .sql.step import run_sql
from .step_exec import exec_argv, run_exec
from .step_http import agent_request, http_request, run_agent, run_http, run_wait_healthy
from .templates import render

__all__ = ["BeforeStep", "Pipeline", "PromotionContext", "PromotionResult", "StepResult"]

log = logging.getLogger("hotspare.promote")

AUDIT_OUTPUT_TAIL = 4096  # bytes of each step's output kept in the audit log

Runner = Callable[[Step, Runtime, Attempt], Awaitable[None]]
# Told (run id, step index) before each attempt; raising stops the run there, the step not
# run (a router recording its progress elsewhere: rule 8).
BeforeStep = Callable[[str, int], Awaitable[None]]
RUNNERS: Mapping[str, Runner] = {
    "exec": run_exec,
    "http": run_http,
    "sql": run_sql,
    "wait_healthy": run_wait_healthy,
    "agent": run_agent,
}


@dataclass(frozen=True, slots=True)
class PromotionContext:
    service: str
    old_name: str
    old_url: str
    old_address: str  # the old active's address as the database sees it
    old_agent: str | None
    new_name: str
    new_url: str
    new_agent: str | None
    new_health_url: str
    epoch: int  # the NEW epoch, already persisted by the router: the fencing token
    cause: Cause  # {cause} and HOTSPARE_CAUSE are its lowercase value: "probe_failed", "admin"
    trigger: Literal["failover", "switchover", "manual"]

    def values(self, run_id: str) -> dict[str, str]:
        """Template name -> value (see :data:`.templates.TEMPLATE_NAMES`)."""
        return {
            "service": self.service,
            "epoch": str(self.epoch),
            "cause": self.cause.value,
            "trigger": self.trigger,
            "run_id": run_id,
            "old.name": self.old_name,
            "old.url": self.old_url,
            "old.address": self.old_address,
            "old.agent": self.old_agent or "",
            "new.name": self.new_name,
            "new.url": self.new_url,
            "new.agent": self.new_agent or "",
            "new.health_url": self.new_health_url,
        }


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    name: str
    kind: str
    fence: bool
    status: Literal["ok", "failed", "timeout"]
    attempt: int
    duration: float
    detail: str = ""
    output_tail: str = ""
    exit_code: int | None = None
    http_status: int | None = None
    sessions_ended: int | None = None


@dataclass(frozen=True, slots=True)
class PromotionResult:
    run_id: str
    outcome: Outcome
    alarms: tuple[str, ...]
    steps: tuple[StepResult, ...]  # every attempt, in order
    # fence_hold: the step to resume at (run(..., start_at=next_step)) once confirmed.
    next_step: int | None = None
    reason: str = ""
    duration: float = 0.0


class Pipeline:
    def __init__(
        self,
        steps: Sequence[Step],
        *,
        fence_failure: Literal["hold", "proceed"],
        audit: AuditLog | None,
        agent_token: str | None = None,
        secrets: Sequence[str | None] = (),
    ) -> None:
        self.steps = tuple(steps)
        self.redactor = Redactor([*step_secrets(self.steps), agent_token, *secrets])
        self.fence_failure = fence_failure
        self.audit = audit
        self.agent_token = agent_token
        self._policies = [
            StepPolicy(s.name, s.is_fence, s.retries, s.backoff, s.on_failure) for s in self.steps
        ]

    # -- running ---------------------------------------------------------------------

    async def run(
        self, ctx: PromotionContext, *, start_at: int = 0, resumes: str | None = None,
        before_step: BeforeStep | None = None,
    ) -> PromotionResult:
        """Run the steps from ``start_at``. ``resumes`` names the run this one continues
        (after ``--confirm-fenced``, or an unfinished run found at start-up)."""
        run_id = f"{ctx.epoch}-{secrets.token_hex(4)}"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        decider = RunDecider(self._policies, self.fence_failure, start_at)
        alarms: list[str] = []
        results: list[StepResult] = []
        await self._audit(
            alarms, "run_start", run_id,
            service=ctx.service, trigger=ctx.trigger, cause=ctx.cause.value, epoch=ctx.epoch,
            old=ctx.old_name, new=ctx.new_name, start_at=start_at, resumes=resumes,
            steps=[s.name for s in self.steps],
        )  # fmt: skip
        log.info(
            "promotion %s of %s: %s -> %s (epoch %d, %s, cause %s), %d step(s)",
            run_id, ctx.service, ctx.old_name, ctx.new_name, ctx.epoch, ctx.trigger, ctx.cause.value,
            len(self.steps) - start_at,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            rt = Runtime(ctx.values(run_id), self.agent_token, http)
            queue: deque[Action] = deque(decider.start())
            while queue:
                action = queue.popleft()
                if isinstance(action, RunStep) and (stop := await _ask(before_step, run_id, action.index)):
                    queue = deque([Finish("failed", None, stop)])
                elif isinstance(action, RunStep):
                    res = await self._attempt(run_id, action, rt, alarms)
                    results.append(res)
                    status: Any = res.status
                    queue.extend(decider.step_finished(action.index, status, res.detail))
                elif isinstance(action, Backoff):
                    await asyncio.sleep(action.delay)
                    queue.append(action.then)
                elif isinstance(action, Alarm):
                    text = self.redactor.text(action.text)
                    alarms.append(text)
                    log.error("promotion %s of %s: ALARM: %s", run_id, ctx.service, text)
                    await self._audit(alarms, "alarm", run_id, index=action.index, text=text)
                elif isinstance(action, Finish):
                    duration = loop.time() - t0
                    reason = self.redactor.text(action.reason)
                    await self._audit(
                        alarms, "run_end", run_id, outcome=action.outcome, reason=reason,
                        next_step=action.next_step, duration=round(duration, 3),
                    )  # fmt: skip
                    log.info("promotion %s of %s: %s (%s) in %.2fs", run_id, ctx.service,
                             action.outcome, reason, duration)  # fmt: skip
                    return PromotionResult(
                        run_id, action.outcome, tuple(alarms), tuple(results),
                        action.next_step, reason, duration,
                    )  # fmt: skip
                else:  # pragma: no cover - the decider returns only the types above
                    raise TypeError(f"unknown promotion action {action!r}")
        raise AssertionError("the decider stopped without a Finish action")

    async def _attempt(
        self, run_id: str, action: RunStep, rt: Runtime, alarms: list[str]
    ) -> StepResult:
        step = self.steps[action.index]
        att = Attempt(output=TailBuffer(step.output_limit))
        base = {
            "index": action.index,
            "name": step.name,
            "kind": step.kind,
            "attempt": action.attempt,
        }
        await self._audit(alarms, "step_start", run_id, fence=step.is_fence, **base)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status: Literal["ok", "failed", "timeout"] = "ok"
        try:
            async with asyncio.timeout(step.timeout):
                await RUNNERS[step.kind](step, rt, att)
            detail = att.note
        except TimeoutError:
            status, detail = (
                "timeout",
                f"timed out after {step.timeout:g}s" + (f"; {att.note}" if att.note else ""),
            )
        except StepFailed as exc:
            status, detail = "failed", str(exc)
        except asyncio.CancelledError:
            self._audit_sync(run_id, "step_end", status="cancelled", duration=loop.time() - t0,
                             detail="run cancelled (router stopping?)", **base)  # fmt: skip
            raise
        except Exception as exc:  # a bug in a runner must not kill the failover
            # No traceback: its text would carry the exception's message unredacted.
            log.error("promotion %s: step %s raised %s", run_id, step.name,
                      self.redactor.text(f"{type(exc).__name__}: {exc}"))
            status, detail = "failed", f"unexpected error {type(exc).__name__}: {exc}"
        detail = self.redactor.text(detail)
        result = StepResult(
            action.index, step.name, step.kind, step.is_fence, status, action.attempt,
            loop.time() - t0, detail, self.redactor.text(att.output.tail()), att.exit_code,
            att.http_status, att.sessions_ended,
        )  # fmt: skip
        log.info("promotion %s: step %d %s attempt %d: %s in %.2fs%s", run_id, action.index,
                 step.name, action.attempt, status, result.duration, f" ({detail})" if detail else "")  # fmt: skip
        await self._audit(
            alarms, "step_end", run_id, status=status, duration=round(result.duration, 3),
            detail=detail, exit_code=att.exit_code, http_status=att.http_status,
            sessions_ended=att.sessions_ended, output=self.redactor.text(att.output.tail(AUDIT_OUTPUT_TAIL)),
            **base,
        )  # fmt: skip
        return result

    async def _audit(self, alarms: list[str], event: str, run_id: str, **fields: Any) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.write(event, run_id, **self.redactor.value(fields))
        except OSError as exc:
            text = f"audit log {self.audit.path} cannot be written: {exc.strerror or exc}"
            log.error("promotion %s: %s", run_id, text)
            if text not in alarms:
                alarms.append(text)

    def _audit_sync(self, run_id: str, event: str, **fields: Any) -> None:
        if self.audit is None:
            return
        try:
            self.audit.append(event, run_id, **self.redactor.value(fields))
        except OSError as exc:
            log.error("promotion %s: audit log cannot be written: %s", run_id, exc)

    # -- planning --------------------------------------------------------------------

    def plan(self, ctx: PromotionContext) -> list[str]:
        """Human lines: a header, then one line per step with templates resolved."""
        values = ctx.values("<run id>")
        lines = [
            f"service {ctx.service}: promote {ctx.old_name} -> {ctx.new_name} (epoch {ctx.epoch}, "
            f"trigger {ctx.trigger}, cause {ctx.cause.value}); fence_failure: {self.fence_failure}"
        ]
        if not self.steps:
            lines.append(f"(no promotion steps: traffic moves as soon as {ctx.new_name} is ready)")
        for i, step in enumerate(self.steps):
            tags = (
                [step.kind]
                + (["fencing"] if step.is_fence else [])
                + [f"timeout {step.timeout:g}s"]
            )
            if step.retries:
                tags.append(f"{step.retries} retries, backoff {step.backoff:g}s doubling")
            if not step.is_fence:
                tags.append(f"on_failure {step.on_failure}")
            lines.append(
                f"{i + 1}. {step.name} [{', '.join(tags)}]: {_describe_step(step, values)}"
            )
        return [self.redactor.text(line) for line in lines]


async def _ask(before_step: BeforeStep | None, run_id: str, index: int) -> str | None:
    """Rule 8: None when the step may run, else why not."""
    if before_step is None:
        return None
    try:
        await before_step(run_id, index)
    except Exception as exc:
        return f"step {index} not run: its progress could not be recorded: {exc}"
    return None


def _describe_step(step: Step, values: dict[str, str]) -> str:
    if step.exec is not None:
        text = shlex.join(exec_argv(step, values))
        if step.env:
            text += "  (env: " + ", ".join(f"{k}=..." for k in step.env) + ")"
        return text
    if step.http is not None:
        req = http_request(step.http, values)
        body = (
            req.get("data", b"").decode()
            if "data" in req
            else (json.dumps(req["json"]) if "json" in req else "")
        )
        return (
            f"{req['method']} {req['url']}"
            + (f" body {body[:200]}" if body else "")
            + (f", expect {_status_text(step.http.expect_status)}")
        )
    if step.sql is not None:
        opts = step.sql
        try:
            match = describe_match(*sql_match(opts, values))
        except StepFailed as exc:
            return f"WARNING: {exc}"
        return (
            f"end {opts.driver} sessions matching {match} on {redact_dsn(opts.secret_dsn)}, "
            f"re-checking every {opts.interval:g}s until none remain"
        )
    if step.wait_healthy is not None:
        w = step.wait_healthy
        return (
            f"{w.method} {render(w.url, values)} until {w.successes} good probe(s) in a row "
            f"(every {w.interval:g}s, {_status_text(w.expect_status)})"
        )
    if step.agent is not None:
        a = step.agent
        agent_url = values[f"{a.target}.agent"]
        node = values[f"{a.target}.name"]
        if not agent_url:
            return f"{a.action} on {node}: WARNING: backend {node} has no agent URL; this step will fail"
        url, body = agent_request(a, values, agent_url)
        return f"POST {url} {json.dumps(body)}"
    return "?"


def _status_text(codes: frozenset[int]) -> str:
    lo, hi = min(codes), max(codes)
    if len(codes) == hi - lo + 1 and len(codes) > 1:
        return f"status {lo}-{hi}"
    return "status " + ", ".join(str(c) for c in sorted(codes))
