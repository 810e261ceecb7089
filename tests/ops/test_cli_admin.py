"""``hotspare status`` / ``hotspare switchover`` against a stand-in router.

The real router's admin API is being built in parallel, so these tests run the commands
against a small real aiohttp server on 127.0.0.1:0 that speaks the DESIGN.md contract
(GET /v1/status; POST /v1/services/{name}/switchover with a bearer token). It stands in
for the router only; the sockets, HTTP and the command line are all real.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.cli.client import format_status
from router.cli.main import main

TOKEN = "s3cret-admin"
REPO = Path(__file__).resolve().parents[2]

STATUS: dict[str, Any] = {
    "services": [
        {
            "name": "app",
            "active": "a",
            "epoch": 4,
            "state": "active",
            "backends": [
                {"name": "a", "url": "http://127.0.0.1:8001", "healthy": True,
                 "last_probe": {"detail": "200 in 2 ms", "at": 1000.0}},
                {"name": "b", "url": "http://127.0.0.1:8002", "healthy": False,
                 "replication": {"lag_seconds": 2.5}},
            ],
            "events": [{"at": 990.0, "kind": "failover", "message": "b DOWN; now a"}],
        }
    ]
}


class FakeRouter:
    """Stand-in for the router's admin API (see module docstring)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, Any]] = []
        self.url = ""

    async def status(self, request: web.Request) -> web.Response:
        self.calls.append(("GET", request.path, request.headers.get("Authorization"), None))
        return web.json_response(STATUS)

    async def switchover(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        body = await request.json()
        self.calls.append(("POST", request.path, auth or None, body))
        if not hmac.compare_digest(auth.encode(), f"Bearer {TOKEN}".encode()):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        if body["dry_run"]:
            return web.json_response({
                "dry_run": True, "from": "a", "to": body["to"], "epoch": 4,
                "steps": [{"name": "final sync"}, {"name": "fence", "description": "fence-old a"}],
                "warnings": ["target b is failing its health checks"],
            })
        return web.json_response({"from": "a", "to": body["to"], "epoch": 5, "outcome": "promoted"})


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    fake = FakeRouter()
    app = web.Application()
    app.router.add_get("/v1/status", fake.status)
    app.router.add_post("/v1/services/{name}/switchover", fake.switchover)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # The command is synchronous (urllib); run it in a thread so the server keeps serving.
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_status_table(router: FakeRouter, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTSPARE_ADMIN_TOKEN", raising=False)
    code, out, err = await run_cli(["status", "--admin", router.url], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "ACTIVE", "EPOCH", "SPARE", "NOTES"]
    assert lines[1].split()[:4] == ["app", "ACTIVE", "a", "4"]
    assert "b NOT READY (failing its health checks)" in lines[1]
    assert any(ln.split()[:3] == ["app/b", "spare", "DOWN"] and ln.rstrip().endswith("2.5 s") for ln in lines)
    assert any(ln.split()[:3] == ["app/a", "active", "up"] and "200 in 2 ms" in ln for ln in lines)
    assert "[app] failover: b DOWN; now a" in out
    assert router.calls == [("GET", "/v1/status", None, None)]


async def test_status_json_is_the_router_answer(router: FakeRouter, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(["status", "--json", "--admin", router.url], capsys)
    assert code == 0
    assert json.loads(out) == STATUS


async def test_status_unreachable_router_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Bind a port, then close it: nothing listens there any more.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    code, out, err = await run_cli(["status", "--admin", f"http://127.0.0.1:{port}"], capsys)
    assert code == 1 and out == ""
    assert f"cannot reach the router's admin API at http://127.0.0.1:{port}" in err
    assert "--admin URL or -c FILE" in err


async def test_switchover_dry_run_sends_token_and_prints_plan(
    router: FakeRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSPARE_ADMIN_TOKEN", TOKEN)
    code, out, err = await run_cli(
        ["switchover", "--service", "app", "--to", "b", "--dry-run", "--admin", router.url], capsys
    )
    assert (code, err) == (0, "")
    assert router.calls[-1] == ("POST", "/v1/services/app/switchover", f"Bearer {TOKEN}",
                                {"to": "b", "dry_run": True})
    assert out.splitlines() == [
        "DRY RUN: would switch service app from a to b (epoch 4)",
        "steps:",
        "  1. final sync",
        "  2. fence-old a",
        "WARNING: target b is failing its health checks",
    ]


async def test_switchover_with_wrong_token_is_refused_clearly(
    router: FakeRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSPARE_ADMIN_TOKEN", "wrong")
    code, out, err = await run_cli(["switchover", "--service", "app", "--to", "b", "--admin", router.url], capsys)
    assert code == 1 and out == ""
    assert "refused (401): missing or wrong bearer token" in err
    assert "HOTSPARE_ADMIN_TOKEN" in err


async def test_switchover_unknown_service_or_backend_never_posts(
    router: FakeRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_cli(["switchover", "--service", "nope", "--to", "b", "--admin", router.url], capsys)
    assert code == 1 and "no service 'nope' on this router (services: app)" in err
    code, _, err = await run_cli(["switchover", "--service", "app", "--to", "z", "--admin", router.url], capsys)
    assert code == 1 and "service 'app' has no backend 'z' (backends: a, b)" in err
    assert [c[0] for c in router.calls] == ["GET", "GET"]


async def test_switchover_via_config_file_in_a_real_subprocess(router: FakeRouter, tmp_path: Path) -> None:
    """The installed command line end to end: admin address and token from -c FILE."""
    port = router.url.rsplit(":", 1)[1]
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text(
        f'listen: ["127.0.0.1:0"]\n'
        f'admin: {{listen: "127.0.0.1:{port}", token: "${{HOTSPARE_ADMIN_TOKEN}}"}}\n'
        "services:\n  - name: app\n    backends:\n"
        '      - {name: a, url: "http://127.0.0.1:8001"}\n'
        '      - {name: b, url: "http://127.0.0.1:8002"}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "switchover", "-c", str(cfg), "--service", "app", "--to", "b",
        "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"HOTSPARE_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}, cwd=REPO,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"from": "a", "to": "b", "epoch": 5, "outcome": "promoted"}
    assert router.calls[-1] == ("POST", "/v1/services/app/switchover", f"Bearer {TOKEN}",
                                {"to": "b", "dry_run": False})


async def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listen: []\nservices: []\n")
    code, _, err = await run_cli(["status", "-c", str(cfg)], capsys)
    assert code == 2
    assert "listen: expected at least 1 item(s)" in err


def test_format_status_with_no_services() -> None:
    assert format_status({"services": []}, now=0.0) == "no services"
