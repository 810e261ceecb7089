"""Shared by the router-pair tests: real routers (``hotspare router -c FILE``
subprocesses) on one real etcd, real backend processes (tests/e2e/backend_app.py), and
reads of what etcd holds. Everything on loopback ports; reaped in reverse order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from router.cluster.etcd import EtcdClient
from router.cluster.records import StateRecord

PREFIX = "/hotspare/pair-test"
LEASE_TTL = 2.0


def router_config(tmp: Path, name: str, endpoints: list[str], a_url: str, b_url: str,
                  promote_log: Path | None = None, quorum: str | int = "majority", *,
                  steps: list[dict[str, Any]] | None = None) -> Path:
    service: dict[str, Any] = {
        "name": "app",
        "backends": [{"name": "a", "url": a_url}, {"name": "b", "url": b_url}],
        "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 3},
        "timeouts": {"connect": "1s", "first_byte": "10s"},
        "failover": {"hold": {"max_time": "5s"}, "hold_down": "60s", "retry_after": 2},
    }
    if promote_log is not None:
        service["promote"] = [{"name": "record", "exec": [
            "/bin/sh", "-c", f"echo {{epoch}} {{new.name}} {name} >> {promote_log}"]}]
    if steps is not None:
        service["promote"] = steps
    doc = {
        "listen": ["127.0.0.1:0"],
        "admin": {"listen": "127.0.0.1:0", "token": "pair-admin-token"},
        "state_file": str(tmp / f"{name}.state.json"),
        "audit_log": str(tmp / f"{name}.audit.jsonl"),
        "log": {"access_log": None},
        "shutdown_grace": "1s",
        "services": [service],
        "cluster": {"name": name, "etcd": {"endpoints": endpoints, "prefix": PREFIX},
                    "lease_ttl": f"{LEASE_TTL:g}s", "quorum": quorum},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Etcd:
    """What etcd holds for the test's deployment."""

    def __init__(self, endpoints: list[str]) -> None:
        self.client = EtcdClient(endpoints, timeout=2.0)

    async def decider(self) -> str | None:
        kv = await self.client.get(f"{PREFIX}/services/app/decider")
        return None if kv is None else kv.value.decode()

    async def state(self) -> StateRecord | None:
        kv = await self.client.get(f"{PREFIX}/services/app/state")
        return None if kv is None else StateRecord.decode(kv.value, kv.key)

    async def promotion(self) -> dict[str, Any] | None:
        kv = await self.client.get(f"{PREFIX}/services/app/promotion")
        return None if kv is None else dict(json.loads(kv.value))

    async def view(self, router: str, backend: str) -> str | None:
        kv = await self.client.get(f"{PREFIX}/members/{router}")
        return None if kv is None else str(json.loads(kv.value)["views"].get("app", {}).get(backend))

    async def close(self) -> None:
        await self.client.close()


async def served(base: str) -> tuple[str, str]:
    """(backend, epoch it was told) of one GET through a router; ("", "") when it failed."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                s.get(f"{base}/page") as resp:
            await resp.read()
            if resp.status != 200:
                return "", ""
            return resp.headers.get("X-Backend", ""), resp.headers.get("X-Seen-Epoch", "")
    except (aiohttp.ClientError, TimeoutError):
        return "", ""


class Link:
    """A TCP relay 127.0.0.1:<port> -> a backend, that the test can cut: one router's
    own path to a backend, so only that router sees it down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Link:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers -= {writer, up_w}

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self._writers):
            w.close()
