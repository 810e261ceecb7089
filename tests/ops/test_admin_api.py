"""The admin API of a real Router (real backends and sockets on 127.0.0.1:0): tokens,
reads, switchover and its dry run, failover, confirm-fenced/resume, drain/ready, reload,
promotion history and agents' freshness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import wait_for
from tests.ops.kit import (
    ADMIN_TOKEN,
    App,
    StandInAgent,
    get_json,
    post,
    running_router,
    sink_status,
    write_config,
)


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


@pytest.fixture
async def s() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def backends(a: App, b: App) -> list[dict[str, str]]:
    return [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]


async def both_probed(s: aiohttp.ClientSession, admin: str) -> bool:
    doc = await get_json(s, f"{admin}/v1/status")
    return all(b["healthy"] is True for b in doc["services"][0]["backends"])


async def test_state_changing_calls_need_the_bearer_token(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    async with running_router(write_config(tmp_path, backends(*apps))) as (router, _, admin):
        url = f"{admin}/v1/services/app/switchover"
        for token in (None, "wrong-token", ADMIN_TOKEN + "x"):
            code, body = await post(s, url, {"to": "b"}, token=token)
            assert code == 401, body
            assert "bearer token" in body["error"]
        async with s.post(url, json={"to": "b"}, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/v1/reload", "/v1/services/app/resume", "/v1/services/app/backends/b/drain"):
            code, body = await post(s, admin + path, {}, token=None)
            assert code == 401, (path, body)
        assert router.controllers["app"].machine.active == "a"  # nothing moved
        assert (await get_json(s, f"{admin}/v1/status"))["services"][0]["epoch"] == 0


async def test_without_a_configured_token_changes_are_refused_403(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    async with running_router(write_config(tmp_path, backends(*apps), token=None)) as (_, _, admin):
        code, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"}, token="anything")
        assert code == 403
        assert "admin.token" in body["error"]
        # reads still work without a token
        assert (await get_json(s, f"{admin}/v1/status"))["services"][0]["active"] == "a"


async def test_reads_status_metrics_page_and_404s(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    async with running_router(write_config(tmp_path, backends(*apps))) as (_, proxy, admin):
        await wait_for(lambda: both_probed(s, admin), what="both backends probed")
        async with s.get(f"{proxy}/x") as r:
            assert r.headers["X-Backend"] == "a"
        doc = await get_json(s, f"{admin}/v1/status")
        (svc,) = doc["services"]
        assert {k: svc[k] for k in ("name", "active", "epoch", "state")} == \
            {"name": "app", "active": "a", "epoch": 0, "state": "active"}
        assert [(b["name"], b["url"], b["healthy"]) for b in svc["backends"]] == \
            [("a", apps[0].url, True), ("b", apps[1].url, True)]
        assert svc["backends"][1]["last_probe"]["ok"] is True
        assert svc["held_requests"] == 0
        assert svc["spare"] == {"name": "b", "ready": True, "reasons": []}
        assert doc["unfinished_promotions"] == []
        async with s.get(f"{admin}/metrics") as r:
            text = await r.text()
        assert 'hotspare_active_backend{backend="a",service="app"} 1.0' in text
        assert 'hotspare_requests_total{backend="a",code="2xx",method="GET",service="app"}' in text
        async with s.get(f"{admin}/") as r:
            assert r.content_type == "text/html"
            page = await r.text()
        assert 'data-service="app"' in page and 'class="active-name">a<' in page
        code, body = await post(s, f"{admin}/v1/services/nope/switchover", {"to": "b"})
        assert code == 404 and body["error"] == "no service 'nope' (services: app)"
        code, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "z"})
        assert code == 404 and body["error"] == "service 'app' has no backend 'z' (backends: a, b)"
        code, body = await post(s, f"{admin}/v1/services/app/backends/z/drain")
        assert code == 404 and "no backend 'z'" in body["error"]
        async with s.get(f"{admin}/v1/nothing-here") as r:
            assert r.status == 404 and "error" in await r.json()
        code, body = await post(s, f"{admin}/v1/services/app/switchover", {"dry_run": True})
        assert code == 400 and body["error"] == "request body: 'to' is required"
        code, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b", "dry_run": "yes"})
        assert code == 400 and "'dry_run' expected bool" in body["error"]
        async with s.post(f"{admin}/v1/services/app/switchover", data=b"{not json",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 400 and "invalid JSON" in (await r.json())["error"]


async def test_switchover_dry_run_then_real_then_refused(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    path = write_config(tmp_path, backends(*apps), promote=[{"name": "warm up", "exec": ["/bin/true", "{new.name}"]}])
    async with running_router(path) as (router, proxy, admin):
        await wait_for(lambda: both_probed(s, admin), what="both backends probed")
        url = f"{admin}/v1/services/app/switchover"
        code, plan = await post(s, url, {"to": "b", "dry_run": True})
        assert code == 200, plan
        assert (plan["from"], plan["to"], plan["epoch"], plan["new_epoch"]) == ("a", "b", 0, 1)
        names = [st["name"] for st in plan["steps"]]
        assert names == ["drain", "epoch", "promote: warm up", "flip", "verify"]
        assert "/bin/true b" in plan["steps"][2]["description"]
        assert plan["warnings"] == []
        assert router.controllers["app"].machine.epoch == 0  # a dry run changes nothing

        code, result = await post(s, url, {"to": "b"})
        assert code == 200, result
        assert (result["outcome"], result["from"], result["to"], result["epoch"]) == ("promoted", "a", "b", 1)
        async with s.get(f"{proxy}/x") as r:
            assert (r.headers["X-Backend"], r.headers["X-Epoch"]) == ("b", "1")
        doc = await get_json(s, f"{admin}/v1/status")
        assert (doc["services"][0]["active"], doc["services"][0]["epoch"]) == ("b", 1)
        # What happened, from the router's typed feed: the operator's command and the moves.
        events = [(e["kind"], e["service"], e["message"]) for e in doc["services"][0]["events"]]
        assert any(k == "notice" and m.startswith("operator switchover to b") for k, _, m in events), events
        assert any(k == "state" and m.startswith("promoting -> active") for k, _, m in events), events
        assert all(svc == "app" for _, svc, _ in events)

        code, body = await post(s, url, {"to": "b"})
        assert code == 409 and body["error"] == "b is already the active backend"
        # ... but a dry run never refuses: it warns
        code, plan = await post(s, url, {"to": "b", "dry_run": True})
        assert code == 200 and "the router would refuse this now: b is already the active backend" in plan["warnings"]

        runs = (await get_json(s, f"{admin}/v1/promotions"))["runs"]
        assert [(r["service"], r["old"], r["new"], r["epoch"], r["outcome"], r["trigger"]) for r in runs] == \
            [("app", "a", "b", 1, "promoted", "switchover")]
        assert [(st["name"], st["status"]) for st in runs[0]["steps"]] == [("warm up", "ok")]
        async with s.get(f"{admin}/v1/promotions?service=nope") as r:
            assert r.status == 404


async def test_dry_run_warns_about_an_unhealthy_target_and_a_real_call_is_409(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    a, b = apps
    async with running_router(write_config(tmp_path, backends(a, b))) as (router, _, admin):
        await wait_for(lambda: both_probed(s, admin), what="both backends probed")
        await b.stop()

        async def b_down() -> bool:
            doc = await get_json(s, f"{admin}/v1/status")
            return doc["services"][0]["backends"][1]["healthy"] is False

        await wait_for(b_down, what="b seen down")
        url = f"{admin}/v1/services/app/switchover"
        code, plan = await post(s, url, {"to": "b", "dry_run": True})
        assert code == 200
        assert "target b is failing its health checks" in plan["warnings"]
        assert any(w.startswith("the router would refuse this now: b fails its health checks") for w in plan["warnings"])
        code, body = await post(s, url, {"to": "b"})
        assert code == 409 and "b fails its health checks" in body["error"] and body["state"] == "active"
        doc = await get_json(s, f"{admin}/v1/status")
        assert doc["services"][0]["spare"]["ready"] is False
        assert router.controllers["app"].machine.epoch == 0


async def test_forced_failover_confirm_fenced_and_resume(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    async with running_router(write_config(tmp_path, backends(*apps))) as (_, proxy, admin):
        await wait_for(lambda: both_probed(s, admin), what="both backends probed")
        code, body = await post(s, f"{admin}/v1/services/app/confirm-fenced")
        assert code == 409 and "AdminConfirmFenced is not allowed in state active" in body["error"]
        code, body = await post(s, f"{admin}/v1/services/app/resume")
        assert code == 409 and "not allowed in state active" in body["error"]
        code, result = await post(s, f"{admin}/v1/services/app/failover", {"to": "b"})
        assert code == 200 and (result["outcome"], result["active"], result["epoch"]) == ("promoted", "b", 1)
        async with s.get(f"{proxy}/") as r:
            assert r.headers["X-Backend"] == "b"


async def test_drain_and_ready_a_spare(tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession) -> None:
    async with running_router(write_config(tmp_path, backends(*apps))) as (router, _, admin):
        await wait_for(lambda: both_probed(s, admin), what="both backends probed")
        code, body = await post(s, f"{admin}/v1/services/app/backends/a/drain")
        assert code == 409 and "a is the active backend" in body["error"]
        code, body = await post(s, f"{admin}/v1/services/app/backends/b/drain")
        assert (code, body) == (200, {"service": "app", "backend": "b", "maintenance": True})
        svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
        assert svc["backends"][1]["maintenance"] is True
        assert svc["spare"]["ready"] is False and "in maintenance (drained by an operator)" in svc["spare"]["reasons"]
        assert router.controllers["app"].machine.maintenance == {"b"}  # not a failover target
        code, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"})
        assert code == 409 and "in maintenance" in body["error"]
        code, body = await post(s, f"{admin}/v1/services/app/backends/b/ready")
        assert (code, body["maintenance"]) == (200, False)
        assert router.controllers["app"].machine.maintenance == frozenset()
        svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
        assert svc["spare"]["ready"] is True


async def test_reload_returns_errors_as_json_and_applies_a_good_file(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    path = write_config(tmp_path, backends(*apps))
    good = path.read_text()
    async with running_router(path) as (router, _, admin):
        path.write_text(good.replace("rise: 1", "rise: 0").replace("fall: 1", "fall: nope"))
        code, body = await post(s, f"{admin}/v1/reload")
        assert code == 400, body
        assert "reload refused" in body["error"]
        assert any(e.startswith("services[0].health.rise") for e in body["errors"]), body["errors"]
        assert any(e.startswith("services[0].health.fall") for e in body["errors"]), body["errors"]
        assert router.config.services[0].health.rise == 1  # old config kept
        path.write_text(good.replace("hold_down: 1s", "hold_down: 7s"))
        code, body = await post(s, f"{admin}/v1/reload")
        assert code == 200 and body["services"] == ["app"]
        assert router.config.services[0].failover.hold_down == 7.0


async def test_agent_freshness_in_status_and_a_dead_agent_never_blocks_it(
    tmp_path: Path, apps: tuple[App, App], s: aiohttp.ClientSession
) -> None:
    a, b = apps
    agent_a = StandInAgent({"node": "a", "role": "source", "roots": []})
    agent_b = StandInAgent(sink_status(lag=95.0, in_sync=False, pending=3))
    await agent_a.start()
    await agent_b.start()
    try:
        bs = [{"name": "a", "url": a.url, "agent": agent_a.url}, {"name": "b", "url": b.url, "agent": agent_b.url}]
        async with running_router(write_config(tmp_path, bs, replication=True)) as (_, _, admin):
            async def b_lag_known() -> bool:
                svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
                return bool((svc["backends"][1]["replication"] or {}).get("lag_seconds") == 95.0)

            await wait_for(b_lag_known, what="b's replication lag in the status")
            assert agent_b.calls[-1] == "Bearer repl-s3cret"
            svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
            assert "files 95s behind" in svc["spare"]["reasons"]
            code, plan = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b", "dry_run": True})
            assert code == 200
            assert "replication behind: b's files are 95s behind a" in plan["warnings"]
            assert any("no 'agent: final-sync' step" in w for w in plan["warnings"])
            async with s.get(f"{admin}/metrics") as r:
                assert 'hotspare_replication_lag_seconds{root="jobs",service="app"} 95.0' in await r.text()
            # The agent now hangs: the status keeps answering (pytest's timeout would
            # name a hang) and soon says the agent does not answer.
            agent_b.hang = True

            async def b_agent_silent() -> bool:
                svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
                return "no answer within" in str((svc["backends"][1]["replication"] or {}).get("error"))

            await wait_for(b_agent_silent, what="the hanging agent reported")
            svc = (await get_json(s, f"{admin}/v1/status"))["services"][0]
            assert any(r.startswith("agent no answer within") for r in svc["spare"]["reasons"])
    finally:
        await agent_b.stop()
        await agent_a.stop()
    await asyncio.sleep(0)  # let aiohttp close its transports before the loop ends
