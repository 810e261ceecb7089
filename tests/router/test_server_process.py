"""``hotspare router -c FILE`` as a real subprocess: exit 2 on a bad file, SIGHUP reload
(good and bad), SIGTERM graceful stop, and the 1 GiB streaming memory bound."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.helpers import child_pids, wait_for

from .conftest import svc


class RouterProcess:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "hotspare.yaml"
        self.stderr = tmp_path / "router.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def write(self, services: list[dict[str, Any]], **top: Any) -> None:
        data = {
            "listen": ["127.0.0.1:0"],
            "admin": {"listen": "127.0.0.1:0"},
            "state_file": str(self.dir / "state.json"),
            "log": {"access_log": None},
            "shutdown_grace": "10s",
            "services": services,
            **top,
        }
        self.config.write_text(yaml.safe_dump(data))

    def log(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    async def start(self) -> str:
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the test polls
                [sys.executable, "-m", "hotspare", "router", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        found = await wait_for(
            lambda: re.search(r"listening on 127\.0\.0\.1:(\d+) \(http\)", self.log()) or self.proc.poll() is not None,  # type: ignore[union-attr]
            timeout=20,
            what="the router to listen",
        )
        assert isinstance(found, re.Match), self.log()
        self.port = int(found.group(1))
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def memory_kib(self) -> dict[str, int]:
        """VmHWM and VmRSS of the router process or of its worker processes (the
        data path), whichever is largest."""
        assert self.proc is not None
        out = {"VmHWM": 0, "VmRSS": 0}
        for pid in [self.proc.pid, *child_pids(self.proc.pid)]:
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # a worker that exited meanwhile
            for k, v in re.findall(r"^(VmHWM|VmRSS):\s+(.+)$", text, re.M):
                out[k] = max(out[k], int(v.split()[0]))
        return out




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


def _tag(tag: str):  # type: ignore[no-untyped-def]
    async def h(request: web.Request) -> web.Response:
        return web.Response(text=tag)

    return h


def test_bad_config_exits_2_without_starting(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listen: ['127.0.0.1:0']\nservices:\n  - name: app\n    backends: []\n")
    res = subprocess.run([sys.executable, "-m", "hotspare", "router", "-c", str(cfg)], capture_output=True, timeout=60)
    assert res.returncode == 2
    assert b"services[0].backends" in res.stderr
    assert b"listening" not in res.stderr


async def test_sighup_reload_good_then_bad(backend, router_process, client: aiohttp.ClientSession) -> None:
    ua, ub = await backend(_tag("A")), await backend(_tag("B"))
    rp = router_process()
    rp.write([svc(ua)])
    base = await rp.start()
    # One keep-alive connection held across the reloads: it must not be dropped.
    reader, writer = await asyncio.open_connection("127.0.0.1", rp.port)

    async def ask_on_kept_connection() -> bytes:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return await reader.readexactly(length)

    try:
        assert await ask_on_kept_connection() == b"A"
        rp.write([svc(ub)])
        rp.signal(signal.SIGHUP)

        async def now_b() -> bool:
            async with client.get(base + "/") as resp:
                return await resp.text() == "B"

        await wait_for(now_b, what="the reloaded config to route to B")
        assert await ask_on_kept_connection() == b"B"
        rp.config.write_text("listen: ['127.0.0.1:0']\nservices:\n  - name: app\n    backends: []\n")
        rp.signal(signal.SIGHUP)
        await wait_for(lambda: "reload refused" in rp.log(), what="the bad reload to be refused")
        assert "services[0].backends" in rp.log()
        assert await ask_on_kept_connection() == b"B"
        assert rp.proc is not None and rp.proc.poll() is None
    finally:
        writer.close()


async def test_sigterm_finishes_in_flight_then_exits(backend, router_process) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    url = await backend(slow)
    rp = router_process()
    # The grace must outlast this test's own waits on a loaded machine: past it the router
    # rightly cancels the request, and aiohttp's client would then retry it into a closed
    # listener.
    rp.write([svc(url)], shutdown_grace="60s")
    base = await rp.start()
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(s.get(base + "/slow"))
        await asyncio.wait_for(arrived.wait(), 20)
        rp.signal(signal.SIGTERM)
        await wait_for(lambda: "stopping" in rp.log(), what="the router to start stopping")

        async def refused() -> bool:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", rp.port)
            except OSError:
                return True
            w.close()
            return False

        await wait_for(refused, what="the listener to close")
        release.set()
        resp = await asyncio.wait_for(pending, 20)
        assert resp.status == 200
        assert await resp.text() == "finished"
        resp.release()
    assert rp.proc is not None
    assert await asyncio.get_running_loop().run_in_executor(None, rp.proc.wait, 20) == 0


GIB = 1 << 30


@pytest.mark.slow
async def test_one_gib_up_and_down_streams_in_bounded_memory(backend, router_process) -> None:
    chunk = os.urandom(1 << 20)

    async def sink(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            n = 0
            async for part in request.content.iter_chunked(1 << 20):
                n += len(part)
            return web.Response(text=str(n))
        resp = web.StreamResponse(headers={"Content-Length": str(GIB)})
        await resp.prepare(request)
        for _ in range(GIB // len(chunk)):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    url = await backend(sink)
    rp = router_process()
    rp.write([svc(url)])
    base = await rp.start()
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(rp.memory_kib()["VmRSS"])
            await asyncio.sleep(0.2)  # a sampling period, not a wait for a condition

    async def upload():  # type: ignore[no-untyped-def]
        for _ in range(GIB // len(chunk)):
            yield chunk

    sampler = asyncio.create_task(sample(), name="rss sampler")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            async with s.post(base + "/up", data=upload()) as resp:
                assert resp.status == 200
                assert int(await resp.text()) == GIB
            got = 0
            async with s.get(base + "/down") as resp:
                assert resp.status == 200
                async for part in resp.content.iter_chunked(1 << 20):
                    got += len(part)
            assert got == GIB
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    mem = rp.memory_kib()
    print(f"router RSS: peak VmHWM {mem['VmHWM'] / 1024:.1f} MiB, now {mem['VmRSS'] / 1024:.1f} MiB, sampled max {max(samples) / 1024:.1f} MiB")
    assert mem["VmHWM"] < 100 * 1024, mem
