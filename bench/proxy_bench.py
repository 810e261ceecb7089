"""Proxy throughput and latency: hotspare router vs HAProxy in front of the same nginx.

Run:  .venv/bin/python bench/proxy_bench.py [--quick] [--runs N] [--duration S]

Layout (two cores): each proxy is pinned to core 0; nginx (the backend) and wrk (the load)
share core 1. Both proxies keep connections to nginx alive and log nothing. For each body
size (100 bytes, 1 MiB) and each proxy, wrk runs ``--runs`` times at 50 connections; the
table shows the median req/s, p50 and p99, and hotspare's req/s as a share of HAProxy's.
A direct wrk -> nginx row is printed for reference (nginx and wrk share one core there,
so it is not a ceiling for the proxies).

``--ab REF`` also runs the hotspare of git commit REF (checked out into the temp dir,
run by the same .venv with PYTHONPATH pointing at it) as the target ``hs-REF``, in the same
interleaved runs, on the same core: an A/B of a change that is robust to machine noise.

Everything listens on 127.0.0.1 ports picked at start and is stopped at the end, also on
error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import BenchError, Processes, free_port, require_program, sigterm_as_interrupt
from bench.profile_summary import format_profile, summarise
from bench.wrk import WrkError, WrkResult, median_result, run_wrk

PROXY_CPU = 0
LOAD_CPU = 1
CONNECTIONS = 50
BODIES = {"100b": 100, "1mib": 1024 * 1024}
# Minimum hotspare/HAProxy req/s ratios (issue 2).
TARGETS = {"100b": 0.2, "1mib": 0.6}
REPO = Path(__file__).resolve().parent.parent
HOTSPARE = REPO / ".venv" / "bin" / "hotspare"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"


@dataclass(frozen=True, slots=True)
class Ports:
    nginx: int
    haproxy: int
    hotspare: int
    hotspare_admin: int
    base: int = 0  # --ab: the other commit's hotspare
    base_admin: int = 0


def nginx_config(workdir: Path, port: int) -> str:
    tmp = workdir / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    return f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {workdir}/www;
        location = /health {{ return 200 "ok\\n"; }}
    }}
}}
"""


def haproxy_config(ports: Ports) -> str:
    # One thread (it is pinned to one core), keep-alive both ways, no logging at all.
    return f"""\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:{ports.haproxy}
    default_backend be
backend be
    server nginx 127.0.0.1:{ports.nginx}
"""


def hotspare_config(workdir: Path, ports: Ports, listen: int = 0, admin: int = 0, tag: str = "") -> str:
    return f"""\
listen: ["127.0.0.1:{listen or ports.hotspare}"]
admin: {{listen: "127.0.0.1:{admin or ports.hotspare_admin}"}}
state_file: {workdir}/hotspare-state{tag}.json
log: {{access_log: null, level: warning}}
services:
  - name: app
    backends:
      - {{name: nginx, url: "http://127.0.0.1:{ports.nginx}"}}
    health: {{path: /health, interval: 1s, timeout: 1s, rise: 1, fall: 3}}
"""


def check_body(name: str, port: int, path: str, size: int) -> None:
    """One request through ``name`` before measuring: a proxy that answers the wrong
    thing fast must not win the benchmark."""
    url = f"http://127.0.0.1:{port}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except OSError as exc:
        raise BenchError(f"{name}: GET {url} failed: {exc}") from None
    if status != 200 or len(body) != size:
        raise BenchError(f"{name}: GET {url} answered {status} with {len(body)} bytes, expected 200 with {size}")


