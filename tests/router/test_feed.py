"""The typed event feed: the EventFeed itself, then what a real failover controller
publishes on it (real backends on loopback ports, the real health checker, a real state
file, real promotion steps as subprocesses), each event's message being the operator's
log line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hotspare.causes import Cause
from promote.audit import AuditLog
from router.config import Config, parse_config
from router.errors import StateFileError
from router.failover import feed
from router.failover.controller import ServiceController
from router.failover.machine import AdminResume, AdminSwitchover, State
from router.failover.state import ServiceState, StateFile
from tests.helpers import wait_for

from .test_controller import App, GatedRunner, start, stop

PY = sys.executable


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = App(), App()
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


def note(at: float, service: str | None, message: str) -> feed.Notice:
    return feed.Notice(at=at, service=service, message=message)


# -- the feed ---------------------------------------------------------------------------------


def test_subscribers_get_every_later_event_until_they_unsubscribe() -> None:
    f = feed.EventFeed(clock=lambda: 7.0)
    seen: list[feed.FeedEvent] = []
    f.publish(note(1.0, "app", "before"))
    unsubscribe = f.subscribe(seen.append)
    f.publish(note(2.0, "app", "during"))
    unsubscribe()
    unsubscribe()  # twice is harmless
    f.publish(note(3.0, "app", "after"))
    assert [e.message for e in seen] == ["during"]
    assert f.clock() == 7.0


def test_a_failing_subscriber_is_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    f = feed.EventFeed()
    seen: list[str] = []

    def bad(e: feed.FeedEvent) -> None:
        raise ValueError("observer bug")

    f.subscribe(bad)
    f.subscribe(lambda e: seen.append(e.message))
    f.publish(note(1.0, "app", "one"))
    f.publish(note(2.0, "app", "two"))
    assert seen == ["one", "two"]  # the next subscriber still ran, both times
    assert sum("subscriber" in r.getMessage() for r in caplog.records) == 2


def test_history_is_bounded_and_read_per_service_or_router_wide() -> None:
    f = feed.EventFeed(size=4)
    for i, svc in enumerate(["app", "web", None, "app", "gone", "app"]):
        f.publish(note(float(i), svc, f"m{i}"))
    assert [e.message for e in f.recent()] == ["m2", "m3", "m4", "m5"]  # the first two fell out
    assert [e.message for e in f.recent("app")] == ["m3", "m5"]
    assert [e.message for e in f.recent("app", limit=1)] == ["m5"]
    assert [e.message for e in f.router_wide(["app", "web"])] == ["m2", "m4"]


def test_kinds_are_the_short_names_the_admin_api_shows() -> None:
    assert [k.kind for k in (feed.StateChanged, feed.HealthChanged, feed.AlarmRaised,
                             feed.PromotionStep, feed.Notice)] == ["state", "health", "alarm", "promotion", "notice"]


# -- what the controller publishes ------------------------------------------------------------


def config(tmp_path: Path, a: App, b: App, **service: object) -> Config:
    return parse_config({
        "listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "state.json"),
        "audit_log": str(tmp_path / "audit.jsonl"),
        "services": [{
            "name": "app",
            "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 2},
            "failover": {"hold": {"max_time": "5s"}, "retry_after": 3},
            "backends": [{"name": "a", "url": f"http://127.0.0.1:{a.port}"},
                         {"name": "b", "url": f"http://127.0.0.1:{b.port}"}],
            **service,
        }],
    })


def logged(caplog: pytest.LogCaptureFixture, e: feed.FeedEvent) -> bool:
    """The event's message is the operator's log line (without its service prefix)."""
    return any(m in (e.message, f"service {e.service}: {e.message}", f"service {e.service} {e.message}")
               for m in caplog.messages)


def of(f: feed.EventFeed, kind: type[feed.FeedEvent]) -> list[feed.FeedEvent]:
    return [e for e in f.recent(limit=200) if isinstance(e, kind)]


async def test_a_switchover_publishes_the_command_and_each_committed_state_change(
    tmp_path: Path, apps: tuple[App, App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    f = feed.EventFeed()
    runner = GatedRunner()
    ctl, task = await start(config(tmp_path, *apps), runner, f)
    try:
        ctl.apply(AdminSwitchover(0.0, "b"))
        runner.gate.set()
        assert await ctl.wait_settled(5.0)
    finally:
        await stop(task)
    states = of(f, feed.StateChanged)
    assert [(e.old, e.new, e.active, e.epoch, e.cause) for e in states if isinstance(e, feed.StateChanged)] == [
        ("active", "promoting", "a", 1, Cause.ADMIN),
        ("promoting", "active", "b", 1, Cause.PROMOTED),
    ]
    (command,) = of(f, feed.Notice)
    assert command.message == "operator switchover to b: promoting with a active at epoch 1"
    assert all(e.service == "app" and logged(caplog, e) for e in [*states, command])


async def test_a_refused_command_is_a_notice_and_changes_nothing(tmp_path: Path, apps: tuple[App, App]) -> None:
    f = feed.EventFeed()
    ctl, task = await start(config(tmp_path, *apps), GatedRunner(), f)
    try:
        with pytest.raises(Exception, match="not allowed"):
            ctl.apply(AdminResume(0.0))  # nothing to resume: ACTIVE takes no AdminResume
    finally:
        await stop(task)
    (refused,) = of(f, feed.Notice)
    assert refused.message.startswith("operator resume refused: ")
    assert of(f, feed.StateChanged) == []


async def test_detector_transitions_and_the_spare_alarm_are_published(
    tmp_path: Path, apps: tuple[App, App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # SUSPECT is an INFO line
    a, b = apps
    f = feed.EventFeed()
    ctl, task = await start(config(tmp_path, a, b), GatedRunner(), f)
    try:
        await b.stop()
        await wait_for(lambda: any(isinstance(e, feed.AlarmRaised) for e in f.recent()), what="the spare alarm")
    finally:
        await stop(task)
    health = [e for e in of(f, feed.HealthChanged) if isinstance(e, feed.HealthChanged)]
    assert [(e.backend, e.old, e.new, e.cause) for e in health] == [
        ("b", "up", "suspect", Cause.PROBE_FAILED), ("b", "suspect", "down", Cause.PROBE_FAILED)]
    assert all(logged(caplog, e) for e in health)
    (alarm,) = of(f, feed.AlarmRaised)
    assert isinstance(alarm, feed.AlarmRaised) and alarm.code == "spare_unhealthy"
    assert logged(caplog, alarm)
    assert ctl.alarms == ["spare_unhealthy: " + alarm.message.removeprefix("ALARM (spare_unhealthy): ")]


async def test_a_state_write_failure_is_an_alarm_with_its_code(tmp_path: Path, apps: tuple[App, App]) -> None:
    (tmp_path / "not-a-dir").write_text("")
    cfg = config(tmp_path, *apps).model_copy(update={"state_file": tmp_path / "not-a-dir" / "state.json"})
    f = feed.EventFeed()
    ctl = ServiceController(cfg, cfg.services[0], StateFile(cfg.state_file), ServiceState("a", 0),
                            run_promotion=GatedRunner(), feed=f)
    task = asyncio.create_task(ctl.run(), name="controller:app")
    await wait_for(lambda: ctl.checker.started, what="health checker running")
    try:
        with pytest.raises(StateFileError):
            ctl.apply(AdminSwitchover(0.0, "b"))
    finally:
        await stop(task)
    (alarm,) = of(f, feed.AlarmRaised)
    assert isinstance(alarm, feed.AlarmRaised) and alarm.code == "state_write_failed"
    assert "the operator's request was not carried out" in alarm.message
    assert of(f, feed.StateChanged) == []  # nothing was committed
    assert ctl.machine.state is State.ACTIVE and ctl.machine.epoch == 0


async def test_each_promotion_step_end_and_pipeline_alarm_is_published(
    tmp_path: Path, apps: tuple[App, App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    marker = tmp_path / "warmed"
    steps = [
        {"name": "fence", "exec": [PY, "-c", "import sys; sys.exit(1)"], "timeout": "10s", "fence": True},
        {"name": "warm", "exec": ["touch", str(marker)], "timeout": "10s"},
    ]
    cfg = config(tmp_path, *apps, promote=steps, fence_failure="proceed")
    f = feed.EventFeed()
    ctl, task = await start(cfg, None, f)
    try:
        ctl.apply(AdminSwitchover(0.0, "b"))
        assert await ctl.wait_settled(10.0)
    finally:
        await stop(task)
    assert ctl.machine.active == "b" and marker.exists()
    steps_seen = [e for e in of(f, feed.PromotionStep) if isinstance(e, feed.PromotionStep)]
    assert [(e.index, e.name, e.outcome) for e in steps_seen] == [(0, "fence", "failed"), (1, "warm", "ok")]
    assert len({e.run for e in steps_seen}) == 1
    # The same words the pipeline logs for each step (durations may differ in the last digit).
    for e in steps_seen:
        head = e.message.split(" in ")[0]
        assert any(m.startswith(head) for m in caplog.messages), (e.message, caplog.messages)
    alarms = [e for e in of(f, feed.AlarmRaised) if isinstance(e, feed.AlarmRaised)]
    assert [e.code for e in alarms] == ["promotion_alarm"] and "traffic moves anyway" in alarms[0].message
    (run,) = AuditLog(cfg.audit_log_path).history()  # the records the events were read from
    assert run.run_id == steps_seen[0].run
    assert [(r["index"], r["name"], r["status"]) for r in run.steps] == [(0, "fence", "failed"), (1, "warm", "ok")]
