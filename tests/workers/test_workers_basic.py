"""Worker processes (router/workers/): both workers serve, /metrics counts every request
exactly once across them, the access log has every line once and whole, SIGHUP reaches
every worker, a killed worker is replaced without touching the other's connections, and
SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.helpers import wait_for

from .conftest import Backend, RouterProcess, alive, get_owned, service, tagged

pytestmark = __import__("pytest").mark.timeout(90)


async def _until_both_served(router: RouterProcess, check: object = None, path: str = "/") -> set[int]:
    """Requests on fresh connections until each worker has served one; every answer 200."""
    seen: set[int] = set()

    async def one() -> bool:
        status, body, headers, owner = await get_owned(router, path)
        router.sent += 1
        assert status == 200, (status, body)
        if callable(check):
            check(body, headers)
        if owner is not None:
            seen.add(owner)
        return len(seen) >= 2

    await wait_for(one, timeout=20, interval=0, what="both workers to serve a request")
    return seen


async def test_both_workers_serve_and_metrics_sum_exactly(router_process, backend: Backend) -> None:
    a, b = await backend(tagged("A")), await backend(tagged("B"))
    router: RouterProcess = router_process()
    router.write([service(a, b)])
    await router.start()
    workers = router.workers()
    assert len(workers) == 2, router.log()
    served = await _until_both_served(router, lambda body, h: body == "A")
    assert served == set(workers)
    # Then a known number more, over concurrent connections.
    before = router.sent
    async with aiohttp.ClientSession() as s:
        async def get() -> None:
            async with s.get(router.url + "/x") as r:
                assert r.status == 200 and await r.text() == "A"
        await asyncio.gather(*(get() for _ in range(300)))
    want = before + 300
    got = await wait_for(lambda: _count_is(router, want), timeout=10, what=f"{want} requests in /metrics")
    assert got == want
    await asyncio.sleep(0.6)  # a worker metrics interval passes: nothing may be counted twice
    assert await _count(router) == want


async def _count(router: RouterProcess) -> float:
    return await router.metric("hotspare_requests_total", service="app", backend="a")


async def _count_is(router: RouterProcess, want: float) -> float | None:
    n = await _count(router)
    assert n <= want, f"counted {n} > {want} requests"
    return n if n == want else None


async def test_access_log_every_line_once_and_whole(router_process, backend: Backend, tmp_path: Path) -> None:
    a, b = await backend(tagged("A")), await backend(tagged("B"))
    router: RouterProcess = router_process()
    log_path = tmp_path / "access.log"
    router.write([service(a, b)], log={"access_log": str(log_path)})
    await router.start()
    await _until_both_served(router)
    n = 1500
    ids = [f"req-{i:05d}-" + "x" * 40 for i in range(n)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=40, force_close=True)) as s:
        async def get(rid: str) -> None:
            async with s.get(router.url + "/" + rid, headers={"X-Request-ID": rid}) as r:
                assert r.status == 200
        await asyncio.gather(*(get(rid) for rid in ids))
    router.signal(signal.SIGTERM)
    assert await router.wait_exit() == 0, router.log()
    lines = log_path.read_text().splitlines()
    line_re = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /(req-\d{5}-x{40}) HTTP/1\.1" 200 \d+ "-" "[^"]*" '
                         r"rid=(req-\d{5}-x{40}) rt=\d+\.\d{6}$")
    found = []
    for line in lines:
        m = line_re.match(line)
        if m and m.group(1) == m.group(2):
            found.append(m.group(1))
        else:
            assert "/req-" not in line, f"a broken or interleaved line: {line!r}"
    assert sorted(found) == ids


async def test_sighup_reaches_every_worker(router_process, backend: Backend) -> None:
    a, b = await backend(tagged("A")), await backend(tagged("B"))
    router: RouterProcess = router_process()
    router.write([service(a, b)])
    await router.start()
    await _until_both_served(router, lambda body, h: body == "A")
    router.write([service(a, b)], via_name="reloaded-proxy")
    router.signal(signal.SIGHUP)
    await wait_for(lambda: "reload: configuration applied" in router.log(), what="the reload")

    def new_via(body: str, headers: dict[str, str]) -> None:
        assert "reloaded-proxy" in headers.get("Via", ""), headers

    served = await _until_both_served(router, new_via)
    assert served == set(router.workers())


async def test_killed_worker_is_replaced_without_touching_the_other(router_process, backend: Backend) -> None:
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        if request.path != "/stream":
            return web.Response(text="A", headers={"X-Epoch-Seen": request.headers.get("X-Hotspare-Epoch", "")})
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first;")
        await release.wait()
        await resp.write(b"last")
        await resp.write_eof()
        return resp

    a, b = await backend(stream), await backend(tagged("B"))
    router: RouterProcess = router_process()
    router.write([service(a, b)])
    await router.start()
    # Move traffic to b first: the restarted worker must start with this state.
    status, doc = await router.post_admin("/v1/services/app/switchover", {"to": "b"})
    assert status == 200, doc
    # A long response through one worker, from a (by URL: the stream handler is a's).
    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn) as s:
        status, doc = await router.post_admin("/v1/services/app/switchover", {"to": "a"})
        assert status == 200, doc
        async with s.get(router.url + "/stream") as r:
            assert r.status == 200
            assert await r.content.readexactly(6) == b"first;"
            assert r.connection is not None and r.connection.transport is not None
            keeper = router.owner(r.connection.transport.get_extra_info("sockname")[1])
            assert keeper is not None
            victim = next(pid for pid in router.workers() if pid != keeper)
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: len(router.workers()) == 2 and victim not in router.workers(),
                           what="the killed worker to be replaced")
            # New connections are served meanwhile and after, by both.
            served = await _until_both_served(router, lambda body, h: body == "A" and h["X-Epoch-Seen"] == "2")
            assert keeper in served and victim not in served
            release.set()
            assert await r.content.read() == b"last"
    assert "worker" in router.log() and "died; starting it again" in router.log()


async def test_sigterm_drains_every_worker(router_process, backend: Backend) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return web.Response(text="done")

    a, b = await backend(slow), await backend(tagged("B"))
    router: RouterProcess = router_process()
    router.write([service(a, b)])
    await router.start()
    workers = router.workers()
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(s.get(router.url + "/slow"))
        await asyncio.wait_for(started.wait(), 10)
        router.signal(signal.SIGTERM)
        await wait_for(lambda: router.log().count("stopping: no new connections") == 3, what="all to stop")
        release.set()
        r = await pending
        assert r.status == 200 and await r.text() == "done"
    assert await router.wait_exit() == 0, router.log()
    assert not any(alive(pid) for pid in workers)
