"""router.cluster.etcd against a real three-member etcd cluster on loopback: the KV
calls, transactions, leases, watches, endpoint failover and quorum loss."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from router.cluster.etcd import (
    Compare,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Op,
    WatchCompacted,
    WatchEvent,
)
from tests.helpers import wait_for

from .etcdkit import EtcdCluster

pytestmark = pytest.mark.timeout(90)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline: float = 10.0) -> float:
    """Poll ``check`` until it is true; return the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > deadline:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval of a deadline loop
    return time.monotonic() - start


@pytest.fixture
async def client(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdClient]:
    c = EtcdClient(etcd_cluster.endpoints, timeout=2.0)
    yield c
    await c.close()


def member_of(cluster: EtcdCluster, client: EtcdClient) -> int:
    return cluster.endpoints.index(client.current_endpoint)


async def test_put_get_delete_and_prefix(client: EtcdClient) -> None:
    rev = await client.put("/t/a", b"1")
    await client.put("/t/b", b"\x00\xffbinary")
    await client.put("/t0", b"outside")  # "/t0" is the range_end of "/t/": not included
    kv = await client.get("/t/a")
    assert kv is not None and kv.value == b"1" and kv.mod_revision == rev and kv.version == 1
    assert await client.get("/t/missing") is None
    kvs, header = await client.get_prefix("/t/")
    assert [(k.key, k.value) for k in kvs] == [("/t/a", b"1"), ("/t/b", b"\x00\xffbinary")]
    assert header >= rev + 2
    assert await client.delete("/t/", prefix=True) == 2
    assert (await client.get_prefix("/t/"))[0] == []
    assert await client.get("/t0") is not None
    assert await client.delete("/t/a") == 0


async def test_txn_on_mod_revision_takes_each_branch(client: EtcdClient) -> None:
    rev = await client.put("/s/state", b"v1")
    won = await client.txn(
        [Compare.mod_revision("/s/state", "==", rev)], [Op.put("/s/state", b"v2"), Op.get("/s/state")]
    )
    assert won.succeeded and won.revision == rev + 1
    assert won.responses[0] == [] and won.responses[1][0].value == b"v2"
    # The same compare again: the revision moved on, so the failure branch runs.
    lost = await client.txn(
        [Compare.mod_revision("/s/state", "==", rev)], [Op.put("/s/state", b"v3")], [Op.get("/s/state")]
    )
    assert not lost.succeeded
    assert lost.responses[0][0].value == b"v2" and lost.responses[0][0].mod_revision == rev + 1
    assert (await client.get("/s/state")).value == b"v2"  # type: ignore[union-attr]


async def test_txn_campaign_on_create_revision(client: EtcdClient) -> None:
    campaign = [Compare.create_revision("/s/decider", "==", 0)]
    first = await client.txn(campaign, [Op.put("/s/decider", b"r1")], [Op.get("/s/decider")])
    second = await client.txn(campaign, [Op.put("/s/decider", b"r2")], [Op.get("/s/decider")])
    assert first.succeeded and not second.succeeded
    holder = second.responses[0][0]
    assert holder.value == b"r1" and holder.create_revision == first.revision
    # A write guarded by the term (create_revision) of the decider key.
    term = Compare.create_revision("/s/decider", "==", holder.create_revision)
    assert (await client.txn([term], [Op.put("/s/state", b"x")])).succeeded
    await client.delete("/s/decider")
    await client.put("/s/decider", b"r2")  # a new term: the old one's guard fails
    assert not (await client.txn([term], [Op.put("/s/state", b"y")])).succeeded


