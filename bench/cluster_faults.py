"""The faults of the cluster benchmark (bench/cluster_bench.py), one coroutine each.

Rules:

1. A fault injects, waits for what should follow (polled with deadlines), repairs what
   it broke (a killed process restarted, a cut healed, a backend restarted as the spare)
   and returns. ``run_fault`` then waits until the world is steady again: a decider,
   every router a member, each serving 200.
2. A fault records, in ``Faults.impaired``, the routers it cut off, froze or killed and
   when (a router cut off from etcd does not follow; its lag is not a follow lag).
3. Choices (which router, which member) come from the seeded ``random.Random``, so one
   seed replays the same sequence of kinds and targets (timings differ).
4. A wait that times out is an observation, not a crash of the benchmark: the fault is
   counted as ``stuck`` with the reason, and the run goes on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.cluster.chaos.kit import World

CUT_FOR = 3.0     # seconds a link stays cut
QUORUM_FOR = 2.0  # seconds etcd stays without quorum
Fault = Callable[["Faults"], Awaitable[None]]


@dataclass
class Faults:
    world: World
    rng: random.Random
    injected: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    impaired: list[tuple[str, float, float]] = field(default_factory=list)  # (router, from, to)
    windows: list[tuple[str, float, float]] = field(default_factory=list)  # (kind, injected, steady again)

    def impair(self, router: str, since: float) -> None:
        self.impaired.append((router, since, time.time()))

    async def state(self) -> dict[str, Any]:
        return await self.world.state()

    async def decider(self) -> str:
        d = await self.world.decider()
        assert d is not None, "no decider"
        return d

    async def routed_failover(self, e0: int) -> dict[str, Any]:
        async def moved() -> dict[str, Any] | None:
            now = await self.world.state()
            return now if now["epoch"] > e0 and now["mode"] == "route" else None
        return await self.world.wait(f"a routed failover past epoch {e0}", moved, 20.0)


async def decider_kill(f: Faults) -> None:
    d, t = await f.decider(), time.time()
    f.world.routers[d].kill()
    await f.world.wait("another decider", lambda: f.world.other_decider(d), 10.0)
    await f.world.routers[d].start()
    f.impair(d, t)


async def decider_freeze(f: Faults) -> None:
    d, t = await f.decider(), time.time()
    f.world.routers[d].freeze()
    try:
        await f.world.wait("another decider", lambda: f.world.other_decider(d), 10.0)
    finally:
        f.world.routers[d].thaw()
        f.impair(d, t)


async def decider_restart(f: Faults) -> None:
    d, t = await f.decider(), time.time()
    await f.world.routers[d].term()
    await f.world.routers[d].start()
    f.impair(d, t)


async def cut_active(f: Faults) -> None:
    r, active = f.rng.choice(sorted(f.world.routers)), (await f.state())["active"]
    await f.world.cut_backend(r, active)
    try:
        await asyncio.sleep(CUT_FOR)  # the fault's length, not a wait for a condition
    finally:
        await f.world.heal_backend(r, active)


async def cut_etcd(f: Faults) -> None:
    r, t = f.rng.choice(sorted(f.world.routers)), time.time()
    await f.world.cut_etcd(r)
    try:
        await asyncio.sleep(CUT_FOR)  # the fault's length
    finally:
        await f.world.heal_etcd(r)
        f.impair(r, t)


async def active_kill(f: Faults) -> None:
    s0 = await f.state()
    f.world.backends[s0["active"]].kill()
    try:
        await f.routed_failover(int(s0["epoch"]))
    finally:
        await f.world.backends[s0["active"]].start()  # back as the spare


async def active_kill_cut_etcd(f: Faults) -> None:
    r, t, s0 = f.rng.choice(sorted(f.world.routers)), time.time(), await f.state()
    await f.world.cut_etcd(r)
    try:
        f.world.backends[s0["active"]].kill()
        await f.routed_failover(int(s0["epoch"]))
    finally:
        await f.world.heal_etcd(r)
        f.impair(r, t)
        await f.world.backends[s0["active"]].start()


async def etcd_member_kill(f: Faults) -> None:
    i = f.rng.randrange(f.world.etcd.size)
    f.world.etcd.kill(i)
    try:
        await asyncio.sleep(QUORUM_FOR)  # the fault's length
    finally:
        f.world.etcd.restart(i)
        await asyncio.to_thread(f.world.etcd.wait_healthy, range(f.world.etcd.size))


async def etcd_quorum_loss(f: Faults) -> None:
    lost = f.rng.sample(range(f.world.etcd.size), 2)
    for i in lost:
        f.world.etcd.kill(i)
    try:
        await asyncio.sleep(QUORUM_FOR)  # the fault's length
    finally:
        for i in lost:
            f.world.etcd.restart(i)
        await asyncio.to_thread(f.world.etcd.wait_healthy, range(f.world.etcd.size))


async def decider_kill_mid_promotion(f: Faults) -> None:
    s0 = await f.state()
    before = len(f.world.steps())
    f.world.gate.unlink(missing_ok=True)
    f.world.backends[s0["active"]].kill()
    try:
        async def started() -> str | None:
            new = [s for s in f.world.steps()[before:] if s.phase == "start"]
            return new[0].router if new else None
        d = await f.world.wait("a promotion step running", started, 15.0)
        run = next(s for s in f.world.steps()[before:] if s.phase == "start")
        t = time.time()
        f.world.routers[d].kill()
        f.world.gate.touch()  # the next runs (and the orphaned step) are free to go
        try:
            async def reported() -> bool:
                return await f.world.interrupted(run.run_id) is not None
            await f.world.wait("the run reported interrupted", reported, 15.0)
        finally:
            await f.world.routers[d].start()
            f.impair(d, t)
    finally:
        f.world.gate.touch()
        await f.world.backends[s0["active"]].start()


KINDS: dict[str, Fault] = {
    "decider_kill": decider_kill,
    "decider_freeze": decider_freeze,
    "decider_restart": decider_restart,
    "cut_active": cut_active,
    "cut_etcd": cut_etcd,
    "active_kill": active_kill,
    "active_kill_cut_etcd": active_kill_cut_etcd,
    "etcd_member_kill": etcd_member_kill,
    "etcd_quorum_loss": etcd_quorum_loss,
    "decider_kill_mid_promotion": decider_kill_mid_promotion,
}


async def run_fault(f: Faults, kind: str) -> None:
    """One fault of ``kind``, then the wait for a steady world (rule 1, rule 4)."""
    f.injected[kind] += 1
    t0 = time.time()
    try:
        await KINDS[kind](f)
    except AssertionError as exc:
        f.stuck.append(f"{kind}: {str(exc).splitlines()[0]}")
    try:
        await f.world.wait_steady(deadline=30.0)
    except AssertionError as exc:
        f.stuck.append(f"{kind}: not steady after it: {str(exc).splitlines()[0]}")
    f.windows.append((kind, t0, time.time()))
