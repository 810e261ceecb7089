"""The cluster bench's analysis on synthetic records: follow lag per failover (the last
router to switch, impaired routers left out, silent ones reported), percentiles, and the
routers' histogram read back from /metrics text."""

from __future__ import annotations

from bench.cluster_bench import follow_lags, histogram_quantiles, outside_windows, pct
from tests.cluster.chaos.records import Answer, Sent


def ans(t: float, router: str, epoch: int) -> Answer:
    return Answer(t, "a", str(epoch), router, f"{router}-x", "GET")


def test_percentiles_are_nearest_rank() -> None:
    values = [0.1 * i for i in range(1, 11)]
    assert pct(values, 0.5) == 0.5
    assert pct(values, 0.99) == 1.0
    assert pct([3.0], 0.99) == 3.0
    assert pct([], 0.5) is None


def test_lag_is_the_last_routers_switch_and_skips_impaired_routers() -> None:
    routed = [(0, "a", 1.0), (1, "b", 10.0), (2, "a", 20.0)]
    answers = [ans(9.9, "r1", 0), ans(10.05, "r1", 1), ans(10.2, "r2", 1), ans(10.4, "r3", 0),
               ans(10.6, "r3", 1), ans(20.1, "r1", 2), ans(20.3, "r2", 2), ans(25.0, "r3", 2)]
    lags = follow_lags(routed, answers, ["r1", "r2", "r3"], impaired=[("r3", 18.0, 24.0)])
    assert [(e, round(lag, 3), r) for e, lag, r in lags.per_failover] == [(1, 0.6, "r3"), (2, 0.3, "r2")]
    assert sorted(round(x, 3) for x in lags.samples) == [0.05, 0.1, 0.2, 0.3, 0.6]
    assert lags.missing == []


def test_a_router_that_never_switches_is_reported() -> None:
    lags = follow_lags([(0, "a", 1.0), (1, "b", 10.0)], [ans(10.1, "r1", 1), ans(11.0, "r2", 0)], ["r1", "r2"], [])
    assert lags.missing == ["r2 never answered at epoch 1 within 15s"]
    assert [(e, r) for e, _, r in lags.per_failover] == [(1, "r1")]


def test_histogram_quantiles_sum_routers() -> None:
    one = ('hotspare_cluster_follow_lag_seconds_bucket{le="0.05"} 8\n'
           'hotspare_cluster_follow_lag_seconds_bucket{le="0.5"} 9\n'
           'hotspare_cluster_follow_lag_seconds_bucket{le="+Inf"} 10\n')
    two = one.replace(" 8\n", " 10\n").replace(" 9\n", " 10\n")
    assert histogram_quantiles([one, two], "hotspare_cluster_follow_lag_seconds") == (20, 0.05, float("inf"))
    assert histogram_quantiles(["nothing"], "hotspare_cluster_follow_lag_seconds") == (0, None, None)


def test_failures_outside_fault_windows() -> None:
    recs = [Sent("r1", "r1-1", "GET", 5.0, 5.1, 502), Sent("r1", "r1-2", "GET", 12.0, 12.1, None, error="x"),
            Sent("r1", "r1-3", "GET", 13.0, 13.1, 200), Sent("r1", "r1-4", "GET", 14.0, 0.0)]
    assert [s.req for s in outside_windows(recs, [("active_kill", 4.0, 10.0)])] == ["r1-2"]
