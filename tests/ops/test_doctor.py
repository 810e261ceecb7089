"""``hotspare doctor`` against a real deployment on loopback: two application servers, two
real agents (source and sink, in this process), a real ``hotspare router`` process, a
real PostgreSQL for the SQL step. All green first; then one thing broken at a time, and
each fault must fail its own check and only that one. Doctor runs as a real command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from replication.agent import Agent, AgentOptions
from replication.config import ReplicationConfig
from replication.role import Role
from router.cli.doctor_model import (
    LockHolder,
    Status,
    free_space_verdict,
    lock_verdict,
    skew_verdict,
)
from tests.helpers import wait_for
from tests.promote.pgserver import Postgres, PostgresUnavailable, shared_postgres

REPO = Path(__file__).resolve().parents[2]
TOKEN = "doctor-repl-token"
ALL = ["config", "backend:app/a", "backend:app/b", "agent:a", "root:a/jobs", "clock:a", "agent:b",
       "root:b/jobs", "clock:b", "sql:app/end-sessions", "program:app/fence", "state-file", "state-lock"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with contextlib.ExitStack() as stack:
        try:
            pg = stack.enter_context(shared_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield pg


class HealthApp:
    """An application server whose health page answers ``health_status``."""

    def __init__(self) -> None:
        self.health_status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def health(request: web.Request) -> web.Response:
            return web.Response(status=self.health_status, text="ok")

        app = web.Application()
        app.router.add_get("/health", health)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class Deployment:
    tmp: Path
    config: dict[str, Any]
    path: Path
    apps: dict[str, HealthApp]
    agents: dict[str, Agent]
    router_pid: int = 0
    logs: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    def variant(self, change: dict[str, Any]) -> Path:
        """A copy of the deployment file with ``change`` applied (dotted keys)."""
        data = json.loads(json.dumps(self.config))
        for dotted, value in change.items():
            *parents, last = dotted.split(".")
            node: Any = data
            for p in parents:
                node = node[int(p)] if p.isdigit() else node[p]
            node[int(last) if last.isdigit() else last] = value
        path = self.tmp / "variant.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


async def doctor(path: Path, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "doctor", "-c", str(path), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert not err, err.decode()
    return proc.returncode, out.decode()


async def doctor_json(path: Path) -> tuple[int, dict[str, dict[str, str]], str]:
    rc, out = await doctor(path, "--json")
    doc = json.loads(out)
    checks = {c["id"]: c for c in doc["checks"]}
    assert doc["ok"] is (rc == 0)
    return rc, checks, out


def failed(checks: dict[str, dict[str, str]]) -> set[str]:
    return {cid for cid, c in checks.items() if c["status"] == "fail"}


async def _start_router(path: Path, d: Deployment) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "router", "-c", str(path),
        stderr=asyncio.subprocess.PIPE, cwd=str(REPO), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    stderr = proc.stderr

    async def announced() -> None:
        while line := await stderr.readline():
            d.logs.append(line.decode(errors="replace"))
            if "admin API on" in d.logs[-1]:
                return
        raise AssertionError(f"router exited: {d.logs[-10:]}")

    await asyncio.wait_for(announced(), 15)

    async def drain() -> None:  # a full pipe would block the router
        while line := await stderr.readline():
            d.logs.append(line.decode(errors="replace"))

    d.drain = asyncio.get_running_loop().create_task(drain(), name="router-log")
    return proc


@pytest.fixture
async def deployment(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Deployment]:
    roots = {"a": tmp_path / "a" / "jobs", "b": tmp_path / "b" / "jobs"}
    roots["a"].mkdir(parents=True)
    (roots["a"] / "big.dat").write_bytes(b"x" * 100_000)
    rep = {"token": TOKEN, "roots": [{"name": "jobs", "path": str(roots["a"]), "paths": {"b": str(roots["b"])}}]}
    fence = tmp_path / "fence.sh"
    fence.write_text("#!/bin/sh\nexit 0\n")
    fence.chmod(0o755)
    apps = {n: HealthApp() for n in "ab"}
    agents: dict[str, Agent] = {}
    proc: asyncio.subprocess.Process | None = None
    d: Deployment | None = None
    try:
        for app in apps.values():
            await app.start()
        rc = ReplicationConfig.model_validate(rep)
        agents["a"] = Agent(rc, AgentOptions(node="a", fixed_role=Role("source", "app", "a", 0), init_roots=True))
        url_a = f"http://127.0.0.1:{await agents['a'].start()}"
        agents["b"] = Agent(rc, AgentOptions(node="b", fixed_role=Role("sink", "app", "a", 0), peers={"a": url_a}))
        url_b = f"http://127.0.0.1:{await agents['b'].start()}"
        config = {
            "listen": ["127.0.0.1:0"], "admin": {"listen": "127.0.0.1:0", "token": "doctor-admin"},
            "state_file": str(tmp_path / "state.json"), "log": {"access_log": None}, "shutdown_grace": "1s",
            "services": [{"name": "app", "backends": [
                {"name": "a", "url": apps["a"].url, "agent": url_a},
                {"name": "b", "url": apps["b"].url, "agent": url_b}],
                "health": {"path": "/health", "interval": "200ms", "timeout": "500ms"},
                "promote": [{"name": "fence", "exec": [str(fence), "{old.name}"]},
                            {"name": "end-sessions", "sql": {"dsn": postgres.dsn()}}]}],
            "replication": rep,
        }
        path = tmp_path / "hotspare.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        d = Deployment(tmp_path, config, path, apps, agents)
        proc = await _start_router(path, d)
        d.router_pid = proc.pid
        await wait_for(lambda: (roots["b"] / ".hotspare-root").exists(), 15, what="the spare's first sync")
        yield d
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if d is not None and d.drain is not None:
            await d.drain  # ends at the killed router's end of file
        for agent in reversed(list(agents.values())):
            await agent.stop()
        for app in reversed(list(apps.values())):
            await app.stop()


# -- all green, then one fault at a time ----------------------------------------------


async def test_all_green_next_to_the_running_router(deployment: Deployment, postgres: Postgres) -> None:
    rc, checks, out = await doctor_json(deployment.path)
    assert rc == 0, out
    assert list(checks) == ALL
    assert {cid for cid, c in checks.items() if c["status"] != "pass"} == {"state-lock"}
    lock = checks["state-lock"]
    assert lock["status"] == "info"
    assert lock["detail"].endswith(f"state.json.lock: held by the running router pid {deployment.router_pid}")
    assert checks["root:b/jobs"]["detail"].endswith("largest file 97.7 KiB")  # a's file, on b's disk
    assert "marker present" in checks["root:a/jobs"]["detail"]
    assert checks["agent:a"]["detail"].endswith("answered with the token (role source, epoch 0)")
    assert checks["sql:app/end-sessions"]["detail"] == (
        f"postgresql://postgres:***@127.0.0.1:{postgres.port}/postgres: connected")
    assert postgres.password not in out and TOKEN not in out
    rc, text = await doctor(deployment.path)
    assert rc == 0
    assert text.splitlines()[-1] == f"all checks passed ({len(ALL)} checks)"
    assert "INFO  state-lock" in text


async def test_backend_down(deployment: Deployment) -> None:
    await deployment.apps["b"].stop()
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"backend:app/b"})
    assert "/health: no answer (cannot connect: Connection refused)" in checks["backend:app/b"]["detail"]
    assert checks["backend:app/b"]["fix"].startswith("start the application server")


async def test_health_path_404(deployment: Deployment) -> None:
    deployment.apps["b"].health_status = 404
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"backend:app/b"})
    assert checks["backend:app/b"]["detail"].endswith("/health answered 404, expected 2xx, 3xx")


async def test_agent_down(deployment: Deployment) -> None:
    await deployment.agents.pop("b").stop()
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"agent:b"})
    assert "agent unreachable (cannot connect: Connection refused)" in checks["agent:b"]["detail"]
    assert checks["root:b/jobs"]["status"] == checks["clock:b"]["status"] == "skip"
    assert checks["clock:b"]["detail"] == "not checked: agent b did not answer (see agent:b)"


async def test_wrong_token(deployment: Deployment) -> None:
    path = deployment.variant({"replication.token": "not-the-agents-token"})
    rc, checks, out = await doctor_json(path)
    assert (rc, failed(checks)) == (1, {"agent:a", "agent:b"})
    assert checks["agent:a"]["detail"].endswith(": token mismatch (the agent answered 401)")
    assert "not-the-agents-token" not in out
    # The router runs with the other file: its lock is still the running router's.
    assert checks["state-lock"]["status"] == "info"


async def test_root_marker_missing(deployment: Deployment) -> None:
    (deployment.tmp / "a" / "jobs" / ".hotspare-root").unlink()
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"root:a/jobs"})
    assert checks["root:a/jobs"]["detail"].endswith("jobs: marker .hotspare-root missing (disk not mounted?)")


async def test_exec_program_not_executable_then_missing(deployment: Deployment) -> None:
    fence = deployment.tmp / "fence.sh"
    fence.chmod(0o644)
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"program:app/fence"})
    assert checks["program:app/fence"]["detail"] == f"{fence}: not executable"
    fence.unlink()
    rc, checks, _ = await doctor_json(deployment.path)
    assert (rc, failed(checks)) == (1, {"program:app/fence"})
    assert checks["program:app/fence"]["detail"] == f"{fence}: not found"


async def test_sql_dsn_unreachable(deployment: Deployment, postgres: Postgres) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        dsn = f"postgresql://postgres:{postgres.password}@127.0.0.1:{port}/postgres"
        path = deployment.variant({"services.0.promote.1.sql.dsn": dsn})
        rc, checks, out = await doctor_json(path)
    assert (rc, failed(checks)) == (1, {"sql:app/end-sessions"})
    assert checks["sql:app/end-sessions"]["detail"].startswith(
        f"postgresql://postgres:***@127.0.0.1:{port}/postgres: cannot connect (")
    assert postgres.password not in out


async def test_state_file_locked_by_another_process(deployment: Deployment) -> None:
    other = deployment.tmp / "other"
    other.mkdir()
    squatter = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); "
        "print('locked', flush=True); sys.stdin.read()",
        str(other / "state.json.lock"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert squatter.stdout is not None
        assert await asyncio.wait_for(squatter.stdout.readline(), 10) == b"locked\n"
        rc, checks, _ = await doctor_json(deployment.variant({"state_file": str(other / "state.json")}))
    finally:
        squatter.kill()
        await squatter.wait()
    assert (rc, failed(checks)) == (1, {"state-lock"})
    assert f"state.json.lock: held by pid {squatter.pid}, which is not a hotspare router (" in (
        checks["state-lock"]["detail"])
    assert checks["state-lock"]["fix"].startswith(f"stop that process (kill {squatter.pid})")


async def test_invalid_config_is_one_failed_check_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: ['127.0.0.1:0']\nservices: [{name: app, backends: []}]\nbogus: 1\n")
    rc, checks, _ = await doctor_json(path)
    assert rc == 1 and list(checks) == ["config"]
    detail = checks["config"]["detail"]
    assert detail.startswith(f"{path}: 2 errors:")
    assert "services[0].backends: expected at least 1 item(s)" in detail
    assert "bogus: unknown key" in detail


# -- verdicts without I/O ---------------------------------------------------------------


def test_skew_over_the_threshold_warns_and_within_its_uncertainty_passes() -> None:
    warn = skew_verdict("clock:b", -3.5, 0.2, 2.0)
    assert (warn.status, warn.detail) == (Status.WARN, "clock 3.5 s behind this host (±0.2 s), over 2 s")
    assert skew_verdict("clock:b", 2.4, 0.5, 2.0).status is Status.PASS  # could be 1.9 s


def test_free_space_less_than_the_largest_file_fails() -> None:
    c = free_space_verdict("root:b/jobs", "/srv/jobs", True, True, ".hotspare-root", 1000, 2 * 1024 * 1024)
    assert (c.status, c.detail) == (Status.FAIL, "/srv/jobs: 1000 B free, less than the largest file (2.0 MiB)")


def test_lock_held_by_a_router_of_another_file_is_still_the_running_router() -> None:
    holder = LockHolder(42, ("/venv/bin/python", "/venv/bin/hotspare", "router", "-c", "h.yaml"), "/etc/hotspare")
    c = lock_verdict("state-lock", Path("/s.lock"), holder, Path("/tmp/copy.yaml"))
    assert (c.status, c.detail) == (
        Status.INFO, "/s.lock: held by the running router pid 42 (started with /etc/hotspare/h.yaml)")
    hidden = lock_verdict("state-lock", Path("/s.lock"), LockHolder(42, None, None), Path("/h.yaml"))
    assert (hidden.status, hidden.detail) == (Status.FAIL, "/s.lock: held by pid 42, which this user cannot see")
