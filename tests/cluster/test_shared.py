"""The cluster's guarded writes (router/cluster/shared.py) on a real etcd: only the
holder of the decider term, at the revision it last read, can write a service's state
or a promotion's progress; a deposed or racing writer changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from hotspare.causes import Cause
from router.cluster.etcd import Compare, EtcdClient, Op
from router.cluster.keys import Keys
from router.cluster.records import PromotionRecord, StateRecord
from router.cluster.shared import ClusterStore, Guard
from router.failover.events import RunPromotion
from router.failover.runs import PromotionOutcome
from router.failover.store import Decision, StoreDeposed, StoreError

from .etcdkit import EtcdCluster

KEYS = Keys("/hotspare/shared-test")


@pytest.fixture
async def client(etcd_factory: Callable[..., EtcdCluster]) -> AsyncIterator[EtcdClient]:
    cluster = etcd_factory(members=1)
    c = EtcdClient(cluster.endpoints, timeout=2.0)
    yield c
    await c.close()


async def campaign(client: EtcdClient, name: str) -> int | None:
    key = KEYS.decider("app")
    res = await client.txn([Compare.create_revision(key, "==", 0)], [Op.put(key, name.encode())])
    return res.revision if res.succeeded else None


def store(client: EtcdClient, name: str, deposed: list[str]) -> ClusterStore:
    return ClusterStore(client, KEYS, name, lambda service, why: deposed.append(f"{name}: {why}"))


async def state(client: EtcdClient) -> StateRecord:
    kv = await client.get(KEYS.state("app"))
    assert kv is not None
    return StateRecord.decode(kv.value, kv.key)


async def test_only_the_current_term_at_the_last_revision_writes(client: EtcdClient) -> None:
    deposed: list[str] = []
    term = await campaign(client, "r1")
    assert term is not None and await campaign(client, "r2") is None  # one decider
    r1 = store(client, "r1", deposed)
    r1.guards["app"] = Guard(term)
    await r1.save("app", Decision("a", 0, "route", "active"))
    await r1.save("app", Decision("a", 1, "hold", "promoting", persist=True))
    assert (await state(client)).epoch == 1
    rev = (await client.get(KEYS.state("app"))).mod_revision  # type: ignore[union-attr]
    await r1.save("app", Decision("a", 1, "hold", "promoting"))  # nothing new: not written again
    assert (await client.get(KEYS.state("app"))).mod_revision == rev  # type: ignore[union-attr]

    # r1's term ends (its key deleted, as a lease expiry does); r2 wins a new term.
    await client.delete(KEYS.decider("app"))
    term2 = await campaign(client, "r2")
    assert term2 is not None
    with pytest.raises(StoreDeposed):
        await r1.save("app", Decision("b", 1, "route", "active", persist=True))
    assert deposed and deposed[0].startswith("r1: etcd ")
    assert (await state(client)).by == "r1" and (await state(client)).active == "a"  # unchanged

    # r2 with a stale revision (it did not read r1's last write) cannot write either.
    r2 = store(client, "r2", deposed)
    r2.guards["app"] = Guard(term2, state_rev=1)
    with pytest.raises(StoreDeposed):
        await r2.save("app", Decision("b", 2, "route", "active"))
    r2.guards["app"] = Guard(term2, state_rev=rev)
    await r2.save("app", Decision("a", 1, "route", "active"))
    st = await state(client)
    assert (st.active, st.epoch, st.mode, st.by) == ("a", 1, "route", "r2")


async def test_a_step_is_refused_once_the_term_is_lost(client: EtcdClient) -> None:
    term = await campaign(client, "r1")
    assert term is not None
    r1 = store(client, "r1", [])
    r1.guards["app"] = Guard(term)
    run = RunPromotion("a", "b", 3, Cause.PROBE_FAILED, "failover")
    await r1.started("app", run)
    await r1.before_step("app", run, "3-abcd", 0)
    kv = await client.get(KEYS.promotion("app"))
    assert kv is not None
    rec = PromotionRecord.decode(kv.value, kv.key)
    assert (rec.epoch, rec.status, rec.run_id, rec.next_step, rec.by) == (3, "running", "3-abcd", 0, "r1")
    await client.delete(KEYS.decider("app"))
    with pytest.raises(StoreDeposed):
        await r1.before_step("app", run, "3-abcd", 1)
    await r1.ended("app", run, PromotionOutcome("promoted"))  # logged, never raised
    kv = await client.get(KEYS.promotion("app"))
    assert kv is not None and PromotionRecord.decode(kv.value, kv.key).next_step == 0  # nothing moved


async def test_not_deciding_is_deposed_and_etcd_down_is_a_store_error(
    etcd_factory: Callable[..., EtcdCluster]
) -> None:
    cluster = etcd_factory(members=1)
    c = EtcdClient(cluster.endpoints, timeout=0.5)
    try:
        s = store(c, "r1", [])
        with pytest.raises(StoreDeposed, match="does not decide"):
            await s.save("app", Decision("a", 0, "route", "active"))
        s.guards["app"] = Guard(1)
        cluster.kill(0)
        with pytest.raises(StoreError, match="not written") as err:
            await s.save("app", Decision("a", 0, "route", "active"))
        assert type(err.value) is StoreError  # unreachable, not deposed: the term may still be ours
    finally:
        await c.close()
