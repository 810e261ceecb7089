"""The run decider: events in, actions out, no I/O (playbook style)."""

from __future__ import annotations

import pytest

from promote.decide import Alarm, Backoff, Finish, RunDecider, RunStep, StepPolicy

FENCE = StepPolicy("fence", fence=True)
WARM = StepPolicy("warm", fence=False)


def test_all_ok_runs_in_order_then_promoted() -> None:
    d = RunDecider([FENCE, WARM], "hold")
    assert d.start() == [RunStep(0, 1)]
    assert d.step_finished(0, "ok") == [RunStep(1, 1)]
    assert d.step_finished(1, "ok") == [Finish("promoted", None, "all steps done")]


def test_no_steps_is_promoted_at_once() -> None:
    assert RunDecider([], "hold").start() == [Finish("promoted", None, "all steps done")]


def test_retries_back_off_doubling_then_abort() -> None:
    d = RunDecider([StepPolicy("w", False, retries=2, backoff=0.5)], "hold")
    d.start()
    assert d.step_finished(0, "failed") == [Backoff(0.5, RunStep(0, 2))]
    assert d.step_finished(0, "timeout") == [Backoff(1.0, RunStep(0, 3))]
    [finish] = d.step_finished(0, "failed", "exit 1")
    assert isinstance(finish, Finish) and finish.outcome == "failed"
    assert "after 3 attempts" in finish.reason and "on_failure: abort" in finish.reason


def test_failed_fence_holds_and_names_the_resume_point() -> None:
    d = RunDecider([FENCE, WARM], "hold")
    d.start()
    alarm, finish = d.step_finished(0, "timeout", "timed out after 20s")
    assert isinstance(alarm, Alarm) and "holding traffic" in alarm.text
    assert finish == Finish("fence_hold", 1, alarm.text)


def test_failed_fence_proceeds_with_alarm_when_policy_says_so() -> None:
    d = RunDecider([FENCE, WARM], "proceed")
    d.start()
    alarm, nxt = d.step_finished(0, "failed")
    assert isinstance(alarm, Alarm) and "fence_failure: proceed" in alarm.text
    assert nxt == RunStep(1, 1)


def test_fence_policy_wins_over_on_failure_continue() -> None:
    d = RunDecider([StepPolicy("f", True, on_failure="continue"), WARM], "hold")
    d.start()
    assert d.step_finished(0, "failed")[-1] == d.finished
    assert d.finished is not None and d.finished.outcome == "fence_hold"


def test_on_failure_continue_alarms_and_goes_on() -> None:
    d = RunDecider([StepPolicy("notify", False, on_failure="continue"), WARM], "hold")
    d.start()
    alarm, nxt = d.step_finished(0, "failed", "503")
    assert isinstance(alarm, Alarm) and "continuing" in alarm.text and nxt == RunStep(1, 1)


def test_resume_starts_after_the_held_step() -> None:
    d = RunDecider([FENCE, WARM], "hold", start_at=1)
    assert d.start() == [RunStep(1, 1)]


@pytest.mark.parametrize("index", [1, 5])
def test_event_for_a_step_not_running_raises_and_changes_nothing(index: int) -> None:
    d = RunDecider([FENCE, WARM], "hold")
    d.start()
    with pytest.raises(ValueError, match="is not running"):
        d.step_finished(index, "ok")
    assert d.step_finished(0, "ok") == [RunStep(1, 1)]


def test_nothing_after_finish_and_no_double_start() -> None:
    d = RunDecider([WARM], "hold")
    d.start()
    d.step_finished(0, "ok")
    with pytest.raises(ValueError):
        d.step_finished(0, "ok")
    with pytest.raises(ValueError):
        d.start()
    with pytest.raises(ValueError):
        RunDecider([WARM], "hold", start_at=3)
