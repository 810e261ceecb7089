"""Shared by the ops tests: real backends, a stand-in agent and a real Router, all on
ephemeral loopback ports, closed in reverse order."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from router.config import load_config
from router.server import Router

ADMIN_TOKEN = "admin-s3cret"
REPL_TOKEN = "repl-s3cret"


class App:
    """A backend: ``/health`` 200 and every other path names the backend."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=self.name, headers={"X-Backend": self.name,
                                                         "X-Epoch": request.headers.get("X-Hotspare-Epoch", "")})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_route("*", "/{tail:.*}", page)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class StandInAgent:
    """Stands in for a hotspare agent's ``GET /v1/status`` (the real agent is tested in
    tests/replication; here only its status shape and token matter). ``hang`` makes it
    accept the call and never answer."""

    def __init__(self, status: dict[str, Any], hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.calls: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._never = asyncio.Event()

    async def start(self) -> str:
        async def status(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization")
            self.calls.append(auth)
            if not hmac.compare_digest((auth or "").encode(), f"Bearer {REPL_TOKEN}".encode()):
                return web.json_response({"error": "bad token"}, status=401)
            if self.hang:
                await self._never.wait()
            return web.json_response(self.status)

        app = web.Application()
        app.router.add_get("/v1/status", status)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def sink_status(lag: float, in_sync: bool = True, pending: int = 0) -> dict[str, Any]:
    return {"node": "b", "role": "sink", "epoch": 0, "router": {"ok": True},
            "roots": [{"name": "jobs", "role": "sink", "in_sync": in_sync, "pending": pending,
                       "lag_seconds": lag, "error": None}]}


def write_config(
    tmp_path: Path, backends: list[dict[str, Any]], *, token: str | None = ADMIN_TOKEN,
    promote: list[dict[str, Any]] | None = None, replication: bool = False, **service: Any,
) -> Path:
    data: dict[str, Any] = {
        "listen": ["127.0.0.1:0"],
        "admin": {"listen": "127.0.0.1:0", **({"token": token} if token else {})},
        "state_file": str(tmp_path / "state.json"),
        "log": {"access_log": str(tmp_path / "access.log")},
        "shutdown_grace": "2s",
        "services": [{
            "name": "app",
            "backends": backends,
            "health": {"path": "/health", "interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 1},
            "failover": {"hold_down": "1s", "hold": {"max_time": "5s"}},
            "promote": promote or [],
            **service,
        }],
    }
    if replication:
        data["replication"] = {"token": REPL_TOKEN, "roots": [{"name": "jobs", "path": str(tmp_path / "jobs")}]}
    path = tmp_path / "hotspare.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@asynccontextmanager
async def running_router(path: Path) -> AsyncIterator[tuple[Router, str, str]]:
    """(router, proxy URL, admin URL) of a real Router started from ``path``."""
    router = Router(load_config(path))
    bound = await router.start()
    try:
        yield router, f"http://{bound[0][0]}:{bound[0][1]}", f"http://{bound[-1][0]}:{bound[-1][1]}"
    finally:
        await router.stop()


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def post(s: aiohttp.ClientSession, url: str, body: Any = None, token: str | None = ADMIN_TOKEN,
               ) -> tuple[int, Any]:
    headers = auth(token) if token else {}
    async with s.post(url, json=body, headers=headers) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()
