"""Replication benchmark: hotspare agents vs rsync (daemon over TCP) vs lsyncd, in one run.

Tree: 20,000 small index files (1-8 KiB, 100 folders) plus 40 job files of 5..200 MiB
(``--scale 0.1`` for a quick run: a tenth of the files and sizes). For each tool, on a
fresh replica:

- initial sync: time until the replica matches the source;
- incremental: 50 index files rewritten, time until the replica matches again
  (rsync: one more run; hotspare and lsyncd: their watchers);
- lag: a small file rewritten every 100 ms for ``--lag-seconds``; a reader polls the
  replica every 5 ms and notes when each version first shows; p50/p99 of those delays
  (rsync: run back to back in a loop, the best a cron-less rsync can do);
- CPU seconds of every process involved (agents, rsync client and daemon, lsyncd and
  its rsync children), from /proc and wait4.

Everything runs on 127.0.0.1; the tools run one after another, not at once.
Usage: .venv/bin/python bench/replication_bench.py [--scale 0.1] [--lag-seconds 20] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

TOKEN = "bench-token"
HZ = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """utime+stime+cutime+cstime of a live process, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / HZ


def free_port() -> int:
    # rsync and the agents take a port number on the command line; a tiny race is
    # acceptable in a benchmark (tests bind port 0 instead).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tree(src: Path, scale: float) -> None:
    rnd = os.urandom(8 * 1024 * 1024)
    n_small = int(20000 * scale)
    for i in range(n_small):
        d = src / "index" / f"part{i % 100:03d}"
        if i < 100:
            d.mkdir(parents=True, exist_ok=True)
        size = 1024 + (i * 7919) % 7168
        off = (i * 104729) % (len(rnd) - size)
        (d / f"kw{i:05d}.idx").write_bytes(rnd[off : off + size])
    (src / "jobs").mkdir(parents=True, exist_ok=True)
    for j in range(40):
        size = int((5 + j * 195 / 39) * 1024 * 1024 * scale)
        with open(src / "jobs" / f"job{j:02d}.dat", "wb") as f:
            left = size
            while left > 0:
                n = min(left, len(rnd))
                f.write(rnd[:n])
                left -= n


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d != ".hotspare"]
        for f in files:
            if f.startswith(".hstmp-") or f == ".hotspare-root" or f.startswith(".~tmp~") or f.startswith("."):
                continue
            p = os.path.join(folder, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, int(st.st_mtime))
    return out


def wait_match(src: Path, dst: Path, timeout: float) -> float:
    """Poll until dst has the same files (size, mtime s) as src; return when it did."""
    want = snapshot(src)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if snapshot(dst) == want:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{dst} did not match {src} within {timeout}s")


def touch_50(src: Path, round_: int) -> list[str]:
    files = sorted((src / "index").rglob("*.idx"))
    step = max(1, len(files) // 50)
    out = []
    for k, p in enumerate(files[::step][:50]):
        p.write_bytes(f"changed {round_} {k}\n".encode() * 40)
        out.append(str(p.relative_to(src)))
    return out


def wait_paths(src: Path, dst: Path, paths: list[str], timeout: float) -> float:
    """Poll only the changed files (every 2 ms) until the replica has them; return when.
    Polling the whole 20,000-file tree would add its own 0.1-0.2 s to the figure."""
    want = {p: (src / p).read_bytes() for p in paths}
    deadline = time.monotonic() + timeout
    left = set(paths)
    while time.monotonic() < deadline:
        for p in list(left):
            try:
                if (dst / p).read_bytes() == want[p]:
                    left.discard(p)
            except OSError:
                pass
        if not left:
            return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"{len(left)} changed files did not reach {dst} within {timeout}s")


