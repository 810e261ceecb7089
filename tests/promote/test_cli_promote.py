"""``hotspare promote`` as a real subprocess: --dry-run output, --history, and the admin
API client. The router's admin endpoints are implemented by another part; here a small
aiohttp server on 127.0.0.1:0 stands in for them (documented contract only)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from promote.audit import AuditLog

ADMIN_TOKEN = "adm-tok"


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "promote", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, admin_port: int) -> Path:
    doc = {
        "listen": ["127.0.0.1:8080"],
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": ADMIN_TOKEN},
        "state_file": "./state.json",
        "services": [{
            "name": "app",
            "backends": [
                {"name": "a", "url": "http://127.0.0.1:8001", "agent": "http://127.0.0.1:9101",
                 "address": "10.0.0.11"},
                {"name": "b", "url": "http://127.0.0.1:8002"},
            ],
            "health": {"path": "/ready"},
            "promote": [
                {"name": "fence", "exec": ["/usr/local/bin/fence-old", "{old.name}", "--epoch={epoch}"],
                 "timeout": "20s"},
                {"name": "sessions", "sql": {"dsn": "postgresql://app:hunter2@127.0.0.1:5432/lib"}},
                {"name": "stop", "agent": "stop-app"},
                {"name": "sync", "agent": "final-sync"},
                {"name": "ready", "wait_healthy": {"successes": 2}},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "hotspare.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


Admin = Callable[..., Awaitable[tuple[int, list[dict[str, Any]]]]]


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    runners: list[web.AppRunner] = []

    async def start(
        status: dict[str, Any] | None = None, answer: int = 200
    ) -> tuple[int, list[dict[str, Any]]]:
        calls: list[dict[str, Any]] = []

        async def get_status(request: web.Request) -> web.Response:
            return web.json_response(status or {"services": []})

        async def post(request: web.Request) -> web.Response:
            calls.append({"path": request.path, "auth": request.headers.get("Authorization"),
                          "body": await request.json()})  # fmt: skip
            return web.json_response({"accepted": answer == 200}, status=answer)

        app = web.Application()
        app.router.add_get("/v1/status", get_status)
        app.router.add_post("/v1/services/{name}/{action}", post)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return runner.addresses[0][1], calls

    yield start
    for r in reversed(runners):
        await r.cleanup()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dry_run_prints_resolved_steps_with_router_status(
    tmp_path: Path, admin: Admin
) -> None:
    status = {"services": [{"name": "app", "active": "a", "epoch": 4, "state": "ACTIVE",
                            "backends": [{"name": "a", "healthy": False}, {"name": "b", "healthy": True}]}]}  # fmt: skip
    port, calls = await admin(status)
    code, out, err = await cli(
        "-c", str(write_config(tmp_path, port)), "--service", "app", "--to", "b", "--dry-run"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "DRY RUN: nothing will be executed"
    assert (
        "service app: promote a -> b (epoch 5, trigger manual, cause admin); fence_failure: hold"
        in lines
    )
    assert "1. fence [exec, fencing, timeout 20s]: /usr/local/bin/fence-old a --epoch=5" in lines
    sql_line = next(line for line in lines if line.startswith("2. sessions"))
    assert "client_addr 10.0.0.11" in sql_line and "app:***@127.0.0.1" in sql_line
    assert "hunter2" not in out
    assert (
        '3. stop [agent, fencing, timeout 30s]: POST http://127.0.0.1:9101/v1/actions/stop-app {"service": "app", "epoch": 5, "node": "a"}'
        in lines
    )
    assert any(line.startswith("4. sync") and "b has no agent URL" in line for line in lines)
    assert (
        "5. ready [wait_healthy, timeout 30s, on_failure abort]: GET http://127.0.0.1:8002/ready until 2 good probe(s)"
        in out
    )
    assert calls == []  # a dry run changes nothing


async def test_dry_run_never_refuses_and_warns(tmp_path: Path) -> None:
    config = write_config(tmp_path, closed_port())
    code, out, _ = await cli("-c", str(config), "--service", "app", "--to", "a", "--dry-run")
    assert code == 0
    assert "WARNING: router not reachable at http://127.0.0.1:" in out
    assert "WARNING: epoch unknown" in out
    # Active unknown: the other backend is assumed; here that is b, so the plan is b -> a.
    assert "promote b -> a (epoch 0" in out


async def test_promote_and_confirm_are_requests_to_the_router(tmp_path: Path, admin: Admin) -> None:
    port, calls = await admin()
    config = str(write_config(tmp_path, port))
    assert (await cli("-c", config, "--service", "app", "--to", "b"))[0] == 0
    assert (await cli("-c", config, "--service", "app", "--confirm-fenced"))[0] == 0
    assert calls == [
        {"path": "/v1/services/app/failover", "auth": f"Bearer {ADMIN_TOKEN}", "body": {"to": "b"}},
        {"path": "/v1/services/app/confirm-fenced", "auth": f"Bearer {ADMIN_TOKEN}", "body": {}},
    ]


async def test_router_refusal_and_absence_exit_1_bad_names_exit_2(
    tmp_path: Path, admin: Admin
) -> None:
    port, _ = await admin(answer=409)
    code, _, err = await cli(
        "-c", str(write_config(tmp_path, port)), "--service", "app", "--to", "b"
    )
    assert code == 1 and "router answered 409" in err
    config = str(write_config(tmp_path, closed_port()))
    code, _, err = await cli("-c", config, "--service", "app", "--to", "b")
    assert code == 1 and "not reachable" in err
    code, _, err = await cli("-c", config, "--service", "nope", "--to", "b")
    assert code == 2 and "no service 'nope'" in err and "services: app" in err
    code, _, err = await cli("-c", config, "--service", "app", "--to", "z", "--dry-run")
    assert code == 2 and "has no backend 'z' (backends: a, b)" in err


async def test_history_prints_the_audit_log_as_a_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, closed_port())
    code, out, _ = await cli("-c", str(config), "--history")
    assert code == 0 and "no promotions recorded" in out
    audit = AuditLog(tmp_path / "state.json.audit.jsonl")  # the default: beside state_file
    audit.append("run_start", "5-aa", service="app", trigger="failover", cause="PROBE_FAILED",
                 epoch=5, old="a", new="b")  # fmt: skip
    audit.append("step_end", "5-aa", index=0, name="fence", kind="exec", attempt=1, status="ok",
                 duration=0.2, exit_code=0)  # fmt: skip
    audit.append("run_end", "5-aa", outcome="promoted")
    audit.append(
        "run_start",
        "6-bb",
        service="app",
        trigger="manual",
        cause="MANUAL",
        epoch=6,
        old="b",
        new="a",
    )
    code, out, _ = await cli("-c", str(config), "--history")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "STARTED",
        "SERVICE",
        "OLD->NEW",
        "EPOCH",
        "TRIGGER",
        "CAUSE",
        "OUTCOME",
        "RUN",
    ]
    assert "a->b" in lines[1] and "promoted" in lines[1] and "PROBE_FAILED" in lines[1]
    assert "0. fence [exec] attempt 1: ok in 0.20s (exit 0)" in lines[2]
    assert "UNFINISHED" in lines[3] and "6-bb" in lines[3]
    assert "1 unfinished run(s)" in out
    assert json.loads(audit.path.read_text().splitlines()[0])["run"] == "5-aa"
