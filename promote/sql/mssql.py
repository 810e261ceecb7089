"""The ``sql`` step on SQL Server (``driver: mssql``; optional extra ``hotspare[mssql]``).

Contract: the same as PostgreSQL's (see :mod:`.postgres`), with these statements:

- find (the address and program name are ``?`` parameters, never SQL text)::

    SELECT s.session_id
      FROM sys.dm_exec_sessions AS s
      JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id
     WHERE s.session_id <> @@SPID AND s.is_user_process = 1
       AND c.client_net_address = ?          -- match_address
       AND s.program_name = ?                -- application_name
       AND DB_NAME(s.database_id) IN (?, ?)  -- databases

- end: ``KILL <spid>``. KILL takes no parameters, so the spid, which comes from the
  server, is checked to be an integer in SQL Server's session-id range (1..32767)
  before it is written into the statement; anything else fails the step.
- re-check with the find statement until nothing matches or the step times out.

The login needs ``ALTER ANY CONNECTION``. pyodbc is blocking, so each call runs in a
worker thread; a timed-out step abandons the thread's connection (its own query timeout,
``_QUERY_TIMEOUT``, bounds how long the thread lingers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from promote.attempt import Attempt
from promote.config import SqlOptions
from promote.errors import StepFailed
from promote.redact import Redactor, dsn_password

from .match import describe_match, sql_match

__all__ = ["find_statement", "kill_statement", "run_mssql", "validate_spid"]

_QUERY_TIMEOUT = 10  # seconds, per statement (pyodbc Connection.timeout)
_SPID_MAX = 32767


def find_statement(match_address: bool, match_program: bool, databases: int) -> str:
    """The find statement with one ``?`` per bound value, in the order address,
    program name, databases."""
    sql = (
        "SELECT s.session_id FROM sys.dm_exec_sessions AS s "
        "JOIN sys.dm_exec_connections AS c ON c.session_id = s.session_id "
        "WHERE s.session_id <> @@SPID AND s.is_user_process = 1"
    )
    if match_address:
        sql += " AND c.client_net_address = ?"
    if match_program:
        sql += " AND s.program_name = ?"
    if databases:
        sql += " AND DB_NAME(s.database_id) IN (" + ", ".join("?" * databases) + ")"
    return sql


def validate_spid(value: Any) -> int:
    """A session id from the server as a safe int, or ``StepFailed``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StepFailed(f"SQL Server returned a session id that is not an integer: {value!r}")
    if not 1 <= value <= _SPID_MAX:
        raise StepFailed(f"SQL Server returned a session id out of range 1..{_SPID_MAX}: {value}")
    return value


def kill_statement(spid: Any) -> str:
    return f"KILL {validate_spid(spid)}"


async def run_mssql(opts: SqlOptions, values: dict[str, str], attempt: Attempt) -> None:
    try:
        import pyodbc
    except ImportError:
        raise StepFailed(
            "driver mssql needs pyodbc: install the optional extra (pip install 'hotspare[mssql]')"
        ) from None
    address, app, databases = sql_match(opts, values)
    find = find_statement(address is not None, app is not None, len(databases))
    params = [p for p in (address, app) if p is not None] + databases
    what = describe_match(address, app, databases)

    def connect() -> Any:
        conn = pyodbc.connect(opts.secret_dsn, autocommit=True, timeout=_QUERY_TIMEOUT)
        conn.timeout = _QUERY_TIMEOUT
        return conn

    def find_spids(conn: Any) -> list[int]:
        return [validate_spid(row[0]) for row in conn.cursor().execute(find, params).fetchall()]

    def kill(conn: Any, spid: int) -> str | None:
        # A session that ended meanwhile makes KILL fail; the re-check settles it, and a
        # lasting refusal (no permission) shows in the note when the step times out.
        try:
            conn.cursor().execute(kill_statement(spid))
        except pyodbc.Error as exc:
            return str(exc)
        return None

    try:
        conn = await asyncio.to_thread(connect)
    except pyodbc.Error as exc:
        dsn = opts.secret_dsn
        raise StepFailed(Redactor([dsn, dsn_password(dsn)]).text(f"cannot connect to SQL Server: {exc}")) from None
    attempt.sessions_ended = 0
    ended: set[int] = set()
    try:
        while True:
            spids = await asyncio.to_thread(find_spids, conn)
            if not spids:
                attempt.note = f"no session left matching {what}"
                return
            errors = []
            for spid in spids:
                error = await asyncio.to_thread(kill, conn, spid)
                if error is None:
                    ended.add(spid)
                else:
                    errors.append(f"KILL {spid}: {error}")
            attempt.note = f"{len(spids)} session(s) still matching {what} at last check" + (
                f"; last error: {errors[-1]}" if errors else ""
            )
            attempt.sessions_ended = len(ended)
            await asyncio.sleep(opts.interval)
    except pyodbc.Error as exc:
        raise StepFailed(f"SQL Server statement failed: {exc}") from None
    finally:
        conn.close()
