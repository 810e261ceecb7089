"""End to end: the active is cut off from the router while it still holds PostgreSQL
sessions; the failover fences it before any request reaches the spare.

Everything is real: a PostgreSQL server (tests/promote/pgserver.py, shared with
tests/promote), two application stand-ins (``fencing_app.py``, separate processes, each
holding a pool of sessions from its own loopback address: the old active from
127.0.0.2, the spare from 127.0.0.3), the router (in this process, so the test can read
its statistics), and the cut itself: an iptables rule on the loopback interface that
drops the router's packets to the old active's port (the old active keeps running and
keeps its database sessions: a network fault, not a crash). The rule is tagged with a
comment naming this process and removed in the fixture's finaliser, whatever happens;
rules left by a test run that was itself killed are removed at the next start.

The promotion pipeline is the one of a real site: a ``sql`` step ends the sessions of
the old active's address, then an ``exec`` step (``fencing_stop.py``) SIGKILLs the pid
the old active wrote to its pid file and confirms it is dead.

"Before the first request reaches the spare" is checked twice: the spare's own handler,
on its first proxied request and before answering it, looks at the old pid
(``/proc``) and at pg_stat_activity; and the times are compared (the fence program's
"dead" time against the spare's arrival time, both ``time.monotonic()``, which is one
clock for all processes of the machine; the audit log's wall-clock end of the ``sql``
step against the arrival wall-clock time).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from promote.audit import AuditLog, RunRecord
from router.config import Config, parse_config
from router.server import Router
from tests.helpers import wait_for
from tests.promote.pgserver import Postgres, PostgresUnavailable, shared_postgres

HERE = Path(__file__).resolve().parent
OLD_ADDRESS = "127.0.0.2"  # where the old active's database sessions come from
NEW_ADDRESS = "127.0.0.3"  # where the spare's come from
RULE_TAG = "hotspare-e2e-fencing"
ADMIN_TOKEN = "e2e-admin-token"

pytestmark = pytest.mark.slow  # each test takes a few seconds: detection, promotion


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The same server as tests/promote's fixture when both directories run."""
    with contextlib.ExitStack() as stack:
        try:
            pg = stack.enter_context(shared_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))  # printed in the -ra summary with its reason
        yield pg


class Firewall:
    """Drop loopback packets to chosen TCP ports (iptables OUTPUT chain, tagged rules)."""

    def __init__(self) -> None:
        self.tag = f"{RULE_TAG}-{os.getpid()}"
        self.rules: list[list[str]] = []

    def block(self, port: int) -> None:
        rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port),
                "-m", "comment", "--comment", self.tag, "-j", "DROP"]  # fmt: skip
        _iptables("-I", *rule)
        self.rules.append(rule)

    def clear(self) -> None:
        while self.rules:
            _iptables("-D", *self.rules.pop())


def _iptables(*args: str) -> str:
    done = subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=20
    )
    if done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _remove_stale_rules() -> None:
    """Rules a killed test run left behind (their creator pid is gone)."""
    for line in _iptables("-S", "OUTPUT").splitlines():
        if RULE_TAG not in line or not line.startswith("-A OUTPUT"):
            continue
        owner = line.split(RULE_TAG + "-", 1)[1].split()[0].strip('"')
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _iptables("-D", *line.split()[1:])


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    if os.geteuid() != 0:
        pytest.skip("needs root to add an iptables rule on the loopback interface")
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (./scripts/system-deps installs it)")
    try:
        _remove_stale_rules()
    except RuntimeError as exc:
        pytest.skip(f"iptables does not work here: {exc}")
    fw = Firewall()
    try:
        yield fw
    finally:
        fw.clear()


