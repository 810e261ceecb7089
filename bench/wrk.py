"""Running wrk and reading its report: requests/s, latency percentiles, errors.

The parser is a pure function of wrk's text so it is tested without running wrk.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["WrkError", "WrkResult", "median_result", "parse_wrk", "run_wrk"]

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class WrkError(Exception):
    """wrk failed, or printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p50_s: float
    p99_s: float
    requests: int
    transfer_per_s: float  # bytes
    socket_errors: int  # connect + read + write + timeout
    non_2xx_3xx: int


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise WrkError(f"expected a wrk duration like '1.23ms', got {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not m:
        raise WrkError(f"expected a wrk size like '1.23MB', got {text!r}")
    return float(m.group(1)) * _SIZE_UNITS[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Read the report ``wrk --latency`` prints."""

    def find(pattern: str, what: str) -> re.Match[str]:
        m = re.search(pattern, text, re.MULTILINE)
        if m is None:
            raise WrkError(f"wrk output has no {what} line:\n{text.strip()[-1500:]}")
        return m

    rps = float(find(r"^Requests/sec:\s+([\d.]+)", "'Requests/sec:'").group(1))
    p50 = _seconds(find(r"^\s+50(?:\.000)?%\s+(\S+)", "50% latency (run with --latency)").group(1))
    p99 = _seconds(find(r"^\s+99(?:\.000)?%\s+(\S+)", "99% latency (run with --latency)").group(1))
    requests = int(find(r"^\s+(\d+) requests in", "'N requests in'").group(1))
    transfer = _bytes(find(r"^Transfer/sec:\s+(\S+)", "'Transfer/sec:'").group(1))
    errors = 0
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if m:
        errors = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_ok = int(m.group(1)) if m else 0
    return WrkResult(rps, p50, p99, requests, transfer, errors, non_ok)


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    cpu: int | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    argv: list[str] = []
    if cpu is not None:
        argv += ["taskset", "-c", str(cpu)]
    argv += [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def median_result(results: Sequence[WrkResult]) -> WrkResult:
    """Each figure's median over the runs (figures taken independently)."""
    if not results:
        raise ValueError("expected at least one wrk result, got none")
    return WrkResult(
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_s=statistics.median(r.p50_s for r in results),
        p99_s=statistics.median(r.p99_s for r in results),
        requests=int(statistics.median(r.requests for r in results)),
        transfer_per_s=statistics.median(r.transfer_per_s for r in results),
        socket_errors=max(r.socket_errors for r in results),
        non_2xx_3xx=max(r.non_2xx_3xx for r in results),
    )
