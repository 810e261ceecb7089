"""Shared by the ops tests: real backends, a stand-in agent and a real Router, all on
ephemeral loopback ports, closed in reverse order."""

from __future__ import annotations

import asyncio
import errno
import hmac
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
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
    promote: list[dict[str, Any]] | None = None, replication: bool = False,
    top: dict[str, Any] | None = None, **service: Any,
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
    data.update(top or {})
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


class TinyDisk:
    """A real, small file system (tmpfs) whose space a test can take away and give back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / ".filler"

    def fill(self) -> None:
        """Take every free byte: any later write there fails with ENOSPC."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@contextmanager
def tiny_disk(path: Path, size: str = "256k") -> Iterator[TinyDisk]:
    """tmpfs of ``size`` mounted at ``path`` (needs root, as the test runners are)."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield TinyDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