def measure_lag(
    src: Path, dst: Path, seconds: float, pump: Callable[[], None] | None = None, settle: float = 3.0
) -> list[float]:
    """Rewrite src/lag.txt every 100 ms; return the delays until each version showed on dst."""
    written: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                text = (dst / "lag.txt").read_text()
                seq = int(text.split()[0])
                if seq not in seen:
                    seen[seq] = time.monotonic()
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.005)

    def pumper() -> None:
        while pump is not None and not stop.is_set():
            pump()

    threads = [threading.Thread(target=reader, daemon=True)]
    if pump is not None:
        threads.append(threading.Thread(target=pumper, daemon=True))
    for t in threads:
        t.start()
    seq = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seq += 1
        written[seq] = time.monotonic()
        with open(src / "lag.txt", "w") as f:
            f.write(f"{seq} lag probe\n")
        time.sleep(0.1)
    time.sleep(settle)  # let the last versions arrive (lsyncd's default delay is 15 s)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return [seen[s] - written[s] for s in seen if s in written and seen[s] >= written[s]]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


# -- tools ---------------------------------------------------------------------------


def run_hotspare_nofsync(work: Path, src: Path, dst: Path, lag_seconds: float) -> dict[str, float | int | str]:
    """replication.fsync: false -- the durability of plain rsync, for comparison only."""
    return run_hotspare(work, src, dst, lag_seconds, fsync=False)


def run_hotspare(
    work: Path, src: Path, dst: Path, lag_seconds: float, fsync: bool = True
) -> dict[str, float | int | str]:
    pa, pb = free_port(), free_port()
    cfg = work / "hotspare.yaml"
    cfg.write_text(f"""
listen: ["127.0.0.1:0"]
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:1", agent: "http://127.0.0.1:{pa}"}}
      - {{name: b, url: "http://127.0.0.1:2", agent: "http://127.0.0.1:{pb}"}}
replication:
  token: {TOKEN}
  fsync: {"true" if fsync else "false"}
  roots:
    - {{name: data, path: {src}, paths: {{b: {dst}}}}}
""")
    cmd = [sys.executable, "-m", "hotspare", "agent", "-c", str(cfg), "--log-level", "warning"]
    a = subprocess.Popen([*cmd, "--node", "a", "--role", "source"])
    status = f"http://127.0.0.1:{pb}/v1/status"
    try:
        _wait_http(f"http://127.0.0.1:{pa}/v1/status")
        t0 = time.monotonic()
        b = subprocess.Popen([*cmd, "--node", "b", "--role", "sink", "--active", "a"])
        try:
            t_init = wait_match(src, dst, 1800) - t0
            _wait_http(status)
            changed = touch_50(src, 1)
            t1 = time.monotonic()
            t_incr = wait_paths(src, dst, changed, 300) - t1
            wait_match(src, dst, 60)
            lags = measure_lag(src, dst, lag_seconds)
            cpu = cpu_of(a.pid) + cpu_of(b.pid)
        finally:
            b.terminate()
            b.wait(30)
    finally:
        a.terminate()
        a.wait(30)
    return {"initial": t_init, "incremental": t_incr, "lags": lags, "cpu": cpu}  # type: ignore[dict-item]


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _rsync_once(url: str, dst: Path, extra: tuple[str, ...] = ()) -> float:
    """One rsync run; returns its CPU seconds (client, via wait4)."""
    p = subprocess.Popen(["rsync", "-a", "--delete", *extra, url, str(dst) + "/"])
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 24):
        raise RuntimeError(f"rsync exited {p.returncode}")
    return ru.ru_utime + ru.ru_stime


def run_rsync_fsync(work: Path, src: Path, dst: Path, lag_seconds: float) -> dict[str, float | int | str]:
    """rsync --fsync: the same durability as hotspare's fsync-before-rename."""
    return run_rsync(work, src, dst, lag_seconds, ("--fsync",))


