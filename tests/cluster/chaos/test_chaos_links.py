"""Chaos: one router cut off from the active only; one router cut off from etcd; the
active killed while one router is cut off from etcd. Each under steady load, each with
the checker's invariants and its own outcome."""

from __future__ import annotations

import json
import time

import pytest

from . import etcdview
from .kit import PREFIX, World

pytestmark = [pytest.mark.slow, pytest.mark.needs_root, pytest.mark.timeout(90)]


async def view_of(world: World, router: str, backend: str) -> str | None:
    """What ``router`` publishes in etcd about ``backend`` (its members key)."""
    value, _ = await etcdview.get(world.http, world.etcd_up(), f"{PREFIX}/members/{router}")
    if value is None:
        return None
    views = json.loads(value).get("views", {}).get("app", {})
    return str(views.get(backend)) if backend in views else None


async def etcd_up(world: World, router: str) -> float | None:
    return await world.metric(router, "hotspare_cluster_etcd_up")


async def test_router_cut_from_the_active_only(world: World) -> None:
    cut = await world.decider()  # the strongest case: the decider itself loses the active
    assert cut is not None
    state = await world.state()
    active = state["active"]
    others = [n for n in world.routers if n != cut]
    t0 = time.time()
    await world.cut_backend(cut, active)

    async def sees_down() -> bool:
        return await view_of(world, cut, active) == "down"
    await world.wait(f"{cut} to publish {active} down", sees_down, 8.0)
    await world.hold_for(3.0, world.no_failover_since(state))  # > detection + a failover's time
    for n in others:
        assert await view_of(world, n, active) == "up", f"{n} should still see {active} up"
    failed = world.failed_since(t0, others)
    assert failed == [], f"{len(failed)} requests failed through routers that see the active: {failed[:3]}"
    await world.heal_backend(cut, active)

    async def sees_up() -> bool:
        return await view_of(world, cut, active) == "up"
    await world.wait(f"{cut} to see {active} up again", sees_up, 8.0)
    after = await world.answered(cut, time.time(), 20)
    assert all(s.ok and s.backend == active for s in after), [s for s in after if not s.ok][:3]
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()


async def test_router_cut_from_etcd_keeps_serving_and_alarms(world: World) -> None:
    cut = await world.decider()  # the decider: it must also stop deciding
    assert cut is not None
    state = await world.state()
    t0 = time.time()
    await world.cut_etcd(cut)

    async def alarmed() -> bool:
        st = await world.status(cut)
        etcd = ((st or {}).get("cluster") or {}).get("etcd") or {}
        return await etcd_up(world, cut) == 0.0 and etcd.get("ok") is False
    overlap: list[str] = []

    async def handed_over() -> str | None:
        """Another router holds the decider key; at no poll does the cut one still say
        it decides while another holds the key (it must stand down before its lease
        could have expired)."""
        other = await world.other_decider(cut)
        st = await world.status(cut)
        still = "app" in (((st or {}).get("cluster") or {}).get("this_router_decides") or [])
        if other is not None and still:
            overlap.append(f"{time.time() - t0:.2f}s after the cut: {other} holds the decider key, "
                           f"{cut} still says it decides")
        return other
    new = await world.wait("another decider", handed_over, world.lease_ttl + 4, every=0.02)
    await world.wait(f"{cut}: etcd_up 0 and status etcd.ok false", alarmed, 8.0)
    assert overlap == [], overlap
    await world.hold_for(2.0, world.no_failover_since(state))
    through_cut = [s for s in world.load.since(t0, cut) if s.done]
    assert through_cut and all(s.ok and s.backend == state["active"] and s.epoch == str(state["epoch"])
                               for s in through_cut), [s for s in through_cut if not s.ok][:3]
    st = await world.status(cut)
    assert "app" not in (((st or {}).get("cluster") or {}).get("this_router_decides") or []), st
    await world.heal_etcd(cut)

    async def cleared() -> bool:
        return await etcd_up(world, cut) == 1.0 and cut in await world.members()
    await world.wait(f"{cut}: etcd_up back to 1 and a member again", cleared, 10.0)
    assert await world.decider() == new
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()
    assert sum(v.failed.values()) == 0, v.summary()


async def test_active_killed_while_one_router_is_cut_from_etcd(world: World) -> None:
    cut = await world.decider()
    assert cut is not None
    state = await world.state()
    old, new_active, e0 = state["active"], ("b" if state["active"] == "a" else "a"), int(state["epoch"])
    others = [n for n in world.routers if n != cut]
    await world.cut_etcd(cut)

    async def alarmed() -> bool:
        return await etcd_up(world, cut) == 0.0
    await world.wait(f"{cut}: etcd_up 0", alarmed, 8.0)
    world.backends[old].kill()

    async def failed_over() -> dict[str, object] | None:
        now = await world.state()
        return now if now["epoch"] != e0 and now["mode"] == "route" else None
    now = await world.wait("a failover in etcd (routed)", failed_over, 15.0)
    assert (now["epoch"], now["active"]) == (e0 + 1, new_active), now
    for n in others:
        async def follows(n: str = n) -> bool:
            return (await world.get(n))[:3] == (200, new_active, str(e0 + 1))
        await world.wait(f"{n} serving from {new_active} at epoch {e0 + 1}", follows, 5.0)
    await world.hold_for(1.5, world.no_failover_since(now))
    t_heal = time.time()
    await world.heal_etcd(cut)

    async def cut_follows() -> bool:
        return (await world.get(cut))[:3] == (200, new_active, str(e0 + 1))
    await world.wait(f"{cut} following to {new_active} once etcd is back", cut_follows, 8.0)
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert v.epochs == {e0: old, e0 + 1: new_active}, v.summary()
    early = [s for s in world.load.records if s.router == cut and s.backend == new_active and s.done < t_heal]
    assert early == [], f"{cut} served from {new_active} while cut off from etcd: {early[:3]}"
    runs = [s for s in world.steps() if s.phase == "start"]
    assert [(s.epoch, s.router) for s in runs] == [(e0 + 1, await world.decider())], runs


async def test_two_routers_one_cut_from_the_active_is_a_tie_no_failover(world2: World) -> None:
    """Two routers, majority = 2: one router alone seeing the active down never fences
    it, whichever of the two it is (here the decider)."""
    cut = await world2.decider()
    assert cut is not None
    state = await world2.state()
    other = next(n for n in world2.routers if n != cut)
    t0 = time.time()
    await world2.cut_backend(cut, state["active"])

    async def sees_down() -> bool:
        return await view_of(world2, cut, state["active"]) == "down"
    await world2.wait(f"{cut} to publish {state['active']} down", sees_down, 8.0)
    await world2.hold_for(3.0, world2.no_failover_since(state))
    assert await view_of(world2, other, state["active"]) == "up"
    assert world2.failed_since(t0, [other]) == []
    await world2.heal_backend(cut, state["active"])
    v = await world2.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()
