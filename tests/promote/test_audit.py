"""The audit log: what a run writes, history as a table, and unfinished runs left by a
router killed (SIGKILL, a real subprocess) in the middle of a promotion."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

from promote.audit import AuditLog, format_table
from promote.pipeline import Pipeline
from tests.helpers import wait_for

from .conftest import make_ctx, make_step
from .test_exec import gone

PY = sys.executable


async def test_a_run_writes_start_steps_alarms_and_end(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    steps = [
        make_step(name="fence", exec=[PY, "-c", "print('fenced {old.name}')"]),
        make_step(name="notify", exec=[PY, "-c", "import sys; sys.exit(4)"], on_failure="continue"),
    ]
    res = await Pipeline(steps, fence_failure="hold", audit=audit).run(make_ctx())
    assert res.outcome == "promoted"
    records = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert [r["event"] for r in records] == [
        "run_start", "step_start", "step_end", "step_start", "step_end", "alarm", "run_end",
    ]  # fmt: skip
    assert {r["run"] for r in records} == {res.run_id}
    start, end = records[0], records[-1]
    assert (start["trigger"], start["cause"], start["epoch"], start["old"], start["new"]) == (
        "failover", "probe_failed", 7, "a", "b",
    )  # fmt: skip
    assert records[2]["output"].strip() == "fenced a" and records[2]["status"] == "ok"
    assert records[4]["exit_code"] == 4
    assert end["outcome"] == "promoted"

    [run] = audit.history()
    assert run.outcome == "promoted" and len(run.steps) == 2 and len(run.alarms) == 1
    assert audit.unfinished() == []
    table = format_table(audit.history())
    assert "app" in table and "a->b" in table and "promoted" in table
    assert "1. notify [exec] attempt 1: failed" in table and "exit 4" in table
    assert "ALARM: step 'notify' failed" in table


def test_a_plan_writes_nothing_and_runs_nothing(tmp_path: Path) -> None:
    """A dry run is Pipeline.plan: lines only (run() has no dry-run mode)."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    marker = tmp_path / "ran"
    step = make_step(name="touch", exec=["touch", str(marker)])
    lines = Pipeline([step], fence_failure="hold", audit=audit).plan(make_ctx())
    assert f"touch {marker}" in lines[1]
    assert not marker.exists() and not audit.path.exists()


async def test_router_killed_mid_run_leaves_an_unfinished_run(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.jsonl"
    started = tmp_path / "started"
    # A real process standing in for the router: it runs a pipeline whose second step
    # hangs; it is SIGKILLed there, as a router crash would be.
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from promote.audit import AuditLog
        from promote.pipeline import Pipeline
        from tests.promote.conftest import make_ctx, make_step
        steps = [make_step(name="fence", exec=["true"]),
                 make_step(name="warm", exec=["sh", "-c", "echo $$ > {started}; exec sleep 60"], timeout=100)]
        asyncio.run(Pipeline(steps, fence_failure="hold", audit=AuditLog({str(log_path)!r})).run(make_ctx()))
    """)
    proc = await asyncio.create_subprocess_exec(PY, "-c", script)
    try:
        await wait_for(lambda: started.exists() and started.read_text().strip(), timeout=30,
                       what="the hanging step to start")  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        await proc.wait()
        if started.exists() and started.read_text().strip():
            os.killpg(int(started.read_text()), signal.SIGKILL)  # the orphaned step
    audit = AuditLog(log_path)
    [run] = audit.unfinished()
    assert run.outcome is None and run.service == "app"
    assert [s["name"] for s in run.steps] == ["fence"]
    assert run.last_step is not None and run.last_step["name"] == "warm"
    assert "UNFINISHED" in format_table(audit.history())
    assert "stopped during step 1. warm" in format_table(audit.history())


async def test_cancelled_run_records_the_step_and_stays_unfinished(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    started = tmp_path / "started"
    step = make_step(
        name="warm", exec=["sh", "-c", f"echo $$ > {started}; exec sleep 60"], timeout=100
    )
    task = asyncio.create_task(Pipeline([step], fence_failure="hold", audit=audit).run(make_ctx()))
    await wait_for(lambda: started.exists() and started.read_text().strip(), timeout=30,
                   what="the step to start")  # fmt: skip
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("CancelledError must propagate out of run()")
    [run] = audit.unfinished()
    assert run.steps[0]["status"] == "cancelled"
    pid = int(started.read_text())
    await wait_for(lambda: gone(pid), timeout=10, what="the cancelled step's process to die")


def test_torn_and_foreign_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.append("run_start", "r1", service="app", old="a", new="b", epoch=3)
    audit.append("run_end", "r1", outcome="failed")
    with open(path, "a") as f:
        f.write('["not", "a", "record"]\n{"event": "step_end", "run": "ghost"}\n{"ts": "2026-')
    [run] = audit.history()
    assert run.outcome == "failed" and audit.bad_lines == 3
    assert AuditLog(tmp_path / "missing.jsonl").history() == []
