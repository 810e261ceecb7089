"""A stand-in application server for the fencing end-to-end test (old active or spare).

    python fencing_app.py --name NAME --dsn DSN --source ADDR --sessions N --pidfile FILE
                          [--reconnect] [--record FILE --watch-pid PID --watch-address ADDR]

Like the real application it holds a pool of PostgreSQL sessions (``N`` connections,
``application_name=library@NAME``) that leave from ``--source`` (e.g. 127.0.0.2: Linux
routes the whole 127.0.0.0/8 to the loopback interface, so a socket may bind any of
those addresses before connecting; asyncpg has no option for the local address, so the
loop's ``create_connection`` is wrapped to add ``local_addr``, a test-only shim). With
``--reconnect`` it reopens any session the database ends, like a real pool. It
writes its pid to ``--pidfile`` (what the fencing step kills) and serves HTTP on
127.0.0.1 at a port picked by the kernel:

- ``GET /health``: ``ok`` (the router's probes);
- anything else is a proxied request: answered with ``{"backend": NAME, "epoch": ...}``.
  With ``--record``, the FIRST proxied request is examined before it is answered: at
  that moment, is ``--watch-pid`` (the old active) dead, and how many sessions does
  ``--watch-address`` still hold in pg_stat_activity? The findings, with the arrival
  time (``time.monotonic()`` is one clock for every process of the machine, and
  ``time.time()``), go to the record file (written whole, then renamed into place).

Prints one JSON line ``{"port": P, "pid": PID, "backend_pids": [...]}`` once the
sessions are open and the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

SESSIONS_FROM = """
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND client_addr = $1::inet
"""


def process_state(pid: int) -> str:
    """'gone', 'zombie' (killed, not yet reaped by its parent: runs no code, holds no
    socket) or 'alive (state X)'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return "zombie"
    return f"alive (state {state})"


def write_whole(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: a reader sees all of it or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class App:
    def __init__(self, args: argparse.Namespace, pool: list[Any]) -> None:
        self.args = args
        self.pool = pool
        self.first_seen = False
        self.lock = asyncio.Lock()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def proxied(self, request: web.Request) -> web.Response:
        arrived_mono, arrived_wall = time.monotonic(), time.time()
        epoch = request.headers.get("X-Hotspare-Epoch")
        if self.args.record:
            async with self.lock:
                if not self.first_seen:
                    self.first_seen = True
                    await self._record(request, epoch, arrived_mono, arrived_wall)
        return web.json_response({"backend": self.args.name, "epoch": epoch})

    async def _record(
        self, request: web.Request, epoch: str | None, mono: float, wall: float
    ) -> None:
        a = self.args
        doc: dict[str, Any] = {
            "path": request.path_qs,
            "epoch": epoch,
            "arrived_monotonic": mono,
            "arrived_wall": wall,
            "old_process": process_state(a.watch_pid) if a.watch_pid else None,
        }
        if a.watch_address:
            doc["old_sessions"] = int(await self.pool[0].fetchval(SESSIONS_FROM, a.watch_address))
        write_whole(Path(a.record), json.dumps(doc))


async def keep_pool_open(pool: list[Any], connect: Callable[[], Awaitable[Any]]) -> None:
    """``--reconnect``: like a real application's pool, reopen every session the
    database ends, within about 50 ms (an old active that is alive and not fenced)."""
    while True:
        await asyncio.sleep(0.05)  # the pool's own pacing, not a test waiting
        for i, conn in enumerate(pool):
            try:
                if not conn.is_closed():
                    await conn.fetchval("SELECT 1")
                    continue
            except Exception:  # ended by the server, whatever asyncpg calls it
                pass
            try:
                pool[i] = await connect()
            except Exception as exc:  # ended again while connecting: next round
                print(f"reconnect failed: {exc!r}", file=sys.stderr, flush=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--record")
    p.add_argument("--watch-pid", type=int)
    p.add_argument("--watch-address")
    p.add_argument("--reconnect", action="store_true")
    args = p.parse_args()

    loop = asyncio.get_running_loop()
    original = loop.create_connection
    loop.create_connection = functools.partial(original, local_addr=(args.source, 0))  # type: ignore[method-assign]

    async def connect() -> Any:
        return await asyncpg.connect(
            args.dsn, server_settings={"application_name": f"library@{args.name}"}
        )

    pool = [await connect() for _ in range(args.sessions)]
    app_state = App(args, pool)
    app = web.Application()
    app.router.add_get("/health", app_state.health)
    app.router.add_route("*", "/{tail:.*}", app_state.proxied)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    write_whole(Path(args.pidfile), f"{os.getpid()}\n")
    print(
        json.dumps(
            {"port": port, "pid": os.getpid(), "backend_pids": [c.get_server_pid() for c in pool]}
        ),
        flush=True,
    )
    if args.reconnect:
        await keep_pool_open(pool, connect)  # until killed
    await asyncio.Event().wait()  # serve until killed


if __name__ == "__main__":
    asyncio.run(main())
