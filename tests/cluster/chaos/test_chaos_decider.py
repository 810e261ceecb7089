"""Chaos: the decider dies, freezes past its lease, restarts — under steady load through
three routers, with the checker's invariants (no epoch answered by two backends, no
epoch going backwards, no promotion step twice, no state write by a non-decider) and
each fault's own outcome."""

from __future__ import annotations

import time

import pytest

from .kit import World

pytestmark = [pytest.mark.slow, pytest.mark.needs_root, pytest.mark.timeout(90)]
MARGIN = 2.0  # seconds past the lease a new decider may take (campaign, poll, a loaded machine)


async def assert_clean(world: World, epoch: int) -> None:
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {epoch}, f"expected no failover (only epoch {epoch} answered): {v.summary()}"


async def test_decider_sigkilled(world: World) -> None:
    old = await world.decider()
    assert old is not None
    state = await world.state()
    t0 = time.time()
    world.routers[old].kill()
    new = await world.wait("another decider", lambda: world.other_decider(old), world.lease_ttl + MARGIN + 1)
    took = time.time() - t0
    assert took < world.lease_ttl + MARGIN, f"{new} became decider {took:.2f}s after {old} was killed"
    survivors = [n for n in world.routers if n != old]
    await world.hold_for(1.0, world.no_failover_since(state))
    for n in survivors:  # traffic keeps flowing through the others, from the same active
        after = await world.answered(n, time.time(), 25)
        assert all(s.ok and s.backend == state["active"] for s in after), [s for s in after if not s.ok][:3]
    failed = world.failed_since(t0, survivors)
    assert failed == [], f"{len(failed)} requests failed through the survivors: {failed[:3]}"
    await assert_clean(world, state["epoch"])


async def test_decider_sigstopped_past_its_lease_follows_after(world: World) -> None:
    old = await world.decider()
    assert old is not None
    state = await world.state()
    world.routers[old].freeze()
    new = await world.wait("another decider", lambda: world.other_decider(old), world.lease_ttl + MARGIN + 1)
    await world.hold_for(0.5, world.no_failover_since(state))
    world.routers[old].thaw()

    async def follows() -> bool:
        st = await world.status(old)
        cluster = (st or {}).get("cluster") or {}
        return cluster.get("this_router_decides") == [] and old in await world.members()
    await world.wait(f"{old} back as a member that decides nothing", follows, 10.0)
    await world.hold_for(1.0, world.no_failover_since(state))
    assert await world.decider() == new, "the woken router took the decider role back"
    after = await world.answered(old, time.time(), 25)
    assert all(s.ok and s.epoch == str(state["epoch"]) for s in after), [s for s in after if not s.ok][:3]
    v = await world.verdict()
    print(v.summary())
    # No write of the woken router succeeded: every state/promotion write after t_thaw
    # was made by the decider of that moment (checker rule 6), and it is not the decider.
    assert v.violations == [], v.summary()
    assert set(v.epochs) == {state["epoch"]}, v.summary()


@pytest.mark.parametrize("how", ["clean", "crash"])
async def test_decider_restarted(world: World, how: str) -> None:
    old = await world.decider()
    assert old is not None
    state = await world.state()
    r = world.routers[old]
    _, term = await world.decider_term()
    t0 = time.time()
    if how == "clean":
        await r.term()  # SIGTERM: the lease is revoked, another router takes over at once
        new = await world.wait("another decider", lambda: world.other_decider(old), world.lease_ttl + MARGIN)
        took = time.time() - t0
        assert took < world.lease_ttl, f"a clean stop handed over in {took:.2f}s, not at once (lease revoked?)"
    else:
        r.kill()
    await r.start()  # same config, same ports
    if how == "crash":  # the dead process's key (its lease) expires; a new term begins
        async def new_term() -> str | None:
            name, rev = await world.decider_term()
            return name if name is not None and rev != term else None
        new = await world.wait("a decider in a new term", new_term, world.lease_ttl + MARGIN + 2)

    async def serving() -> bool:
        code, backend, epoch = await world.get(old)
        return old in await world.members() and (code, backend, epoch) == (200, state["active"], str(state["epoch"]))
    await world.wait(f"{old} restarted, a member, serving", serving, 15.0)
    after = await world.answered(old, time.time(), 25)
    assert all(s.ok for s in after), [s for s in after if not s.ok][:3]
    await world.hold_for(0.5, world.no_failover_since(state))
    survivors = [n for n in world.routers if n != old]
    failed = world.failed_since(t0, survivors)
    assert failed == [], f"{len(failed)} requests failed through the others: {failed[:3]}"
    assert new is not None
    await assert_clean(world, state["epoch"])


async def test_decider_sigstopped_while_the_active_dies_does_not_decide_on_waking(world: World) -> None:
    """The sharpest case of a stale decider: while it sleeps, the others fail over; it
    wakes with its machine still at the old active and epoch. Nothing it decides may take
    effect: no promotion step of its own, no state write, no traffic at an epoch it made."""
    old = await world.decider()
    assert old is not None
    state = await world.state()
    dead, spare, e0 = state["active"], ("b" if state["active"] == "a" else "a"), int(state["epoch"])
    world.routers[old].freeze()
    world.backends[dead].kill()

    async def failed_over() -> dict[str, object] | None:
        now = await world.state()
        return now if now["epoch"] != e0 and now["mode"] == "route" else None
    now = await world.wait("the others to fail over", failed_over, world.lease_ttl + 10.0)
    assert (now["epoch"], now["active"], now["by"]) != (e0, dead, old), now
    world.routers[old].thaw()

    async def follows() -> bool:
        return (await world.get(old))[:3] == (200, spare, str(now["epoch"]))
    await world.wait(f"{old} awake and following to {spare}", follows, 10.0)
    await world.hold_for(1.0, world.no_failover_since(dict(now)))
    v = await world.verdict()
    print(v.summary())
    assert v.violations == [], v.summary()
    assert v.epochs == {e0: dead, int(str(now["epoch"])): spare}, v.summary()
    assert [s.router for s in world.steps() if s.phase == "start"] == [now["by"]], world.steps()
