"""wrk report parsing (pure: fed wrk's text as captured from wrk 4.x)."""

from __future__ import annotations

import pytest

from bench.wrk import WrkError, WrkResult, median_result, parse_wrk

REPORT = """\
Running 1s test @ http://127.0.0.1:18777/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.85ms  274.07us   3.65ms   72.59%
    Req/Sec     2.21k    55.07     2.26k    90.91%
  Latency Distribution
     50%  833.00us
     75%    1.00ms
     90%    1.19ms
     99%    1.66s
  2420 requests in 1.10s, 3.58MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 7
Requests/sec:   2200.09
Transfer/sec:      3.25MB
"""


def test_parses_every_figure() -> None:
    r = parse_wrk(REPORT)
    assert r.requests_per_s == pytest.approx(2200.09)
    assert r.p50_s == pytest.approx(833e-6)
    assert r.p99_s == pytest.approx(1.66)
    assert r.requests == 2420
    assert r.transfer_per_s == pytest.approx(3.25 * 2**20)
    assert r.socket_errors == 10
    assert r.non_2xx_3xx == 7


def test_clean_report_has_no_errors() -> None:
    text = "\n".join(
        line for line in REPORT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    r = parse_wrk(text)
    assert (r.socket_errors, r.non_2xx_3xx) == (0, 0)


def test_report_without_latency_distribution_names_the_flag() -> None:
    text = "\n".join(line for line in REPORT.splitlines() if "%  " not in line)
    with pytest.raises(WrkError, match="--latency"):
        parse_wrk(text)


def test_median_takes_each_figure_and_worst_errors() -> None:
    runs = [
        WrkResult(100.0, 0.001, 0.010, 1000, 10.0, 0, 0),
        WrkResult(300.0, 0.003, 0.005, 3000, 30.0, 2, 0),
        WrkResult(200.0, 0.002, 0.020, 2000, 20.0, 0, 1),
    ]
    m = median_result(runs)
    assert (m.requests_per_s, m.p50_s, m.p99_s, m.requests) == (200.0, 0.002, 0.010, 2000)
    assert (m.socket_errors, m.non_2xx_3xx) == (2, 1)
    with pytest.raises(ValueError, match="at least one"):
        median_result([])
