"""The ``sql`` step on PostgreSQL (the default driver): end the sessions the old active
still holds. SQL Server: :mod:`.mssql`; which one runs: :mod:`.step`.

Contract:

- Connect with ``dsn`` (asyncpg; the role needs ``pg_signal_backend`` or superuser, and
  only a superuser can end a superuser's sessions). The step's own session is
  ``application_name=hotspare-promote`` and never matches itself.
- A session matches when it is a client backend and its ``client_addr`` is the old
  active's address (``match_address``, default on) and/or its ``application_name``
  equals the rendered ``application_name`` template; ``databases`` narrows it further.
  Every value is a bound parameter (``client_addr = $1::inet``), never SQL text.
- Loop: list the matching sessions; none left (and still none ``settle`` later, default
  0: at once) -> **success**; else ``pg_terminate_backend`` each, wait ``interval``,
  list again. ``settle`` catches an old active whose pool reconnects between checks. The count of distinct
  sessions ended is recorded (``sessions_ended``).
- **Failure**: the database cannot be reached or refuses (bad password, no privilege),
  or the old active's address is not an IP address.
- **Timeout**: sessions keep matching until the step's timeout (the old active is
  reconnecting: it is alive and not fenced). The audit record shows how many were
  ended and how many were left at the last check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from promote.attempt import Attempt
from promote.config import SqlOptions
from promote.errors import StepFailed
from promote.redact import Redactor, dsn_password, redact_dsn

from .match import describe_match, sql_match

__all__ = ["FIND_SESSIONS", "TERMINATE", "run_postgres"]

# $1: client address or NULL; $2: application_name or NULL; $3: databases (may be empty).
FIND_SESSIONS = """
SELECT pid FROM pg_stat_activity
 WHERE pid <> pg_backend_pid()
   AND backend_type = 'client backend'
   AND ($1::inet IS NULL OR client_addr = $1::inet)
   AND ($2::text IS NULL OR application_name = $2::text)
   AND (cardinality($3::text[]) = 0 OR datname = ANY($3::text[]))
"""
TERMINATE = "SELECT pid, pg_terminate_backend(pid) AS ended FROM unnest($1::int[]) AS pid"


async def run_postgres(opts: SqlOptions, values: dict[str, str], attempt: Attempt) -> None:
    address, app, databases = sql_match(opts, values)
    attempt.sessions_ended = 0
    conn = await _connect(opts.secret_dsn)
    try:
        await _end_sessions(conn, opts, (address, app, databases), attempt)
    except BaseException:
        conn.terminate()  # no await: this may be a cancellation (the step's timeout)
        raise
    await conn.close()


async def _end_sessions(
    conn: Any, opts: SqlOptions, match: tuple[str | None, str | None, list[str]], attempt: Attempt
) -> None:
    what = describe_match(*match)
    loop = asyncio.get_running_loop()
    ended: set[int] = set()
    clear_since: float | None = None
    while True:
        pids = [r["pid"] for r in await _q(conn, FIND_SESSIONS, *match)]
        if not pids:
            now = loop.time()
            clear_since = now if clear_since is None else clear_since
            attempt.note = f"no session left matching {what}; {len(ended)} ended"
            if now - clear_since >= opts.settle:
                return
        else:
            clear_since = None
            for row in await _q(conn, TERMINATE, pids):
                if row["ended"]:
                    ended.add(row["pid"])
            attempt.sessions_ended = len(ended)
            attempt.note = (
                f"{len(pids)} session(s) matching {what} at the last check; {len(ended)} ended"
            )
        await asyncio.sleep(opts.interval)


async def _connect(dsn: str) -> Any:
    try:
        return await asyncpg.connect(dsn, server_settings={"application_name": "hotspare-promote"})
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The driver's own message may quote the DSN: the password goes from both.
        raise StepFailed(Redactor([dsn, dsn_password(dsn)]).text(f"cannot connect to {redact_dsn(dsn)}: {exc}")) from None


async def _q(conn: Any, query: str, *args: Any) -> list[Any]:
    try:
        return list(await conn.fetch(query, *args))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StepFailed(f"query failed: {exc}") from None
