"""The admin room's observers with a real Router on loopback: the replication-lag gauge
follows the agents on the app's own timer (a scrape of /metrics alone is never stale),
and the status shows the router's typed event feed, redacted, with no log parsing."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from router.failover.feed import AlarmRaised, Notice
from tests.helpers import wait_for
from tests.ops.kit import App, StandInAgent, get_json, running_router, sink_status, write_config

LAG = 'hotspare_replication_lag_seconds{root="jobs",service="app"}'


@pytest.fixture
async def apps() -> AsyncIterator[tuple[App, App]]:
    a, b = App("a"), App("b")
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


async def _lag_line(s: aiohttp.ClientSession, admin: str) -> str | None:
    """The router's lag sample for app/jobs as /metrics shows it (None: no such series)."""
    async with s.get(f"{admin}/metrics") as r:
        text = await r.text()
    m = re.search(re.escape(LAG) + r" (\S+)", text)
    return m[1] if m else None


async def test_lag_gauge_follows_the_agent_without_any_status_read(
    tmp_path: Path, apps: tuple[App, App]
) -> None:
    """Bug: the gauge was set only while building /v1/status, so a scrape of /metrics
    alone showed nothing at first and, after the agent died, its last lag forever."""
    a, b = apps
    agent = StandInAgent(sink_status(lag=42.5))
    await agent.start()
    bs = [{"name": "a", "url": a.url}, {"name": "b", "url": b.url, "agent": agent.url}]
    try:
        async with running_router(write_config(tmp_path, bs, replication=True)) as (_, _, admin), \
                aiohttp.ClientSession() as s:
            # Only /metrics is read in this test: never /v1/status, /, or a dry run.
            await wait_for(lambda: _lag_line(s, admin), what="the lag gauge drawn")
            assert await _lag_line(s, admin) == "42.5"
            agent.status = sink_status(lag=7.25)
            await wait_for(lambda: _is(s, admin, "7.25"), what="the lag gauge following the agent")
            await agent.stop()  # the agent dies: its last lag is no longer known
            await wait_for(lambda: _is(s, admin, None), what="the lag series removed")
    finally:
        await agent.stop()


async def _is(s: aiohttp.ClientSession, admin: str, value: str | None) -> bool:
    return await _lag_line(s, admin) == value


async def test_status_shows_the_event_feed_redacted_per_service_and_router_wide(
    tmp_path: Path, apps: tuple[App, App], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = apps
    async with running_router(write_config(tmp_path, [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}])) \
            as (router, _, admin), aiohttp.ClientSession() as s:
        feed = router.events
        feed.publish(AlarmRaised(at=1000.0, service="app", code="promotion_alarm",
                                 message="ALARM: cannot connect to postgresql://app:hunter2@db/lib"))
        feed.publish(Notice(at=1001.0, service=None, message="router-wide: PASSWORD=hunter2 rotated"))
        # A log line that looks like an alarm is only a log line now: nothing parses it.
        logging.getLogger("hotspare.failover").error("service app ALARM (fake): from the log only")
        doc = await get_json(s, f"{admin}/v1/status")
        events = doc["services"][0]["events"]
        assert {"at": 1000.0, "kind": "alarm", "service": "app",
                "message": "ALARM: cannot connect to postgresql://app:***@db/lib"} in events
        assert not any("from the log only" in e["message"] for e in events)
        assert doc["events"][-1] == {"at": 1001.0, "kind": "notice", "service": None,
                                     "message": "router-wide: PASSWORD=*** rotated"}
        async with s.get(f"{admin}/") as r:
            page = await r.text()
        assert "hunter2" not in page and "postgresql://app:***@db/lib" in page
