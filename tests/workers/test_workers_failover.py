"""Failover with worker processes: requests held in every worker during a promotion are
all answered by the new active at the new epoch, and traffic failures seen only by the
workers reach the decider's detector (probes far too slow to find the crash)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from tests.helpers import wait_for

from .conftest import HEALTH, Backend, RouterProcess, service, tagged

pytestmark = __import__("pytest").mark.timeout(90)


def _recording(tag: str, seen: list[bytes]):  # type: ignore[no-untyped-def]
    async def h(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST":
            seen.append(body)
        return web.Response(text=tag, headers={"X-Epoch-Seen": request.headers.get("X-Hotspare-Epoch", "")})

    return h


async def _post(router: RouterProcess, body: bytes, owners: dict[bytes, int]) -> tuple[int, bytes, bytes]:
    """A POST on a fresh connection; its worker is recorded before the answer comes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    try:
        port = writer.get_extra_info("sockname")[1]
        owners[body] = await wait_for(lambda: router.owner(port), timeout=5, what="the accepting worker")
        writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        raw = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, answer = raw.partition(b"\r\n\r\n")
    epoch = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"x-epoch-seen:")), b"")
    return int(head.split()[1]), answer, epoch


async def test_held_posts_in_both_workers_go_to_the_new_active(router_process, backend: Backend, tmp_path: Path) -> None:
    seen_a: list[bytes] = []
    seen_b: list[bytes] = []
    a, b = await backend(_recording("A", seen_a)), await backend(_recording("B", seen_b))
    gate = tmp_path / "gate"
    step = {"name": "gate", "exec": [sys.executable, "-c",
                                     f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"]}
    router: RouterProcess = router_process()
    router.write([service(a, b, promote=[step], failover={"hold": {"max_time": "30s", "max_requests": 200}})])
    await router.start()
    status, doc = await router.post_admin("/v1/services/app/switchover", {"to": "b", "wait": False})
    assert status in (200, 202), doc
    await wait_for(lambda: _promoting(router), what="the service to hold traffic")
    owners: dict[bytes, int] = {}
    posts: list[asyncio.Task[tuple[int, bytes, bytes]]] = []
    i = 0

    async def both_hold() -> bool:
        nonlocal i
        body = b"post-%03d" % i
        i += 1
        posts.append(asyncio.ensure_future(_post(router, body, owners)))
        await wait_for(lambda: body in owners or posts[-1].done(), what="the POST to be accepted")
        return len(set(owners.values())) >= 2 and i >= 10

    await wait_for(both_hold, timeout=30, interval=0, what="POSTs held in both workers")
    held = await wait_for(lambda: _held(router, i), what=f"{i} requests held")
    assert held == i
    assert not seen_a and not seen_b  # nothing went anywhere while held
    gate.write_text("go")
    answers = await asyncio.gather(*posts)
    assert [(s, body, epoch) for s, body, epoch in answers] == [(200, b"B", b"1")] * i
    assert sorted(seen_b) == sorted(owners) and not seen_a
    assert set(owners.values()) == set(router.workers())


async def _promoting(router: RouterProcess) -> bool:
    svc = (await router.status())["services"][0]
    return bool(svc["state"] == "promoting")


async def _held(router: RouterProcess, want: int) -> int | None:
    svc = (await router.status())["services"][0]
    n = int(svc["held_requests"])
    return n if n == want else None


async def test_traffic_failures_from_workers_trigger_the_detector(router_process, tmp_path: Path, backend: Backend) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", tagged("A"))
    runner_a = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner_a.setup()
    await web.TCPSite(runner_a, "127.0.0.1", 0).start()
    a = f"http://127.0.0.1:{runner_a.addresses[0][1]}"
    b = await backend(tagged("B"))
    router: RouterProcess = router_process()
    slow = {"interval": "60s", "fast_interval": "50ms", "timeout": "300ms", "rise": 1, "fall": 2}
    router.write([{**service(a, b), "health": slow}])
    await router.start()
    await wait_for(lambda: _probed(router), what="the first probes")
    await runner_a.cleanup()  # a crashes; only traffic can tell before the next probe in 60 s
    loop = asyncio.get_running_loop()
    crashed = loop.time()

    async def served_by_b() -> bool:
        from .conftest import get_owned

        status, body, _, _ = await get_owned(router, "/after")
        return status == 200 and body == "B"

    await wait_for(served_by_b, timeout=20, interval=0.02, what="traffic to reach b")
    assert loop.time() - crashed < 10
    svc = (await router.status())["services"][0]
    assert svc["active"] == "b" and svc["epoch"] == 1, svc
    assert "traffic" in router.log() or "requests failed in a row" in router.log(), router.log()


async def _probed(router: RouterProcess) -> bool:
    svc = (await router.status())["services"][0]
    return all(b.get("last_probe") for b in svc["backends"])


async def test_requests_waiting_on_a_dead_backend_are_aborted_in_every_worker(router_process, backend: Backend) -> None:
    sick = asyncio.Event()
    never = asyncio.Event()

    async def a_handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.Response(status=500 if sick.is_set() else 200)
        await never.wait()  # a request on a never gets its answer
        return web.Response(text="A")

    a, b = await backend(a_handler), await backend(tagged("B"))
    router: RouterProcess = router_process()
    router.write([service(a, b, health={**HEALTH, "path": "/health"}, timeouts={"first_byte": "60s"})])
    await router.start()
    owners: dict[bytes, int] = {}
    gets: list[asyncio.Task[tuple[int, bytes, bytes]]] = []

    async def both_wait() -> bool:
        ident = b"get-%03d" % len(gets)
        gets.append(asyncio.ensure_future(_get(router, ident, owners)))
        await wait_for(lambda: ident in owners or gets[-1].done(), what="the GET to be accepted")
        return len(set(owners.values())) >= 2

    await wait_for(both_wait, timeout=30, interval=0, what="GETs waiting on a in both workers")
    assert not any(g.done() for g in gets)
    loop = asyncio.get_running_loop()
    sick.set()  # a is declared DOWN by its probes; the decider aborts what waits on it
    started = loop.time()
    answers = await asyncio.gather(*gets)
    assert loop.time() - started < 15  # far below first_byte (60 s): aborted, not timed out
    assert answers == [(200, b"B", b"1")] * len(gets)
    never.set()
    dead = [line for line in router.log().splitlines() if "declared dead" in line]
    assert any("[worker 0]" in line for line in dead) and any("[worker 1]" in line for line in dead), dead


async def _get(router: RouterProcess, ident: bytes, owners: dict[bytes, int]) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    try:
        port = writer.get_extra_info("sockname")[1]
        owners[ident] = await wait_for(lambda: router.owner(port), timeout=5, what="the accepting worker")
        writer.write(b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % ident)
        raw = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, answer = raw.partition(b"\r\n\r\n")
    epoch = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                  if line.lower().startswith(b"x-epoch-seen:")), b"")
    return int(head.split()[1]), answer, epoch
