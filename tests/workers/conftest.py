"""A real ``hotspare router -c FILE`` with worker processes, in front of in-process
backends on ephemeral loopback ports; which worker owns a client connection is read
from /proc (the socket's inode in /proc/net/tcp and in each worker's fd table)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.helpers import child_pids, wait_for

TOKEN = "worker-test-token-0123456789abcdef"
HEALTH = {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 1, "fall": 2}


def service(a: str, b: str, **extra: Any) -> dict[str, Any]:
    return {"name": "app", "backends": [{"name": "a", "url": a}, {"name": "b", "url": b}],
            "health": HEALTH, **extra}




def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _inode(local_port: int, remote_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == local_port and int(f[2].split(":")[1], 16) == remote_port:
            return f[9]
    return None


def _owns(pid: int, inode: str) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd_dir / fd) == f"socket:[{inode}]" for fd in os.listdir(fd_dir))
    except OSError:
        return False


class RouterProcess:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.config = tmp / "hotspare.yaml"
        self.stderr = tmp / "router.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin = ""
        self.sent = 0  # requests sent by the tests' helpers

    def write(self, services: list[dict[str, Any]], **top: Any) -> None:
        data = {"listen": ["127.0.0.1:0"], "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
                "state_file": str(self.dir / "state.json"), "log": {"access_log": None},
                "shutdown_grace": "5s", "workers": 2, "services": services, **top}
        self.config.write_text(yaml.safe_dump(data))

    def log(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    async def start(self) -> str:
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the test polls
                [sys.executable, "-m", "hotspare", "router", "-c", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=err)
        found = await wait_for(
            lambda: re.search(r"admin API on (http://127\.0\.0\.1:\d+)", self.log()) or self.proc.poll() is not None,  # type: ignore[union-attr]
            timeout=30, what="the router to listen")
        assert isinstance(found, re.Match), self.log()
        self.admin = found.group(1)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(http\)", self.log())
        assert m, self.log()
        self.port = int(m.group(1))
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        assert self.proc is not None
        return child_pids(self.proc.pid)

    def owner(self, client_port: int) -> int | None:
        """The worker process holding the router's side of the client's connection."""
        inode = _inode(self.port, client_port)
        if inode is None:
            return None
        return next((pid for pid in self.workers() if _owns(pid, inode)), None)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 30) -> int:  # noqa: ASYNC109 - a polling deadline
        assert self.proc is not None
        await wait_for(lambda: self.proc.poll() is not None, timeout=timeout, what="the router to exit")  # type: ignore[union-attr]
        return self.proc.returncode

    async def metric(self, name: str, **labels: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(self.admin + "/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.admin + "/v1/status") as r:
            doc: dict[str, Any] = await r.json()
            return doc

    async def post_admin(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as s, s.post(self.admin + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kids = self.workers()
            self.proc.kill()
            self.proc.wait()
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
async def router_process(tmp_path: Path) -> AsyncIterator[Callable[[], RouterProcess]]:
    made: list[RouterProcess] = []

    def make() -> RouterProcess:
        p = RouterProcess(tmp_path)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.kill()


Backend = Callable[..., Awaitable[str]]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """``await backend(handler)`` -> "http://127.0.0.1:PORT" (keeps its runner for ``stop``)."""
    runners: list[web.AppRunner] = []

    async def make(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        host, p = runner.addresses[0][:2]
        return f"http://{host}:{p}"

    yield make
    for r in reversed(runners):
        await r.cleanup()


def tagged(tag: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def h(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(text=tag, headers={"X-Epoch-Seen": request.headers.get("X-Hotspare-Epoch", "")})

    return h


async def get_owned(router: RouterProcess, path: str = "/", method: str = "GET", data: bytes = b"",
                    headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str], int | None]:
    """One request on a fresh connection (closed by the answer): (status, body, headers,
    the worker pid that held the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    try:
        owner = await wait_for(lambda: router.owner(writer.get_extra_info("sockname")[1]), timeout=5,
                               what="the worker that accepted the connection")
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{router.port}", "Connection: close",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    got = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), body.decode(errors="replace"), got, owner
