"""SQL Server support, tested as far as possible WITHOUT a server (none can run here):
statement building, spid validation, and the clear failure when pyodbc is missing.
The statements themselves are documented in promote/sql/mssql.py."""

from __future__ import annotations

import importlib.util

import pytest

from promote.errors import StepFailed
from promote.pipeline import Pipeline
from promote.sql.mssql import find_statement, kill_statement, validate_spid

from .conftest import make_ctx, make_step


def test_find_statement_binds_every_value() -> None:
    sql = find_statement(True, True, 2)
    assert "c.client_net_address = ?" in sql and "s.program_name = ?" in sql
    assert "DB_NAME(s.database_id) IN (?, ?)" in sql
    assert "s.session_id <> @@SPID" in sql and sql.count("?") == 4
    assert "client_net_address" not in find_statement(False, True, 0)


@pytest.mark.parametrize("spid", [1, 55, 32767])
def test_kill_statement_for_valid_spids(spid: int) -> None:
    assert kill_statement(spid) == f"KILL {spid}"


@pytest.mark.parametrize("bad", ["55", "55; DROP TABLE x", 55.0, True, None, 0, -1, 32768])
def test_spid_must_be_an_integer_in_range(bad: object) -> None:
    with pytest.raises(StepFailed, match="session id"):
        validate_spid(bad)


@pytest.mark.skipif(
    importlib.util.find_spec("pyodbc") is not None, reason="pyodbc is installed here"
)
async def test_without_pyodbc_the_step_fails_saying_what_to_install() -> None:
    step = make_step(name="kill", sql={"driver": "mssql", "dsn": "DRIVER={x};SERVER=127.0.0.1"})
    res = await Pipeline([step], fence_failure="hold", audit=None).run(make_ctx())
    assert res.steps[0].status == "failed"
    assert "hotspare[mssql]" in res.steps[0].detail
