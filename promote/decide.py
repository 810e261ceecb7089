"""What a promotion run does next: the pipeline's decisions, without I/O.

Rules:

1. Steps run one at a time, in the configured order. Events go in (``step_finished``),
   actions come out (``RunStep``, ``Backoff``, ``Alarm``, ``Finish``). No asyncio, no
   clock: a backoff is an action carrying its delay, and the shell sleeps it.
2. A failed attempt (``failed`` or ``timeout``) is retried while attempts remain; the
   n-th retry waits ``backoff * 2**(n-1)``.
3. When a step has no attempts left:
   - a fencing step: the service's ``fence_failure`` decides. ``hold``: stop here,
     outcome ``fence_hold`` (traffic does not move; an operator confirms the old active
     is fenced, then the run resumes after this step). ``proceed``: alarm, go on.
     ``on_failure`` is not consulted: fencing has its own policy.
   - any other step: ``on_failure: abort`` stops the run, outcome ``failed``;
     ``continue`` raises an alarm and goes on.
4. Reaching the end of the list gives outcome ``promoted``; alarms raised on the way
   stay in the result.
5. An event that does not fit the current state (a result for a step that is not
   running, anything after Finish) raises ``ValueError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "Alarm",
    "Backoff",
    "Finish",
    "Outcome",
    "RunDecider",
    "RunStep",
    "StepPolicy",
    "StepStatus",
]

Outcome = Literal["promoted", "failed", "fence_hold"]
StepStatus = Literal["ok", "failed", "timeout"]


@dataclass(frozen=True, slots=True)
class StepPolicy:
    name: str
    fence: bool
    retries: int = 0
    backoff: float = 1.0
    on_failure: Literal["abort", "continue"] = "abort"


@dataclass(frozen=True, slots=True)
class RunStep:
    index: int
    attempt: int  # 1-based


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait ``delay`` seconds, then perform ``then``."""

    delay: float
    then: RunStep


@dataclass(frozen=True, slots=True)
class Alarm:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: Outcome
    # fence_hold only: the step to resume at once the operator confirms fencing.
    next_step: int | None
    reason: str


Action = RunStep | Backoff | Alarm | Finish


class RunDecider:
    def __init__(
        self,
        policies: Sequence[StepPolicy],
        fence_failure: Literal["hold", "proceed"],
        start_at: int = 0,
    ) -> None:
        if not 0 <= start_at <= len(policies):
            raise ValueError(f"start_at: expected 0..{len(policies)}, got {start_at}")
        self._policies = tuple(policies)
        self._fence_failure = fence_failure
        self._start_at = start_at
        self._running: RunStep | None = None
        self._started = False
        self.finished: Finish | None = None

    def start(self) -> list[Action]:
        if self._started:
            raise ValueError("start: the run has already started")
        self._started = True
        return self._next(self._start_at)

    def step_finished(self, index: int, status: StepStatus, detail: str = "") -> list[Action]:
        running = self._running
        if self.finished is not None or running is None or running.index != index:
            raise ValueError(f"step_finished({index}): step {index} is not running")
        policy = self._policies[index]
        if status == "ok":
            return self._next(index + 1)
        why = f"step {policy.name!r} {status}" + (f": {detail}" if detail else "")
        if running.attempt <= policy.retries:
            retry = RunStep(index, running.attempt + 1)
            self._running = retry
            return [Backoff(policy.backoff * 2 ** (running.attempt - 1), retry)]
        tries = f" after {running.attempt} attempts" if running.attempt > 1 else ""
        if policy.fence:
            if self._fence_failure == "hold":
                text = (
                    f"fencing {why}{tries}; holding traffic (fence_failure: hold) until an "
                    "operator confirms the old active is fenced"
                )
                return [Alarm(index, text), self._finish("fence_hold", index + 1, text)]
            text = f"fencing {why}{tries}; traffic moves anyway (fence_failure: proceed)"
            return [Alarm(index, text), *self._next(index + 1)]
        if policy.on_failure == "continue":
            return [
                Alarm(index, f"{why}{tries}; continuing (on_failure: continue)"),
                *self._next(index + 1),
            ]
        return [self._finish("failed", index + 1, f"{why}{tries}; run aborted (on_failure: abort)")]

    def _next(self, index: int) -> list[Action]:
        if index >= len(self._policies):
            return [self._finish("promoted", None, "all steps done")]
        self._running = RunStep(index, 1)
        return [self._running]

    def _finish(self, outcome: Outcome, next_step: int | None, reason: str) -> Finish:
        self._running = None
        self.finished = Finish(outcome, next_step if outcome == "fence_hold" else None, reason)
        return self.finished
