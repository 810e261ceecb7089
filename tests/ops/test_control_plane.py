"""Control-plane hardening with a real Router on loopback: a state file that cannot be
written (a real full file system) never moves traffic, never stops the router and is
answered 503 with its cause; a reload whose state check fails is refused the same way
through the API; promotion records keep secrets to themselves."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import router.failover.controller as controller_mod
from router import metrics
from tests.helpers import wait_for

from .kit import ADMIN_TOKEN, App, auth, get_json, post, running_router, tiny_disk, write_config


def _sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def _through_proxy(s: aiohttp.ClientSession, proxy: str) -> tuple[str, str]:
    async with s.get(f"{proxy}/page") as r:
        return r.headers.get("X-Backend", ""), r.headers.get("X-Epoch", "")


def _service(doc: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = doc["services"][0]
    return svc


@pytest.fixture
async def apps() -> Any:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


def _backends(a: App, b: App) -> list[dict[str, Any]]:
    return [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]


# -- the state file cannot be written --------------------------------------------------------


async def test_switchover_on_a_full_disk_is_refused_503_and_nothing_moves(tmp_path: Path, apps: Any) -> None:
    a, b = apps
    with tiny_disk(tmp_path / "disk") as disk:
        cfg = write_config(tmp_path, _backends(a, b), top={
            "state_file": str(disk.path / "state.json"), "audit_log": str(tmp_path / "audit.jsonl")})
        async with running_router(cfg) as (_, proxy, admin), aiohttp.ClientSession() as s:
            before = _sample("hotspare_state_write_failures_total", service="app")
            disk.fill()
            status, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"})
            assert status == 503, body
            assert "No space left on device" in body["error"] and str(disk.path / "state.json") in body["error"]
            assert (body["state"], body["active"], body["epoch"]) == ("active", "a", 0)
            doc = _service(await get_json(s, f"{admin}/v1/status"))
            assert (doc["state"], doc["active"], doc["epoch"]) == ("active", "a", 0)
            assert any(al.startswith("state_write_failed:") and "No space left" in al for al in doc["alarms"])
            assert _sample("hotspare_state_write_failures_total", service="app") == before + 1
            assert _sample("hotspare_state_write_alarm", service="app") == 1
            assert await _through_proxy(s, proxy) == ("a", "0")  # still serving, old epoch

            disk.free()  # the operator makes room and asks again: it goes through
            status, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"})
            assert status == 200 and body["outcome"] == "promoted", body
            assert await _through_proxy(s, proxy) == ("b", "1")
            assert json.loads((disk.path / "state.json").read_text())["services"]["app"] == {"active": "b", "epoch": 1}
            assert _sample("hotspare_state_write_alarm", service="app") == 0


async def test_promotion_whose_result_cannot_be_written_fails_and_traffic_stays(tmp_path: Path, apps: Any) -> None:
    """The disk fills DURING the promotion (a step does it): the new active cannot be
    recorded, so the run counts as failed; its epoch (written at its start) stays burned."""
    a, b = apps
    with tiny_disk(tmp_path / "disk") as disk:
        fill = f"cat /dev/zero > {disk.path}/.filler 2>/dev/null; true"
        cfg = write_config(tmp_path, _backends(a, b), top={
            "state_file": str(disk.path / "state.json"), "audit_log": str(tmp_path / "audit.jsonl")},
            promote=[{"name": "fill-the-disk", "exec": ["/bin/sh", "-c", fill], "timeout": "10s", "fence": False}])
        async with running_router(cfg) as (_, proxy, admin), aiohttp.ClientSession() as s:
            status, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"})
            assert status == 503, body
            assert body["outcome"] == "failed" and "No space left on device" in body["error"]
            assert (body["state"], body["active"], body["epoch"]) == ("active", "a", 1)
            assert json.loads((disk.path / "state.json").read_text())["services"]["app"] == {"active": "a", "epoch": 1}
            assert await _through_proxy(s, proxy) == ("a", "1")
            doc = _service(await get_json(s, f"{admin}/v1/status"))
            assert doc["state"] == "active" and any(al.startswith("state_write_failed:") for al in doc["alarms"])


async def test_automatic_failover_whose_write_fails_stays_put_and_is_retried(
    tmp_path: Path, apps: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller_mod, "STATE_WRITE_RETRY", 0.3)
    a, b = apps
    with tiny_disk(tmp_path / "disk") as disk:
        cfg = write_config(tmp_path, _backends(a, b), top={
            "state_file": str(disk.path / "state.json"), "audit_log": str(tmp_path / "audit.jsonl")})
        async with running_router(cfg) as (router, proxy, admin), aiohttp.ClientSession() as s:
            ctl = router.controllers["app"]
            await wait_for(lambda: ctl.checker.health("b") is not None, what="b probed")
            disk.fill()
            await a.stop()  # the active dies; the failover cannot be written
            await wait_for(lambda: any(al.startswith("state_write_failed:") for al in ctl.alarms),
                           what="the state-write alarm")
            doc = _service(await get_json(s, f"{admin}/v1/status"))
            assert (doc["state"], doc["active"], doc["epoch"]) == ("active", "a", 0)  # no unrecorded epoch
            assert "tried again" in next(al for al in doc["alarms"] if al.startswith("state_write_failed:"))
            disk.free()
            await wait_for(lambda: (ctl.machine.active, ctl.machine.epoch) == ("b", 1), timeout=15,
                           what="the retried failover")
            assert await _through_proxy(s, proxy) == ("b", "1")
            assert json.loads((disk.path / "state.json").read_text())["services"]["app"] == {"active": "b", "epoch": 1}


# -- reload -------------------------------------------------------------------------------------


async def test_api_reload_whose_state_check_fails_is_refused_and_alarmed(tmp_path: Path, apps: Any) -> None:
    a, b = apps
    cfg = write_config(tmp_path, _backends(a, b))
    async with running_router(cfg) as (router, proxy, admin), aiohttp.ClientSession() as s:
        before = _sample("hotspare_reload_failures_total", cause="state_file")
        # 1. The new config drops the active backend.
        write_config(tmp_path, [{"name": "b", "url": b.url}, {"name": "c", "url": a.url}])
        status, body = await post(s, f"{admin}/v1/reload")
        assert status == 409, body
        assert "'a'" in body["error"] and "does not name" in body["error"] and "kept" in body["error"]
        # 2. The state file became unreadable (a directory where the file was).
        write_config(tmp_path, _backends(a, b), health={"path": "/health", "interval": "200ms"})
        (tmp_path / "state.json").unlink(missing_ok=True)
        (tmp_path / "state.json").mkdir()
        status, body = await post(s, f"{admin}/v1/reload")
        assert status == 409 and "cannot read the state file: Is a directory" in body["error"], body
        assert _sample("hotspare_reload_failures_total", cause="state_file") == before + 2
        doc = _service(await get_json(s, f"{admin}/v1/status"))
        assert sum(al.startswith("reload_refused:") for al in doc["alarms"]) == 2
        assert router.config.services[0].health.interval == pytest.approx(0.1)  # the old config runs
        assert await _through_proxy(s, proxy) == ("a", "0")


# -- secrets ------------------------------------------------------------------------------------

API_TOKEN = "tok-Q7mVx2Lp9"
DB_PASSWORD = "Sup3r-S3cret-pw"
LITERAL_PASSWORD = "lit3ral-Arg-pw"


def _secret_steps(closed_port: int) -> list[dict[str, Any]]:
    return [
        {"name": "warm-up", "exec": ["/bin/sh", "-c", "echo got $API_TOKEN; echo DB_PASSWORD=$DB_PASSWORD; "
                                     f"echo connecting with --password={LITERAL_PASSWORD}",
                                     "warm-up", f"--password={LITERAL_PASSWORD}"],
         "env": {"API_TOKEN": API_TOKEN, "DB_PASSWORD": DB_PASSWORD}, "timeout": "5s", "fence": False},
        {"name": "end-sessions", "fence": False, "timeout": "5s",
         "sql": {"dsn": f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{closed_port}/library"}},
    ]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: nothing listens there


def _assert_clean(where: str, text: str) -> None:
    for secret in (API_TOKEN, DB_PASSWORD, LITERAL_PASSWORD, ADMIN_TOKEN):
        assert secret not in text, f"{secret!r} leaked through {where}: {text[:2000]}"


async def test_no_secret_leaves_through_promotions_logs_audit_or_errors(
    tmp_path: Path, apps: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = apps
    cfg = write_config(tmp_path, _backends(a, b), promote=_secret_steps(_closed_port()))
    async with running_router(cfg) as (router, _, admin), aiohttp.ClientSession() as s:
        status, plan = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b", "dry_run": True})
        assert status == 200
        _assert_clean("the dry-run plan", json.dumps(plan))
        assert "app:***@127.0.0.1" in json.dumps(plan)

        status, body = await post(s, f"{admin}/v1/services/app/switchover", {"to": "b"})
        assert status == 500 and body["outcome"] == "failed", body
        assert "cannot connect to postgresql://app:***@127.0.0.1" in body["error"]
        _assert_clean("the switchover's error", json.dumps(body))

        anonymous = await get_json(s, f"{admin}/v1/promotions")
        (run,) = anonymous["runs"]
        assert run["redacted"] is True and run["outcome"] == "failed" and run["epoch"] == 1
        assert [st["name"] for st in run["steps"]] == ["warm-up", "end-sessions"]
        assert all(st["output"] is None and st["detail"] is None for st in run["steps"])
        assert run["reason"] is None and run["alarms"] is None
        _assert_clean("GET /v1/promotions without a token", json.dumps(anonymous))

        async with s.get(f"{admin}/v1/promotions", headers=auth("wrong")) as r:
            assert r.status == 401
        async with s.get(f"{admin}/v1/promotions", headers=auth()) as r:
            full = await r.json()
        (run,) = full["runs"]
        assert run["redacted"] is False
        out = run["steps"][0]["output"]
        assert "got ***" in out and "DB_PASSWORD=***" in out and "--password=***" in out
        assert "app:***@127.0.0.1" in run["steps"][1]["detail"]
        _assert_clean("GET /v1/promotions with the token", json.dumps(full))

        _assert_clean("GET /v1/status", json.dumps(await get_json(s, f"{admin}/v1/status")))
        async with s.get(f"{admin}/") as r:
            _assert_clean("the status page", await r.text())
    _assert_clean("the audit log", router.config.audit_log_path.read_text())
    assert "warm-up" in router.config.audit_log_path.read_text()
    _assert_clean("the log", "\n".join(r.getMessage() for r in caplog.records) + caplog.text)


async def test_secrets_already_in_an_old_audit_log_are_redacted_on_the_way_out(tmp_path: Path, apps: Any) -> None:
    """Records written before redaction existed: the API redacts them anyway."""
    a, b = apps
    cfg = write_config(tmp_path, _backends(a, b), promote=_secret_steps(_closed_port()))
    audit = tmp_path / "state.json.audit.jsonl"
    lines = [
        {"ts": "2026-01-01T00:00:00Z", "run": "1-old", "event": "run_start", "service": "app", "epoch": 1,
         "old": "a", "new": "b", "trigger": "switchover", "cause": "ADMIN"},
        {"ts": "2026-01-01T00:00:01Z", "run": "1-old", "event": "step_end", "index": 0, "name": "warm-up",
         "status": "ok", "output": f"got {API_TOKEN}\nPGPASSWORD={DB_PASSWORD}\n",
         "detail": f"postgresql://app:{DB_PASSWORD}@db/x"},
        {"ts": "2026-01-01T00:00:02Z", "run": "1-old", "event": "run_end", "outcome": "promoted",
         "reason": f"host=db password={DB_PASSWORD} dbname=x"},
    ]
    audit.write_text("".join(json.dumps(x) + "\n" for x in lines))
    async with running_router(cfg) as (_, _, admin), aiohttp.ClientSession() as s:
        async with s.get(f"{admin}/v1/promotions", headers=auth(ADMIN_TOKEN)) as r:
            text = await r.text()
    _assert_clean("old records via the API", text)
    assert re.search(r"got \*\*\*", text) and "password=***" in text
