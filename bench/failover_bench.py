"""Failover under load: what clients see when the active backend crashes, hangs or 503s.

Run:  .venv/bin/python bench/failover_bench.py [--quick] [--proxy haproxy|hotspare]...
                                               [--fault crash|hang|503]... [--runs N]

For each proxy and fault kind, ``--runs`` times (default 3): two real backend processes
(bench/failover_backend.py, ``a`` active and ``b`` spare), the proxy in front, and an
open-loop load of 200 req/s for 20 s (80 % GET, 20 % small POST with a unique id). At 5 s
the active gets the fault:

- crash: SIGKILL;
- hang:  SIGSTOP (it is resumed with SIGCONT after the load, so a request it had
         buffered and then executes late shows up as a POST executed twice);
- 503:   switched to answer 503 to everything, /health included.

Printed per run and as medians: failed requests by method (and their outcomes), the
time from the fault to the first success served by the spare with no failure after it,
the largest and p99 latency, requests served by the old active after the switch, POSTs
executed twice and failed POSTs that were executed anyway (see failover_analysis.py for
the exact definitions).

HAProxy is configured as asked for the comparison: ``inter 500ms fall 2``, b as
``backup``, ``option redispatch``, ``retry-on all-retryable-errors``, ``retries 3``.
hotspare runs ``hotspare router -c <generated config>`` with the same probe cadence.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.failover_analysis import (
    FailoverReport,
    PostExecution,
    RequestRecord,
    analyse,
    median_report,
)
from bench.failover_backend import MODE_PATH
from bench.failover_load import Scheduled, run_load
from bench.procs import BenchError, Proc, Processes, free_port, require_program

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
HOTSPARE = REPO / ".venv" / "bin" / "hotspare"
BACKEND_SCRIPT = Path(__file__).resolve().parent / "failover_backend.py"
FAULTS = ("crash", "hang", "503")
PROXIES = ("haproxy", "hotspare")
ADMIN_TOKEN = "bench-admin-token"


@dataclass(frozen=True, slots=True)
class Ports:
    proxy: int
    admin: int
    a: int
    b: int


@dataclass(frozen=True, slots=True)
class RunResult:
    report: FailoverReport
    fault_at: float
    note: str


def haproxy_config(ports: Ports) -> str:
    return f"""\
global
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 5s
    timeout check 500ms
    retries 3
    option redispatch
    retry-on all-retryable-errors
frontend fe
    bind 127.0.0.1:{ports.proxy}
    default_backend be
backend be
    option httpchk GET /health
    server a 127.0.0.1:{ports.a} check inter 500ms fall 2 rise 2
    server b 127.0.0.1:{ports.b} check inter 500ms fall 2 rise 2 backup
"""


def hotspare_config(workdir: Path, ports: Ports) -> str:
    # Same probe cadence as HAProxy's (500 ms, fall 2), same 5 s wait for a response.
    return f"""\
listen: ["127.0.0.1:{ports.proxy}"]
admin: {{listen: "127.0.0.1:{ports.admin}", token: "{ADMIN_TOKEN}"}}
state_file: {workdir}/hotspare-state.json
log: {{access_log: null}}
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:{ports.a}"}}
      - {{name: b, url: "http://127.0.0.1:{ports.b}"}}
    health: {{path: /health, interval: 500ms, timeout: 500ms, rise: 2, fall: 2}}
    timeouts: {{connect: 1s, first_byte: 5s}}
    failover: {{fail_on_status: [503], hold_down: 1m}}
