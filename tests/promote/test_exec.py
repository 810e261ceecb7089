"""The ``exec`` step with real subprocesses: exit codes, timeouts that kill the whole
process group (children included, SIGTERM ignored), megabytes of output, environment
and templates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hotspare.causes import Cause
from promote.pipeline import Pipeline, PromotionResult
from tests.helpers import wait_for

from .conftest import make_ctx, make_step

PY = sys.executable


async def run1(**step: object) -> PromotionResult:
    return await Pipeline([make_step(**step)], fence_failure="hold", audit=None).run(make_ctx())


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_exit_zero_is_success_with_output_and_context_in_env_and_args() -> None:
    code = (
        "import os, sys; print('args', sys.argv[1:]); "
        "print(*(k + '=' + os.environ[k] for k in sorted(os.environ) if k.startswith('HOTSPARE_')), sep='\\n')"
    )
    res = await run1(
        exec=[PY, "-c", code, "{old.name}", "{new.url}", "{epoch}"], env={"EXTRA": "{cause}"}
    )
    step = res.steps[0]
    assert res.outcome == "promoted" and step.status == "ok" and step.exit_code == 0
    assert "args ['a', 'http://127.0.0.1:8002', '7']" in step.output_tail
    for line in (
        "HOTSPARE_SERVICE=app", "HOTSPARE_OLD_ACTIVE=a", "HOTSPARE_NEW_ACTIVE=b",
        "HOTSPARE_OLD_URL=http://127.0.0.1:8001", "HOTSPARE_NEW_URL=http://127.0.0.1:8002",
        "HOTSPARE_EPOCH=7", "HOTSPARE_CAUSE=probe_failed", "HOTSPARE_TRIGGER=failover",
    ):  # fmt: skip
        assert line in step.output_tail.splitlines()


@pytest.mark.parametrize(("cause", "trigger"), [(Cause.TRAFFIC_ERRORS, "failover"), (Cause.ADMIN, "switchover")])
async def test_the_cause_reaches_the_step_as_its_documented_lowercase_value(cause: Cause, trigger: str) -> None:
    """The typed Cause all the way into the step: HOTSPARE_CAUSE and {cause} are its value."""
    code = "import os, sys; print('env=' + os.environ['HOTSPARE_CAUSE'], 'arg=' + sys.argv[1])"
    step = make_step(exec=[PY, "-c", code, "{cause}"])
    res = await Pipeline([step], fence_failure="hold", audit=None).run(make_ctx(cause=cause, trigger=trigger))
    assert res.steps[0].status == "ok", res.steps[0].detail
    assert res.steps[0].output_tail.strip() == f"env={cause.value} arg={cause.value}"


async def test_nonzero_exit_fails_and_aborts_the_run() -> None:
    steps = [
        make_step(name="warm", exec=[PY, "-c", "import sys; print('boom'); sys.exit(3)"]),
        make_step(name="never", exec=[PY, "-c", "pass"]),
    ]
    res = await Pipeline(steps, fence_failure="hold", audit=None).run(make_ctx())
    assert res.outcome == "failed"
    assert [s.name for s in res.steps] == ["warm"]
    assert res.steps[0].exit_code == 3 and "exited with status 3" in res.steps[0].detail
    assert "boom" in res.steps[0].output_tail


async def test_missing_program_fails_with_its_name() -> None:
    res = await run1(exec=["/nonexistent/fence-old", "{old.name}"])
    assert res.steps[0].status == "failed"
    assert "cannot start '/nonexistent/fence-old'" in res.steps[0].detail
    assert res.outcome == "fence_hold"  # it names {old.name}: a fencing step by default


async def test_timeout_kills_the_whole_group_children_and_sigterm_ignorers(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The leader ignores SIGTERM and forks a grandchild that ignores it too; both must
    # end by SIGKILL after kill_grace.
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    while True: time.sleep(1)\n"
        f"open({str(pids)!r}, 'w').write('%d %d' % (os.getpid(), child))\n"
        "print('started', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    res = await run1(exec=[PY, "-c", code], timeout="1s", kill_grace="300ms")
    step = res.steps[0]
    assert step.status == "timeout"
    assert "timed out after 1s" in step.detail and "SIGKILL" in step.detail
    assert "started" in step.output_tail
    leader, child = map(int, pids.read_text().split())
    assert gone(leader)
    await wait_for(lambda: gone(child), timeout=10, what=f"grandchild {child} to die")


async def test_timeout_with_sigterm_honoured_needs_no_sigkill(tmp_path: Path) -> None:
    res = await run1(exec=["sleep", "60"], timeout="300ms", kill_grace="10s")
    step = res.steps[0]
    assert step.status == "timeout"
    assert "SIGTERM" in step.detail and "SIGKILL" not in step.detail
    assert step.duration < 10  # SIGTERM ended it: the grace was not used up


async def test_megabytes_of_output_keep_only_the_tail() -> None:
    code = (
        "import sys\nfor i in range(200000): sys.stdout.write(f'line {i:08d} ' + 'x' * 40 + '\\n')"
    )
    res = await run1(exec=[PY, "-c", code], output_limit="16KiB")
    step = res.steps[0]
    assert step.status == "ok"
    assert "line 00199999" in step.output_tail  # the end is kept
    assert "line 00000000" not in step.output_tail  # the start is dropped
    assert step.output_tail.startswith("[... ") and "bytes dropped]" in step.output_tail
    assert len(step.output_tail) < 17 * 1024


async def test_background_child_holding_the_pipe_does_not_hold_the_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    res = await run1(exec=f"sleep 30 & echo $! > {pidfile}; echo done", shell=True, timeout="10s")
    assert res.steps[0].status == "ok" and "done" in res.steps[0].output_tail
    os.kill(int(pidfile.read_text()), 9)  # documented: left running; clean up here


async def test_shell_templates_are_quoted_as_one_word() -> None:
    ctx = make_ctx(service="x; echo INJECTED")
    step = make_step(exec="printf '[%s]\\n' {service}", shell=True)
    res = await Pipeline([step], fence_failure="hold", audit=None).run(ctx)
    assert res.steps[0].output_tail.strip() == "[x; echo INJECTED]"


async def test_retries_with_backoff_then_success(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); sys.exit(0 if n >= 3 else 1)"
    )
    res = await run1(exec=[PY, "-c", code], retries=3, backoff="10ms")
    assert [(s.attempt, s.status) for s in res.steps] == [(1, "failed"), (2, "failed"), (3, "ok")]
    assert res.outcome == "promoted" and counter.read_text() == "3"


async def test_router_secrets_are_not_inherited_but_can_be_given(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOTSPARE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("SOME_OTHER_NAME", "repl-secret")  # the replication token, under any name
    monkeypatch.setenv("HARMLESS", "kept")
    code = "import os; print(*(k + '=' + v for k, v in sorted(os.environ.items())), sep='\\n')"
    step = make_step(exec=[PY, "-c", code], env={"FENCE_KEY": "given-explicitly"})
    res = await Pipeline([step], fence_failure="hold", audit=None, agent_token="repl-secret").run(make_ctx())
    out = res.steps[0].output_tail.splitlines()
    assert res.outcome == "promoted", res
    assert "HARMLESS=kept" in out and "FENCE_KEY=given-explicitly" in out
    assert not [line for line in out if "admin-secret" in line or "repl-secret" in line], out