async def test_txn_on_value_and_version(client: EtcdClient) -> None:
    await client.put("/s/v", b"yes")
    assert (await client.txn([Compare.value("/s/v", "==", b"yes")], [Op.delete("/s/v")])).succeeded
    assert not (await client.txn([Compare.value("/s/v", "==", b"yes")], [])).succeeded
    await client.put("/s/v", b"a")
    await client.put("/s/v", b"b")
    assert (await client.txn([Compare.version("/s/v", "==", 2)], [])).succeeded
    assert (await client.txn([Compare.version("/s/v", ">", 1), Compare.value("/s/v", "!=", b"a")], [])).succeeded
    assert not (await client.txn([Compare.version("/s/v", "<", 2)], [])).succeeded


async def test_lease_keepalive_and_expiry(client: EtcdClient) -> None:
    lease = await client.lease_grant(2)
    await client.put("/l/member", b"me", lease=lease)
    kv = await client.get("/l/member")
    assert kv is not None and kv.lease == lease
    # Kept alive past its TTL: still there.
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        assert 0 < await client.lease_keepalive(lease) <= 2
        await asyncio.sleep(0.5)  # the keepalive interval under test (ttl/4)
    assert await client.get("/l/member") is not None
    # No more keepalives: the key goes within the TTL (plus the leader's check interval).
    took = await eventually(lambda: _gone(client, "/l/member"), "the leased key to expire", 10.0)
    assert took < 5.0
    assert await client.lease_keepalive(lease) == 0


async def _gone(client: EtcdClient, key: str) -> bool:
    return await client.get(key) is None


async def test_lease_revoke_deletes_its_keys(client: EtcdClient) -> None:
    lease = await client.lease_grant(30)
    await client.put("/l/a", b"1", lease=lease)
    await client.put("/l/b", b"2", lease=lease)
    await client.lease_revoke(lease)
    assert (await client.get_prefix("/l/"))[0] == []
    await client.lease_revoke(lease)  # revoking twice is not an error
    assert await client.lease_keepalive(lease) == 0
    with pytest.raises(EtcdError, match="lease not found"):
        await client.put("/l/c", b"3", lease=lease)


async def collect(it: AsyncIterator[list[WatchEvent]], n: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async for batch in it:
        events += batch
        if len(events) >= n:
            break
    return events


async def test_watch_sees_puts_and_deletes_in_order(client: EtcdClient) -> None:
    _, rev = await client.get_prefix("/w/")
    # From the revision just read: every later change is seen, whenever the stream opens.
    stream = client.watch("/w/", prefix=True, start_revision=rev + 1)
    reader = asyncio.create_task(collect(stream, 4))
    await client.put("/w/a", b"1")
    await client.put("/w/b", b"2")
    await client.put("/x/other", b"not watched")
    await client.put("/w/a", b"3")
    await client.delete("/w/a")
    events = await asyncio.wait_for(reader, 10)
    got = [(e.type, e.kv.key, e.kv.value) for e in events]
    assert got == [("put", "/w/a", b"1"), ("put", "/w/b", b"2"), ("put", "/w/a", b"3"), ("delete", "/w/a", b"")]
    assert events[3].prev is not None and events[3].prev.value == b"3"
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] == rev + 1


async def test_watch_from_start_revision_replays(client: EtcdClient) -> None:
    first = await client.put("/r/k", b"1")
    await client.put("/r/k", b"2")
    await client.delete("/r/k")
    events = await asyncio.wait_for(collect(client.watch("/r/k", start_revision=first), 3), 10)
    assert [(e.type, e.kv.value) for e in events] == [("put", b"1"), ("put", b"2"), ("delete", b"")]
    later = await asyncio.wait_for(collect(client.watch("/r/k", start_revision=first + 1), 2), 10)
    assert [e.kv.mod_revision for e in later] == [first + 1, first + 2]


