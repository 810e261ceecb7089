"""Steady client load through every router at once.

Rules:

1. Open loop: each router gets ``rate`` requests a second whatever happens to earlier
   ones (each request its own task), every ``post_every``-th a small POST with a unique
   id; a frozen or dead router cannot slow the load of the others (one session, one
   connection pool per router).
2. Every request carries ``X-Chaos-Router`` and ``X-Chaos-Req`` (``<router>-<n>``), so
   the backends' logs name who sent it; the answer's ``X-Backend`` and ``X-Seen-Epoch``
   are recorded with the status, or the error when there was no answer.
3. Every request has a deadline (``timeout``), so the load always ends; stopping waits
   for the requests in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping

import aiohttp

from .records import Sent


class Load:
    def __init__(self, targets: Mapping[str, str], rate: float = 50.0, post_every: int = 5,
                 timeout: float = 5.0) -> None:
        self.targets = dict(targets)  # router -> proxy base URL (a restart may change it)
        self.rate = rate
        self.post_every = post_every
        self.timeout = timeout
        self.records: list[Sent] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def since(self, t: float, router: str | None = None) -> list[Sent]:
        return [s for s in self.records if s.sent >= t and (router is None or s.router == router)]

    async def _one(self, session: aiohttp.ClientSession, router: str, n: int) -> None:
        method = "POST" if n % self.post_every == 0 else "GET"
        req = f"{router}-{n}"
        rec = Sent(router, req, method, time.time())
        self.records.append(rec)
        headers = {"X-Chaos-Router": router, "X-Chaos-Req": req}
        base = self.targets[router]
        try:
            if method == "POST":
                ctx = session.post(f"{base}/orders", data=f"order {req}".encode(), headers=headers)
            else:
                ctx = session.get(f"{base}/page/{n}", headers=headers)
            async with ctx as resp:
                await resp.read()
                rec.status = resp.status
                rec.backend = resp.headers.get("X-Backend", "")
                rec.epoch = resp.headers.get("X-Seen-Epoch", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"[:200]
        rec.done = time.time()

    async def _router(self, router: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=int(self.rate * self.timeout) + 10)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session, \
                asyncio.TaskGroup() as tg:
            for n in itertools.count(1):
                if self._stop.is_set():
                    break
                tg.create_task(self._one(session, router, n), name=f"chaos-load-{router}-{n}")
                await asyncio.sleep(1.0 / self.rate)  # pacing of an open-loop load

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for router in self.targets:
                tg.create_task(self._router(router), name=f"chaos-load-{router}")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chaos-load")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
