"""Helpers for the replication tests: a stand-in router, agent pairs, tree checks.

The router's real ``/v1/status`` is built by another part of the project; these tests
use a tiny aiohttp app serving the same JSON shape (the stand-in is the one mock here,
because the agent only reads that one document)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from replication.agent import Agent, AgentOptions
from replication.config import ReplicationConfig

TOKEN = "test-replication-token"


@dataclass
class FakeRouter:
    """Serves ``GET /v1/status`` with one service ``app`` of backends a and b."""

    active: str = "a"
    epoch: int = 1
    url: str = ""
    up: bool = True
    # Headers of every status request, so tests can see what agents send.
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"services": [{"name": "app", "active": self.active, "epoch": self.epoch, "state": "active",
                              "backends": [{"name": "a", "url": "http://127.0.0.1:1", "healthy": True},
                                           {"name": "b", "url": "http://127.0.0.1:2", "healthy": True}]}]}

    async def handle(self, request: web.Request) -> web.Response:
        self.seen_headers.append(dict(request.headers))
        if not self.up:
            return web.Response(status=503)
        return web.json_response(self.body())


@asynccontextmanager
async def fake_router() -> AsyncIterator[FakeRouter]:
    r = FakeRouter()
    app = web.Application()
    app.router.add_get("/v1/status", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield r
    finally:
        await runner.cleanup()


def rep_config(tmp: Path, **extra: Any) -> ReplicationConfig:
    data: dict[str, Any] = {
        "token": TOKEN,
        "roots": [{"name": "jobs", "path": str(tmp / "a" / "jobs"),
                   "paths": {"b": str(tmp / "b" / "jobs")}}],
        "quiet_period": "50ms",
        "rescan_interval": "2s",
        "role_interval": "100ms",
        "bundle_file_max": 256 * 1024,
        "max_delete_free": 3,
        **extra,
    }
    return ReplicationConfig.model_validate(data)


@dataclass
class Pair:
    config: ReplicationConfig
    peers: dict[str, str] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)

    async def start(self, node: str, router_url: str) -> Agent:
        agent = Agent(self.config, AgentOptions(node=node, router_url=router_url, peers=self.peers))
        port = await agent.start()
        self.peers[node] = f"http://127.0.0.1:{port}"
        self.agents[node] = agent
        return agent

    async def stop(self, node: str) -> None:
        await self.agents.pop(node).stop()

    async def close(self) -> None:
        for node in list(self.agents)[::-1]:
            await self.stop(node)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root, without the agent's own files."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d != ".hotspare"]
        for f in files:
            p = Path(folder) / f
            rel = os.fsdecode(p.relative_to(root))
            if rel == ".hotspare-root" or f.startswith(".hstmp-"):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