async def test_watch_from_compacted_revision_raises(client: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    first = await client.put("/c/k", b"1")
    last = await client.put("/c/k", b"2")
    etcd_cluster.etcdctl("compact", str(last))
    with pytest.raises(WatchCompacted) as caught:
        await asyncio.wait_for(collect(client.watch("/c/k", start_revision=first), 1), 10)
    assert caught.value.compact_revision == last
    assert "compacted" in str(caught.value)


async def test_watch_breaks_when_its_member_is_killed(client: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    rev = await client.put("/b/k", b"1")
    stream = client.watch("/b/k", start_revision=rev)
    first = await asyncio.wait_for(anext(stream), 10)  # the stream is open: it replayed rev
    assert [e.kv.value for e in first] == [b"1"]
    victim = member_of(etcd_cluster, client)
    # A follower, as in test_failover_to_another_endpoint: killing the leader adds an
    # election that the calls after the kill would wait out.
    await wait_for(lambda: _leader_moved_off(etcd_cluster, victim), timeout=10.0, what="leadership moved off")
    etcd_cluster.kill(victim)
    start = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="stream"):
        await asyncio.wait_for(anext(stream), 10)
    assert time.monotonic() - start < 2.0
    # The next call goes to a live member.
    kv = await client.get("/b/k")
    assert kv is not None and client.current_endpoint != etcd_cluster.endpoints[victim]


def _leader_moved_off(cluster: EtcdCluster, i: int) -> bool:
    """Move the raft leadership off member ``i`` (etcdctl move-leader); True once it is."""
    rows = json.loads(cluster.etcdctl("endpoint", "status", "-w", "json", "--cluster", endpoint=i).stdout)
    mine = next(r["Status"] for r in rows if r["Endpoint"] == cluster.client_url(i))
    if mine["leader"] != mine["header"]["member_id"]:
        return True
    heir = next(r["Status"]["header"]["member_id"] for r in rows if r["Endpoint"] != cluster.client_url(i))
    cluster.etcdctl("move-leader", f"{heir:x}", endpoint=i, check=False)
    return False


async def test_failover_to_another_endpoint(client: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    await client.put("/f/k", b"1")
    used = member_of(etcd_cluster, client)
    # This test is about a refused connect. Killing the raft leader would add an election,
    # during which the others hold a write until it ends (the client then cannot know
    # whether it was applied: test_quorum_lost_then_restored's business), so the member
    # killed is first made a follower.
    await wait_for(lambda: _leader_moved_off(etcd_cluster, used), timeout=10.0, what="leadership moved off")
    etcd_cluster.kill(used)
    start = time.monotonic()
    await client.put("/f/k", b"2")  # refused connect: never sent, so safely sent elsewhere
    assert time.monotonic() - start < 2.0
    assert member_of(etcd_cluster, client) != used
    kv = await client.get("/f/k")
    assert kv is not None and kv.value == b"2"


async def test_all_endpoints_down_is_unavailable_within_the_timeout(
    client: EtcdClient, etcd_cluster: EtcdCluster
) -> None:
    await client.put("/d/k", b"1")
    etcd_cluster.stop()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.get("/d/k"), lambda: client.put("/d/k", b"2"), lambda: client.lease_grant(5)
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(EtcdUnavailable) as caught:
            await call()
        assert time.monotonic() - start <= client.timeout + 0.5
        for endpoint in etcd_cluster.endpoints:
            assert endpoint in str(caught.value)


async def test_quorum_lost_then_restored(client: EtcdClient, etcd_cluster: EtcdCluster) -> None:
    await client.put("/q/k", b"1")
    survivor = member_of(etcd_cluster, client)
    others = [i for i in range(3) if i != survivor]
    for i in others:
        etcd_cluster.kill(i)
    for attempt in range(3):  # the first write may hang until the timeout; later ones fail fast
        start = time.monotonic()
        with pytest.raises(EtcdUnavailable) as caught:
            await client.put("/q/k", f"lost{attempt}".encode())
        assert time.monotonic() - start <= client.timeout + 0.5, caught.value
    assert "no leader" in str(caught.value) or "did not answer" in str(caught.value)
    for i in others:
        etcd_cluster.restart(i)
    etcd_cluster.wait_healthy(range(3))
    await client.put("/q/k", b"back")
    kv = await client.get("/q/k")
    assert kv is not None and kv.value == b"back"
