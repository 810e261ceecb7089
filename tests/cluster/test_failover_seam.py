"""The failover controller's seam for the router pair (router/failover/store.py,
roles.py, promoting.py): a store that may wait, fail or depose; the gate; follower mode;
lead from a given record; the promotion hooks. Real controllers and health checkers on
loopback backends; the store and the gate are test doubles (no etcd here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from hotspare.causes import Cause
from router.config import Config, parse_config
from router.errors import StateFileError
from router.failover.controller import ServiceController
from router.failover.events import AdminSwitchover, BackendDown, Event, RunPromotion
from router.failover.hold import Refusal
from router.failover.runs import PromotionOutcome
from router.failover.state import ServiceState, StateFile
from router.failover.store import Decision, FileStore, StoreDeposed, StoreError
from tests.helpers import wait_for


class Store:
    """Records every decision; ``fail`` raises it once; ``gate`` holds a write open."""

    def __init__(self) -> None:
        self.saved: list[Decision] = []
        self.fail: StateFileError | None = None
        self.gate: asyncio.Event | None = None

    async def save(self, service: str, decision: Decision) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.saved.append(decision)


class Gate:
    def __init__(self) -> None:
        self.open = True

    def admits(self, service: str, event: Event) -> bool:
        return self.open


class Hooks:
    def __init__(self, refuse_step: int | None = None) -> None:
        self.calls: list[str] = []
        self.refuse_step = refuse_step

    async def started(self, service: str, run: RunPromotion) -> None:
        self.calls.append(f"started {run.epoch}")

    async def before_step(self, service: str, run: RunPromotion, run_id: str, index: int) -> None:
        self.calls.append(f"step {index}")
        if index == self.refuse_step:
            raise StoreDeposed("another router decides now")

    async def ended(self, service: str, run: RunPromotion, outcome: PromotionOutcome) -> None:
        self.calls.append(f"ended {outcome.outcome}")


@pytest.fixture
async def ports() -> AsyncIterator[tuple[int, int]]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runners = []
    for _ in range(2):
        app = web.Application()
        app.router.add_get("/health", ok)
        r = web.AppRunner(app, shutdown_timeout=0.1)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", 0).start()
        runners.append(r)
    yield runners[0].addresses[0][1], runners[1].addresses[0][1]
    for r in reversed(runners):
        await r.cleanup()


def config(tmp_path: Path, ports: tuple[int, int], **service: object) -> Config:
    return parse_config({
        "listen": ["127.0.0.1:0"], "state_file": str(tmp_path / "state.json"),
        "audit_log": str(tmp_path / "audit.jsonl"),
        "services": [{
            "name": "app",
            "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 1, "fall": 2},
            "failover": {"hold": {"max_time": "5s"}, "retry_after": 3},
            "backends": [{"name": "a", "url": f"http://127.0.0.1:{ports[0]}"},
                         {"name": "b", "url": f"http://127.0.0.1:{ports[1]}"}],
            **service,
        }],
    })


async def running(ctl: ServiceController) -> asyncio.Task[None]:
    task = asyncio.create_task(ctl.run(), name="controller:app")
    await wait_for(lambda: ctl.checker.started, what="health checker running")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def joined(cfg: Config, store: Store, gate: Gate, hooks: Hooks | None = None) -> ServiceController:
    ctl = ServiceController(cfg, cfg.services[0], StateFile(cfg.state_file), ServiceState("a", 0))
    ctl.join(store, gate, hooks or Hooks())
    return ctl


async def test_a_follower_decides_nothing_and_its_director_is_driven_from_outside(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    store, gate = Store(), Gate()
    ctl = joined(config(tmp_path, ports), store, gate)
    task = await running(ctl)
    d = ctl.director
    ctl.submit(BackendDown(0.0, "a", Cause.PROBE_FAILED))
    await wait_for(ctl.settled, what="event taken")
    assert ctl.machine.healthy["a"] is True and store.saved == []  # dropped: a follower
    with pytest.raises(Exception, match="does not decide"):
        await ctl.apply_async(AdminSwitchover(0.0, "b"))
    ctl.follow(Decision("a", 1, "hold", "promoting"))
    held = asyncio.create_task(d.wait_for_route(0))
    await wait_for(lambda: len(d.hold) == 1, what="a request held")
    ctl.follow(Decision("b", 1, "route", "active"))
    route = await asyncio.wait_for(held, 2)
    assert (route.backend.name, route.epoch) == ("b", 1)  # released to the record's route
    ctl.follow(Decision("b", 1, "hold", "promoting"))
    held = asyncio.create_task(d.wait_for_route(0))
    await wait_for(lambda: len(d.hold) == 1, what="a request held again")
    ctl.follow(Decision("b", 2, "refuse", "degraded", Refusal(503, 4, "no backend")))
    with pytest.raises(Exception, match="no backend"):
        await asyncio.wait_for(held, 2)
    assert d.snapshot().state == "degraded"
    await stop(task)


async def test_lead_restarts_the_machine_from_the_record_written_first(tmp_path: Path, ports: tuple[int, int]) -> None:
    store, gate = Store(), Gate()
    ctl = joined(config(tmp_path, ports), store, gate)
    task = await running(ctl)
    ctl.follow(Decision("a", 4, "hold", "promoting"))
    held = asyncio.create_task(ctl.director.wait_for_route(0))
    await wait_for(lambda: len(ctl.director.hold) == 1, what="a request held")
    store.fail = StoreDeposed("lost the term")
    with pytest.raises(StoreDeposed):
        await ctl.lead("b", 5)
    assert not ctl.deciding and ctl.machine.active == "a" and ctl.director.mode == "hold"  # nothing changed
    await ctl.lead("b", 5)
    assert ctl.deciding and (ctl.machine.active, ctl.machine.epoch) == ("b", 5)
    assert store.saved == [Decision("b", 5, "route", "active")]
    route = await asyncio.wait_for(held, 2)
    assert (route.backend.name, route.epoch) == ("b", 5)
    await stop(task)


async def test_a_failed_write_leaves_the_machine_as_it_was_and_deposed_raises_no_alarm(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    store, gate = Store(), Gate()
    ctl = joined(config(tmp_path, ports), store, gate)
    task = await running(ctl)
    await ctl.lead("a", 0)
    store.fail = StoreError("etcd: unreachable")
    with pytest.raises(StoreError):
        await ctl.apply_async(AdminSwitchover(0.0, "b"))
    assert (ctl.machine.state.value, ctl.machine.epoch, ctl.director.mode) == ("active", 0, "route")
    assert any(a.startswith("state_write_failed:") for a in ctl.alarms)
    alarms = len(ctl.alarms)
    store.fail = StoreDeposed("another router decides")
    with pytest.raises(StoreDeposed):
        await ctl.apply_async(AdminSwitchover(0.0, "b"))
    assert ctl.machine.epoch == 0 and len(ctl.alarms) == alarms
    await stop(task)


async def test_events_take_turns_a_waiting_write_holds_the_next_event(tmp_path: Path, ports: tuple[int, int]) -> None:
    store, gate = Store(), Gate()
    ctl = joined(config(tmp_path, ports), store, gate)
    task = await running(ctl)
    await ctl.lead("a", 0)
    store.gate = asyncio.Event()
    first = asyncio.create_task(ctl.apply_async(AdminSwitchover(0.0, "b")))
    await wait_for(lambda: ctl.machine.state.value == "promoting", what="the first event in the machine")
    second = asyncio.create_task(ctl.apply_async(AdminSwitchover(0.0, "a")))
    for _ in range(20):  # let the second run as far as it (wrongly) could
        await asyncio.sleep(0)
    assert not second.done() and len(store.saved) == 1
    store.gate.set()
    await first
    with pytest.raises(Exception, match="not allowed in state promoting"):
        await second  # taken after the first: the machine is promoting by then
    await stop(task)


async def test_the_gate_drops_automatic_events(tmp_path: Path, ports: tuple[int, int]) -> None:
    store, gate = Store(), Gate()
    ctl = joined(config(tmp_path, ports), store, gate)
    task = await running(ctl)
    await ctl.lead("a", 0)
    gate.open = False
    ctl.submit(BackendDown(0.0, "b", Cause.PROBE_FAILED))
    await wait_for(ctl.settled, what="event looked at")
    assert ctl.machine.healthy["b"] is True
    gate.open = True
    ctl.submit(BackendDown(0.0, "b", Cause.PROBE_FAILED))
    await wait_for(lambda: ctl.machine.healthy["b"] is False, what="event taken")
    await stop(task)


async def test_a_step_whose_progress_cannot_be_recorded_is_not_run(tmp_path: Path, ports: tuple[int, int]) -> None:
    marker = tmp_path / "ran"
    steps = [{"name": "fence", "exec": ["/bin/sh", "-c", f"echo {{epoch}} >> {marker}"]},
             {"name": "promote", "exec": ["/bin/sh", "-c", f"echo second >> {marker}"]}]
    store, gate, hooks = Store(), Gate(), Hooks(refuse_step=1)
    ctl = joined(config(tmp_path, ports, promote=steps), store, gate, hooks)
    task = await running(ctl)
    await ctl.lead("a", 0)
    await ctl.apply_async(AdminSwitchover(0.0, "b"))
    await wait_for(lambda: ctl.settled() and ctl.machine.state.value != "promoting", what="the run ended")
    assert marker.read_text().split() == ["1"]  # step 0 ran with the fencing token; step 1 never
    assert hooks.calls == ["started 1", "step 0", "step 1", "ended failed"]
    assert ctl.machine.active == "a"
    ends = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert ends[-1]["event"] == "run_end" and "could not be recorded" in ends[-1]["reason"]
    await stop(task)


async def test_the_file_store_writes_only_persisted_moves_the_same_bytes(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    store = FileStore(sf)
    await store.save("app", Decision("a", 0, "hold", "promoting"))
    assert not sf.path.exists()
    await store.save("app", Decision("b", 2, "route", "active", persist=True))
    assert sf.path.read_text() == '{\n  "version": 1,\n  "services": {\n    "app": {\n      "active": "b",\n' \
                                  '      "epoch": 2\n    }\n  }\n}\n'