def run_rsync(
    work: Path, src: Path, dst: Path, lag_seconds: float, extra: tuple[str, ...] = ()
) -> dict[str, float | int | str]:
    port = free_port()
    conf = work / "rsyncd.conf"
    conf.write_text(f"""
use chroot = no
[src]
    path = {src}
    read only = yes
    uid = root
    gid = root
""")
    d = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
                          f"--port={port}"])
    url = f"rsync://127.0.0.1:{port}/src/"
    cpu = 0.0
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        dst.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        cpu += _rsync_once(url, dst, extra)
        t_init = time.monotonic() - t0
        touch_50(src, 2)
        t1 = time.monotonic()
        cpu += _rsync_once(url, dst, extra)
        t_incr = time.monotonic() - t1
        loop_cpu = [0.0]

        def pump() -> None:
            loop_cpu[0] += _rsync_once(url, dst, extra)

        lags = measure_lag(src, dst, lag_seconds, pump)
        cpu += loop_cpu[0] + cpu_of(d.pid)
    finally:
        d.terminate()
        d.wait(10)
    return {"initial": t_init, "incremental": t_incr, "lags": lags, "cpu": cpu}  # type: ignore[dict-item]


def run_lsyncd(work: Path, src: Path, dst: Path, lag_seconds: float) -> dict[str, float | int | str]:
    conf = work / "lsyncd.conf"
    conf.write_text(f"""
settings {{ nodaemon = true, logfile = "{work}/lsyncd.log", statusFile = "{work}/lsyncd.status" }}
sync {{ default.rsync, source = "{src}", target = "{dst}" }}
""")
    dst.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    p = subprocess.Popen(["lsyncd", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_init = wait_match(src, dst, 1800) - t0
        changed = touch_50(src, 3)
        t1 = time.monotonic()
        t_incr = wait_paths(src, dst, changed, 300) - t1
        wait_match(src, dst, 60)
        lags = measure_lag(src, dst, lag_seconds, settle=20.0)
        cpu = cpu_of(p.pid)
    finally:
        p.terminate()
        p.wait(10)
    return {"initial": t_init, "incremental": t_incr, "lags": lags, "cpu": cpu}  # type: ignore[dict-item]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of files and sizes (0.1: quick run)")
    ap.add_argument("--lag-seconds", type=float, default=20.0)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--only", action="append", choices=["hotspare", "rsync --fsync", "hotspare fsync=false", "rsync", "lsyncd"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hs-repl-bench-", dir=args.dir))
    src = work / "src"
    print(f"building tree in {src} (scale {args.scale}) ...", flush=True)
    make_tree(src, args.scale)
    (src / "lag.txt").write_text("0\n")
    snap = snapshot(src)
    total = sum(s for s, _ in snap.values())
    print(f"{len(snap)} files, {total / 2**20:.0f} MiB", flush=True)
    tools = {"hotspare": run_hotspare, "rsync --fsync": run_rsync_fsync,
             "hotspare fsync=false": run_hotspare_nofsync, "rsync": run_rsync, "lsyncd": run_lsyncd}
    results: dict[str, dict[str, object]] = {}
    for name in args.only or list(tools):
        dst = work / ("dst-" + name.replace(" ", "_").replace("=", "-"))
        subprocess.run(["sync"], check=False)
        print(f"-- {name}", flush=True)
        results[name] = tools[name](work, src, dst, args.lag_seconds)  # type: ignore[assignment]
        shutil.rmtree(dst, ignore_errors=True)
    print()
    print(f"tree: {len(snap)} files, {total / 2**20:.0f} MiB; lag probe every 100 ms for {args.lag_seconds:.0f} s; "
          f"{os.cpu_count()} cores")
    print("| tool | initial sync s | incremental (50 changes) s | lag p50 s | lag p99 s | versions seen | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        lags = r["lags"]
        assert isinstance(lags, list)
        print(f"| {name} | {r['initial']:.2f} | {r['incremental']:.2f} | {pct(lags, 50):.3f} | "
              f"{pct(lags, 99):.3f} | {len(lags)} | {r['cpu']:.1f} |")
    for h_name, r_name in [("hotspare", "rsync"), ("hotspare", "rsync --fsync"), ("hotspare fsync=false", "rsync")]:
        if h_name in results and r_name in results:
            h, r = results[h_name], results[r_name]
            print(f"{h_name} / {r_name}: initial {float(h['initial']) / float(r['initial']):.2f}x "  # type: ignore[arg-type]
                  f"(target <= 1.5), incremental {float(h['incremental']) / float(r['incremental']):.2f}x "  # type: ignore[arg-type]
                  "(target <= 1)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
