"""Maintenance (drain/ready) against a real Router, real backends and the real admin API:
a drained spare is no failover target whatever its probes say, until it is made ready.
(The same story as a pure playbook: tests/router/test_failover.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.failover.machine import State
from router.health.detector import Health
from router.server import Router
from tests.helpers import wait_for

from .conftest import svc

TOKEN = "maint-token"


class Backend:
    """Names itself on every path; ``/health`` answers 503 while ``sick``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sick = False

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            return web.Response(status=503 if self.sick else 200, text=self.name)

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=self.name, headers={"X-Backend": self.name})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_route("*", "/{tail:.*}", page)
        return app


@pytest.fixture
async def s() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admin_post(s: aiohttp.ClientSession, r: Router, path: str) -> tuple[int, Any]:
    assert r.bound is not None
    host, port = r.bound.admin
    async with s.post(f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, await resp.json()


async def test_a_drained_spare_stays_out_of_failover_after_its_probes_go_down_and_up(
    backend, router, s: aiohttp.ClientSession  # type: ignore[no-untyped-def]
) -> None:
    a, b = Backend("a"), Backend("b")
    ua, ub = await backend(a.app()), await backend(b.app())
    health = {"path": "/health", "interval": "50ms", "fast_interval": "20ms", "timeout": "500ms",
              "rise": 1, "fall": 1}
    r, base = await router([svc(ua, ub, health=health, failover={"hold_down": "1s"})],
                           admin={"listen": "127.0.0.1:0", "token": TOKEN})
    ctl = r.controllers["app"]
    await wait_for(lambda: ctl.checker.health("b") is Health.UP, what="b probed UP")

    code, body = await admin_post(s, r, "/v1/services/app/backends/b/drain")
    assert (code, body) == (200, {"service": "app", "backend": "b", "maintenance": True})
    # b's probes fail, then pass again: that says nothing about maintenance.
    b.sick = True
    await wait_for(lambda: ctl.checker.health("b") is Health.DOWN, what="b probed DOWN")
    b.sick = False
    await wait_for(lambda: ctl.checker.health("b") is Health.UP, what="b probed UP again")
    assert await ctl.wait_settled(5.0)

    a.sick = True  # the active dies: the only spare is drained, so no failover
    await wait_for(lambda: (ctl.machine.state, ctl.machine.active) != (State.ACTIVE, "a"),
                   what="the machine to act on a DOWN")
    assert await ctl.wait_settled(10.0)
    assert (ctl.machine.state, ctl.machine.active, ctl.machine.epoch) == (State.DEGRADED, "a", 0)
    async with s.get(base + "/x") as resp:
        assert resp.status == 503 and "Retry-After" in resp.headers

    code, body = await admin_post(s, r, "/v1/services/app/backends/b/ready")
    assert (code, body) == (200, {"service": "app", "backend": "b", "maintenance": False})
    await wait_for(lambda: ctl.machine.state is State.ACTIVE and ctl.machine.active == "b",
                   what="failover to b once it is ready")
    assert ctl.machine.epoch == 1
    async with s.get(base + "/x") as resp:
        assert resp.status == 200 and resp.headers["X-Backend"] == "b"
