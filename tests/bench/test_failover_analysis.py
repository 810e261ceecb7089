"""Failover run analysis: pure, fed hand-written request records and post logs."""

from __future__ import annotations

import pytest

from bench.failover_analysis import (
    FailoverReport,
    PostExecution,
    RequestRecord,
    analyse,
    median_report,
)


def rec(
    seq: int, sent: float, done: float, status: int | None, backend: str | None,
    method: str = "GET", error: str | None = None,
) -> RequestRecord:
    post_id = f"p{seq}" if method == "POST" else None
    return RequestRecord(seq, method, sent, done, status, backend, error, post_id)


def test_clean_failover() -> None:
    records = [
        rec(0, 4.0, 4.01, 200, "a"),
        rec(1, 4.5, 4.51, 200, "a", "POST"),
        rec(2, 5.1, 5.2, None, None, error="connect-error"),
        rec(3, 5.2, 5.9, 503, None, "POST"),
        rec(4, 5.3, 6.3, 200, "b"),  # held, then served by the spare
        rec(5, 6.0, 6.1, 200, "b", "POST"),
        rec(6, 7.0, 7.01, 200, "b"),
    ]
    executions = [PostExecution("p1", "a"), PostExecution("p5", "b")]
    r = analyse(records, executions, fault_at=5.0, active="a", spare="b")
    assert r.requests == 7
    assert r.failed_by_method == {"GET": 1, "POST": 1}
    assert r.failures_by_outcome == {"GET connect-error": 1, "POST 503": 1}
    # Tail of successes on b starts at seq 4; its earliest completion is seq 5 at 6.1.
    assert r.recovery_s == pytest.approx(1.1)
    assert r.switch_at == pytest.approx(6.1)
    assert r.max_latency_s == pytest.approx(1.0)
    assert r.served_by_old_after_switch == 0
    assert (r.executed_twice, r.failed_but_executed, r.ok_but_not_executed) == (0, 0, 0)


def test_failure_after_spare_success_moves_recovery_later() -> None:
    records = [
        rec(0, 5.1, 5.2, 200, "b"),
        rec(1, 5.2, 5.3, 502, None),
        rec(2, 5.4, 5.45, 200, "b"),
    ]
    r = analyse(records, [], fault_at=5.0, active="a", spare="b")
    assert r.recovery_s == pytest.approx(0.45)
    assert r.switch_at == pytest.approx(5.2)


def test_never_recovered_and_old_active_after_switch() -> None:
    records = [
        rec(0, 5.1, 5.2, 200, "b"),
        rec(1, 5.3, 5.4, 200, "a"),  # flapped back to the old active
    ]
    r = analyse(records, [], fault_at=5.0, active="a", spare="b")
    assert r.recovery_s is None
    assert r.served_by_old_after_switch == 1


def test_duplicate_and_lost_posts() -> None:
    records = [
        rec(1, 4.0, 9.0, 200, "b", "POST"),  # replayed after a executed it
        rec(2, 4.1, 9.0, 504, None, "POST"),  # failed, yet a executed it
        rec(3, 6.0, 6.1, 200, "b", "POST"),  # answered but never executed
    ]
    executions = [PostExecution("p1", "a"), PostExecution("p1", "b"), PostExecution("p2", "a")]
    r = analyse(records, executions, fault_at=5.0, active="a", spare="b")
    assert r.executed_twice == 1
    assert r.duplicate_ids == ("p1",)
    assert r.failed_but_executed == 1
    assert r.ok_but_not_executed == 1


def report(recovery: float | None, failed_get: int) -> FailoverReport:
    return FailoverReport(
        requests=10, failed_by_method={"GET": failed_get} if failed_get else {},
        failures_by_outcome={}, recovery_s=recovery, switch_at=recovery,
        max_latency_s=1.0, p99_latency_s=0.5, served_by_old_after_switch=0,
        executed_twice=0, failed_but_executed=0, ok_but_not_executed=0,
    )


def test_median_counts_never_as_slowest() -> None:
    assert median_report([report(1.0, 3), report(None, 0), report(2.0, 5)]).recovery_s == 2.0
    m = median_report([report(None, 3), report(None, 0), report(2.0, 5)])
    assert m.recovery_s is None
    assert m.failed_by_method == {"GET": 3}
    with pytest.raises(ValueError, match="at least one"):
        median_report([])
