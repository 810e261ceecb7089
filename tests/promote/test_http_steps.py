"""The ``http``, ``wait_healthy`` and ``agent`` steps against real aiohttp servers on
127.0.0.1:0. The agent is a small stand-in server (the real agent is the replication
engineer's) that implements the documented contract: bearer token, JSON body,
200 {"ok": true}."""

from __future__ import annotations

import hmac
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from promote.pipeline import Pipeline, PromotionResult

from .conftest import make_ctx, make_step

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(
            app, shutdown_timeout=0.5
        )  # a hanging handler must not stall teardown
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for r in reversed(runners):
        await r.cleanup()


async def run(steps: list[Any], **ctx: Any) -> PromotionResult:
    return await Pipeline(steps, fence_failure="hold", audit=None, agent_token="tok-123").run(
        make_ctx(**ctx)
    )


async def test_http_step_sends_rendered_request_and_checks_status(serve: Serve) -> None:
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path_qs,
                     "hdr": request.headers.get("X-Epoch"), "body": await request.json()})  # fmt: skip
        return web.Response(status=202, text="accepted")

    app = web.Application()
    app.router.add_route("*", "/hook/{node}", hook)
    url = await serve(app)
    step = make_step(
        name="notify",
        http={"url": url + "/hook/{new.name}", "headers": {"X-Epoch": "{epoch}"},
              "json": {"old": "{old.name}", "n": 1}},
    )  # fmt: skip
    res = await run([step])
    assert res.outcome == "promoted"
    assert res.steps[0].http_status == 202 and res.steps[0].output_tail == "accepted"
    assert seen == [{"method": "POST", "path": "/hook/b", "hdr": "7", "body": {"old": "a", "n": 1}}]


async def test_http_step_unexpected_status_and_refused_connection_fail(serve: Serve) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="nope")

    app = web.Application()
    app.router.add_get("/x", broken)
    url = await serve(app)
    res = await run([make_step(name="h", http={"url": url + "/x", "method": "GET"}, on_failure="continue"),
                     make_step(name="refused", http={"url": "http://127.0.0.1:1/x"})])  # fmt: skip
    assert [s.status for s in res.steps] == ["failed", "failed"]
    assert "answered 500, expected 2xx" in res.steps[0].detail
    assert "no response" in res.steps[1].detail
    assert res.outcome == "failed" and len(res.alarms) == 1


async def test_http_step_hanging_server_times_out(serve: Serve) -> None:
    import asyncio

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_post("/slow", hang)
    url = await serve(app)
    res = await run([make_step(name="h", http={"url": url + "/slow"}, timeout="300ms")])
    assert res.steps[0].status == "timeout" and res.outcome == "failed"


async def test_wait_healthy_needs_n_good_probes_in_a_row(serve: Serve) -> None:
    # Answers: 200, 503, 200, 200, 200 ...: success needs the last three in a row.
    answers = iter([200, 503])
    hits: list[int] = []

    async def health(request: web.Request) -> web.Response:
        status = next(answers, 200)
        hits.append(status)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_get("/health", health)
    url = await serve(app)
    res = await run([make_step(name="ready", wait_healthy={"successes": 3, "interval": "10ms"})],
                    new_health_url=url + "/health")  # fmt: skip
    assert res.steps[0].status == "ok", res.steps[0]
    assert hits == [200, 503, 200, 200, 200]
    assert "3/3 good probes in a row (5 probes" in res.steps[0].detail


async def test_wait_healthy_times_out_when_never_ready() -> None:
    res = await run([make_step(name="ready", wait_healthy={"interval": "20ms"}, timeout="500ms")],
                    new_health_url="http://127.0.0.1:1/health")  # fmt: skip
    assert res.steps[0].status == "timeout" and res.outcome == "failed"
    assert "0/3 good probes" in res.steps[0].detail


def agent_app(calls: list[dict[str, Any]], answer: dict[str, Any] | None = None) -> web.Application:
    """Stand-in for the hotspare agent's action endpoint (documented contract)."""

    async def action(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), b"Bearer tok-123"):
            return web.json_response({"ok": False, "error": "bad token"}, status=401)
        calls.append({"action": request.match_info["action"], **await request.json()})
        return web.json_response(answer or {"ok": True})

    app = web.Application()
    app.router.add_post("/v1/actions/{action}", action)
    return app


async def test_agent_steps_call_old_and_new_agents(serve: Serve) -> None:
    old_calls: list[dict[str, Any]] = []
    new_calls: list[dict[str, Any]] = []
    old_url = await serve(agent_app(old_calls))
    new_url = await serve(agent_app(new_calls))
    steps = [make_step(name="stop", agent="stop-app"), make_step(name="sync", agent="final-sync")]
    res = await run(steps, old_agent=old_url, new_agent=new_url)
    assert res.outcome == "promoted", res
    assert [s.fence for s in res.steps] == [True, False]
    assert old_calls == [{"action": "stop-app", "service": "app", "epoch": 7, "node": "a"}]
    assert new_calls == [{"action": "final-sync", "service": "app", "epoch": 7, "node": "b"}]


async def test_agent_refusal_missing_url_and_bad_token(serve: Serve) -> None:
    calls: list[dict[str, Any]] = []
    url = await serve(agent_app(calls, {"ok": False, "error": "app will not stop"}))
    res = await run([make_step(name="stop", agent="stop-app")], old_agent=url)
    assert res.outcome == "fence_hold"
    assert "refused stop-app: status 200: app will not stop" in res.steps[0].detail

    res = await run([make_step(name="stop", agent="stop-app")], old_agent=None)
    assert "has no agent URL" in res.steps[0].detail

    no_token = Pipeline(
        [make_step(name="sync", agent="final-sync")], fence_failure="hold", audit=None
    )
    res = await no_token.run(make_ctx(new_agent=url))
    assert res.outcome == "failed" and "no replication token" in res.steps[0].detail
    assert len(calls) == 1
    assert json.dumps(calls[0], sort_keys=True) == json.dumps(
        {"action": "stop-app", "epoch": 7, "node": "a", "service": "app"}, sort_keys=True
    )


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (./scripts/system-deps installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_http_step_verifies_tls_unless_told_otherwise(self_signed: tuple[Path, Path]) -> None:
    # A real HTTPS server on 127.0.0.1:0 with that certificate.
    cert, key = self_signed
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
        res = await run([
            make_step(name="strict", http={"url": url}, on_failure="continue"),
            make_step(name="private-ca", http={"url": url, "ca_file": str(cert)}),
            make_step(name="insecure", http={"url": url, "verify_tls": False}),
        ])  # fmt: skip
    finally:
        await runner.cleanup()
    assert [s.status for s in res.steps] == ["failed", "ok", "ok"]
    assert "certificate" in res.steps[0].detail.lower()
