"""End-to-end fixtures: real backend processes (tests/e2e/backend_app.py), the router
(in-process, or as a ``hotspare router`` subprocess), and a steady client load.

Everything binds 127.0.0.1 port 0 and reads the port back; processes are killed with
SIGKILL at teardown (after SIGCONT, in case a test froze one), in reverse order.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.config import Config, parse_config
from router.server import Router

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = sys.executable
APP = HERE / "backend_app.py"
START_TIMEOUT = 15.0  # a process must announce its port within this (loaded CI machine)


class Proc:
    """A child process started with asyncio; ``kill`` is SIGKILL, ``freeze`` SIGSTOP."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.frozen = False

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def freeze(self) -> None:
        self.frozen = True
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.frozen = False
        self.signal(signal.SIGCONT)

    async def reap(self) -> None:
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)
            self.kill()
        await self.proc.wait()


async def read_line_matching(stream: asyncio.StreamReader, pattern: str, what: str) -> re.Match[str]:
    """Read lines until one matches ``pattern`` (bounded by START_TIMEOUT)."""
    seen: list[str] = []

    async def scan() -> re.Match[str]:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"{what} exited before announcing itself; said: {seen[-10:]}")
            line = raw.decode(errors="replace").rstrip()
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    try:
        return await asyncio.wait_for(scan(), START_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"{what} did not announce itself in {START_TIMEOUT}s; said: {seen[-10:]}") from None


@dataclass
class Backend:
    name: str
    port: int
    post_log: Path
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def posts(self) -> list[str]:
        if not self.post_log.exists():
            return []
        return [line.split()[0] for line in self.post_log.read_text().splitlines() if line.strip()]

    async def control(self, mode: str) -> None:
        async with aiohttp.ClientSession() as s, s.post(self.url + "/_control", data=mode) as resp:
            assert resp.status == 200, f"backend {self.name} refused mode {mode}: {resp.status}"


class Stack:
    """Owns the processes of one test; reaped in reverse order at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []

    async def backend(self, name: str, port: int = 0) -> Backend:
        post_log = self.tmp / f"{name}.posts"
        proc = await asyncio.create_subprocess_exec(
            PYTHON, str(APP), "--name", name, "--port", str(port), "--post-log", str(post_log),
            stdout=asyncio.subprocess.PIPE,
        )
        p = Proc(proc, f"backend {name}")
        self.procs.append(p)
        assert proc.stdout is not None
        m = await read_line_matching(proc.stdout, r"^PORT (\d+)$", p.name)
        return Backend(name, int(m.group(1)), post_log, p)

    async def router_process(self, config_path: Path) -> tuple[Proc, str, str]:
        """``hotspare router -c FILE`` -> (process, proxy base URL, admin base URL)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "hotspare", "router", "-c", str(config_path),
            stderr=asyncio.subprocess.PIPE, cwd=str(REPO), env=env,
        )
        p = Proc(proc, "router")
        self.procs.append(p)
        assert proc.stderr is not None
        m = await read_line_matching(proc.stderr, r"listening on ([\d.]+):(\d+) \(http\)", "router")
        a = await read_line_matching(proc.stderr, r"admin API on (http://[\d.]+:\d+)", "router")
        self._drain(proc.stderr)
        return p, f"http://{m.group(1)}:{m.group(2)}", a.group(1)

    def _drain(self, stream: asyncio.StreamReader) -> None:
        """Keep reading the router's log so it never blocks on a full pipe."""
        self.logs: list[str] = getattr(self, "logs", [])

        async def drain() -> None:
            while line := await stream.readline():
                self.logs.append(line.decode(errors="replace").rstrip())

        task = asyncio.get_running_loop().create_task(drain(), name="router-log-drain")
        self._drainers: list[asyncio.Task[None]] = [*getattr(self, "_drainers", []), task]

    async def close(self) -> None:
        for p in reversed(self.procs):
            await p.reap()
        for t in getattr(self, "_drainers", []):
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        await s.close()


def service_dict(a: Backend, b: Backend, **failover: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
        "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 3},
        "timeouts": {"connect": "1s", "first_byte": "10s"},
        "failover": {"hold": {"max_time": "5s"}, "hold_down": "60s", "retry_after": 2, **failover},
    }


def config_dict(tmp: Path, a: Backend, b: Backend, **failover: Any) -> dict[str, Any]:
    return {
        "listen": ["127.0.0.1:0"],
        "admin": {"listen": "127.0.0.1:0"},
        "state_file": str(tmp / "state.json"),
        "log": {"access_log": None},
        "shutdown_grace": "1s",
        "services": [service_dict(a, b, **failover)],
    }


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Callable[[Config], Awaitable[tuple[Router, str]]]]:
    """``await router(config)`` -> (in-process Router, proxy base URL)."""
    routers: list[Router] = []

    async def make(config: Config) -> tuple[Router, str]:
        r = Router(config)
        routers.append(r)
        bound = await r.start()
        host, port = bound[0]
        return r, f"http://{host}:{port}"

    yield make
    for r in reversed(routers):
        await r.stop()


def make_config(tmp: Path, a: Backend, b: Backend, **failover: Any) -> Config:
    return parse_config(config_dict(tmp, a, b, **failover), base_dir=tmp)


# -- the load ------------------------------------------------------------------------------


@dataclass
class Rec:
    method: str
    ident: str
    sent: float
    done: float = 0.0
    status: int | None = None  # None: no HTTP answer at all
    backend: str = ""
    epoch: str = ""
    error: str = ""
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    """Open-loop client load: ``rate`` requests a second, a share of them small POSTs
    with unique ids (``X-Post-Id``), each request its own task."""

    base: str
    rate: float = 80.0
    post_every: int = 5  # every 5th request is a POST (20 %)
    limit: float = 30.0  # hard bound on the load's length (seconds)
    records: list[Rec] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count())

    def ok_from(self, backend: str, since: float = 0.0) -> int:
        return sum(1 for r in self.records if r.ok and r.backend == backend and r.sent >= since)

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        method = "POST" if n % self.post_every == 0 else "GET"
        ident = f"p{n}"
        rec = Rec(method, ident, time.monotonic())
        self.records.append(rec)
        try:
            if method == "POST":
                ctx = session.post(f"{self.base}/orders", data=f"order {ident}".encode(), headers={"X-Post-Id": ident})
            else:
                ctx = session.get(f"{self.base}/page/{n}")
            async with ctx as resp:
                await resp.read()
                rec.status = resp.status
                rec.backend = resp.headers.get("X-Backend", "")
                rec.epoch = resp.headers.get("X-Seen-Epoch", "")
                rec.retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
        rec.done = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as tg:
            start = time.monotonic()
            for n in itertools.count(1):
                if stop.is_set() or time.monotonic() - start > self.limit:
                    break
                tg.create_task(self._one(session, n), name=f"load-{n}")
                # Pacing of an open-loop load, not a wait for a condition.
                await asyncio.sleep(1.0 / self.rate)


class Running:
    """``async with Running(load) as ld:`` runs the load in a named task; leaving the
    block stops it and waits for every request in flight."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self.load.run(self._stop), name="e2e-load")
        return self.load

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
