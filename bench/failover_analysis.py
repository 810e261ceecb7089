"""What a failover run did to its clients: a pure function of the request records.

Rules:

1. No I/O, no clock: the load generator records each request (when sent, when done,
   status or error, which backend answered); the backends' post logs say which POSTs
   they executed. :func:`analyse` turns both into one :class:`FailoverReport`.
2. Times are seconds from the start of the load; ``fault_at`` is when the fault was
   injected on the active.
3. Definitions (they are what the benchmark prints):
   - failed: no response, or a status outside 2xx/3xx;
   - switch: the completion of the first success served by the spare;
   - recovery: ordering requests by the time they were sent, the longest tail in which
     every request succeeded on the spare; recovery time is the earliest completion in
     that tail minus ``fault_at`` (``None``: the run never settled on the spare);
   - served by the old active after the switch: responses tagged by the old active for
     requests sent after the switch;
   - executed twice: a POST id found more than once across both backends' logs;
   - failed but executed: a POST the client saw fail although a backend executed it
     (a client retrying it would execute it twice).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["FailoverReport", "PostExecution", "RequestRecord", "analyse", "median_report"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    seq: int
    method: str
    sent: float
    done: float
    status: int | None  # None: no response (error says why)
    backend: str | None = None  # X-Backend of the response
    error: str | None = None
    post_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400

    @property
    def latency(self) -> float:
        return self.done - self.sent

    @property
    def outcome(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "error")


@dataclass(frozen=True, slots=True)
class PostExecution:
    post_id: str
    backend: str


@dataclass(frozen=True, slots=True)
class FailoverReport:
    requests: int
    failed_by_method: dict[str, int]
    # "POST 503": 4, "GET connect-error": 2 ...
    failures_by_outcome: dict[str, int]
    recovery_s: float | None
    switch_at: float | None
    max_latency_s: float
    p99_latency_s: float
    served_by_old_after_switch: int
    executed_twice: int
    failed_but_executed: int
    ok_but_not_executed: int
    duplicate_ids: tuple[str, ...] = field(default=())


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def analyse(
    records: Sequence[RequestRecord],
    executions: Iterable[PostExecution],
    *,
    fault_at: float,
    active: str,
    spare: str,
) -> FailoverReport:
    by_sent = sorted(records, key=lambda r: (r.sent, r.seq))
    failed = [r for r in by_sent if not r.ok]
    failed_by_method = Counter(r.method for r in failed)
    failures_by_outcome = Counter(f"{r.method} {r.outcome}" for r in failed)

    spare_ok = [r.done for r in by_sent if r.ok and r.backend == spare]
    switch_at = min(spare_ok) if spare_ok else None

    tail_start = len(by_sent)
    while tail_start > 0 and by_sent[tail_start - 1].ok and by_sent[tail_start - 1].backend == spare:
        tail_start -= 1
    tail = by_sent[tail_start:]
    recovery = (min(r.done for r in tail) - fault_at) if tail else None

    old_after = (
        sum(1 for r in by_sent if r.backend == active and r.sent > switch_at)
        if switch_at is not None
        else 0
    )

    executed = Counter(e.post_id for e in executions)
    duplicates = tuple(sorted(pid for pid, n in executed.items() if n > 1))
    posts = [r for r in by_sent if r.post_id is not None]
    failed_but_executed = sum(1 for r in posts if not r.ok and executed[r.post_id or ""] > 0)
    ok_not_executed = sum(1 for r in posts if r.ok and executed[r.post_id or ""] == 0)

    latencies = [r.latency for r in by_sent]
    return FailoverReport(
        requests=len(by_sent),
        failed_by_method=dict(sorted(failed_by_method.items())),
        failures_by_outcome=dict(sorted(failures_by_outcome.items())),
        recovery_s=recovery,
        switch_at=switch_at,
        max_latency_s=max(latencies, default=0.0),
        p99_latency_s=_p99(latencies),
        served_by_old_after_switch=old_after,
        executed_twice=len(duplicates),
        failed_but_executed=failed_but_executed,
        ok_but_not_executed=ok_not_executed,
        duplicate_ids=duplicates,
    )


def _median_int(values: Sequence[int]) -> int:
    return int(statistics.median(values)) if values else 0


def median_report(reports: Sequence[FailoverReport]) -> FailoverReport:
    """Each figure's median over runs; a run that never recovered counts as infinitely slow
    (so the median is ``None`` when most runs never recovered)."""
    if not reports:
        raise ValueError("expected at least one report, got none")
    methods = sorted({m for r in reports for m in r.failed_by_method})
    outcomes = sorted({o for r in reports for o in r.failures_by_outcome})
    recoveries = [r.recovery_s if r.recovery_s is not None else float("inf") for r in reports]
    recovery = statistics.median(recoveries)
    switches = [r.switch_at if r.switch_at is not None else float("inf") for r in reports]
    switch = statistics.median(switches)
    return FailoverReport(
        requests=_median_int([r.requests for r in reports]),
        failed_by_method={m: _median_int([r.failed_by_method.get(m, 0) for r in reports]) for m in methods},
        failures_by_outcome={
            o: _median_int([r.failures_by_outcome.get(o, 0) for r in reports]) for o in outcomes
        },
        recovery_s=None if recovery == float("inf") else recovery,
        switch_at=None if switch == float("inf") else switch,
        max_latency_s=statistics.median(r.max_latency_s for r in reports),
        p99_latency_s=statistics.median(r.p99_latency_s for r in reports),
        served_by_old_after_switch=_median_int([r.served_by_old_after_switch for r in reports]),
        executed_twice=_median_int([r.executed_twice for r in reports]),
        failed_but_executed=_median_int([r.failed_but_executed for r in reports]),
        ok_but_not_executed=_median_int([r.ok_but_not_executed for r in reports]),
    )
