"""Fixtures of the promotion tests: a real PostgreSQL, steps and contexts.

The PostgreSQL server is real: ``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/*/bin
(./scripts/system-deps installs the ``postgresql`` package on a fresh machine), a data
directory in a temporary folder, listening on 127.0.0.1 only at a port picked here,
run as the ``postgres`` user through ``runuser`` when the tests run as root (postgres
refuses to run as root). Password authentication (scram) for 127.0.0.0/8, so the
``sql`` step's DSN handling is exercised for real. One server per test session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from hotspare.causes import Cause
from promote.config import Step
from promote.pipeline import PromotionContext

from .pgserver import Postgres, PostgresUnavailable, shared_postgres

__all__ = ["Postgres", "make_ctx", "make_step"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL for the whole test session, shared with tests/e2e (see
    pgserver.py ``shared_postgres``)."""
    with contextlib.ExitStack() as stack:
        try:
            pg = stack.enter_context(shared_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))  # printed in the -ra summary with its reason
        yield pg


def make_step(**kw: Any) -> Step:
    """A Step validated the way the config loader does."""
    kw.setdefault("name", "s")
    return Step.model_validate(kw)


def make_ctx(**kw: Any) -> PromotionContext:
    base: dict[str, Any] = dict(
        service="app",
        old_name="a",
        old_url="http://127.0.0.1:8001",
        old_address="127.0.0.2",
        old_agent=None,
        new_name="b",
        new_url="http://127.0.0.1:8002",
        new_agent=None,
        new_health_url="http://127.0.0.1:8002/health",
        epoch=7,
        cause=Cause.PROBE_FAILED,
        trigger="failover",
    )
    base.update(kw)
    return PromotionContext(**base)
