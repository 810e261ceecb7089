"""Two real routers on one real etcd (single member): who decides, that both route to
the same active at the same epoch, one failover when the active dies (run once, both
routers switched within a second of etcd's change), a new decider when the decider is
SIGKILLed, and no failover when only one router sees the active down (quorum)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.helpers import wait_for

from .etcdkit import EtcdCluster
from .pairkit import LEASE_TTL, Etcd, Link, router_config, served

pytestmark = pytest.mark.slow


@pytest.fixture
async def etcd(etcd_factory: Callable[..., EtcdCluster]) -> AsyncIterator[tuple[EtcdCluster, Etcd]]:
    cluster = etcd_factory(members=1)
    view = Etcd(cluster.endpoints)
    yield cluster, view
    await view.close()


async def test_the_pair_decides_once_follows_within_a_second_and_hands_over(
    tmp_path: Path, stack: Stack, etcd: tuple[EtcdCluster, Etcd]
) -> None:
    cluster, view = etcd
    a, b = await stack.backend("a"), await stack.backend("b")
    promote_log = tmp_path / "promotions.log"
    r1, base1, _ = await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, a.url, b.url,
                                                             promote_log))
    await wait_for(view.decider, what="a decider elected")
    assert await view.decider() == "r1"  # the first started decides
    r2, base2, _ = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a.url, b.url,
                                                            promote_log))
    st = await view.state()
    assert st is not None and (st.active, st.epoch, st.mode, st.by) == ("a", 0, "route", "r1")
    assert await served(base1) == ("a", "0")
    assert await served(base2) == ("a", "0")
    await wait_for(lambda: view.view("r2", "a"), what="r2 publishes its view")

    # The active dies: both routers see it; one failover, both follow.
    a.proc.kill()
    t_kill = time.monotonic()

    async def moved() -> bool:
        s = await view.state()
        return s is not None and s.active == "b" and s.mode == "route"

    await wait_for(moved, timeout=15, interval=0.01, what="etcd has b active")
    t_etcd = time.monotonic()
    st = await view.state()
    assert st is not None and st.epoch == 1
    for base in (base1, base2):
        await wait_for(lambda base=base: _on(base, "b", "1"), timeout=1.0, interval=0.01,  # type: ignore[misc]
                       what=f"{base} routes to b at epoch 1 within 1 s of etcd's change")
    print(f"failover: etcd changed {t_etcd - t_kill:.2f}s after the kill; both routers followed within "
          f"{time.monotonic() - t_etcd:.3f}s")
    assert promote_log.read_text().split("\n")[:-1] == ["1 b r1"]  # ran once, by the decider, epoch 1
    promo = await view.promotion()
    assert promo is not None and (promo["epoch"], promo["status"], promo["by"]) == (1, "promoted", "r1")

    # The decider dies: the other decides within the lease TTL (and a margin).
    r1.kill()
    t_dead = time.monotonic()
    await wait_for(lambda: _decider_is(view, "r2"), timeout=LEASE_TTL + 3.0, interval=0.02,
                   what="r2 decides after r1 was SIGKILLed")
    print(f"handover: r2 decides {time.monotonic() - t_dead:.2f}s after r1 died (lease ttl {LEASE_TTL:g}s)")
    await wait_for(lambda: _state_by(view, "r2"), timeout=2.0, what="r2's first write (it leads)")
    st = await view.state()
    assert st is not None and (st.active, st.epoch, st.mode) == ("b", 1, "route")  # the epoch never moved back
    assert await served(base2) == ("b", "1")
    assert promote_log.read_text().split("\n")[:-1] == ["1 b r1"]  # nothing ran again
    await r2.reap()


async def _on(base: str, backend: str, epoch: str) -> bool:
    return await served(base) == (backend, epoch)


async def _state_by(view: Etcd, name: str) -> bool:
    st = await view.state()
    return st is not None and st.by == name


async def _decider_is(view: Etcd, name: str) -> bool:
    return await view.decider() == name


async def test_one_router_seeing_the_active_down_alone_does_not_fail_over(
    tmp_path: Path, stack: Stack, etcd: tuple[EtcdCluster, Etcd]
) -> None:
    cluster, view = etcd
    a, b = await stack.backend("a"), await stack.backend("b")
    link = await Link(a.port).start()  # the decider r1's own path to a, cut below
    try:
        await _only_the_decider_sees_the_active_down(tmp_path, stack, cluster, view, link, a.url, b.url)
    finally:
        await link.cut()


async def _only_the_decider_sees_the_active_down(
    tmp_path: Path, stack: Stack, cluster: EtcdCluster, view: Etcd, link: Link, a_url: str, b_url: str
) -> None:
    await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, link.url, b_url))
    await wait_for(view.decider, what="a decider elected")
    assert await view.decider() == "r1"
    r2, base2, _ = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a_url, b_url))
    await wait_for(lambda: _view_is(view, "r2", "a", "up"), timeout=10, what="r2 publishes a up")
    await link.cut()
    await wait_for(lambda: _view_is(view, "r1", "a", "down"), timeout=10, what="r1 publishes a down")
    # The decider had every chance to act on its own view: a second of health rounds.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        st = await view.state()
        assert st is not None and (st.active, st.epoch) == ("a", 0), f"failed over on one router's view: {st}"
        await wait_for(lambda: True)  # a poll tick
    assert await served(base2) == ("a", "0")
    # r2 leaves (its lease expires): r1 is the only live router, so its view is the quorum.
    r2.kill()

    async def moved() -> bool:
        st = await view.state()
        return st is not None and (st.active, st.epoch, st.mode) == ("b", 1, "route")

    await wait_for(moved, timeout=LEASE_TTL + 5.0, what="a failover once r1 is the only live router")


async def _view_is(view: Etcd, router: str, backend: str, word: str) -> bool:
    return await view.view(router, backend) == word


async def test_a_decider_stopped_cleanly_hands_over_at_once(
    tmp_path: Path, stack: Stack, etcd: tuple[EtcdCluster, Etcd]
) -> None:
    cluster, view = etcd
    a, b = await stack.backend("a"), await stack.backend("b")
    r1, _, _ = await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, a.url, b.url))
    await wait_for(lambda: _state_by(view, "r1"), what="r1 decides")
    _, base2, _ = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a.url, b.url))
    assert await view.decider() == "r1"
    r1.signal(signal.SIGTERM)
    t0 = time.monotonic()
    # Well under the lease TTL: the lease was revoked, not left to expire.
    await wait_for(lambda: _decider_is(view, "r2"), timeout=LEASE_TTL * 0.75, interval=0.01,
                   what="r2 decides at once after r1's clean stop")
    print(f"clean stop: r2 decides {time.monotonic() - t0:.3f}s after SIGTERM to r1")
    await wait_for(lambda: _state_by(view, "r2"), timeout=2.0, what="r2 leads")
    st = await view.state()
    assert st is not None and (st.active, st.epoch) == ("a", 0)
    assert await served(base2) == ("a", "0")
    assert await asyncio.wait_for(r1.proc.wait(), 10) == 0
