"""How much time each promotion step type adds to a failover.

    .venv/bin/python bench/promote_steps.py [--runs N]

Runs a one-step pipeline per case N times (default 20) against real things on
127.0.0.1 (a throw-away PostgreSQL, small aiohttp servers standing in for a webhook,
the new active's health endpoint and the agent) and prints the median, p90 and max of
the whole run (what the failover waits for), plus what the audit log (fsync per line)
adds. Nothing is faked: these are the costs on this machine, which is shared and has
2 cores, so read the medians and compare rows of one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hotspare.causes import Cause  # noqa: E402
from promote.audit import AuditLog  # noqa: E402
from promote.config import Step  # noqa: E402
from promote.pipeline import Pipeline, PromotionContext  # noqa: E402
from tests.promote.pgserver import PostgresUnavailable, start_postgres  # noqa: E402

OLD_ACTIVE = ROOT / "tests" / "promote" / "old_active.py"


def ctx(**kw: Any) -> PromotionContext:
    base: dict[str, Any] = dict(
        service="app", old_name="a", old_url="http://127.0.0.1:1", old_address="127.0.0.2",
        old_agent=None, new_name="b", new_url="http://127.0.0.1:1", new_agent=None,
        new_health_url="http://127.0.0.1:1/health", epoch=1, cause=Cause.ADMIN, trigger="manual",
    )  # fmt: skip
    base.update(kw)
    return PromotionContext(**base)


async def start_server() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def agent(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", ok)
    app.router.add_get("/health", ok)
    app.router.add_post("/v1/actions/{action}", agent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def measure(
    steps: list[dict[str, Any]], context: PromotionContext, runs: int, audit: AuditLog | None = None,
    before: Callable[[], Any] | None = None,
) -> list[float]:  # fmt: skip
    pipeline = Pipeline([Step.model_validate(s) for s in steps], fence_failure="hold",
                        audit=audit, agent_token="bench")  # fmt: skip
    times = []
    for _ in range(runs):
        if before is not None:
            await before()
        res = await pipeline.run(context)
        if res.outcome != "promoted":
            raise RuntimeError(f"bench step failed: {res.steps[-1].detail}")
        times.append(res.duration)
    return times


def row(name: str, times: list[float], note: str = "") -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{name:<44} {statistics.median(ms):>9.1f} {p90:>9.1f} {ms[-1]:>9.1f}  {note}"


async def main(runs: int) -> None:
    runner, url = await start_server()
    rows: list[str] = []
    tmpdir = tempfile.TemporaryDirectory(prefix="hotspare-bench-")
    tmp = Path(tmpdir.name)
    try:
        c = ctx(new_url=url, new_health_url=url + "/health", old_agent=url, new_agent=url)
        rows.append(row("(no steps: pipeline overhead)", await measure([], c, runs)))
        rows.append(row("exec: true", await measure([{"name": "x", "exec": ["true"]}], c, runs)))
        rows.append(row("exec: python3 -c pass", await measure(
            [{"name": "x", "exec": [sys.executable, "-c", "pass"]}], c, runs), "interpreter start"))  # fmt: skip
        rows.append(row("exec: shell: true", await measure(
            [{"name": "x", "exec": "true", "shell": True}], c, runs)))  # fmt: skip
        rows.append(row("exec: true + audit log (fsync per line)", await measure(
            [{"name": "x", "exec": ["true"]}], c, runs, AuditLog(tmp / "audit.jsonl")), "5 lines"))  # fmt: skip
        rows.append(row("http: POST -> 204", await measure(
            [{"name": "h", "http": {"url": url + "/hook"}}], c, runs), "new session per run"))  # fmt: skip
        rows.append(row("wait_healthy: successes 1", await measure(
            [{"name": "w", "wait_healthy": {"successes": 1}}], c, runs)))  # fmt: skip
        rows.append(row("wait_healthy: defaults (3 probes, 500ms apart)", await measure(
            [{"name": "w", "wait_healthy": True}], c, max(3, runs // 4)), "dominated by interval"))  # fmt: skip
        rows.append(row("agent: stop-app", await measure([{"name": "a", "agent": "stop-app"}], c, runs),
                        "stand-in agent"))  # fmt: skip
        try:
            with start_postgres() as pg:
                sql_opts = {"dsn": pg.dsn(), "interval": "50ms"}
                sql: dict[str, Any] = {"name": "s", "sql": sql_opts}
                rows.append(row("sql: no session to end", await measure([sql], c, runs),
                                "connect (scram) + 1 query"))  # fmt: skip
                procs: list[asyncio.subprocess.Process] = []

                async def hold_sessions() -> None:
                    p = await asyncio.create_subprocess_exec(
                        sys.executable, str(OLD_ACTIVE), pg.dsn(), "127.0.0.2", "old", "5",
                        stdout=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    procs.append(p)
                    assert p.stdout is not None
                    line = await p.stdout.readline()
                    if not line.startswith(b"ready"):
                        raise RuntimeError("old-active stand-in did not start")

                try:
                    rows.append(row("sql: end 5 sessions of the old active", await measure(
                        [sql], c, max(3, runs // 2), before=hold_sessions), "terminate + 1 re-check"))  # fmt: skip
                    rows.append(row("sql: end 5 sessions, settle 1s", await measure(
                        [{"name": "s", "sql": {**sql_opts, "settle": "1s"}}], c, 3, before=hold_sessions)))  # fmt: skip
                finally:
                    for p in procs:
                        if p.returncode is None:
                            p.kill()
                        await p.wait()
        except PostgresUnavailable as exc:
            rows.append(f"sql: not measured ({exc})")
    finally:
        await runner.cleanup()
        tmpdir.cleanup()
    print(f"{'one-step pipeline (ms per run)':<44} {'median':>9} {'p90':>9} {'max':>9}")
    for r in rows:
        print(r)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
