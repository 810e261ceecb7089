"""Chaos: the decider killed in the middle of a promotion step. The step (an exec step
that waits on a gate file) is seen running, the decider is SIGKILLed; the next decider
must report the run interrupted and never run that step again."""

from __future__ import annotations

import time

import pytest

from .kit import World

pytestmark = [pytest.mark.slow, pytest.mark.needs_root, pytest.mark.timeout(90)]


async def test_decider_killed_mid_promotion_step(world: World) -> None:
    state = await world.state()
    old, e0 = state["active"], int(state["epoch"])
    world.gate.unlink()  # from now on, a promotion step blocks until the test lets it go
    world.backends[old].kill()

    async def step_running() -> list[object] | None:
        started = [s for s in world.steps() if s.phase == "start"]
        return list(started) or None
    started = await world.wait("the promotion step to start", step_running, 10.0)
    assert len(started) == 1, started
    run = world.steps()[0]
    decider = await world.decider()
    assert run.router == decider, f"step run by {run.router}, decider is {decider}"
    promo = await world.promotion()
    assert promo is not None and promo["status"] == "running" and promo["by"] == decider, promo
    t_kill = time.time()
    world.routers[run.router].kill()

    async def interrupted() -> dict[str, object] | None:
        return await world.interrupted(str(promo["run_id"]))
    p = await world.wait("the next decider to report the run interrupted", interrupted, world.lease_ttl + 6.0)
    assert p["by"] not in (None, run.router), p
    assert p["run_id"] == promo["run_id"] and p["epoch"] == promo["epoch"], (p, promo)
    took = time.time() - t_kill

    async def alarm() -> list[str] | None:
        st = await world.status(str(p["by"]))
        alarms = [a for svc in (st or {}).get("services", []) for a in svc.get("alarms", [])]
        hits = [a for a in alarms if a.startswith("promotion_interrupted")]
        return hits or None
    hits = await world.wait(f"alarm promotion_interrupted on {p['by']}", alarm, 5.0)
    assert str(promo["run_id"]) in hits[0], hits

    async def rerun() -> str | None:
        again = [s for s in world.steps()[1:] if s.phase == "start" and (s.epoch, s.run_id) != (run.epoch, run.run_id)
                 and (s.epoch == run.epoch or s.run_id == run.run_id)]
        return f"the interrupted step ran again: {again}" if again else None
    # (A later failover is a new promotion at a new epoch, by the new decider: allowed.)
    await world.hold_for(2.0, rerun)
    world.gate.touch()  # release the orphaned step of the killed router
    v = await world.verdict()
    print(v.summary(), f"\ninterrupted reported {took:.2f}s after the kill")
    assert v.violations == [], v.summary()
    starts = [s for s in world.steps() if s.phase == "start"]
    assert [s for s in starts if s.epoch == run.epoch] == [run], starts
    assert all(s.router == p["by"] and s.epoch > run.epoch for s in starts[1:]), starts
    assert e0 in v.epochs
