"""A status that never looks healthy when it is not: a spare's lag that is not known reads
"unknown (why)" in ``hotspare status`` and on the page, never a number; every alarm has
what to do and a runbook section that exists."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from router.admin.agents import remember
from router.admin.hints import ALARM_HINTS, RUNBOOK, alarm_hint
from router.admin.page import lag_text, render_status_page
from router.cli.client import format_status
from tests.helpers import wait_for
from tests.ops.kit import App, StandInAgent, running_router, sink_status, write_config

REPO = Path(__file__).resolve().parents[2]
HOTSPARE = Path(sys.executable).parent / "hotspare"


def hhmmss(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def test_unreachable_since_is_the_last_answer_and_stays_while_silent() -> None:
    ok = remember(None, {"reachable": True, "checked_at": 100.0, "lag_seconds": 0.2})
    assert (ok["last_answered_at"], ok["unreachable_since"]) == (100.0, None)
    dead = remember(ok, {"reachable": False, "checked_at": 101.0, "error": "unreachable: refused"})
    assert (dead["last_answered_at"], dead["unreachable_since"]) == (100.0, 100.0)
    still = remember(dead, {"reachable": False, "checked_at": 102.0, "error": "unreachable: refused"})
    assert (still["last_answered_at"], still["unreachable_since"]) == (100.0, 100.0)
    never = remember(None, {"reachable": False, "checked_at": 50.0, "error": "x"})
    assert (never["last_answered_at"], never["unreachable_since"]) == (None, 50.0)
    assert remember(never, {"reachable": True, "checked_at": 51.0})["unreachable_since"] is None


def test_lag_text_says_why_it_is_unknown() -> None:
    spare: dict[str, Any] = {"name": "b", "agent": "http://127.0.0.1:1"}
    assert lag_text(spare, is_active=True) == "source"
    assert lag_text({"name": "b"}, is_active=False) == "—"  # no agent configured: no replication
    assert lag_text(spare, is_active=False) == "unknown (agent not asked yet)"
    dead = {**spare, "replication": {"reachable": False, "unreachable_since": 1_700_000_000.0}}
    assert lag_text(dead, is_active=False) == f"unknown (agent unreachable since {hhmmss(1_700_000_000.0)})"
    # The sink answers but cannot reach the source: its lag of 0 means nothing.
    cut = {**spare, "replication": {"reachable": True, "role": "sink", "lag_seconds": 0.0,
                                    "error": "jobs: ClientConnectorError: refused"}}
    assert lag_text(cut, is_active=False) == "unknown (agent: jobs: ClientConnectorError: refused)"
    source = {**spare, "replication": {"reachable": True, "role": "source", "lag_seconds": None}}
    assert lag_text(source, is_active=False) == "unknown (agent is source, not mirroring)"
    assert lag_text({**spare, "replication": {"reachable": True, "lag_seconds": 0.0}}, is_active=False) == "0 ms"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#{1,6} (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def _raised_codes() -> set[str]:
    """Every alarm code the router's code can raise, read from the raising calls."""
    src = {p: (REPO / p).read_text() for p in (
        "router/failover/handlers.py", "router/failover/controller.py",
        "router/failover/publish.py", "router/admin/reload.py",
        "router/cluster/node.py", "router/cluster/steer.py")}
    codes = {c.lower() for c in re.findall(r"RaiseAlarm\(Cause\.(\w+)", src["router/failover/handlers.py"])}
    codes |= set(re.findall(r'\.alarm\("(\w+)"', src["router/failover/controller.py"]))
    codes |= set(re.findall(r'_alarm_event\("(\w+)"', src["router/failover/publish.py"]))
    codes |= set(re.findall(r'code="(\w+)"', src["router/admin/reload.py"]))
    for cluster in ("router/cluster/node.py", "router/cluster/steer.py"):
        codes |= set(re.findall(r'\.alarm\(\s*"(\w+)"', src[cluster]))
    return codes


def test_every_alarm_the_router_raises_has_a_hint_whose_runbook_section_exists() -> None:
    codes = _raised_codes()
    assert codes == {"spare_unhealthy", "promotion_failed", "fence_failed", "hold_timeout", "hold_down",
                     "automatic_off", "state_write_failed", "reload_refused", "promotion_alarm",
                     "audit_write_failed", "etcd_unreachable", "cluster_state_invalid",
                     "promotion_interrupted"}
    assert codes - set(ALARM_HINTS) == set()
    anchors = _anchors((REPO / RUNBOOK).read_text())
    missing = {c: h.anchor for c, h in ALARM_HINTS.items() if h.anchor not in anchors}
    assert missing == {}
    assert alarm_hint("hold_down: active a DOWN; no automatic failover")["runbook"] == \
        "docs/runbook.md#failover-held-down"
    assert alarm_hint("weird: x")["runbook"] == "docs/runbook.md#operations-runbook"


def test_alarms_with_what_to_do_in_the_cli_and_on_the_page() -> None:
    alarms = ["spare_unhealthy: spare b DOWN (connect refused): no failover possible while it stays down"]
    svc = {"name": "app", "active": "a", "epoch": 0, "state": "active", "backends": [],
           "alarms": alarms, "alarm_hints": [alarm_hint(a) for a in alarms]}
    out = format_status({"services": [svc]}, now=0.0).splitlines()
    i = out.index("ALARMS")
    assert out[i + 1] == f"  [app] {alarms[0]}"
    assert out[i + 2] == ("    what to do: make the spare pass its health checks (is its application running? "
                          "curl its health path) (read docs/runbook.md#spare-not-ready)")
    page = render_status_page({"services": [svc]})
    assert "What to do: make the spare pass its health checks" in page
    assert "(read <code>docs/runbook.md#spare-not-ready</code>)" in page


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(HOTSPARE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={"PATH": "/usr/bin:/bin"})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _line(out: str, backend: str) -> str:
    return next(ln for ln in out.splitlines() if ln.startswith(backend + " "))


async def test_a_dead_agent_reads_unknown_since_its_last_answer_in_cli_and_page(tmp_path: Path) -> None:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    agent = StandInAgent(sink_status(lag=0.2))
    await agent.start()
    try:
        bs = [{"name": "a", "url": a.url}, {"name": "b", "url": b.url, "agent": agent.url}]
        path = write_config(tmp_path, bs, replication=True)
        async with running_router(path) as (_, _, admin), aiohttp.ClientSession() as s:
            async def b_repl() -> Any:
                async with s.get(f"{admin}/v1/status") as r:
                    return (await r.json())["services"][0]["backends"][1]["replication"]

            await wait_for(b_repl, what="b's agent asked")
            assert "200 ms" in _line(await _cli("status", "--admin", admin), "app/b")

            await agent.stop()  # the agent dies
            dead = await wait_for(lambda: _dead(b_repl), what="b's agent seen unreachable")
            assert dead["unreachable_since"] == dead["last_answered_at"] is not None
            expected = f"unknown (agent unreachable since {hhmmss(dead['unreachable_since'])})"
            line = _line(await _cli("status", "--admin", admin), "app/b")
            assert line.endswith(expected) and "ms" not in line, line
            async with s.get(f"{admin}/") as r:
                page = await r.text()
            assert f'<td class="lag warn">{expected}</td>' in page
    finally:
        await agent.stop()
        await b.stop()
        await a.stop()


async def _dead(b_repl: Any) -> Any:
    repl = await b_repl()
    return repl if repl and repl.get("reachable") is False else None
