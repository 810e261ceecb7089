"""The failover controller wired into the Router and the proxy, with real sockets:
state file at start, unfinished promotion runs, held requests released to the new
active, refusals (503 + Retry-After, page for browsers), the stale keep-alive retry and
what is not replayed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router import metrics
from router.errors import StateFileError
from router.failover.hold import Refusal
from router.failover.machine import AdminSwitchover
from router.server import Router
from tests.helpers import wait_for

from .conftest import make_config, svc
from .test_server_process import RouterProcess


def tagged(name: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=name, headers={"X-Backend": name,
                                                "X-Seen-Epoch": request.headers.get("X-Hotspare-Epoch", "")})
    return handler


def test_corrupt_state_file_stops_the_router_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"services": {"app": {"active": "a", "ep')
    cfg = make_config(tmp_path, [svc("http://127.0.0.1:1")])

    async def build() -> None:
        Router(cfg)

    with pytest.raises(StateFileError, match="not valid JSON"):
        asyncio.run(build())


def test_router_process_exits_non_zero_on_a_corrupt_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"services": {"app": {"active": "zz", "epoch": 3}}, "version": 1}')
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text(json.dumps({
        "listen": ["127.0.0.1:0"], "admin": {"listen": "127.0.0.1:0"}, "state_file": str(state),
        "services": [svc("http://127.0.0.1:1")],
    }))
    res = subprocess.run([sys.executable, "-m", "hotspare", "router", "-c", str(cfg)],
                         capture_output=True, timeout=60)
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "cannot start" in err and "'zz'" in err and "listening on" not in err


async def test_unfinished_promotion_run_is_reported_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text(
        json.dumps({"ts": "2026-01-01T00:00:00.000+00:00", "run": "4-abcd", "event": "run_start",
                    "service": "app", "old": "a", "new": "b", "epoch": 4}) + "\n"
        + json.dumps({"ts": "2026-01-01T00:00:01.000+00:00", "run": "4-abcd", "event": "step_start",
                      "index": 0, "name": "fence"}) + "\n"
    )
    r = Router(make_config(tmp_path, [svc("http://127.0.0.1:1")], audit_log=str(audit)))
    try:
        (line,) = r.statistics().unfinished_promotions
        assert "4-abcd" in line and "a->b" in line and "epoch 4" in line and "step 0. fence" in line
        assert any("unfinished promotion" in m and "4-abcd" in m for m in caplog.messages)
    finally:
        await r.stop()


async def test_refused_service_answers_503_retry_after_and_a_page_for_browsers(backend, router, client) -> None:  # type: ignore[no-untyped-def]
    url = await backend(tagged("a"))
    r, base = await router([svc(url)])
    r.controllers["app"].director.set_mode("refuse", Refusal(503, 7, "no backend passes its probes"))
    async with client.get(base + "/x", headers={"Accept": "text/html,*/*;q=0.8"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert resp.headers["Content-Type"].startswith("text/html")
        assert '<meta http-equiv="refresh" content="7">' in await resp.text()
    async with client.get(base + "/x") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert "no backend passes its probes" in await resp.text()


async def test_requests_held_during_a_switchover_go_to_the_new_active_with_the_new_epoch(
    backend, router, client, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    ua, ub = await backend(tagged("a")), await backend(tagged("b"))
    gate = tmp_path / "gate"  # the promotion step waits until the test removes it
    gate.touch()
    step = {"name": "wait", "exec": [sys.executable, "-c",
            f"import os,time\nwhile os.path.exists({str(gate)!r}): time.sleep(0.02)"], "timeout": "20s"}
    r, base = await router([svc(ua, ub, promote=[step], health={"interval": "100ms", "fast_interval": "20ms"})])
    ctl = r.controllers["app"]
    await wait_for(lambda: r.statistics().services[0].backends[1].healthy is True, what="b probed")
    ctl.submit(AdminSwitchover(0.0, "b"))
    await wait_for(lambda: ctl.director.mode == "hold", what="holding")
    held = [asyncio.create_task(client.get(base + f"/h{i}"), name=f"held-{i}") for i in range(5)]
    await wait_for(lambda: len(ctl.director.hold) == 5, what="5 requests held")
    assert not any(t.done() for t in held)
    gate.unlink()
    for t in held:
        async with await t as resp:
            assert resp.status == 200
            assert (resp.headers["X-Backend"], resp.headers["X-Seen-Epoch"]) == ("b", "1")


async def test_every_controller_publishes_on_the_routers_one_feed(backend, router) -> None:  # type: ignore[no-untyped-def]
    ua, ub = await backend(tagged("a")), await backend(tagged("b"))
    r, _ = await router([svc(ua, ub, health={"interval": "100ms", "fast_interval": "20ms"}),
                         svc(ua, name="other", path_prefix="/other")])
    ctl = r.controllers["app"]
    assert ctl.feed is r.events and r.controllers["other"].feed is r.events
    await wait_for(lambda: r.statistics().services[0].backends[1].healthy is True, what="b probed")
    ctl.apply(AdminSwitchover(0.0, "b"))
    assert await ctl.wait_settled(10.0)
    events = r.events.recent("app")
    assert [(e.kind, getattr(e, "new", None)) for e in events if e.kind in ("state", "notice")] == [
        ("state", "promoting"), ("notice", None), ("state", "active")]
    assert r.events.recent("other") == []


async def test_stale_keepalive_connection_is_retried_on_a_fresh_one_without_blame(router, client) -> None:  # type: ignore[no-untyped-def]
    """A backend that closes a kept-alive connection as the next request arrives."""
    conns = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        try:
            first = True
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /health "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                n = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length:")), b"0"))
                await reader.readexactly(n)
                if not first:
                    return  # closes without answering: the keep-alive race
                first = False
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        r, base = await router([svc(f"http://127.0.0.1:{port}", health={"interval": "30s"})])
        seen: list[object] = []
        r.directors["app"].report = lambda b, o: seen.append(o)
        for i in range(3):
            async with client.post(base + f"/p{i}", data=b"order") as resp:
                assert resp.status == 200, await resp.text()
        assert all(getattr(o, "status", None) == 200 for o in seen), seen
        assert conns >= 2
    finally:
        server.close()
        await server.wait_closed()


async def test_post_that_reached_a_failing_backend_is_not_replayed(backend, router, client) -> None:  # type: ignore[no-untyped-def]
    executed: list[str] = []

    async def breaks(request: web.Request) -> web.Response:
        await request.read()
        if request.path != "/health":
            executed.append(request.path)
            assert request.transport is not None
            request.transport.abort()  # a reset after the request arrived
        return web.Response(text="unreachable")

    ua, ub = await backend(breaks), await backend(tagged("b"))
    _r, base = await router([svc(ua, ub)])
    before = metrics.REPLAYED.labels("app", "POST")._value.get()
    async with client.post(base + "/order", data=b"x" * 100) as resp:
        text = await resp.text()
        assert resp.status == 502
        assert "not sent again" in text and "POST" in text
    assert executed == ["/order"]
    assert metrics.REPLAYED.labels("app", "POST")._value.get() == before


async def test_get_after_a_reset_is_replayed_once_a_probe_clears_the_backend(backend, router, client) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        if request.path != "/health" and calls.count(request.path) <= 2:  # aiohttp itself retries once
            assert request.transport is not None
            request.transport.abort()
        return web.Response(text="fine", headers={"X-Backend": "a"})

    ua, ub = await backend(flaky), await backend(tagged("b"))
    r, base = await router([svc(ua, ub, health={"fast_interval": "20ms"})])
    async with client.get(base + "/g") as resp:
        assert resp.status == 200 and resp.headers["X-Backend"] == "a"
    assert calls.count("/g") == 3
    assert r.statistics().services[0].active == "a"


async def test_body_larger_than_the_replay_buffer_still_streams_whole(backend, router, client) -> None:  # type: ignore[no-untyped-def]
    sizes: list[int] = []

    async def count(request: web.Request) -> web.Response:
        sizes.append(len(await request.read()))
        return web.Response(text="ok")

    url = await backend(count)
    _r, base = await router([svc(url, failover={"replay_buffer": 1024})])
    data = b"y" * 200_000
    async with client.put(base + "/big", data=data) as resp:
        assert resp.status == 200
    assert sizes[-1] == len(data)


# -- one router per state file; reloads that fail their state check ----------------------------


def _router_process(tmp_path: Path, name: str, state: Path, services: list[dict[str, Any]]) -> RouterProcess:
    home = tmp_path / name
    home.mkdir()
    rp = RouterProcess(home)
    rp.write(services, state_file=str(state), admin={"listen": "127.0.0.1:0", "token": "t0ken-for-tests"})
    return rp


async def test_second_router_on_the_same_state_file_refuses_naming_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "shared-state.json"
    first = _router_process(tmp_path, "first", state, [svc("http://127.0.0.1:1")])
    second = _router_process(tmp_path, "second", state, [svc("http://127.0.0.1:1")])
    try:
        await first.start()
        assert first.proc is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hotspare", "router", "-c", str(second.config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, raw = await asyncio.wait_for(proc.communicate(), 60)
        err = raw.decode()
        assert proc.returncode == 1, err
        assert f"{state}: held by another router (pid {first.proc.pid}" in err
        assert "listening on" not in err
        assert (state.parent / "shared-state.json.lock").read_text().strip() == str(first.proc.pid)
        first.kill()  # SIGKILL: the kernel drops the lock with the process, none is left stale
        await second.start()
        assert second.proc is not None and second.proc.poll() is None
    finally:
        second.kill()
        first.kill()


def _admin_port(rp: RouterProcess) -> int:
    m = re.search(r"admin API on http://127\.0\.0\.1:(\d+)", rp.log())
    assert m, rp.log()
    return int(m.group(1))


async def test_sighup_reload_whose_state_check_fails_keeps_the_router_and_its_config(backend, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ua, ub = await backend(tagged("a")), await backend(tagged("b"))
    rp = _router_process(tmp_path, "r", tmp_path / "state.json", [svc(ua, ub)])
    try:
        base = await rp.start()
        admin = f"http://127.0.0.1:{_admin_port(rp)}"
        # The new file no longer names the active backend "a".
        rp.write([{"name": "app", "backends": [{"name": "b", "url": ub}, {"name": "c", "url": ua}]}],
                 state_file=str(tmp_path / "state.json"), admin={"listen": "127.0.0.1:0", "token": "t0ken-for-tests"})
        rp.signal(signal.SIGHUP)
        await wait_for(lambda: "reload refused (SIGHUP)" in rp.log(), what="the reload to be refused")
        line = next(x for x in rp.log().splitlines() if "reload refused (SIGHUP)" in x)
        assert "'a'" in line and "does not name" in line
        assert rp.proc is not None and rp.proc.poll() is None
        async with client.get(base + "/x") as resp:
            assert resp.status == 200 and resp.headers["X-Backend"] == "a"
        async with client.get(admin + "/v1/status") as resp:
            doc = await resp.json()
        assert any(al.startswith("reload_refused:") for al in doc["services"][0]["alarms"])
        async with client.get(admin + "/metrics") as resp:
            assert 'hotspare_reload_failures_total{cause="state_file"} 1.0' in await resp.text()
        # The state file becomes unreadable: the same refusal, the router still runs.
        rp.write([svc(ua, ub)], state_file=str(tmp_path / "state.json"),
                 admin={"listen": "127.0.0.1:0", "token": "t0ken-for-tests"})
        (tmp_path / "state.json").unlink(missing_ok=True)
        (tmp_path / "state.json").mkdir()
        rp.signal(signal.SIGHUP)
        await wait_for(lambda: "cannot read the state file: Is a directory" in rp.log(), what="the second refusal")
        assert rp.proc.poll() is None
        async with client.get(base + "/x") as resp:
            assert resp.status == 200 and resp.headers["X-Backend"] == "a"
    finally:
        rp.kill()
