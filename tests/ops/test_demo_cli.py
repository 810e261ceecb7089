"""``hotspare demo``: the generated config, the process manager, and the whole demo story
(write a report on the active, kill it, see the router flip and the report on the spare),
all with real processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hotspare.demo.app import DEMO_PASSWORD
from router.cli import demo_control
from router.cli.demo import build_config, pick_ports
from router.cli.demo_steps import DemoFacts, walkthrough
from router.config import parse_config
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
# The console script installed beside this interpreter (.venv/bin/hotspare).
HOTSPARE = Path(sys.executable).parent / "hotspare"


def test_generated_config_passes_the_one_loader(tmp_path: Path) -> None:
    ports = pick_ports(any_port=True)
    assert len({*vars(ports).values()}) == 6  # six distinct ports
    stop = {n: ["/venv/bin/python", "-m", "hotspare", "demo", "stop", n, "--dir", str(tmp_path)] for n in "ab"}
    data = build_config(ports, tmp_path, "admin-tok", "repl-tok", stop)
    config = parse_config(data, base_dir=tmp_path, env={})
    (svc,) = config.services
    assert [b.url for b in svc.backends] == [f"http://127.0.0.1:{ports.app_a}", f"http://127.0.0.1:{ports.app_b}"]
    assert config.admin.token == "admin-tok"
    assert config.replication is not None
    assert config.replication.roots[0].path_for("b") == tmp_path / "b" / "jobs"
    # Fencing goes through the running demo, which knows the app server's current pid.
    assert config.replication.stop_command("a") == stop["a"]
    for host in [config.listen[0].host_port[0], config.admin.listen.split(":")[0]]:
        assert host == "127.0.0.1"


def test_walkthrough_commands_work_in_a_new_terminal(tmp_path: Path) -> None:
    base = tmp_path / "my demo"  # a space: every path must be quoted for the shell
    text = walkthrough(DemoFacts(base, pick_ports(any_port=True), {"a": 11, "b": 12}, "/v/bin/hotspare"))
    commands = [ln.split("$ ", 1)[1] for ln in text.splitlines() if ln.lstrip().startswith("$ ")]
    assert commands[0] == f"/v/bin/hotspare status -c '{base}/hotspare.yaml'"
    assert commands[1] == f"/v/bin/hotspare demo kill a --dir '{base}'"
    assert commands[5] == f"/v/bin/hotspare demo restart a --dir '{base}'"
    assert commands[6] == f"/v/bin/hotspare switchover -c '{base}/hotspare.yaml' --service library --to a --dry-run"
    assert commands[8] == f"ls -R '{base}/a/jobs/.hotspare/quarantine'"
    assert "export" not in text and "HOTSPARE_ADMIN_TOKEN" not in text
    # The failback is suggested only once a is back as the spare (step 6).
    assert [i for i, c in enumerate(commands) if "--to a" in c] == [6, 7]


def test_control_plan_and_requests() -> None:
    both_up, both_down = {"app": True, "agent": True}, {"app": False, "agent": False}
    assert demo_control.plan("kill", both_up) == [("kill", "app"), ("kill", "agent")]
    assert demo_control.plan("stop", both_up) == [("stop", "app")]  # the asking agent lives on
    assert demo_control.plan("stop", both_down) == []
    assert demo_control.plan("restart", both_down) == [("start", "app"), ("start", "agent")]
    assert demo_control.plan("restart", {"app": False, "agent": True}) == [("start", "app")]
    assert demo_control.plan("restart", both_up) == "it is running; kill or stop it first"
    assert demo_control.parse_request("restart a\n") == ("restart", "a")
    assert demo_control.parse_request("rm -rf /").startswith("expected 'ACTION NODE' with ACTION one of kill, stop")
    assert demo_control.parse_answer("ok killed app server a\n") == (True, "killed app server a")


async def test_demo_action_without_a_running_demo_says_how_to_start_one(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(HOTSPARE), "demo", "restart", "a", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err.decode().startswith(f"hotspare demo restart: no demo is running in {tmp_path} ")
    assert f"start one with: hotspare demo --dir {tmp_path}" in err.decode()


class DemoProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.banner = ""

    async def read_banner(self) -> str:
        assert self.proc.stdout is not None
        lines: list[str] = []
        while True:  # the banner ends with the Ctrl-C line; a deadline wraps this call
            line = (await self.proc.stdout.readline()).decode()
            if not line:
                err = (await self.proc.stderr.read()).decode() if self.proc.stderr else ""
                raise AssertionError(f"demo exited early: {''.join(lines)}{err}")
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                self.banner = "".join(lines)
                return self.banner

    def url(self, label: str) -> str:
        m = re.search(rf"{label}\s+(http://127\.0\.0\.1:\d+)/?", self.banner)
        assert m, f"no {label!r} in banner:\n{self.banner}"
        return m.group(1)

    def pid(self, node: str) -> int:
        m = re.search(rf"app server {node}.*pid (\d+)", self.banner)
        assert m, self.banner
        return int(m.group(1))


@pytest.fixture
async def start_demo(tmp_path: Path) -> AsyncIterator[object]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> DemoProcess:
        # As the README starts it: ./scripts/demo execs .venv/bin/hotspare demo.
        proc = await asyncio.create_subprocess_exec(
            str(HOTSPARE), "demo", "--any-port", "--dir", str(tmp_path / "demo"), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )
        procs.append(proc)
        demo = DemoProcess(proc)
        await asyncio.wait_for(demo.read_banner(), 60)
        return demo

    yield start
    for proc in procs:  # a failed test must not leave the demo's children behind
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def stop_demo(demo: DemoProcess) -> None:
    demo.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(demo.proc.wait(), 30) == 0


async def test_apps_only_starts_and_stops_everything(start_demo: object, tmp_path: Path) -> None:
    demo = await start_demo("--apps-only")  # type: ignore[operator]
    pids = [demo.pid("a"), demo.pid("b")]
    async with session() as s:
        for node, label in (("a", "app server a:"), ("b", "app server b:")):
            async with s.get(demo.url(label) + "/health") as r:
                assert (await r.json())["name"] == node
    await stop_demo(demo)
    for pid in pids:
        assert not alive(pid), f"app server pid {pid} outlived the demo"
    assert (tmp_path / "demo" / "a" / "index" / "title-0001.txt").exists()  # seeded


async def write_report_and_see_it_replicated(demo: DemoProcess, data: Path, s: aiohttp.ClientSession) -> dict[str, str]:
    lib = demo.url("library, through the router")
    await login(s, lib)
    async with s.post(f"{lib}/jobs/report", json={"title": "Overdue"}) as r:
        assert r.status == 201, await r.text()
        assert r.headers["X-Demo-Server"] == "a"
        job: dict[str, str] = await r.json()
    spare_copy = data / "b" / job["path"]
    await wait_for(spare_copy.exists, timeout=30, what="the report replicated to b")
    assert spare_copy.read_text() == (data / "a" / job["path"]).read_text()
    return job


async def login(s: aiohttp.ClientSession, lib: str) -> None:
    async with s.post(f"{lib}/login", data={"user": "ada", "password": DEMO_PASSWORD}) as r:
        assert r.status == 200, await r.text()


def session() -> aiohttp.ClientSession:
    # aiohttp's default cookie jar ignores cookies from IP hosts; browsers do not.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.mark.slow
async def test_demo_serves_through_the_router_and_replicates_reports(start_demo: object, tmp_path: Path) -> None:
    """All five processes up; a report written through the router on a reaches b."""
    demo = await start_demo()  # type: ignore[operator]
    async with session() as s:
        await write_report_and_see_it_replicated(demo, tmp_path / "demo", s)
        async with s.get(demo.url("status page") + "/v1/status") as r:
            status = await r.json()
        assert status["services"][0]["active"] == "a"
    # `hotspare status` against the real router's admin API.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", "status", "--admin", demo.url("status page"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[1].split()[:3] == ["library", "ACTIVE", "a"], out.decode()
    # b's health shows once the router probes it ("up"), "-" while it does not yet.
    assert any(ln.split()[:2] == ["library/b", "spare"] and ln.split()[2] in ("up", "-") for ln in lines), out.decode()
    pids = [demo.pid("a"), demo.pid("b")]
    await stop_demo(demo)
    for pid in pids:
        assert not alive(pid)


@pytest.mark.slow
async def test_demo_story_report_survives_killing_the_active(start_demo: object, tmp_path: Path) -> None:
    """The README's story: write a report on the active, SIGKILL the active, see
    /v1/status flip to b, log in again and find the report on b through the router."""
    demo = await start_demo()  # type: ignore[operator]
    lib, admin = demo.url("library, through the router"), demo.url("status page")
    async with session() as s:
        job = await write_report_and_see_it_replicated(demo, tmp_path / "demo", s)
        os.kill(demo.pid("a"), signal.SIGKILL)

        async def b_is_active() -> bool:
            async with s.get(f"{admin}/v1/status") as r:
                return bool(json.loads(await r.text())["services"][0]["active"] == "b")

        await wait_for(b_is_active, timeout=15, what="the router to make b active")  # type: ignore[arg-type]
        await login(s, lib)  # sessions are not replicated
        async with s.get(f"{lib}/jobs/reports/{job['id']}") as r:
            assert r.status == 200
            assert r.headers["X-Demo-Server"] == "b"
            assert "Overdue" in await r.text()
    await stop_demo(demo)