"""


async def _poll(
    check: Callable[[], Awaitable[bool]], limit: float, what: str, *, required: bool = True
) -> bool:
    deadline = time.monotonic() + limit
    while True:
        try:
            if await check():
                return True
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() >= deadline:
            if required:
                raise BenchError(f"timed out after {limit}s waiting for {what}")
            return False
        await asyncio.sleep(0.05)


async def _hotspare_status(session: aiohttp.ClientSession, ports: Ports) -> dict[str, object]:
    async with session.get(f"http://127.0.0.1:{ports.admin}/v1/status") as resp:
        if resp.status != 200:
            raise ValueError(f"/v1/status answered {resp.status}")
        data = await resp.json()
    services = data["services"] if isinstance(data, dict) else data
    service: dict[str, object] = services[0]
    return service


async def wait_ready(proxy: str, ports: Ports) -> str:
    """Until the proxy serves from ``a``, and (hotspare) both backends are probed healthy."""
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def served_by_a() -> bool:
            async with session.get(f"http://127.0.0.1:{ports.proxy}/") as resp:
                return resp.status == 200 and resp.headers.get("X-Backend") == "a"

        await _poll(served_by_a, 20, f"{proxy} to serve GET / from backend a")
        if proxy != "hotspare":
            # HAProxy starts its servers UP; one check round (rise 2 x 500 ms) settles b.
            await asyncio.sleep(1.0)
            return ""

        async def both_healthy() -> bool:
            service = await _hotspare_status(session, ports)
            backends = service["backends"]
            assert isinstance(backends, list)
            return all(b.get("healthy") is True for b in backends)

        if not await _poll(both_healthy, 10, "both backends healthy in /v1/status", required=False):
            return "(could not confirm the spare healthy via /v1/status)"
        return ""


async def final_state(proxy: str, ports: Ports) -> str:
    if proxy != "hotspare":
        return ""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            s = await _hotspare_status(session, ports)
        return f"after: active={s.get('active')} epoch={s.get('epoch')} state={s.get('state')}"
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
        return f"after: /v1/status unavailable ({type(exc).__name__})"


def read_post_log(path: Path) -> list[PostExecution]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append(PostExecution(parts[0], parts[1]))
    return out


async def wait_logs_settled(paths: list[Path], quiet: float = 0.5, limit: float = 5.0) -> None:
    """After a resumed backend works through what it had buffered: until the post logs
    stop growing for ``quiet`` seconds (or ``limit`` seconds in all)."""
    deadline = time.monotonic() + limit
    last = [-1] * len(paths)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size if p.exists() else 0 for p in paths]
        if sizes != last:
            last, stable_since = sizes, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return
        await asyncio.sleep(0.05)


def start_stack(procs: Processes, workdir: Path, proxy: str, ports: Ports) -> dict[str, Proc]:
    started: dict[str, Proc] = {}
    for name, port in (("a", ports.a), ("b", ports.b)):
        started[name] = procs.start(
            f"backend-{name}",
            [str(PYTHON), str(BACKEND_SCRIPT), "--name", name, "--port", str(port),
             "--post-log", str(workdir / f"{name}.posts")],
            port=port,
        )
    if proxy == "haproxy":
        (workdir / "haproxy.cfg").write_text(haproxy_config(ports))
        started["proxy"] = procs.start(
            "haproxy", [require_program("haproxy"), "-db", "-f", str(workdir / "haproxy.cfg")],
            port=ports.proxy,
        )
    else:
        (workdir / "hotspare.yaml").write_text(hotspare_config(workdir, ports))
        started["proxy"] = procs.start(
            "hotspare", [str(HOTSPARE), "router", "-c", str(workdir / "hotspare.yaml")],
            port=ports.proxy, timeout=30,
        )
    return started


async def one_run(
    proxy: str, fault: str, *, rate: float, duration: float, fault_at: float, run_id: str
) -> RunResult:
    # SIGTERM cancels this task (as asyncio.run does for Ctrl-C), so the Processes block
    # below unwinds and stops everything; a KeyboardInterrupt raised from a plain signal
    # handler would land in whichever task happened to run.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    with tempfile.TemporaryDirectory(prefix="hotspare-failover-bench-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        backends = start_stack(procs, workdir, proxy, ports)
        note = await wait_ready(proxy, ports)
        active = backends["a"]

        async def inject() -> None:
            if fault == "crash":
                active.signal(signal.SIGKILL)
            elif fault == "hang":
                active.signal(signal.SIGSTOP)
            else:
                async with aiohttp.ClientSession() as s, s.post(
                    f"http://127.0.0.1:{ports.a}{MODE_PATH}", data=b"503"
                ) as resp:
                    if resp.status != 200:
                        raise BenchError(f"backend a refused the 503 switch: {resp.status}")

        job = Scheduled(fault_at, inject, f"fault-{fault}")
        records: list[RequestRecord] = await run_load(
            f"http://127.0.0.1:{ports.proxy}/app/page", rate=rate, duration=duration,
            run_id=run_id, schedule=[job],
        )
        after = await final_state(proxy, ports)
        code = backends["proxy"].popen.poll()
        if code is not None:
            # The proxy itself died during the run: say so with its last words.
            lines = backends["proxy"].output_tail(4000).splitlines()
            last = " | ".join(line.strip() for line in lines if line.strip())[-600:]
            after = f"{proxy} EXITED with status {code} during the run: {last}"
        logs = [workdir / "a.posts", workdir / "b.posts"]
        if fault == "hang":
            active.signal(signal.SIGCONT)
            await wait_logs_settled(logs)
        executions = [e for p in logs for e in read_post_log(p)]
        report = analyse(records, executions, fault_at=job.done_at or fault_at, active="a", spare="b")
        return RunResult(report, job.done_at or fault_at, " ".join(x for x in (note, after) if x))


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


HEADER = (
    f"{'proxy':<9} {'fault':<6} {'run':>4} {'reqs':>5} {'fail GET':>8} {'fail POST':>9} "
    f"{'recover s':>9} {'max lat s':>9} {'p99 s':>6} {'old>switch':>10} {'POST x2':>7} {'failPOST exec':>13}"
)


def row(proxy: str, fault: str, label: str, r: FailoverReport) -> str:
    return (
        f"{proxy:<9} {fault:<6} {label:>4} {r.requests:>5} {r.failed_by_method.get('GET', 0):>8} "
        f"{r.failed_by_method.get('POST', 0):>9} {fmt_s(r.recovery_s):>9} {r.max_latency_s:>9.2f} "
        f"{r.p99_latency_s:>6.2f} {r.served_by_old_after_switch:>10} {r.executed_twice:>7} "
        f"{r.failed_but_executed:>13}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--proxy", action="append", choices=PROXIES, help="default: both")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="default: all three")
    parser.add_argument("--quick", action="store_true", help="1 run of 10 s, fault at 3 s")
    parser.add_argument("--runs", type=int, help="runs per proxy and fault (default 3)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (200)")
    parser.add_argument("--duration", type=float, help="seconds of load (20)")
    parser.add_argument("--fault-at", type=float, help="seconds into the load (5)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    duration = args.duration or (10.0 if args.quick else 20.0)
    fault_at = args.fault_at or (3.0 if args.quick else 5.0)
    if runs < 1 or not 0 < fault_at < duration or args.rate <= 0:
        parser.error("expected --runs >= 1, 0 < --fault-at < --duration and --rate > 0")
    proxies = args.proxy or list(PROXIES)
    faults = args.fault or list(FAULTS)
    if "hotspare" in proxies and not HOTSPARE.exists():
        raise BenchError(f"{HOTSPARE} not found: install the project into .venv (./scripts/setup)")
    if "haproxy" in proxies:
        require_program("haproxy")
    print(f"{args.rate:.0f} req/s for {duration:.0f} s (20 % POST), fault on the active at {fault_at:.0f} s, "
          f"{runs} run(s) each; times in seconds from the fault")
    print(HEADER)
    medians: list[str] = []
    details: dict[str, object] = {}
    for proxy in proxies:
        for fault in faults:
            reports: list[FailoverReport] = []
            for i in range(runs):
                try:
                    result = asyncio.run(one_run(
                        proxy, fault, rate=args.rate, duration=duration, fault_at=fault_at,
                        run_id=f"{proxy}-{fault}-{i}",
                    ))
                except BenchError as exc:
                    print(f"{proxy:<9} {fault:<6} {i + 1:>4} could not run: {exc}", flush=True)
                    continue
                reports.append(result.report)
                print(row(proxy, fault, str(i + 1), result.report), flush=True)
                outcomes = ", ".join(f"{k}: {v}" for k, v in result.report.failures_by_outcome.items())
                extra = [x for x in (outcomes and f"failures {outcomes}", result.note) if x]
                if result.report.ok_but_not_executed:
                    extra.append(f"{result.report.ok_but_not_executed} POST(s) answered OK but never executed")
                if extra:
                    print(f"{'':<21}" + "; ".join(extra), flush=True)
                details[f"{proxy}/{fault}/{i + 1}"] = {
                    "failures": result.report.failures_by_outcome,
                    "duplicate_post_ids": list(result.report.duplicate_ids),
                }
            if reports:
                medians.append(row(proxy, fault, "med", median_report(reports)))
    print(f"\nmedians over {runs} run(s) (each column's median on its own):")
    print(HEADER)
    for line in medians:
        print(line)
    dupes = {k: v["duplicate_post_ids"] for k, v in details.items()
             if isinstance(v, dict) and v["duplicate_post_ids"]}
    if dupes:
        print("\nPOSTs executed twice (first ids of each run):")
        for key, ids in dupes.items():
            assert isinstance(ids, list)
            print(f"  {key}: {len(ids)}: {', '.join(ids[:4])}{' ...' if len(ids) > 4 else ''}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"failover_bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("failover_bench: interrupted; everything stopped", file=sys.stderr)
        sys.exit(130)