@dataclass
class AppProcess:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    pid: int
    backend_pids: frozenset[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


AppFactory = Callable[..., Awaitable[AppProcess]]


@pytest.fixture
async def apps() -> AsyncIterator[AppFactory]:
    """``await apps(name, source, sessions, pidfile, *extra)``: a fencing_app.py process,
    ready (sessions open, port bound). Killed and reaped at the end."""
    made: list[asyncio.subprocess.Process] = []

    async def start(
        name: str, dsn: str, source: str, sessions: int, pidfile: Path, *extra: str
    ) -> AppProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "fencing_app.py"), "--name", name, "--dsn", dsn,
            "--source", source, "--sessions", str(sessions), "--pidfile", str(pidfile), *extra,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        made.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line:
            raise AssertionError(
                f"fencing_app {name} exited with {await proc.wait()} before it was ready"
            )
        doc = json.loads(line)
        return AppProcess(
            name, proc, int(doc["port"]), int(doc["pid"]), frozenset(doc["backend_pids"])
        )

    yield start
    for proc in reversed(made):
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def sessions_from(pg: Postgres, address: str) -> frozenset[int]:
    conn = await asyncpg.connect(pg.dsn())
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND client_addr = $1::inet", address,
        )  # fmt: skip
    finally:
        await conn.close()
    return frozenset(int(r["pid"]) for r in rows)


async def _terminate(pg: Postgres, pid: int) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


# -- the deployment ------------------------------------------------------------------------


def deployment(tmp_path: Path, pg: Postgres, old: AppProcess, new: AppProcess, pidfile: Path,
               *, hold_max_time: str, kill_first: bool = False) -> Config:  # fmt: skip
    """The site's config: a (old active, sessions from 127.0.0.2) and b (spare), probes
    fast enough for a test, the pipeline ``end-sessions`` (sql) then ``stop-old`` (exec),
    or with ``kill_first`` the other way round with a ``settle`` (docs/promotion.md's
    order: a pool that reconnects is only quiet once its process is dead)."""
    sql = {"name": "end-sessions", "sql": {"dsn": pg.dsn(), "interval": "100ms"}, "timeout": "10s"}
    kill = {"name": "stop-old", "fence": True, "timeout": "10s",
            "exec": [sys.executable, str(HERE / "fencing_stop.py"), str(pidfile),
                     str(tmp_path / "fence.json")]}  # fmt: skip
    if kill_first:
        sql["sql"]["settle"] = "300ms"  # type: ignore[index]
    return parse_config(
        {
            "listen": ["127.0.0.1:0"],
            "admin": {"listen": "127.0.0.1:0", "token": ADMIN_TOKEN},
            "state_file": str(tmp_path / "state.json"),
            "log": {"access_log": None},
            "shutdown_grace": "2s",
            "services": [{
                "name": "app",
                "backends": [
                    {"name": "a", "url": old.url, "address": OLD_ADDRESS},
                    {"name": "b", "url": new.url, "address": NEW_ADDRESS},
                ],
                "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms",
                           "rise": 1, "fall": 2},
                "timeouts": {"connect": "500ms", "first_byte": "5s"},
                "failover": {"hold": {"max_time": hold_max_time}, "retry_after": 1},
                "fence_failure": "hold",
                "promote": [kill, sql] if kill_first else [sql, kill],
            }],
        },
        base_dir=tmp_path,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Router, str]]:
    router = Router(config)
    try:
        bound = await router.start()
        yield router, f"http://{bound[0][0]}:{bound[0][1]}"
    finally:
        await router.stop()


async def backend_of(client: aiohttp.ClientSession, url: str) -> str | None:
    """Which backend answered ``GET url/books``; None for anything but a 200."""
    try:
        async with client.get(url + "/books", timeout=aiohttp.ClientTimeout(total=15)) as r:
            if r.status != 200:
                return None
            doc = await r.json()
            return str(doc["backend"])
    except (aiohttp.ClientError, TimeoutError):
        return None


def answered_by(
    name: str, client: aiohttp.ClientSession, url: str
) -> Callable[[], bool | Awaitable[bool]]:
    """A condition for ``wait_for``: one real request through the router, answered by
    backend ``name``."""

    async def check() -> bool:
        return await backend_of(client, url) == name

    return check


def service_state(router: Router) -> tuple[str, str, int]:
    s = router.statistics().services[0]
    return s.state, s.active, s.epoch


