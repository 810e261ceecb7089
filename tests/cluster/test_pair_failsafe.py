"""The failsafe of a router pair (single etcd member): etcd gone -> both routers keep
the last active, raise ``etcd_unreachable`` (metric, status) and never fail over, even
when the active dies meanwhile; etcd back -> they resume, and the decider fails over."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from router.cluster.etcd import EtcdError
from tests.e2e.conftest import Stack
from tests.helpers import wait_for

from .etcdkit import EtcdCluster
from .pairkit import Etcd, router_config, served

pytestmark = pytest.mark.slow


async def _get(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, s.get(url) as resp:
        return await resp.text()


async def _etcd_up(admin: str) -> str:
    """The value of hotspare_cluster_etcd_up in the router's /metrics."""
    for line in (await _get(f"{admin}/metrics")).splitlines():
        if line.startswith("hotspare_cluster_etcd_up "):
            return line.split()[1]
    return ""


async def test_etcd_gone_keeps_the_last_active_and_never_fails_over_then_resumes(
    tmp_path: Path, stack: Stack, etcd_factory: Callable[..., EtcdCluster]
) -> None:
    cluster = etcd_factory(members=1)
    view = Etcd(cluster.endpoints)
    try:
        a, b = await stack.backend("a"), await stack.backend("b")
        _, base1, admin1 = await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, a.url, b.url))
        await wait_for(view.decider, what="a decider elected")
        _, base2, admin2 = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a.url, b.url))
        await wait_for(lambda: view.view("r2", "a"), what="r2 joined")
        assert [await _etcd_up(admin1), await _etcd_up(admin2)] == ["1.0", "1.0"]

        cluster.kill(0)
        for admin in (admin1, admin2):
            await wait_for(lambda admin=admin: _is(_etcd_up(admin), "0.0"), timeout=10,  # type: ignore[misc]
                           what=f"{admin} reports etcd down")
            status = json.loads(await _get(f"{admin}/v1/status"))
            alarms = [al for svc in status["services"] for al in svc["alarms"]]
            assert any(str(al).startswith("etcd_unreachable:") for al in alarms), alarms
        assert await served(base1) == ("a", "0") and await served(base2) == ("a", "0")

        a.proc.kill()  # the active dies while nobody can reach etcd
        deadline = time.monotonic() + 3.0  # many health rounds (fall 3 x 200 ms) and lease TTLs
        while time.monotonic() < deadline:
            for base in (base1, base2):
                assert (await served(base))[0] != "b", "failed over without etcd"
            await wait_for(lambda: True)  # a poll tick

        cluster.restart(0)  # etcd back: the pair resumes; the active is down for both: one failover

        async def moved() -> bool:
            try:
                st = await view.state()
            except EtcdError:
                return False  # still starting
            return st is not None and (st.active, st.epoch, st.mode) == ("b", 1, "route")

        await wait_for(moved, timeout=20, what="the failover once etcd answers again")
        for base in (base1, base2):
            await wait_for(lambda base=base: _is(served(base), ("b", "1")), timeout=2,  # type: ignore[misc]
                           what=f"{base} on b at epoch 1")
        assert [await _etcd_up(admin1), await _etcd_up(admin2)] == ["1.0", "1.0"]
    finally:
        await view.close()


async def _is(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_a_decider_killed_during_a_step_leaves_the_run_interrupted_never_run_again(
    tmp_path: Path, stack: Stack, etcd_factory: Callable[..., EtcdCluster]
) -> None:
    cluster = etcd_factory(members=1)
    view = Etcd(cluster.endpoints)
    log = tmp_path / "steps.log"
    try:
        a, b = await stack.backend("a"), await stack.backend("b")
        slow = [{"name": "slow", "exec": ["/bin/sh", "-c", f"echo {{epoch}} {{new.name}} >> {log}; sleep 30"],
                 "timeout": "60s"}]
        r1, _, _ = await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, a.url, b.url,
                                                            steps=slow))
        await wait_for(view.decider, what="a decider elected")
        _, _, admin2 = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a.url, b.url,
                                                                steps=slow))
        await wait_for(lambda: view.view("r2", "a"), what="r2 joined")
        a.proc.kill()
        await wait_for(lambda: log.exists() and log.read_text() == "1 b\n", timeout=10, what="the step started")
        promo = await view.promotion()
        assert promo is not None and (promo["epoch"], promo["status"], promo["next_step"]) == (1, "running", 0)
        r1.kill()  # mid-step

        # r2 decides once r1's lease expires; it reports the run, goes on at epoch 2 (epoch 1
        # was handed to the interrupted step: burned) and runs its own failover, epoch 3.

        async def reported() -> bool:
            status = json.loads(await _get(f"{admin2}/v1/status"))
            return any(str(al).startswith("promotion_interrupted:") for svc in status["services"]
                       for al in svc["alarms"])

        await wait_for(reported, timeout=10, what="r2 reports the interrupted run")
        status = json.loads(await _get(f"{admin2}/v1/status"))
        alarms = [al for svc in status["services"] for al in svc["alarms"]]
        assert any(str(al).startswith("promotion_interrupted:") and "epoch 1" in str(al) for al in alarms), alarms
        await wait_for(lambda: log.read_text().count("\n") == 2, timeout=10, what="the next decider's own run")
        assert log.read_text() == "1 b\n3 b\n"  # epoch 1's step never ran again; its token never reused
        promo = await view.promotion()
        assert promo is not None and (promo["epoch"], promo["by"], promo["status"]) == (3, "r2", "running")
    finally:
        await view.close()

