"""Operator commands against either router of a real pair (two ``hotspare router``
processes on one real etcd): sent to the follower, carried out once by the decider; the
status of both routers (API, page, ``hotspare status``) shows the pair."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.helpers import wait_for

from .etcdkit import EtcdCluster
from .pairkit import Etcd, router_config, served

pytestmark = pytest.mark.slow

TOKEN = {"Authorization": "Bearer pair-admin-token"}
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


@pytest.fixture
async def pair(tmp_path: Path, etcd_factory: Callable[..., EtcdCluster]) -> AsyncIterator[dict[str, Any]]:
    cluster = etcd_factory(members=1)
    view, stack = Etcd(cluster.endpoints), Stack(tmp_path)
    try:
        a, b = await stack.backend("a"), await stack.backend("b")
        log = tmp_path / "promotions.log"
        r1, _, admin1 = await stack.router_process(router_config(tmp_path, "r1", cluster.endpoints, a.url, b.url, log))
        await wait_for(view.decider, what="a decider elected")
        _, base2, admin2 = await stack.router_process(router_config(tmp_path, "r2", cluster.endpoints, a.url, b.url, log))
        await wait_for(lambda: view.view("r2", "b"), what="r2 publishes its view")
        async with aiohttp.ClientSession() as s:
            yield {"view": view, "s": s, "log": log, "admin1": admin1, "admin2": admin2, "base2": base2, "r1": r1}
    finally:
        await stack.close()
        await view.close()


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with s.post(url, json=body, headers=TOKEN) as resp:
        return resp.status, await resp.json()


async def status(s: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    async with s.get(f"{admin}/v1/status") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def test_a_switchover_sent_to_the_follower_runs_once_on_the_decider(pair: dict[str, Any]) -> None:
    view, s, admin2 = pair["view"], pair["s"], pair["admin2"]
    assert await view.decider() == "r1"
    code, body = await post(s, f"{admin2}/v1/services/app/switchover", {"to": "b"})
    assert code == 200, body
    assert (body["outcome"], body["active"], body["epoch"]) == ("promoted", "b", 1)
    st = await view.state()
    assert st is not None and (st.active, st.epoch, st.by) == ("b", 1, "r1")
    assert pair["log"].read_text().splitlines() == ["1 b r1"]  # once, by the decider
    await wait_for(lambda: _served_by(pair["base2"], "b", "1"), timeout=2.0, what="r2 follows to b")
    # The machine's refusal comes back from the decider as it is.
    code, body = await post(s, f"{admin2}/v1/services/app/switchover", {"to": "b"})
    assert code == 409 and body["error"] == "b is already the active backend"
    # Maintenance through the follower lands on the decider's machine.
    assert await post(s, f"{admin2}/v1/services/app/backends/a/drain") == (
        200, {"service": "app", "backend": "a", "maintenance": True})
    code, body = await post(s, f"{admin2}/v1/services/app/switchover", {"to": "a"})
    assert code == 409 and "a is in maintenance" in body["error"]
    assert (await post(s, f"{admin2}/v1/services/app/backends/a/ready"))[0] == 200
    assert pair["log"].read_text().splitlines() == ["1 b r1"]


async def _drained(s: aiohttp.ClientSession, admin: str, backend: str) -> bool:
    svc = (await status(s, admin))["services"][0]
    return any(b["name"] == backend and b["maintenance"] for b in svc["backends"])


async def test_a_drained_backend_is_shared_and_stays_drained_under_the_next_decider(pair: dict[str, Any]) -> None:
    view, s, admin2 = pair["view"], pair["s"], pair["admin2"]
    assert await view.decider() == "r1"
    assert (await post(s, f"{admin2}/v1/services/app/backends/b/drain"))[0] == 200
    # The follower shows what the decider did (the shared record carries it).
    await wait_for(lambda: _drained(s, admin2, "b"), timeout=2.0, what="r2 shows b drained")
    pair["r1"].kill()  # SIGKILL: r2 decides once r1's lease expires
    await wait_for(lambda: _decides(view, "r2"), timeout=10.0, what="r2 decides")
    assert await _drained(s, admin2, "b")  # the new decider's machine kept it drained
    code, body = await post(s, f"{admin2}/v1/services/app/switchover", {"to": "b"})
    assert code == 409 and "b is in maintenance" in body["error"], body
    assert (await post(s, f"{admin2}/v1/services/app/backends/b/ready"))[0] == 200
    assert not await _drained(s, admin2, "b")


async def _decides(view: Etcd, name: str) -> bool:
    return await view.decider() == name


async def test_both_routers_show_the_pair(pair: dict[str, Any]) -> None:
    s = pair["s"]
    doc = yaml.safe_load(OPENAPI.read_text())
    schema = jsonschema.Draft202012Validator(doc).evolve(schema={"$ref": "#/components/schemas/Status"})
    for me, admin in (("r1", pair["admin1"]), ("r2", pair["admin2"])):
        async def both_live(admin: str = admin) -> bool:
            c = (await status(s, admin))["cluster"]
            return [m["name"] for m in c["members"] if m["live"]] == ["r1", "r2"]

        await wait_for(both_live, what=f"{me} sees both members")
        st = await status(s, admin)
        assert not list(schema.iter_errors(st)), list(schema.iter_errors(st))[:3]
        c = st["cluster"]
        assert (c["name"], c["etcd"]["ok"], c["deciders"]) == (me, True, {"app": "r1"})
        assert c["this_router_decides"] == (["app"] if me == "r1" else [])
        async with s.get(f"{admin}/") as resp:
            page = await resp.text()
        assert 'class="cluster"' in page and f"seen from {me}" in page
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "status", "--admin", pair["admin2"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "CLUSTER (seen from r2)" in text and "deciders: app: r1" in text and "etcd: ok" in text


async def _served_by(base: str, backend: str, epoch: str) -> bool:
    return await served(base) == (backend, epoch)