def runs(tmp_path: Path) -> list[RunRecord]:
    return AuditLog(tmp_path / "state.json.audit.jsonl").history("app")


def wall(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).timestamp()


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kill_first",
    [
        pytest.param(False, id="sql-then-kill"),
        # A pool that reopens ended sessions: only quiet once the process is dead.
        pytest.param(True, id="kill-then-sql-reconnecting-pool"),
    ],
)
async def test_cut_off_active_is_fenced_before_the_spare_gets_traffic(
    tmp_path: Path, postgres: Postgres, firewall: Firewall, apps: AppFactory, kill_first: bool
) -> None:
    pidfile = tmp_path / "a.pid"
    reconnect = ("--reconnect",) if kill_first else ()
    old = await apps("a", postgres.dsn(), OLD_ADDRESS, 3, pidfile, *reconnect)
    record = tmp_path / "spare-first-request.json"
    new = await apps("b", postgres.dsn(), NEW_ADDRESS, 2, tmp_path / "b.pid", "--record", str(record),
                     "--watch-pid", str(old.pid), "--watch-address", OLD_ADDRESS)  # fmt: skip
    # Before the fault: each holds its pool, seen by the database from its own address.
    assert await sessions_from(postgres, OLD_ADDRESS) == old.backend_pids
    assert await sessions_from(postgres, NEW_ADDRESS) == new.backend_pids
    assert int(pidfile.read_text()) == old.pid
    if kill_first:  # the stand-in's pool really does reopen an ended session
        ended = min(old.backend_pids)
        await _terminate(postgres, ended)

        async def reopened() -> bool:
            now = await sessions_from(postgres, OLD_ADDRESS)
            return len(now) == 3 and ended not in now

        condition: Callable[[], bool | Awaitable[bool]] = reopened
        await wait_for(condition, timeout=10, what="the old active's pool reopening a session")

    async with running(deployment(tmp_path, postgres, old, new, pidfile, hold_max_time="10s",
                              kill_first=kill_first)) as (
        router, url), aiohttp.ClientSession() as client:  # fmt: skip
        assert await backend_of(client, url) == "a"

        firewall.block(old.port)  # the router can no longer reach a; a runs on, sessions open
        assert old.proc.returncode is None
        # Clients keep asking; the first answer from b ends the wait.
        await wait_for(answered_by("b", client, url), timeout=30, interval=0.05,
                       what="a request answered by the spare b")  # fmt: skip
        assert service_state(router) == ("active", "b", 1)

    # What the spare saw when its first proxied request arrived, before answering it.
    first = json.loads(record.read_text())
    assert first["old_process"] in ("gone", "zombie"), first
    assert first["old_sessions"] == 0, first
    assert first["epoch"] == "1"
    fenced = json.loads((tmp_path / "fence.json").read_text())
    assert fenced["pid"] == old.pid
    assert fenced["dead_monotonic"] <= first["arrived_monotonic"]

    # The old active died by SIGKILL (the fencing step), not by anything else.
    assert await asyncio.wait_for(old.proc.wait(), 10) == -signal.SIGKILL
    # Its sessions are gone; the new active's are the very same as before.
    assert await sessions_from(postgres, OLD_ADDRESS) == frozenset()
    assert await sessions_from(postgres, NEW_ADDRESS) == new.backend_pids

    # The audit log: one failover run, sessions ended, old process stopped, promoted.
    (run,) = runs(tmp_path)
    assert (run.trigger, run.old, run.new, run.epoch, run.outcome) == (
        "failover",
        "a",
        "b",
        1,
        "promoted",
    )
    by_name = {s["name"]: s for s in run.steps}
    assert by_name["end-sessions"]["status"] == "ok"
    if kill_first:
        # What the database had not yet noticed of the dead process's sessions.
        assert 0 <= by_name["end-sessions"]["sessions_ended"] <= 3
    else:
        assert by_name["end-sessions"]["sessions_ended"] == 3
    assert by_name["stop-old"]["status"] == "ok" and by_name["stop-old"]["exit_code"] == 0
    assert f"{old.pid} is dead" in by_name["stop-old"]["output"]
    assert wall(by_name["end-sessions"]["ts"]) <= first["arrived_wall"]
    assert run.alarms == []


