"""Chaos on etcd itself: one member killed (nothing changes); quorum lost and restored
(every router keeps forwarding to the active and raises the alarm, nothing fails over;
everything resumes after). Each under steady load with the checker's invariants."""

from __future__ import annotations

import asyncio
import time

import pytest

from . import etcdview
from .kit import World

pytestmark = [pytest.mark.slow, pytest.mark.needs_root, pytest.mark.timeout(90)]


async def etcd_up_everywhere(world: World, value: float) -> bool:
    got = await asyncio.gather(*(world.metric(n, "hotspare_cluster_etcd_up") for n in world.routers))
    return all(g == value for g in got)


async def not_leader(world: World, victim: int) -> None:
    """Make sure member ``victim`` is not the raft leader (move the leadership away)."""
    ids, leader = await etcdview.member_ids(world.http, world.etcd.endpoints)
    if leader == victim:
        heir = ids[(victim + 1) % world.etcd.size]
        assert heir is not None, ids
        world.etcd.etcdctl("move-leader", f"{heir:x}", endpoint=victim)

    async def moved() -> bool:
        return await etcdview.leader_index(world.http, world.etcd.endpoints) not in (None, victim)
    await world.wait(f"etcd leadership away from member {victim}", moved, 10.0)


async def test_one_etcd_member_killed_changes_nothing(world: World) -> None:
    """The member killed is the routers' first endpoint (the one they talk to), not the
    raft leader (a leader's death is an election: the bench covers it)."""
    victim = 0
    await not_leader(world, victim)
    decider, state = await world.decider(), await world.state()
    t0 = time.time()
    world.etcd.kill(victim)

    async def unchanged() -> str | None:
        if (d := await world.decider()) != decider:
            return f"the decider changed from {decider} to {d} after etcd member {victim} was killed"
        if not await etcd_up_everywhere(world, 1.0):
            return "a router raised etcd_unreachable with two of three etcd members up"
        return await world.no_failover_since(state)()
    await world.hold_for(world.lease_ttl + 1.5, unchanged)
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()
    failed = world.failed_since(t0)
    assert failed == [], f"{len(failed)} requests failed: {failed[:3]}"


async def test_etcd_leader_killed_no_failover_no_failed_request(world: World) -> None:
    """The raft leader's death is an election (about a second without a leader, so the
    routers may raise the alarm and the decider may stand down for that long); what must
    not change: the active, the epoch, and every request answered."""
    state = await world.state()
    leader = await etcdview.leader_index(world.http, world.etcd.endpoints)
    assert leader is not None
    t0 = time.time()
    world.etcd.kill(leader)

    async def new_leader() -> bool:
        return await etcdview.leader_index(world.http, world.etcd.endpoints) not in (None, leader)
    await world.wait("a new etcd leader", new_leader, 10.0)
    await world.hold_for(world.lease_ttl + 1.0, world.no_failover_since(state))

    async def settled() -> bool:
        return await etcd_up_everywhere(world, 1.0) and await world.decider() is not None
    await world.wait("etcd_up 1 everywhere and a decider", settled, 10.0)
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()
    failed = world.failed_since(t0)
    assert failed == [], f"{len(failed)} requests failed: {failed[:3]}"


async def test_etcd_quorum_lost_and_restored(world: World) -> None:
    state = await world.state()
    t0 = time.time()
    world.etcd.kill(1)
    world.etcd.kill(2)

    async def alarmed() -> bool:
        return await etcd_up_everywhere(world, 0.0)
    await world.wait("every router to raise etcd_unreachable", alarmed, 10.0)
    served_while_lost = {n: await world.answered(n, time.time(), 25) for n in world.routers}
    for n, recs in served_while_lost.items():  # failsafe: keep forwarding to the last known active
        assert all(s.ok and s.backend == state["active"] for s in recs), (n, [s for s in recs if not s.ok][:3])
    world.etcd.restart(1)
    world.etcd.restart(2)
    await asyncio.to_thread(world.etcd.wait_healthy, range(world.etcd.size))

    async def resumed() -> bool:
        return await etcd_up_everywhere(world, 1.0) and await world.decider() is not None \
            and await world.members() == sorted(world.routers)
    await world.wait("etcd_up 1 everywhere, a decider, every router a member", resumed, 15.0)
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, f"a failover happened around a quorum loss: {v.summary()}"
    assert (await world.state())["epoch"] == state["epoch"]
    failed = world.failed_since(t0)
    assert failed == [], f"{len(failed)} requests failed while etcd had no quorum: {failed[:3]}"


async def test_active_killed_while_etcd_quorum_is_lost(world: World) -> None:
    state = await world.state()
    old, e0 = state["active"], int(state["epoch"])
    spare = "b" if old == "a" else "a"
    world.etcd.kill(1)
    world.etcd.kill(2)

    async def alarmed() -> bool:
        return await etcd_up_everywhere(world, 0.0)
    await world.wait("every router to raise etcd_unreachable", alarmed, 10.0)
    world.backends[old].kill()
    t_kill = time.time()
    await world.wait("requests failing on every router", lambda: _all_fail(world, t_kill), 10.0)

    async def nobody_fails_over() -> str | None:
        late = [s for s in world.load.since(t_kill) if s.backend == spare]
        return f"{late[0].router} failed over to {spare} without etcd: {late[0]}" if late else None
    await world.hold_for(2.0, nobody_fails_over)
    world.etcd.restart(1)
    world.etcd.restart(2)
    await asyncio.to_thread(world.etcd.wait_healthy, range(world.etcd.size))
    for n in world.routers:  # etcd back: one failover, everybody follows
        async def follows(n: str = n) -> bool:
            return (await world.get(n))[:3] == (200, spare, str(e0 + 1))
        await world.wait(f"{n} serving from {spare} at epoch {e0 + 1}", follows, 15.0)
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert v.epochs == {e0: old, e0 + 1: spare}, v.summary()
    assert len([s for s in world.steps() if s.phase == "start"]) == 1, world.steps()


async def _all_fail(world: World, since: float) -> bool:
    return all(any(s.done and not s.ok for s in world.load.since(since, n)) for n in world.routers)
