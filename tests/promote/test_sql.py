"""The ``sql`` step against a real PostgreSQL (see conftest.py).

A subprocess stands in for the old active: it holds sessions from 127.0.0.2 (or by
application_name). The new active's sessions are opened by the test itself from
127.0.0.1; they must survive. Everything is checked in pg_stat_activity.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from promote.pipeline import Pipeline

from .conftest import Postgres, make_ctx, make_step

OLD_ACTIVE = Path(__file__).with_name("old_active.py")


class OldActive:
    def __init__(self, proc: asyncio.subprocess.Process, pids: list[int]) -> None:
        self.proc = proc
        self.pids = pids


@pytest.fixture
async def old_active(postgres: Postgres) -> AsyncIterator[Callable[..., Any]]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(source: str, app: str, count: int = 3, reconnect: bool = False) -> OldActive:
        args = [str(OLD_ACTIVE), postgres.dsn(), source, app, str(count)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, *(["--reconnect"] if reconnect else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"ready "):
            err = await proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"old active stand-in failed: {line!r} {err[-2000:]!r}")
        return OldActive(proc, [int(p) for p in line.split()[1].split(b",")])

    yield start
    for p in reversed(procs):
        if p.returncode is None:
            p.kill()
        await p.wait()


@pytest.fixture
async def new_active(postgres: Postgres) -> AsyncIterator[list[Any]]:
    """Two sessions of the new active, from 127.0.0.1, that must survive."""
    conns = [
        await asyncpg.connect(postgres.dsn(), server_settings={"application_name": "library@b"})
        for _ in range(2)
    ]
    yield conns
    for c in conns:
        await c.close()


async def sessions(postgres: Postgres, where: str, *args: Any) -> list[int]:
    conn = await asyncpg.connect(
        postgres.dsn(), server_settings={"application_name": "test-observer"}
    )
    try:
        rows = await conn.fetch(
            f"SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND {where}",
            *args,
        )
        return sorted(r["pid"] for r in rows)
    finally:
        await conn.close()


async def test_sql_step_ends_old_sessions_by_address_and_new_ones_survive(
    postgres: Postgres, old_active: Any, new_active: list[Any]
) -> None:
    old = await old_active("127.0.0.2", "library@a", count=3)
    assert await sessions(postgres, "client_addr = '127.0.0.2'::inet") == sorted(old.pids)
    new_pids = sorted(c.get_server_pid() for c in new_active)

    step = make_step(name="sessions", sql={"dsn": postgres.dsn(), "interval": "50ms"}, timeout=20)
    result = await Pipeline([step], fence_failure="hold", audit=None).run(
        make_ctx(old_address="127.0.0.2")
    )

    assert result.outcome == "promoted", result
    assert result.steps[0].status == "ok"
    assert result.steps[0].sessions_ended == 3
    assert await sessions(postgres, "client_addr = '127.0.0.2'::inet") == []
    assert await sessions(postgres, "pid = ANY($1::int[])", new_pids) == new_pids
    for c in new_active:
        assert await c.fetchval("SELECT 1") == 1


async def test_sql_step_matches_application_name_from_the_same_address(
    postgres: Postgres, old_active: Any, new_active: list[Any]
) -> None:
    # Old and new both connect from 127.0.0.1 here: only application_name tells them apart.
    old = await old_active("127.0.0.1", "library@a", count=2)
    new_pids = sorted(c.get_server_pid() for c in new_active)
    step = make_step(
        name="sessions",
        sql={"dsn": postgres.dsn(), "match_address": False, "application_name": "library@{old.name}",
             "interval": "50ms"},
    )  # fmt: skip
    result = await Pipeline([step], fence_failure="hold", audit=None).run(
        make_ctx(old_address="127.0.0.1")
    )
    assert result.outcome == "promoted", result
    assert result.steps[0].sessions_ended == 2
    assert await sessions(postgres, "pid = ANY($1::int[])", old.pids) == []
    assert await sessions(postgres, "application_name = 'library@b'") == new_pids


async def test_sql_step_times_out_while_the_old_active_keeps_reconnecting(
    postgres: Postgres, old_active: Any, new_active: list[Any]
) -> None:
    # settle (5s) outlasts the timeout (2.5s) so the outcome does not hang on how fast the
    # stand-in reconnects on a loaded machine; sessions_ended >= 2 with ONE pooled
    # connection proves the step saw it come back and ended it again.
    old = await old_active("127.0.0.3", "library@a", count=1, reconnect=True)
    step = make_step(
        name="sessions",
        sql={"dsn": postgres.dsn(), "interval": "100ms", "settle": "5s"},
        timeout=2.5,
    )
    result = await Pipeline([step], fence_failure="hold", audit=None).run(
        make_ctx(old_address="127.0.0.3")
    )
    assert result.outcome == "fence_hold", result
    res = result.steps[0]
    assert res.status == "timeout"
    assert res.sessions_ended is not None and res.sessions_ended >= 2  # it came back at least once
    assert "client_addr 127.0.0.3" in res.detail and "ended" in res.detail
    assert old.proc.returncode is None, await old.proc.stderr.read() if old.proc.stderr else b""
    assert result.next_step == 1 and result.alarms


async def test_sql_step_fails_clearly_when_the_password_is_wrong(postgres: Postgres) -> None:
    dsn = f"postgresql://postgres:wrong@127.0.0.1:{postgres.port}/postgres"
    step = make_step(name="sessions", sql={"dsn": dsn}, timeout=10)
    result = await Pipeline([step], fence_failure="proceed", audit=None).run(make_ctx())
    res = result.steps[0]
    assert res.status == "failed"
    assert "cannot connect to postgresql://postgres:***@" in res.detail
    assert "wrong" not in res.detail
    assert result.outcome == "promoted" and "fence_failure: proceed" in result.alarms[0]


async def test_sql_step_refuses_a_hostname_as_old_address(postgres: Postgres) -> None:
    step = make_step(name="sessions", sql={"dsn": postgres.dsn()})
    result = await Pipeline([step], fence_failure="hold", audit=None).run(
        make_ctx(old_address="app-a.local")
    )
    assert result.steps[0].status == "failed"
    assert "not an IP address" in result.steps[0].detail
