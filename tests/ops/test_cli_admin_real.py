"""``hotspare status`` and ``hotspare switchover`` as subprocesses against a real Router,
and the metrics of the failover, promotion and replication issues in its one registry."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import wait_for
from tests.ops.kit import ADMIN_TOKEN, App, StandInAgent, running_router, sink_status, write_config

REPO = Path(__file__).resolve().parents[2]
HOTSPARE = Path(sys.executable).parent / "hotspare"


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


async def cli(*args: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    env = {"PATH": "/usr/bin:/bin", **({"HOTSPARE_ADMIN_TOKEN": token} if token else {})}
    proc = await asyncio.create_subprocess_exec(
        str(HOTSPARE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def both_up(s: aiohttp.ClientSession, admin: str) -> bool:
    async with s.get(f"{admin}/v1/status") as r:
        return all(b["healthy"] for b in (await r.json())["services"][0]["backends"])


@pytest.mark.slow
async def test_status_and_switchover_commands_against_a_real_router(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    path = write_config(tmp_path, [{"name": "a", "url": apps[0].url}, {"name": "b", "url": apps[1].url}],
                        promote=[{"name": "warm", "exec": ["/bin/true"]}])
    async with running_router(path) as (router, _, admin), aiohttp.ClientSession() as s:
        await wait_for(lambda: both_up(s, admin), what="both backends probed")  # type: ignore[arg-type]
        code, out, err = await cli("status", "--admin", admin)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[1].split()[:4] == ["app", "ACTIVE", "a", "0"]
        assert "b ready" in lines[1]

        code, out, err = await cli("switchover", "--admin", admin, "--service", "app", "--to", "b", "--dry-run")
        assert code == 0, err
        assert out.splitlines()[0] == "DRY RUN: would switch service app from a to b (epoch 0)"
        assert "  3. promote: warm [exec, timeout 30s, on_failure abort]: /bin/true" in out.splitlines()
        assert router.controllers["app"].machine.active == "a"

        code, out, err = await cli("switchover", "--admin", admin, "--service", "app", "--to", "b", token="nope")
        assert code == 1 and "refused (401): wrong bearer token" in err

        # -c FILE: the admin address is read from admin.listen, so write the bound one.
        bound = path.with_name("bound.yaml")
        bound.write_text(path.read_text().replace("listen: 127.0.0.1:0\n  token", f"listen: {admin[7:]}\n  token"))
        assert admin[7:] in bound.read_text()
        code, out, err = await cli("switchover", "-c", str(bound), "--service", "app", "--to", "b", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert (result["outcome"], result["active"], result["epoch"]) == ("promoted", "b", 1)

        code, out, err = await cli("switchover", "--admin", admin, "--service", "app", "--to", "b")
        assert code == 1 and "the router answered 409: b is already the active backend" in err
        code, out, _ = await cli("status", "--admin", admin, "--json")
        assert json.loads(out)["services"][0]["active"] == "b"


# Every metric the failover, promotion and replication issues ask the router for.
EXPECTED = [
    "hotspare_backend_up", "hotspare_active_backend", "hotspare_epoch", "hotspare_service_state",
    "hotspare_failovers_total", "hotspare_failures_detected_total", "hotspare_failover_duration_seconds",
    "hotspare_held_requests", "hotspare_replayed_requests_total", "hotspare_refused_requests_total",
    "hotspare_requests_total", "hotspare_request_duration_seconds", "hotspare_upstream_errors_total",
    "hotspare_promotions_total", "hotspare_fencing_on_hold", "hotspare_replication_lag_seconds",
    "hotspare_state_write_failures_total", "hotspare_state_write_alarm", "hotspare_reload_failures_total",
]


async def test_metrics_of_failover_promotion_and_replication_are_exported(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    agent = StandInAgent(sink_status(lag=1.5))
    await agent.start()
    try:
        bs = [{"name": "a", "url": apps[0].url}, {"name": "b", "url": apps[1].url, "agent": agent.url}]
        path = write_config(tmp_path, bs, replication=True, promote=[{"name": "warm", "exec": ["/bin/true"]}])
        async with running_router(path) as (_, proxy, admin), aiohttp.ClientSession() as s:
            await wait_for(lambda: both_up(s, admin), what="both backends probed")  # type: ignore[arg-type]
            async with s.get(f"{proxy}/") as r:
                assert r.status == 200
            async with s.post(f"{admin}/v1/services/app/switchover", json={"to": "b"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200
            await apps[0].stop()  # a (now the spare) dies: failures detected
            async with s.post(f"{admin}/v1/services/app/switchover", json={"to": "a", "dry_run": True},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200

            async def text() -> str:
                async with s.get(f"{admin}/v1/status"):
                    pass  # refreshes the agents' freshness (and the lag gauge)
                async with s.get(f"{admin}/metrics") as r:
                    body = await r.text()
                ok = ('hotspare_failures_detected_total{backend="a"' in body
                      and 'hotspare_replication_lag_seconds{root="jobs",service="app"}' in body)
                return body if ok else ""

            body = await wait_for(text, what="failure of a and b's lag in /metrics")
            missing = [m for m in EXPECTED if f"# TYPE {m} " not in body]
            assert missing == [], body
            # One registry per process: other tests in this process count too, so > 0.
            for sample in ('hotspare_promotions_total{cause="promoted",service="app"} ',
                           'hotspare_failovers_total{cause="admin",service="app"} '):
                value = float(body.split(sample, 1)[1].split()[0]) if sample in body else 0.0
                assert value >= 1.0, sample
            assert 'hotspare_epoch{service="app"} 1.0' in body
    finally:
        await agent.stop()
