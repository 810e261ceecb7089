"""The operator-command queue in a real etcd: two queues for two routers (r1 decides,
r2 follows) on one etcd; commands sent to either are carried out once, by the decider."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from router.admin.commands import COMMANDS as ADMIN_COMMANDS
from router.cluster import commands as commands_module
from router.cluster.commands import COMMANDS, CommandQueue, parse_record
from router.cluster.etcd import EtcdClient
from tests.helpers import wait_for

from .etcdkit import EtcdCluster

PREFIX = "/hotspare/test-commands"
DECIDER = f"{PREFIX}/services/app/decider"

Calls = list[tuple[str, str, str, dict[str, Any]]]


@pytest.fixture
def etcd(etcd_factory: Callable[..., EtcdCluster]) -> list[str]:
    return etcd_factory(members=1).endpoints


@pytest.fixture
async def clients(etcd: list[str]) -> AsyncIterator[tuple[EtcdClient, EtcdClient]]:
    c1, c2 = EtcdClient(etcd, timeout=2.0), EtcdClient(etcd, timeout=2.0)
    yield c1, c2
    await c2.close()
    await c1.close()


def recorder(router: str, calls: Calls, answer: tuple[int, dict[str, Any]] | None = None,
             ) -> Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]:
    async def execute(service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls.append((router, service, command, args))
        return answer or (200, {"ran_on": router, "command": command, "args": args})

    return execute


@asynccontextmanager
async def serving(queue: CommandQueue, decides: Callable[[str], bool], term_of: Callable[[str], int | None],
                  execute: Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]],
                  ) -> AsyncIterator[None]:
    task = asyncio.create_task(queue.serve(decides, term_of, execute), name=f"test-serve:{queue.name}")
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def campaign(client: EtcdClient, name: str) -> int:
    """Make ``name`` the decider of ``app``; its term (the key's create_revision)."""
    await client.put(DECIDER, name.encode())
    kv = await client.get(DECIDER)
    assert kv is not None
    return kv.create_revision


async def pending(client: EtcdClient) -> list[str]:
    kvs, _ = await client.get_prefix(f"{PREFIX}/commands/")
    return [kv.key for kv in kvs]


async def test_a_command_sent_to_the_follower_runs_once_on_the_decider(
    clients: tuple[EtcdClient, EtcdClient],
) -> None:
    c1, c2 = clients
    term = await campaign(c1, "r1")
    calls: Calls = []
    q1 = CommandQueue(c1, PREFIX, "r1", timeout=10.0)
    q1_twin = CommandQueue(c1, PREFIX, "r1", timeout=10.0)  # a second server racing for each claim
    q2 = CommandQueue(c2, PREFIX, "r2", timeout=10.0)
    mine: Callable[[str], bool] = lambda s: s == "app"  # noqa: E731
    async with (serving(q1, mine, lambda s: term, recorder("r1", calls)),
                serving(q1_twin, mine, lambda s: term, recorder("r1-twin", calls)),
                serving(q2, lambda s: False, lambda s: None, recorder("r2", calls))):
        status, body = await q2.submit("app", "switchover", {"to": "b", "wait": True})
        assert status == 200, body
        assert body["command"] == "switchover" and body["args"] == {"to": "b", "wait": True}
        assert body["ran_on"] in ("r1", "r1-twin")
        # And one sent to the decider itself goes the same way.
        status, body = await q1.submit("app", "drain", {"backend": "a"})
        assert (status, body["command"]) == (200, "drain")
        assert [c[1:] for c in calls] == [("app", "switchover", {"to": "b", "wait": True}),
                                         ("app", "drain", {"backend": "a"})]
        assert all(c[0] != "r2" for c in calls)
        assert await pending(c1) == []
        results, _ = await c1.get_prefix(f"{PREFIX}/results/")
        assert len(results) == 2 and all(kv.lease != 0 for kv in results)  # leased: they clean up
        assert await c1.get(DECIDER) is not None


async def test_a_deposed_decider_claims_nothing(clients: tuple[EtcdClient, EtcdClient]) -> None:
    c1, c2 = clients
    old_term = await campaign(c1, "r1")
    await c1.delete(DECIDER)
    new_term = await campaign(c2, "r2")
    assert new_term != old_term
    calls: Calls = []
    q1 = CommandQueue(c1, PREFIX, "r1", timeout=10.0)
    q2 = CommandQueue(c2, PREFIX, "r2", timeout=1.5)
    # r1 has not noticed yet: it still believes it decides, with its old term.
    async with serving(q1, lambda s: True, lambda s: old_term, recorder("r1", calls)):
        started = time.monotonic()
        status, body = await q2.submit("app", "resume", {})
        assert status == 503, body
        assert "its decider r2 did not take it" in body["error"] and "nothing was done" in body["error"]
        assert time.monotonic() - started < 1.5 + 2.0
        assert calls == []
        assert await pending(c2) == []  # withdrawn: nobody runs it later
        # The real decider serves: the next one runs, on r2.
        async with serving(q2, lambda s: True, lambda s: new_term, recorder("r2", calls)):
            status, body = await q2.submit("app", "resume", {})
            assert (status, body["ran_on"]) == (200, "r2")
    assert [c[0] for c in calls] == ["r2"]


async def test_no_decider_is_503_within_the_timeout(clients: tuple[EtcdClient, EtcdClient]) -> None:
    _, c2 = clients
    calls: Calls = []
    q2 = CommandQueue(c2, PREFIX, "r2", timeout=1.0)
    async with serving(q2, lambda s: False, lambda s: None, recorder("r2", calls)):
        started = time.monotonic()
        status, body = await q2.submit("app", "confirm-fenced", {"wait": False})
        elapsed = time.monotonic() - started
    assert status == 503, body
    assert "no router decides service 'app' (no decider in etcd)" in body["error"]
    assert 1.0 <= elapsed < 3.0
    assert calls == [] and await pending(c2) == []


async def test_a_malformed_record_is_answered_400_and_never_executed(
    clients: tuple[EtcdClient, EtcdClient],
) -> None:
    c1, _ = clients
    term = await campaign(c1, "r1")
    calls: Calls = []
    q1 = CommandQueue(c1, PREFIX, "r1")
    bad = {"0" * 32: b"not json", "1" * 32: json.dumps({"command": "rm -rf", "args": {}}).encode(),
           "2" * 32: json.dumps({"command": "resume", "args": []}).encode(),
           "3" * 32: json.dumps(["resume"]).encode()}
    async with serving(q1, lambda s: True, lambda s: term, recorder("r1", calls)):
        for cid, value in bad.items():
            await c1.put(f"{PREFIX}/commands/app/{cid}", value)

        async def answered() -> bool:
            kvs, _ = await c1.get_prefix(f"{PREFIX}/results/")
            return len(kvs) == len(bad)

        await wait_for(answered, what="a result for every malformed command")
    for cid in bad:
        kv = await c1.get(f"{PREFIX}/results/{cid}")
        assert kv is not None
        result = json.loads(kv.value)
        assert result["status"] == 400 and "not carried out" in result["body"]["error"]
    assert calls == [] and await pending(c1) == []


async def test_a_failing_executor_is_answered_500(clients: tuple[EtcdClient, EtcdClient]) -> None:
    c1, c2 = clients
    term = await campaign(c1, "r1")

    async def broken(service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("the machine is on fire")

    async with serving(CommandQueue(c1, PREFIX, "r1"), lambda s: True, lambda s: term, broken):
        status, body = await CommandQueue(c2, PREFIX, "r2").submit("app", "resume", {})
    assert status == 500 and "the machine is on fire" in body["error"] and "r1" in body["error"]


async def test_etcd_unreachable_is_503_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = EtcdClient([f"http://127.0.0.1:{port}"], timeout=0.5)
    try:
        started = time.monotonic()
        status, body = await CommandQueue(client, PREFIX, "r2").submit("app", "resume", {})
    finally:
        await client.close()
    assert status == 503 and "etcd is unreachable from r2" in body["error"]
    assert time.monotonic() - started < 2.0


def test_records_are_parsed_strictly() -> None:
    assert parse_record(json.dumps({"command": "ready", "args": {"backend": "b"}, "from": "r2"}).encode()) == (
        "ready", {"backend": "b"}, "r2")
    assert "unknown command 'halt'" in str(parse_record(b'{"command": "halt"}'))
    assert "more than" in str(parse_record(b" " * (commands_module.MAX_RECORD_BYTES + 1)))
    assert "'from' expected a router name" in str(parse_record(b'{"command": "resume", "from": 7}'))
    assert COMMANDS == ADMIN_COMMANDS  # the queue carries exactly the admin's commands