def checkout(ref: str, dest: Path) -> None:
    """The tree of commit ``ref`` in ``dest`` (git archive: no worktree bookkeeping)."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=False)
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def start_base(procs: Processes, workdir: Path, ports: Ports, ref: str) -> None:
    tree = workdir / "base-tree"
    checkout(ref, tree)
    (workdir / "base.yaml").write_text(hotspare_config(workdir, ports, ports.base, ports.base_admin, "-base"))
    procs.start(
        f"hs-{ref}",
        [sys.executable, "-m", "hotspare", "router", "-c", str(workdir / "base.yaml")],
        port=ports.base,
        cpu=PROXY_CPU,
        env={**os.environ, "PYTHONPATH": str(tree)},
        timeout=30.0,
    )


def start_all(procs: Processes, workdir: Path, ports: Ports, *, with_hotspare: bool) -> None:
    www = workdir / "www"
    www.mkdir()
    for path, size in BODIES.items():
        (www / path).write_bytes(os.urandom(size // 2).hex().encode()[:size].ljust(size, b"x"))
    (workdir / "nginx.conf").write_text(nginx_config(workdir, ports.nginx))
    (workdir / "haproxy.cfg").write_text(haproxy_config(ports))
    (workdir / "hotspare.yaml").write_text(hotspare_config(workdir, ports))
    nginx = require_program("nginx")
    procs.start(
        "nginx",
        [nginx, "-e", str(workdir / "nginx-error.log"), "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
        port=ports.nginx,
        cpu=LOAD_CPU,
    )
    procs.start(
        "haproxy",
        [require_program("haproxy"), "-db", "-f", str(workdir / "haproxy.cfg")],
        port=ports.haproxy,
        cpu=PROXY_CPU,
    )
    if with_hotspare:
        procs.start(
            "hotspare",
            [str(HOTSPARE), "router", "-c", str(workdir / "hotspare.yaml")],
            port=ports.hotspare,
            cpu=PROXY_CPU,
            timeout=30.0,
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11, 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def print_table(
    body: str,
    results: dict[str, WrkResult],
    runs: dict[str, list[WrkResult]],
    cpu_us: dict[str, list[float]],
) -> None:
    print(f"\n== body {body} ({BODIES[body]} bytes), {CONNECTIONS} connections, median of {len(next(iter(runs.values())))} run(s)")
    print(f"{'target':<10} {'req/s':>10} {'MiB/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'non2xx':>7} {'CPU us/req':>10}   req/s per run")
    for name, r in results.items():
        per_run = " ".join(f"{x.requests_per_s:.0f}" for x in runs[name])
        cpu = f"{statistics.median(cpu_us[name]):.1f}" if cpu_us.get(name) else "-"
        print(
            f"{name:<10} {r.requests_per_s:>10.0f} {r.transfer_per_s / 2**20:>9.1f} {fmt_ms(r.p50_s):>8} "
            f"{fmt_ms(r.p99_s):>8} {r.socket_errors:>7} {r.non_2xx_3xx:>7} {cpu:>10}   {per_run}"
        )
    if "hotspare" in results and "haproxy" in results and results["haproxy"].requests_per_s > 0:
        ratio = results["hotspare"].requests_per_s / results["haproxy"].requests_per_s
        target = TARGETS[body]
        verdict = "meets" if ratio >= target else "BELOW"
        print(f"hotspare/HAProxy req/s = {ratio:.2f}  ({verdict} target >= {target})")
        if cpu_us.get("hotspare") and cpu_us.get("haproxy"):
            # CPU per request is far less sensitive to other work on a shared machine
            # than req/s: it is the throughput ratio a dedicated core would give.
            cost = statistics.median(cpu_us["haproxy"]) / statistics.median(cpu_us["hotspare"])
            print(f"HAProxy/hotspare CPU per request = {cost:.2f}  (the req/s ratio if both were CPU-bound on a quiet core)")
    for name, costs in cpu_us.items():
        if name.startswith("hs-") and costs and cpu_us.get("hotspare"):
            ab = statistics.median(cpu_us["hotspare"]) / statistics.median(costs)
            print(f"hotspare/{name} CPU per request = {ab:.2f}  (below 1: this tree is cheaper than {name[3:]})")


def profile_hotspare(procs: Processes, port: int, seconds: float, out_dir: Path) -> None:
    """Sample hotspare with py-spy while wrk loads it, for each body; print where the
    time goes and keep the raw collapsed stacks in ``out_dir``."""
    if not PY_SPY.exists():
        raise BenchError(f"{PY_SPY} not found: .venv/bin/pip install py-spy")
    pid = next(p.pid for p in procs.procs if p.name == "hotspare")
    out_dir.mkdir(parents=True, exist_ok=True)
    for body, size in BODIES.items():
        check_body("hotspare", port, body, size)
        raw = out_dir / f"hotspare-profile-{body}.txt"
        # py-spy shares core 1 with wrk and nginx, so the proxy's core stays its own.
        spy = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CPU), str(PY_SPY), "record", "--pid", str(pid),
             "--duration", str(round(seconds)), "--rate", "250", "--format", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            result = run_wrk(f"http://127.0.0.1:{port}/{body}", connections=CONNECTIONS,
                             duration=seconds + 1, cpu=LOAD_CPU)
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not raw.exists():
            raise BenchError(f"py-spy failed ({spy.returncode}): {err.strip()[-500:]}")
        print(f"\n== hotspare profile, body {body}: {result.requests_per_s:.0f} req/s under "
              f"py-spy (sampling slows it); raw stacks: {raw}")
        print(format_profile(summarise(raw.read_text())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run: 3 s per measurement, 1 run")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10; 3 with --quick)")
    parser.add_argument("--no-hotspare", action="store_true", help="measure HAProxy and nginx only")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct wrk -> nginx row")
    parser.add_argument(
        "--hold", action="store_true",
        help="after measuring, keep everything running until Ctrl-C (to attach py-spy)",
    )
    parser.add_argument(
        "--profile", type=float, metavar="SECONDS",
        help="instead of comparing, sample hotspare with py-spy under load for SECONDS per body",
    )
    parser.add_argument("--ab", metavar="REF", help="also run the hotspare of git commit REF, interleaved")
    parser.add_argument("--profile-out", type=Path, default=Path(tempfile.gettempdir()),
                        help="where --profile keeps the raw collapsed stacks (default: the temp dir)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    if runs < 1 or duration < 1:
        parser.error("--runs and --duration must be >= 1")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; the pinning layout assumes cores 0 and 1", file=sys.stderr)
    with_hotspare = not args.no_hotspare
    if with_hotspare and not HOTSPARE.exists():
        raise BenchError(f"{HOTSPARE} not found: install the project into .venv (./scripts/setup)")
    require_program("wrk")
    require_program("taskset")
    sigterm_as_interrupt()

    ports = Ports(free_port(), free_port(), free_port(), free_port(),
                  *((free_port(), free_port()) if args.ab else (0, 0)))
    targets = {"haproxy": ports.haproxy}
    if with_hotspare:
        targets["hotspare"] = ports.hotspare
    if args.ab:
        targets[f"hs-{args.ab}"] = ports.base
    if not args.no_direct:
        targets["direct"] = ports.nginx

    with tempfile.TemporaryDirectory(prefix="hotspare-proxy-bench-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        start_all(procs, workdir, ports, with_hotspare=with_hotspare)
        if args.ab:
            start_base(procs, workdir, ports, args.ab)
        # The proxies' own processes (single-process, single-thread each).
        pids = {p.name: p.pid for p in procs.procs if p.name in ("haproxy", "hotspare") or p.name.startswith("hs-")}
        if args.profile:
            if not with_hotspare:
                parser.error("--profile needs hotspare")
            profile_hotspare(procs, ports.hotspare, args.profile, args.profile_out)
            return 0
        print(f"nginx :{ports.nginx} (cpu {LOAD_CPU}), haproxy :{ports.haproxy} (cpu {PROXY_CPU})"
              + (f", hotspare :{ports.hotspare} (cpu {PROXY_CPU})" if with_hotspare else "")
              + f"; wrk on cpu {LOAD_CPU}; {runs} run(s) x {duration:.0f}s")
        for body, size in BODIES.items():
            for name, port in targets.items():
                check_body(name, port, body, size)
                # Warm-up: opens the proxy's backend connections, fills caches.
                run_wrk(f"http://127.0.0.1:{port}/{body}", connections=CONNECTIONS, duration=1, cpu=LOAD_CPU)
            per_target: dict[str, list[WrkResult]] = {name: [] for name in targets}
            cpu_us: dict[str, list[float]] = {name: [] for name in pids}
            for _ in range(runs):
                # Interleaved, so a burst of noise from other work on the machine hits
                # every target alike rather than one of them.
                for name, port in targets.items():
                    for proc in procs.procs:
                        proc.check_running()
                    before = cpu_seconds(pids[name]) if name in pids else 0.0
                    result = run_wrk(f"http://127.0.0.1:{port}/{body}", connections=CONNECTIONS,
                                     duration=duration, cpu=LOAD_CPU)
                    per_target[name].append(result)
                    if name in pids and result.requests:
                        cpu_us[name].append(1e6 * (cpu_seconds(pids[name]) - before) / result.requests)
            print_table(body, {n: median_result(rs) for n, rs in per_target.items()}, per_target, cpu_us)
        if args.hold:
            held = ", ".join(f"{p.name}={p.pid}" for p in procs.procs)
            print(f"\nholding (pids: {held}); Ctrl-C to stop", flush=True)
            try:
                procs.procs[-1].popen.wait()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, WrkError) as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("proxy_bench: interrupted; everything stopped", file=sys.stderr)
        sys.exit(130)