async def test_fence_failure_holds_traffic_until_an_operator_confirms(
    tmp_path: Path, postgres: Postgres, firewall: Firewall, apps: AppFactory
) -> None:
    # The fence program cannot reach the old active (here: no pid file where the config
    # says), so the fencing step fails; fence_failure is hold.
    pidfile = tmp_path / "a.pid"
    old = await apps("a", postgres.dsn(), OLD_ADDRESS, 3, pidfile)
    record = tmp_path / "spare-first-request.json"
    new = await apps("b", postgres.dsn(), NEW_ADDRESS, 2, tmp_path / "b.pid", "--record", str(record),
                     "--watch-pid", str(old.pid), "--watch-address", OLD_ADDRESS)  # fmt: skip
    unreachable = tmp_path / "no-such-dir" / "a.pid"
    config = deployment(tmp_path, postgres, old, new, unreachable, hold_max_time="3s")

    async with running(config) as (router, url), aiohttp.ClientSession() as client:
        assert await backend_of(client, url) == "a"
        firewall.block(old.port)
        await wait_for(lambda: service_state(router)[0] == "fence_hold", timeout=30,
                       what="the service in fence_hold")  # fmt: skip
        # Traffic does not move: a stays the active; requests are refused, not sent to b.
        # The attempt's epoch (the fencing token) is on disk already; the status still
        # shows the epoch traffic was routed with (0) until the new active takes over.
        assert service_state(router)[:2] == ("fence_hold", "a")
        on_disk = json.loads((tmp_path / "state.json").read_text())["services"]["app"]
        assert on_disk == {"active": "a", "epoch": 1}
        async with client.get(url + "/books", timeout=aiohttp.ClientTimeout(total=15)) as r:
            assert r.status == 503
            assert r.headers.get("Retry-After") == "1"
        assert not record.exists(), "the spare got a request while fencing had failed"
        assert old.proc.returncode is None  # not fenced: alive behind the fault
        alarms = router.statistics().services[0].alarms
        assert any(a.startswith("fence_failed:") and "stop-old" in a for a in alarms), alarms
        assert router.bound is not None
        admin_url = "http://{}:{}".format(*router.bound.admin)
        async with client.get(f"{admin_url}/v1/status") as r:
            (svc,) = (await r.json())["services"]
            assert (svc["state"], svc["active"]) == ("fence_hold", "a")
        (held,) = runs(tmp_path)
        assert held.outcome == "fence_hold"
        steps = {s["name"]: s for s in held.steps}
        assert steps["end-sessions"]["sessions_ended"] == 3
        assert steps["stop-old"]["status"] == "failed"

        # The operator fences a by hand, then confirms through the admin API (which
        # waits for the resumed run to settle before answering).
        old.proc.kill()
        assert await asyncio.wait_for(old.proc.wait(), 10) == -signal.SIGKILL
        async with client.post(
            f"{admin_url}/v1/services/app/confirm-fenced", json={},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:  # fmt: skip
            answer = await r.json()
            assert r.status == 200, answer
            assert (answer["outcome"], answer["active"], answer["epoch"]) == ("promoted", "b", 1)
        await wait_for(answered_by("b", client, url), timeout=30, interval=0.05,
                       what="a request answered by b after confirm-fenced")  # fmt: skip
        assert service_state(router) == ("active", "b", 1)  # the held run's epoch, not a new one

    first = json.loads(record.read_text())
    assert first["old_process"] in ("gone", "zombie") and first["old_sessions"] == 0, first
    assert await sessions_from(postgres, NEW_ADDRESS) == new.backend_pids
    held, resumed = runs(tmp_path)
    assert (resumed.resumes, resumed.epoch, resumed.outcome) == (held.run_id, 1, "promoted")
    assert resumed.steps == []  # resumed after the failed fence step: nothing left to run
