"""The pipeline shell end to end with real exec steps: fence hold and resume, proceed,
plan lines, and an audit log that cannot be written."""

from __future__ import annotations

import sys
from pathlib import Path

from promote.audit import AuditLog
from promote.config import Step
from promote.pipeline import Pipeline

from .conftest import make_ctx, make_step

PY = sys.executable


def steps(tmp_path: Path) -> list[Step]:
    return [
        make_step(name="fence", exec=[PY, "-c", "import sys; sys.exit(1)", "{old.name}"]),
        make_step(name="warm", exec=["touch", str(tmp_path / "warmed")]),
    ]


async def test_fence_hold_then_resume_after_confirmation(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    pipeline = Pipeline(steps(tmp_path), fence_failure="hold", audit=audit)
    held = await pipeline.run(make_ctx())
    assert held.outcome == "fence_hold" and held.next_step == 1
    assert not (tmp_path / "warmed").exists()  # traffic-moving steps did not run
    assert "until an operator confirms" in held.alarms[0]

    resumed = await pipeline.run(make_ctx(), start_at=held.next_step or 0, resumes=held.run_id)
    assert resumed.outcome == "promoted"
    assert [s.name for s in resumed.steps] == ["warm"] and (tmp_path / "warmed").exists()
    first, second = audit.history()
    assert (first.outcome, second.outcome, second.resumes) == (
        "fence_hold",
        "promoted",
        held.run_id,
    )


async def test_fence_failure_proceed_moves_on_with_an_alarm(tmp_path: Path) -> None:
    res = await Pipeline(steps(tmp_path), fence_failure="proceed", audit=None).run(make_ctx())
    assert res.outcome == "promoted" and (tmp_path / "warmed").exists()
    assert len(res.alarms) == 1 and "traffic moves anyway" in res.alarms[0]


async def test_unwritable_audit_log_raises_an_alarm_but_not_the_run(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "no-such-dir" / "audit.jsonl")
    res = await Pipeline(
        [make_step(name="ok", exec=["true"])], fence_failure="hold", audit=audit
    ).run(make_ctx())
    assert res.outcome == "promoted"
    assert len(res.alarms) == 1 and "cannot be written" in res.alarms[0]


def test_plan_resolves_templates_and_shows_policies() -> None:
    pipeline = Pipeline(
        [make_step(name="fence", exec=["/usr/local/bin/fence-old", "{old.name}"], timeout="20s",
                   retries=2, backoff="500ms"),
         make_step(name="hook", http={"url": "{new.url}/warm", "body": "epoch={epoch}"}, on_failure="continue")],
        fence_failure="hold", audit=None,
    )  # fmt: skip
    lines = pipeline.plan(make_ctx())
    assert lines == [
        "service app: promote a -> b (epoch 7, trigger failover, cause probe_failed); fence_failure: hold",
        "1. fence [exec, fencing, timeout 20s, 2 retries, backoff 0.5s doubling]: /usr/local/bin/fence-old a",
        "2. hook [http, timeout 30s, on_failure continue]: POST http://127.0.0.1:8002/warm body epoch=7, expect status 200-299",
    ]
    assert (
        Pipeline([], fence_failure="hold", audit=None)
        .plan(make_ctx())[1]
        .startswith("(no promotion steps")
    )
