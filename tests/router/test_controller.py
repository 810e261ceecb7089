"""The failover controller end to end without the proxy: real aiohttp backends on
loopback ports, a real state file, the real health checker and machine; a promotion
runner stub where a test needs to hold a promotion open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from router.config import Config, parse_config
from router.failover.controller import (
    MustHold,
    PromotionOutcome,
    PromotionRunner,
    ServiceController,
)
from router.failover.director import NoRoute, Outcome
from router.failover.events import RunPromotion
from router.failover.feed import EventFeed
from router.failover.machine import AdminSwitchover, BackendUp, State
from router.failover.state import StateFile
from router.failures import Failure
from tests.helpers import wait_for


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


class App:
    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", ok)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = App(), App()
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


def config(tmp_path: Path, a: App, b: App) -> Config:
    return parse_config({
        "listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "state.json"),
        "services": [{
            "name": "app",
            "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 2},
            "failover": {"hold": {"max_time": "5s"}, "retry_after": 3},
            "backends": [{"name": "a", "url": f"http://127.0.0.1:{a.port}"},
                         {"name": "b", "url": f"http://127.0.0.1:{b.port}"}],
        }],
    })


async def start(
    cfg: Config, runner: PromotionRunner | None = None, feed: EventFeed | None = None
) -> tuple[ServiceController, asyncio.Task[None]]:
    sf = StateFile(cfg.state_file)
    initial = sf.load(cfg.services)["app"]
    ctl = ServiceController(cfg, cfg.services[0], sf, initial, run_promotion=runner, feed=feed)
    task = asyncio.create_task(ctl.run(), name="controller:app")
    await wait_for(lambda: ctl.checker.started, what="health checker running")
    return ctl, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_crash_of_the_active_moves_traffic_to_the_spare_and_persists_it(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    a, b = apps
    cfg = config(tmp_path, a, b)
    ctl, task = await start(cfg)
    d = ctl.director
    assert (d.route().backend.name, d.route().epoch) == ("a", 0)
    await a.stop()
    d.report("a", Outcome.failed(Failure.CONNECT))  # what the proxy saw
    await wait_for(lambda: d.mode == "route" and d.route().backend.name == "b", what="traffic on b")
    assert d.route().epoch == 1
    snap = d.snapshot()
    assert (snap.active, snap.epoch, snap.state) == ("b", 1, "active")
    assert [(v.name, v.healthy) for v in snap.backends] == [("a", False), ("b", True)]
    assert json.loads(cfg.state_file.read_text())["services"]["app"] == {"active": "b", "epoch": 1}
    await stop(task)
    # A restarted router comes back with the same active and epoch; no failback.
    await a.start()
    ctl2, task2 = await start(cfg)
    assert (ctl2.director.route().backend.name, ctl2.director.route().epoch) == ("b", 1)
    await wait_for(lambda: ctl2.checker.prober("a").probes_sent >= 3,
                   what="a probed again")
    assert ctl2.director.route().backend.name == "b"
    await stop(task2)


async def test_held_requests_are_released_to_the_new_active(tmp_path: Path, apps: tuple[App, App]) -> None:
    a, b = apps
    ctl, task = await start(config(tmp_path, a, b))
    d = ctl.director
    await a.stop()
    d.report("a", Outcome.failed(Failure.CONNECT))
    await wait_for(lambda: d.mode != "route", what="promotion started")
    with pytest.raises(MustHold):
        d.route()
    route = await d.wait_for_route(0)
    assert (route.backend.name, route.epoch) == ("b", 1)
    await stop(task)


async def test_spare_dead_when_the_active_dies_no_failover_503(tmp_path: Path, apps: tuple[App, App]) -> None:
    a, b = apps
    cfg = config(tmp_path, a, b)
    ctl, task = await start(cfg)
    d = ctl.director
    await b.stop()
    await wait_for(lambda: d.healthy("b") is False, what="spare b DOWN")
    await a.stop()
    await wait_for(lambda: d.mode == "refuse", what="service refusing")
    with pytest.raises(NoRoute) as info:
        d.route()
    assert (info.value.status, info.value.retry_after) == (503, 3)
    assert any("no spare passes its probes" in x for x in ctl.alarms)
    assert not cfg.state_file.exists()  # nothing changed: epoch 0 on a, first start
    await stop(task)


async def test_a_late_event_is_dropped_and_apply_refuses_at_once(
    tmp_path: Path, apps: tuple[App, App], caplog: pytest.LogCaptureFixture
) -> None:
    from router.failover.machine import PromotionSucceeded, Refused

    a, b = apps
    ctl, task = await start(config(tmp_path, a, b))
    try:
        ctl.submit(PromotionSucceeded(0.0))  # no promotion runs: the machine refuses it
        await wait_for(lambda: any("dropped PromotionSucceeded" in m for m in caplog.messages), what="drop logged")
        assert not task.done()
        with pytest.raises(Refused, match="already the active"):
            ctl.apply(AdminSwitchover(0.0, "a"))
        assert ctl.machine.state.value == "active" and ctl.machine.epoch == 0
    finally:
        await stop(task)


# -- settled() / wait_settled() -------------------------------------------------------------


class GatedRunner:
    """A promotion runner stub: each run waits until the test opens ``gate``, then
    answers ``outcome`` (or raises ``error``)."""

    def __init__(self, outcome: PromotionOutcome | None = None, error: Exception | None = None) -> None:
        self.gate = asyncio.Event()
        self.runs: list[RunPromotion] = []
        self.outcome = outcome or PromotionOutcome("promoted")
        self.error = error

    async def __call__(self, a: RunPromotion) -> PromotionOutcome:
        self.runs.append(a)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.outcome


async def test_a_controller_at_rest_is_settled_and_wait_settled_returns_at_once(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    ctl, task = await start(config(tmp_path, *apps), GatedRunner())
    try:
        assert await ctl.wait_settled(0)  # no wait at all when already settled
        assert ctl.settled()
    finally:
        await stop(task)


async def test_wait_settled_waits_for_the_promotion_and_the_taking_of_its_result(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    runner = GatedRunner()
    ctl, task = await start(config(tmp_path, *apps), runner)
    try:
        ctl.apply(AdminSwitchover(0.0, "b"))
        assert ctl.machine.state is State.PROMOTING and not ctl.settled()
        assert await ctl.wait_settled(0) is False  # a zero bound answers at once
        await wait_for(lambda: len(runner.runs) == 1, what="the promotion running")
        assert not ctl.settled()
        runner.gate.set()
        assert await ctl.wait_settled(5.0)
        m = ctl.machine
        assert (m.state, m.active, m.epoch) == (State.ACTIVE, "b", 1)
        assert ctl.director.route().backend.name == "b"
    finally:
        await stop(task)


@pytest.mark.parametrize("runner", [
    GatedRunner(PromotionOutcome("failed", "step 0 failed")),
    GatedRunner(error=RuntimeError("a bug in the runner")),
], ids=["failed", "raised"])
async def test_a_failed_or_crashed_promotion_settles_back_on_the_old_active(
    tmp_path: Path, apps: tuple[App, App], runner: GatedRunner
) -> None:
    ctl, task = await start(config(tmp_path, *apps), runner)
    try:
        ctl.apply(AdminSwitchover(0.0, "b"))
        runner.gate.set()
        assert await ctl.wait_settled(5.0)
        assert (ctl.machine.state, ctl.machine.active, ctl.machine.epoch) == (State.ACTIVE, "a", 1)
        assert any(al.startswith("promotion_failed:") for al in ctl.alarms)
    finally:
        await stop(task)


async def test_a_queued_event_is_not_settled_until_it_is_taken(tmp_path: Path, apps: tuple[App, App]) -> None:
    ctl, task = await start(config(tmp_path, *apps), GatedRunner())
    try:
        ctl.submit(BackendUp(0.0, "b"))
        assert not ctl.settled()
        assert await ctl.wait_settled(5.0)
        assert ctl.settled()
    finally:
        await stop(task)
