"""A router that does not decide a service (a follower of a pair) sends operator commands
to the decider and answers what it answers; the token and the request are checked first,
and its own machine is never touched. (The queue through a real etcd: tests/cluster.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.admin.commands import execute
from router.config import Config, load_config
from router.server import Router
from tests.ops.kit import App, auth, write_config

DECIDER_ANSWER = {"service": "app", "from": "a", "to": "b", "epoch": 1, "state": "promoting",
                  "active": "a", "outcome": "promoting", "dry_run": False}


class Follower(Router):
    """A real router that believes another router decides every service."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.forwarded: list[tuple[str, str, dict[str, Any]]] = []

    def decides(self, service: str) -> bool:
        return False

    async def forward_command(self, service: str, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.forwarded.append((service, command, args))
        return 202, DECIDER_ANSWER


@pytest.fixture
async def follower(tmp_path: Path) -> AsyncIterator[tuple[Follower, str, aiohttp.ClientSession]]:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    router = Follower(load_config(write_config(tmp_path, [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}])))
    bound = await router.start()
    try:
        async with aiohttp.ClientSession() as s:
            yield router, f"http://{bound[-1][0]}:{bound[-1][1]}", s
    finally:
        await router.stop()
        await b.stop()
        await a.stop()


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None,
               token: bool = True) -> tuple[int, dict[str, Any]]:
    async with s.post(url, json=body, headers=auth() if token else {}) as resp:
        return resp.status, await resp.json()


async def test_commands_go_to_the_decider_and_its_answer_is_given(
    follower: tuple[Follower, str, aiohttp.ClientSession],
) -> None:
    router, admin, s = follower
    base = f"{admin}/v1/services/app"
    assert await post(s, f"{base}/switchover", {"to": "b", "wait": False}) == (202, DECIDER_ANSWER)
    await post(s, f"{base}/failover", {"to": "b"})
    await post(s, f"{base}/confirm-fenced", {"wait": False})
    await post(s, f"{base}/resume")
    await post(s, f"{base}/backends/b/drain")
    await post(s, f"{base}/backends/b/ready")
    assert router.forwarded == [
        ("app", "switchover", {"to": "b", "wait": False}),
        ("app", "failover", {"to": "b", "wait": True}),
        ("app", "confirm-fenced", {"wait": False}),
        ("app", "resume", {}),
        ("app", "drain", {"backend": "b"}),
        ("app", "ready", {"backend": "b"}),
    ]
    m = router.controllers["app"].machine
    assert (m.active, m.epoch, m.state.value, m.maintenance) == ("a", 0, "active", frozenset())


async def test_refused_before_anything_is_forwarded(follower: tuple[Follower, str, aiohttp.ClientSession]) -> None:
    router, admin, s = follower
    base = f"{admin}/v1/services/app"
    assert (await post(s, f"{base}/switchover", {"to": "b"}, token=False))[0] == 401
    code, body = await post(s, f"{base}/switchover", {"to": "z"})
    assert code == 404 and "has no backend 'z'" in body["error"]
    code, body = await post(s, f"{base}/switchover", {"to": "b", "wait": "yes"})
    assert code == 400 and "'wait' expected bool" in body["error"]
    code, body = await post(s, f"{admin}/v1/services/nope/resume")
    assert code == 404 and "no service 'nope'" in body["error"]
    assert (await post(s, f"{base}/backends/z/drain"))[0] == 404
    # A dry run changes nothing: this router's own plan, not forwarded.
    code, plan = await post(s, f"{base}/switchover", {"to": "b", "dry_run": True})
    assert code == 200 and plan["dry_run"] is True and plan["to"] == "b"
    assert router.forwarded == []


async def test_execute_checks_every_argument_again(follower: tuple[Follower, str, aiohttp.ClientSession]) -> None:
    """What the decider's queue hands to ``execute`` came from another process: checked
    here again, and a bad one is 400 (404 unknown service or backend) with nothing done."""
    router, _, _ = follower
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("app", "halt", {}, 400, "unknown command 'halt'"),
        ("app", "switchover", {}, 400, "'to' is required"),
        ("app", "switchover", {"to": 7}, 400, "'to' expected str, got 7"),
        ("app", "switchover", {"to": "b", "wait": 1}, 400, "'wait' expected bool, got 1"),
        ("app", "resume", {"force": True}, 400, "unknown argument(s) force"),
        ("app", "drain", {"backend": "z"}, 404, "has no backend 'z'"),
        ("nope", "resume", {}, 404, "no service 'nope'"),
        ("app", "drain", {"backend": "a"}, 409, "a is the active backend of app"),
    ]
    for service, command, args, status, message in cases:
        code, body = await execute(router, service, command, args)
        assert (code, message in body["error"]) == (status, True), (command, args, body)
    m = router.controllers["app"].machine
    assert (m.active, m.epoch, m.maintenance) == ("a", 0, frozenset())
    # And a good one is carried out on this router's machine.
    assert await execute(router, "app", "drain", {"backend": "b"}) == (
        200, {"service": "app", "backend": "b", "maintenance": True})
    assert router.controllers["app"].machine.maintenance == {"b"}
