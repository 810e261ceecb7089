"""A process standing in for the old active application server: it holds PostgreSQL
sessions, like the real application's connection pool, until they are ended.

    python old_active.py DSN SOURCE_ADDRESS APP_NAME COUNT [--reconnect]

Its connections leave from SOURCE_ADDRESS (e.g. 127.0.0.2): Linux routes the whole
127.0.0.0/8 to the loopback interface, so a socket may bind any of those addresses
before connecting, and PostgreSQL's pg_stat_activity.client_addr shows it. asyncpg has
no option for the local address, so this script wraps the event loop's
``create_connection`` to add ``local_addr`` (a test-only shim; hotspare does not do it).

Prints ``ready PID,PID,...`` (the server-side backend pids) once all sessions are open.
With ``--reconnect`` it reopens a session whenever one is ended (an old active that is
alive and not fenced), printing ``reconnected PID``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import asyncpg


async def main() -> None:
    dsn, source, app, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    reconnect = "--reconnect" in sys.argv[5:]
    loop = asyncio.get_running_loop()
    original = loop.create_connection
    loop.create_connection = functools.partial(original, local_addr=(source, 0))  # type: ignore[method-assign]

    async def connect() -> Any:
        return await asyncpg.connect(dsn, server_settings={"application_name": app})

    conns = [await connect() for _ in range(count)]
    pids = [c.get_server_pid() for c in conns]
    print("ready " + ",".join(map(str, pids)), flush=True)
    while True:
        await asyncio.sleep(0.05)  # the stand-in's own pacing, not a test wait
        for i, c in enumerate(conns):
            if c.is_closed() or not await _alive(c):
                if not reconnect:
                    continue
                try:
                    conns[i] = await connect()
                except Exception as exc:  # any way of being ended mid-connect (asyncpg
                    # raises InternalClientError when the backend dies during start-up)
                    print(f"reconnect failed: {exc!r}", flush=True)
                    continue  # ended again while connecting: try again next round
                print(f"reconnected {conns[i].get_server_pid()}", flush=True)


async def _alive(conn: Any) -> bool:
    try:
        await conn.fetchval("SELECT 1")
        return True
    except Exception:  # ended by the server, whatever asyncpg calls it
        return False


if __name__ == "__main__":
    asyncio.run(main())
