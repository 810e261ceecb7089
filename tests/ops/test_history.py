"""The status page's history: registry readings, p99 from buckets, deltas per interval and
failover marks (router/admin/history.py), without sockets or clocks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hotspare.causes import Cause
from router.admin.history import History, Reading, quantile, read_registry
from router.failover.feed import HealthChanged, StateChanged

BUCKETS = (0.01, 0.1, 1.0)


class Registry:
    """The three metric families the sampler reads, under their real names."""

    def __init__(self) -> None:
        self.r = CollectorRegistry()
        self.requests = Counter("hotspare_requests_total", "", ["service", "backend", "method", "code"], registry=self.r)
        self.duration = Histogram("hotspare_request_duration_seconds", "", ["service", "backend"],
                                  buckets=BUCKETS, registry=self.r)
        self.lag = Gauge("hotspare_replication_lag_seconds", "", ["service", "root"], registry=self.r)

    def serve(self, backend: str, n: int, seconds: float, code: str = "2xx", method: str = "GET") -> None:
        self.requests.labels("app", backend, method, code).inc(n)
        for _ in range(n):
            self.duration.labels("app", backend).observe(seconds)


def test_reading_sums_methods_counts_5xx_and_groups_buckets() -> None:
    reg = Registry()
    reg.serve("a", 3, 0.05)
    reg.serve("a", 2, 0.05, method="POST")
    reg.serve("a", 1, 0.5, code="5xx")
    reg.lag.labels("app", "jobs").set(1.5)
    r = read_registry(reg.r)
    assert r.requests == {("app", "a"): 6.0}
    assert r.errors == {("app", "a"): 1.0}
    assert r.buckets[("app", "a")] == ((0.01, 0.0), (0.1, 5.0), (1.0, 6.0), (float("inf"), 6.0))
    assert r.lag == {("app", "jobs"): 1.5}


def test_quantile_interpolates_inside_its_bucket_like_prometheus() -> None:
    buckets = ((0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0))
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 49 / 50)
    assert quantile(0.99, ((0.1, 0.0), (float("inf"), 4.0))) == 0.1  # in +Inf: the largest bound
    assert quantile(0.99, ((0.1, 0.0), (float("inf"), 0.0))) is None
    assert quantile(0.99, ()) is None


def test_points_are_deltas_after_a_baseline_and_unknown_lag_is_null() -> None:
    reg, h = Registry(), History(interval=5.0, points=3)
    reg.serve("a", 100, 0.05)  # before the sampler: other tests' or earlier counts
    h.add(1000.0, read_registry(reg.r), {"app": ["a", "b"]}, ["jobs"])
    assert h.view(1000.0)["services"] == []  # the first sample is only the baseline
    reg.serve("a", 10, 0.05)
    reg.serve("a", 2, 0.5, code="5xx")
    reg.lag.labels("app", "jobs").set(0.25)
    h.add(1005.0, read_registry(reg.r), {"app": ["a", "b"]}, ["jobs"])
    (svc,) = h.view(1005.0)["services"]
    (p,) = svc["points"]
    assert (svc["backends"], svc["roots"]) == (["a", "b"], ["jobs"])
    assert (p["at"], p["seconds"]) == (1005.0, 5.0)
    assert p["requests"] == {"a": 12, "b": 0} and p["errors"] == {"a": 2, "b": 0}
    assert p["p99_ms"]["a"] == pytest.approx(1000 * (0.1 + 0.9 * (0.99 * 12 - 10) / 2))
    assert p["p99_ms"]["b"] is None  # no request: no latency, not 0
    assert p["lag_seconds"] == {"jobs": 0.25}
    reg.lag.remove("app", "jobs")  # the agent died: the gauge has no series
    reg.requests.labels("app", "none", "GET", "5xx").inc(4)  # the router answered itself
    h.add(1010.0, read_registry(reg.r), {"app": ["a", "b"]}, ["jobs"])
    p = h.view(1010.0)["services"][0]["points"][-1]
    assert p["lag_seconds"] == {"jobs": None}
    assert p["requests"] == {"a": 0, "b": 0, "none": 4} and p["errors"]["none"] == 4


def test_ring_is_bounded_and_a_removed_series_counts_from_zero() -> None:
    h = History(interval=1.0, points=3)
    for i in range(6):
        h.add(float(i), Reading(requests={("app", "a"): 10.0 * i}), {"app": ["a"]}, [])
    points = h.view(5.0)["services"][0]["points"]
    assert [p["at"] for p in points] == [3.0, 4.0, 5.0]
    assert [p["requests"]["a"] for p in points] == [10, 10, 10]
    h.add(6.0, Reading(requests={("app", "a"): 3.0}), {"app": ["a"]}, [])
    assert h.view(6.0)["services"][0]["points"][-1]["requests"]["a"] == 3
    h.add(7.0, Reading(), {}, [])  # the service was removed by a reload
    assert h.view(7.0)["services"] == []


def _state(at: float, new: str, cause: Cause, service: str = "app") -> StateChanged:
    return StateChanged(at=at, service=service, message=f"-> {new}", old="active", new=new,
                        active="a", epoch=1, cause=cause)


def test_marks_are_failovers_switchovers_and_degradations_inside_the_window() -> None:
    h = History(interval=1.0, points=10)
    h.add(0.0, Reading(), {"app": ["a"]}, [])
    h.add(1.0, Reading(), {"app": ["a"]}, [])
    h.mark(_state(2.0, "promoting", Cause.TRAFFIC_ERRORS))
    h.mark(_state(3.0, "active", Cause.PROMOTED))  # the end of it: not a second mark
    h.mark(_state(4.0, "promoting", Cause.ADMIN))
    h.mark(_state(5.0, "degraded", Cause.SPARE_UNHEALTHY))
    h.mark(HealthChanged(at=5.5, service="app", message="b DOWN", backend="b", old="up", new="down",
                         cause=Cause.PROBE_FAILED))
    h.mark(_state(6.0, "promoting", Cause.ADMIN, service="other"))
    marks = h.view(10.0)["services"][0]["marks"]
    assert [(m["at"], m["kind"]) for m in marks] == [(2.0, "failover"), (4.0, "switchover"), (5.0, "degraded")]
    assert marks[0] == {"at": 2.0, "kind": "failover", "service": "app", "message": "-> promoting",
                        "active": "a", "epoch": 1}
    assert [m["kind"] for m in h.view(14.5)["services"][0]["marks"]] == ["degraded"]  # window: 10 s
