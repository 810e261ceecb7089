"""The ``sql`` step: end the database sessions the old active still holds, with the
driver the step names (PostgreSQL by default; SQL Server with the ``mssql`` extra)."""

from __future__ import annotations

from promote.attempt import Attempt, Runtime
from promote.config import Step

from .postgres import run_postgres

__all__ = ["run_sql"]


async def run_sql(step: Step, rt: Runtime, attempt: Attempt) -> None:
    opts = step.sql
    assert opts is not None
    values = dict(rt.values)
    if opts.driver == "mssql":
        from .mssql import run_mssql  # optional extra: pyodbc

        await run_mssql(opts, values, attempt)
        return
    await run_postgres(opts, values, attempt)
