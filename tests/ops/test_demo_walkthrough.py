"""The demo's printed walkthrough, driven as a new user would: ``hotspare demo`` started
as README's ``./scripts/demo`` starts it (``.venv/bin/hotspare demo``), its steps parsed
from what it prints, and every ``$`` command run AS PRINTED with ``bash -c`` in a fresh
environment (PATH only, another working directory), each outcome checked: failover,
the files on the spare, restart, dry run, failback at a higher epoch, quarantine."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from hotspare.demo.app import DEMO_PASSWORD
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
HOTSPARE = Path(sys.executable).parent / "hotspare"  # what ./scripts/demo execs
STEP = re.compile(r"^\s*(\d+)\. ")
COMMAND = re.compile(r"^\s*\$ (.+)$")


def parse_steps(banner: str) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    current = 0
    for line in banner.splitlines():
        if m := STEP.match(line):
            current = int(m.group(1))
            steps[current] = []
        elif (m := COMMAND.match(line)) and current:
            steps[current].append(m.group(1))
    return steps


async def read_banner(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while not (lines and lines[-1].startswith("Ctrl-C stops everything")):
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise AssertionError(f"demo exited early: {''.join(lines)}")
        lines.append(line)
    return "".join(lines)


class Shell:
    """A new terminal: bash with nothing exported but PATH, in a folder of its own."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        cwd.mkdir(parents=True, exist_ok=True)

    async def run(self, command: str, timeout: float = 60) -> tuple[int, str]:  # noqa: ASYNC109
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, env={"PATH": os.environ["PATH"]}, cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    async def ok(self, command: str) -> str:
        code, out = await self.run(command)
        assert code == 0, f"`{command}` exited {code}:\n{out}"
        return out


def service_row(status_out: str) -> list[str]:
    """SERVICE STATE ACTIVE EPOCH of `hotspare status`'s first row."""
    return status_out.splitlines()[1].split()[:4]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def answers(url: str) -> bool:
    try:
        return (await get(url))[0] == 200
    except aiohttp.ClientError:
        return False


async def write_report_in_the_browser(lib: str) -> str:
    """Step 1's browser part: the login form, then the report form."""
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=html) as s:
        async with s.post(f"{lib}/login", data={"user": "ada", "password": DEMO_PASSWORD}) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "logged in as <b>ada</b>" in await r.text()
        async with s.post(f"{lib}/jobs/report", data={"title": "Overdue"}) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["id"])


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_walkthrough_as_printed_in_a_fresh_shell(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        str(HOTSPARE), "demo", "--any-port", "--dir", str(base),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )
    try:
        banner = await asyncio.wait_for(read_banner(proc), 90)
        await walk(banner, base, Shell(tmp_path / "elsewhere"))
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def walk(banner: str, base: Path, sh: Shell) -> None:
    steps = parse_steps(banner)
    assert sorted(steps) == list(range(1, 11)) and all(len(c) == 1 for c in steps.values()), banner
    (look,), (kill,), (watch,), (files,), (leave,), (restart,), (dry,), (back,), (quarantine,), (bring_b,) = (
        steps[n] for n in range(1, 11))
    assert [n for n, (c,) in steps.items() if "--to a" in c] == [7, 8]  # never while a is active or down
    token = yaml.safe_load((base / "hotspare.yaml").read_text())["admin"]["token"]
    assert token not in banner  # the commands read it from the file; it is never printed
    lib = re.search(r"library, through the router\s+(http://\S+?)/?\n", banner).group(1)  # type: ignore[union-attr]
    app = dict(re.findall(r"app server (\w) \(\w+\)\s+(http://\S+?)/?\s", banner))

    # 1. Look: a is active; a report written in the browser reaches b.
    report = await write_report_in_the_browser(lib)
    await wait_for(lambda: (base / "b" / "jobs" / "reports" / f"{report}.txt").exists(), 30, what="the report on b")
    row = service_row(await sh.ok(look))
    assert row[:3] == ["library", "ACTIVE", "a"], row
    epoch = int(row[3])

    # 2-3. Kill server a; the status flips to b at the next epoch.
    assert (await sh.ok(kill)).startswith("killed app server a (pid ")

    async def b_active() -> bool:
        return service_row(await sh.ok(watch))[:4] == ["library", "ACTIVE", "b", str(epoch + 1)]

    await wait_for(b_active, 20, interval=0.3, what="b active after the kill")
    # 4. The spare's files listing shows the report.
    assert f"{report}.txt" in await sh.ok(files)
    # 5-6. A file only the dead a has; a comes back as the spare and answers.
    await sh.ok(leave)
    assert (base / "a" / "jobs" / "reports" / "written-on-a.txt").exists()
    out = await sh.ok(restart)
    assert out.startswith("restarted app server a (pid ") and out.rstrip().endswith(
        "the router sees it healthy: it is the spare (no automatic failback)"), out
    assert await answers(f"{app['a']}/health")

    # 7. The dry run prints a plan and changes nothing.
    out = await sh.ok(dry)
    assert out.startswith(f"DRY RUN: would switch service library from b to a (epoch {epoch + 1})"), out
    assert f"persist epoch {epoch + 2} (the fencing token)" in out, out
    assert service_row(await sh.ok(watch))[:4] == ["library", "ACTIVE", "b", str(epoch + 1)]

    # 8. The failback: a active again at a higher epoch; b's app server fenced.
    out = await sh.ok(back)
    assert out.startswith(f"switched service library from b to a (epoch {epoch + 2})"), out
    assert service_row(await sh.ok(look))[:4] == ["library", "ACTIVE", "a", str(epoch + 2)]
    assert not await answers(f"{app['b']}/health")

    # 9. The quarantine: the file only a had, under the epoch a became the spare at;
    # b never got it (docs/replication.md, Guards: Quarantine).
    out = await sh.ok(quarantine)
    assert f"epoch-{epoch + 1}/reports:\nwritten-on-a.txt" in out, out
    assert not (base / "a" / "jobs" / "reports" / "written-on-a.txt").exists()
    assert not (base / "b" / "jobs" / "reports" / "written-on-a.txt").exists()

    # 10. b comes back as the spare.
    out = await sh.ok(bring_b)
    assert out.rstrip().endswith("the router sees it healthy: it is the spare (no automatic failback)"), out
    assert await answers(f"{app['b']}/health")
    assert service_row(await sh.ok(look))[:4] == ["library", "ACTIVE", "a", str(epoch + 2)]
