"""A chaos world: a real three-member etcd, a recording backend pair, N real routers
(``hotspare router -c FILE``) sharing failover decisions, steady load through all of
them, and links that can be cut one at a time.

Rules:

1. Every link from a router goes through a portal of its own (netcut.py), so
   ``cut_backend("r2", "a")`` cuts r2 from a and nothing else, and ``cut_etcd("r2")``
   cuts r2 from every etcd member and nothing else.
2. The world is observed, never steered, through etcd's JSON gateway (etcdview.py), the
   routers' admin API, the backends' logs and the client's records. ``verdict()`` runs
   the checker on all of it.
3. Conditions are polled with deadlines (``wait``); the test says what it waits for.
4. ``close`` always runs: load stopped, every process reaped (frozen ones thawed first),
   blocked promotion steps released and killed, iptables chains removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from ..etcdkit import EtcdCluster
from . import etcdview
from .checker import Verdict, check
from .load import Load
from .netcut import NetCut
from .procs import BackendProc, RouterProc
from .records import STEP_SCRIPT, Sent, StepRun, read_answers, read_audit_starts, read_steps

T = TypeVar("T")
SERVICE = "app"
PREFIX = "/hotspare/chaos"


class World:
    def __init__(self, root: Path, etcd: EtcdCluster, routers: Sequence[str] = ("r1", "r2", "r3"),
                 rate: float = 50.0, lease_ttl: int = 2, hold_down: str = "60s", workers: int = 1) -> None:
        self.root = root
        # One process per router by default: three routers x (decider + workers) on a
        # 2-core machine would measure CPU starvation; tests/cluster/test_pair*.py run
        # their routers with the default workers.
        self.workers = workers
        root.mkdir(parents=True, exist_ok=True)
        self.hold_down = hold_down
        self.etcd = etcd
        self.lease_ttl = lease_ttl
        self.net = NetCut()
        self.backends = {n: BackendProc(n, root) for n in ("a", "b")}
        self.routers = {n: RouterProc(n, root / n) for n in routers}
        self.runs = root / "promotion-runs.log"
        self.gate = root / "promotion-gate"
        self.load = Load({n: r.base for n, r in self.routers.items()}, rate=rate)
        self.session: aiohttp.ClientSession | None = None
        self.started = 0.0

    # -- life --------------------------------------------------------------------------

    async def start(self, *, load: bool = True) -> None:
        self.session = aiohttp.ClientSession()
        self.gate.touch()
        self.net.open()
        for b in self.backends.values():
            await b.start()
        for r in self.routers.values():
            r.dir.mkdir(parents=True, exist_ok=True)
            for b in self.backends.values():
                r.portals[b.name] = self.net.portal(b.port)
            for i in range(self.etcd.size):
                r.portals[f"etcd{i}"] = self.net.portal(self.etcd.client_port(i))
            r.config.write_text(yaml.safe_dump(self.config(r), sort_keys=False))
        await asyncio.gather(*(r.start() for r in self.routers.values()))
        await self.wait_steady()
        self.started = time.time()
        if load:
            self.load.start()

    def config(self, r: RouterProc) -> dict[str, Any]:
        step = {
            "name": "mark", "exec": ["/bin/sh", "-c", STEP_SCRIPT, "sh", "mark", str(self.runs), str(self.gate)],
            "env": {"CHAOS_ROUTER": r.name}, "timeout": "60s",
        }
        return {
            "listen": [f"127.0.0.1:{r.listen_port}"],
            "admin": {"listen": f"127.0.0.1:{r.admin_port}"},
            "state_file": str(r.dir / "state.json"),
            "workers": self.workers,
            "log": {"access_log": None},
            "shutdown_grace": "1s",
            "services": [{
                "name": SERVICE,
                "backends": [{"name": n, "url": f"http://127.0.0.1:{r.portals[n]}"} for n in self.backends],
                "health": {"interval": "200ms", "fast_interval": "50ms", "timeout": "300ms", "rise": 2, "fall": 3},
                "timeouts": {"connect": "500ms", "first_byte": "5s"},
                "failover": {"hold": {"max_time": "4s"}, "hold_down": self.hold_down, "retry_after": 1},
                "promote": [step],
            }],
            "cluster": {
                "name": r.name,
                "etcd": {"endpoints": [f"http://127.0.0.1:{r.portals[f'etcd{i}']}" for i in range(self.etcd.size)],
                         "prefix": PREFIX, "timeout": "500ms"},
                "lease_ttl": f"{self.lease_ttl}s",
            },
        }

    async def close(self) -> None:
        try:
            await self.load.stop()
        finally:
            self.gate.touch()
            for r in reversed(self.routers.values()):
                r.reap()
            for b in reversed(self.backends.values()):
                b.reap()
            self._kill_steps()
            self.net.close()
            if self.session is not None:
                await self.session.close()

    def _kill_steps(self) -> None:
        """Kill the promotion steps still running (their router was killed), each only
        after checking, by its command line, that the pid is still our step."""
        ended = {s.pid for s in read_steps(self.runs) if s.phase == "end"}
        for s in read_steps(self.runs):
            if s.phase != "start" or s.pid in ended:
                continue
            try:
                cmdline = Path(f"/proc/{s.pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone
            if str(self.runs).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(s.pid, signal.SIGKILL)  # the exec step runs in its own group

    # -- faults ------------------------------------------------------------------------

    async def cut_backend(self, router: str, backend: str) -> None:
        await asyncio.to_thread(self.net.cut, self.routers[router].portals[backend])

    async def heal_backend(self, router: str, backend: str) -> None:
        await asyncio.to_thread(self.net.heal, self.routers[router].portals[backend])

    def _etcd_portals(self, router: str) -> list[int]:
        return [self.routers[router].portals[f"etcd{i}"] for i in range(self.etcd.size)]

    async def cut_etcd(self, router: str) -> None:
        await asyncio.to_thread(self.net.cut, *self._etcd_portals(router))

    async def heal_etcd(self, router: str) -> None:
        await asyncio.to_thread(self.net.heal, *self._etcd_portals(router))

    # -- observing ---------------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "World.start() first"
        return self.session

    def key(self, name: str) -> str:
        return f"{PREFIX}/services/{SERVICE}/{name}"

    async def decider(self) -> str | None:
        value, _ = await etcdview.get(self.http, self.etcd_up(), self.key("decider"))
        return None if value is None else value.decode()

    async def decider_term(self) -> tuple[str | None, int]:
        value, rev = await etcdview.get(self.http, self.etcd_up(), self.key("decider"))
        return (None if value is None else value.decode()), rev

    async def state(self) -> dict[str, Any]:
        value = await etcdview.get_json(self.http, self.etcd_up(), self.key("state"))
        assert value is not None, "no state in etcd"
        return value

    async def promotion(self) -> dict[str, Any] | None:
        return await etcdview.get_json(self.http, self.etcd_up(), self.key("promotion"))

    async def interrupted(self, run_id: str) -> dict[str, Any] | None:
        """The ``interrupted`` record of run ``run_id`` in etcd's history, or None. (Not
        the key's current value: the next decider burns the run's epoch and may start its
        own run at once, replacing the record within milliseconds.)"""
        for ev in await etcdview.history(self.http, self.etcd_up()):
            if ev.key == self.key("promotion") and ev.type == "put":
                rec: dict[str, Any] = json.loads(ev.value)
                if rec.get("status") == "interrupted" and rec.get("run_id") == run_id:
                    return rec
        return None

    async def members(self) -> list[str]:
        kvs = await etcdview.get_prefix(self.http, self.etcd_up(), f"{PREFIX}/members/")
        return sorted(k.rsplit("/", 1)[1] for k, _ in kvs)

    def etcd_up(self) -> list[str]:
        return [self.etcd.client_url(i) for i in range(self.etcd.size) if self.etcd.running(i)]

    async def status(self, router: str) -> dict[str, Any] | None:
        try:
            async with self.http.get(self.routers[router].admin + "/v1/status",
                                     timeout=aiohttp.ClientTimeout(total=2)) as r:
                return dict(await r.json()) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def metric(self, router: str, name: str, labels: str = "") -> float | None:
        """The value of one sample of ``/metrics`` (None: no answer or no such sample)."""
        try:
            async with self.http.get(self.routers[router].admin + "/metrics",
                                     timeout=aiohttp.ClientTimeout(total=2)) as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    async def get(self, router: str) -> tuple[int, str, str]:
        """One GET through ``router``: (status, backend, epoch); status 0 without an answer."""
        try:
            async with self.http.get(self.routers[router].base + "/probe", timeout=aiohttp.ClientTimeout(total=2),
                                     headers={"X-Chaos-Router": router, "X-Chaos-Req": "probe"}) as r:
                await r.read()
                return r.status, r.headers.get("X-Backend", ""), r.headers.get("X-Seen-Epoch", "")
        except (aiohttp.ClientError, TimeoutError):
            return 0, "", ""

    async def wait(self, what: str, cond: Callable[[], Awaitable[T | None]], deadline: float = 10.0,
                   every: float = 0.05) -> T:
        """Poll ``cond()`` until it returns something truthy; fail naming ``what``."""
        end = time.monotonic() + deadline
        last: T | None = None
        while time.monotonic() < end:
            last = await cond()
            if last:
                return last
            await asyncio.sleep(every)  # polling interval of a deadline loop
        raise AssertionError(f"timed out after {deadline:g}s waiting for {what} (last: {last!r})\n{self.tails()}")

    async def wait_steady(self, deadline: float = 20.0) -> None:
        """Every router member and serving from the active; a decider elected."""
        async def steady() -> bool:
            if await self.decider() is None or await self.members() != sorted(self.routers):
                return False
            answers = await asyncio.gather(*(self.get(n) for n in self.routers))
            return all(s == 200 for s, _, _ in answers)
        await self.wait("a decider, every router a member and serving", steady, deadline)

    async def hold_for(self, seconds: float, complaint: Callable[[], Awaitable[str | None]]) -> None:
        """For ``seconds``, poll ``complaint()`` and fail at the first one (proving that a
        bad thing does NOT happen takes a window; this one ends early on failure)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            text = await complaint()
            assert text is None, f"{text}\n{self.tails()}"
            await asyncio.sleep(0.05)  # polling interval of the window

    def no_failover_since(self, state: dict[str, Any]) -> Callable[[], Awaitable[str | None]]:
        async def complaint() -> str | None:
            now = await self.state()
            if (now["epoch"], now["active"]) != (state["epoch"], state["active"]):
                return f"failover: etcd state went from {state} to {now}"
            return None
        return complaint

    async def answered(self, router: str, since: float, n: int = 20, deadline: float = 10.0) -> list[Sent]:
        """The first ``n`` requests sent through ``router`` after ``since``, once answered
        (or failed)."""
        async def enough() -> list[Sent] | None:
            done = [s for s in self.load.since(since, router) if s.done]
            return done[:n] if len(done) >= n else None
        return await self.wait(f"{n} requests through {router} after {since:.3f}", enough, deadline)

    def failed_since(self, since: float, routers: Sequence[str] | None = None) -> list[Sent]:
        """Requests sent after ``since`` (through ``routers``, default all) answered with
        something else than a 200, or not at all (in-flight ones do not count yet)."""
        names = list(self.routers) if routers is None else list(routers)
        return [s for s in self.load.since(since) if s.router in names and s.done and not s.ok]

    async def other_decider(self, old: str) -> str | None:
        now = await self.decider()
        return now if now not in (None, old) else None

    def tails(self, lines: int = 25) -> str:
        out = []
        for r in self.routers.values():
            out.append(f"--- {r.name} (router.log, last {lines} lines)")
            out += r.log_text().splitlines()[-lines:]
        return "\n".join(out)

    def steps(self) -> list[StepRun]:
        return read_steps(self.runs)

    # -- verdict -----------------------------------------------------------------------

    async def verdict(self) -> Verdict:
        """Stop the load and check everything recorded so far."""
        await self.load.stop()
        history = await etcdview.history(self.http, self.etcd_up())
        answers = [a for b in self.backends.values() for a in read_answers(b.log)]
        audits = [d for r in self.routers.values() for d in read_audit_starts(r.audit)]
        return check(answers, self.load.records, read_steps(self.runs), audits, history, PREFIX, SERVICE)
