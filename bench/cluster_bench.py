"""Routers sharing decisions in etcd under a randomized sequence of faults.

Run:  .venv/bin/python bench/cluster_bench.py [--seconds 120] [--seed N] [--rate 50]
                                              [--keep DIR] [--gap 1.0]

Needs root (iptables cuts links on loopback), ``etcd`` (scripts/system-deps) and the
project in .venv. It starts a real three-member etcd, the recording backend pair, three
``hotspare router`` processes and steady load through each (tests/cluster/chaos/kit.py),
then injects faults picked by a seeded random generator (the seed is printed; the same
seed replays the same kinds and targets) until ``--seconds`` have passed, each followed
by a wait for a steady world (bench/cluster_faults.py). Printed at the end:

- faults injected per kind (and the ones after which the world did not settle: stuck);
- failovers: epochs routed in etcd's history;
- follow lag: for each failover, from the state record's write time (``at``) to the
  first answer at the new epoch through the LAST router to switch (backend logs; routers
  cut off, frozen or dead at that moment are left out), p50/p99/max; and the routers' own
  ``hotspare_cluster_follow_lag_seconds`` histogram;
- requests sent and failed, per router;
- violations found by the chaos checker (must be 0), and its notes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.cluster_faults import KINDS, Faults, run_fault
from bench.procs import sigterm_as_interrupt
from tests.cluster.chaos.checker import Verdict
from tests.cluster.chaos.kit import World
from tests.cluster.chaos.netcut import unavailable
from tests.cluster.chaos.records import Answer, Sent, read_answers
from tests.cluster.etcdkit import EtcdCluster

HORIZON = 15.0  # a router that has not answered at the new epoch this long after: "missing"


@dataclass
class Lags:
    per_failover: list[tuple[int, float, str]] = field(default_factory=list)  # (epoch, lag, last router)
    samples: list[float] = field(default_factory=list)                        # every (epoch, router)
    missing: list[str] = field(default_factory=list)


def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def impaired_at(impaired: Sequence[tuple[str, float, float]], router: str, t: float, slack: float = 0.5) -> bool:
    return any(r == router and start - slack <= t <= end + slack for r, start, end in impaired)


def follow_lags(routed: Sequence[tuple[int, str, float]], answers: Sequence[Answer], routers: Sequence[str],
                impaired: Sequence[tuple[str, float, float]]) -> Lags:
    """Lag of each router to each routed epoch change after the first (see the module doc)."""
    out = Lags()
    by_router: dict[str, list[tuple[float, int]]] = {r: [] for r in routers}
    for a in answers:
        if a.router in by_router and a.epoch.isdigit():
            by_router[a.router].append((a.t, int(a.epoch)))
    for seq in by_router.values():
        seq.sort()
    for epoch, _active, at in routed[1:]:
        worst: tuple[float, str] | None = None
        for r in routers:
            if impaired_at(impaired, r, at):
                continue
            first = next((t for t, e in by_router[r] if e >= epoch and t >= at - 1.0), None)
            if first is None or first - at > HORIZON:
                out.missing.append(f"{r} never answered at epoch {epoch} within {HORIZON:g}s")
                continue
            lag = max(0.0, first - at)
            out.samples.append(lag)
            if worst is None or lag > worst[0]:
                worst = (lag, r)
        if worst is not None:
            out.per_failover.append((epoch, worst[0], worst[1]))
    return out


def histogram_quantiles(texts: Sequence[str], name: str) -> tuple[int, float | None, float | None]:
    """(count, p50 upper bound, p99 upper bound) of a histogram summed over ``texts``."""
    buckets: dict[float, float] = {}
    for text in texts:
        for m in re.finditer(rf'^{re.escape(name)}_bucket{{[^}}]*le="([^"]+)"[^}}]*}} (\S+)$', text, re.M):
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    if not buckets:
        return 0, None, None
    total = buckets.get(float("inf"), max(buckets.values()))

    def q(frac: float) -> float | None:
        return next((le for le, c in sorted(buckets.items()) if total and c >= frac * total), None)
    return int(total), q(0.5), q(0.99)


def ms(value: float | None) -> str:
    return "-" if value is None else ("inf" if value == float("inf") else f"{value * 1000:.0f} ms")


def outside_windows(records: Sequence[Sent], windows: Sequence[tuple[str, float, float]]) -> list[Sent]:
    """Failed requests sent while no fault was in progress (nor recovering)."""
    return [s for s in records if s.done and not s.ok
            and not any(start <= s.sent <= end for _, start, end in windows)]


def table(seed: int, seconds: float, faults: Faults, verdict: Verdict, lags: Lags,
          hist: tuple[int, float | None, float | None]) -> str:
    outside = outside_windows(faults.world.load.records, faults.windows)
    lines = [f"cluster bench: seed {seed}, {seconds:g} s of faults, {len(faults.world.routers)} routers, "
             f"3 etcd members, {faults.world.load.rate:g} req/s per router", ""]
    lines.append(f"{'fault':<28}{'injected':>9}{'stuck':>7}")
    for kind in sorted(KINDS):
        stuck = sum(1 for s in faults.stuck if s.startswith(kind + ":"))
        lines.append(f"{kind:<28}{faults.injected[kind]:>9}{stuck:>7}")
    lines.append(f"{'total':<28}{sum(faults.injected.values()):>9}{len(faults.stuck):>7}")
    worst = [lag for _, lag, _ in lags.per_failover]
    sent, failed = sum(verdict.sent.values()), sum(verdict.failed.values())
    lines += [
        "",
        f"failovers (epochs routed)        {max(0, len(verdict.state_epochs) - 1)}",
        f"follow lag, etcd write -> last router (n={len(worst)}): p50 {ms(pct(worst, 0.5))}, "
        f"p99 {ms(pct(worst, 0.99))}, max {ms(max(worst, default=None))}",
        f"follow lag, every router (n={len(lags.samples)}): p50 {ms(pct(lags.samples, 0.5))}, "
        f"p99 {ms(pct(lags.samples, 0.99))}",
        f"routers' histogram hotspare_cluster_follow_lag_seconds (n={hist[0]}, bucket bounds): "
        f"p50 <= {ms(hist[1])}, p99 <= {ms(hist[2])}",
        f"requests sent / failed           {sent} / {failed} ({100.0 * failed / max(sent, 1):.1f} %): "
        + ", ".join(f"{r} {verdict.failed[r]}/{verdict.sent[r]}" for r in sorted(verdict.sent)),
        f"  failed as                      {dict(verdict.outcomes.most_common())}",
        f"  failed outside fault windows   {len(outside)} (sent between one fault's steady end and the next)",
        f"violations                       {len(verdict.violations)}",
    ]
    lines += [f"  {v}" for v in verdict.violations]
    lines += [f"  stuck: {s}" for s in faults.stuck]
    lines += [f"  missing: {m}" for m in lags.missing[:10]]
    lines += [f"  note: {n}" for n in verdict.notes]
    return "\n".join(lines)


async def run(args: argparse.Namespace, seed: int, root: Path) -> int:
    (root / "world").mkdir(parents=True, exist_ok=True)
    etcd = EtcdCluster(root / "etcd", 3)
    world = World(root / "world", etcd, rate=args.rate, hold_down="1s")
    faults = Faults(world, random.Random(seed))
    try:
        etcd.start()
        await world.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            kind = faults.rng.choice(sorted(KINDS))
            print(f"[{time.monotonic() - t0:6.1f}s] {kind}", flush=True)
            await run_fault(faults, kind)
            await asyncio.sleep(args.gap)  # pacing between faults
        verdict = await world.verdict()
        texts = [t for t in [await world_metrics(world, r) for r in world.routers] if t]
        answers = [a for b in world.backends.values() for a in read_answers(b.log)]
        lags = follow_lags(verdict.state_epochs, answers, sorted(world.routers), faults.impaired)
        print(table(seed, args.seconds, faults, verdict, lags,
                    histogram_quantiles(texts, "hotspare_cluster_follow_lag_seconds")))
        return 1 if verdict.violations else 0
    finally:
        await world.close()
        etcd.stop()


async def world_metrics(world: World, router: str) -> str | None:
    try:
        async with world.http.get(world.routers[router].admin + "/metrics") as r:
            return await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="how long to inject faults (default 120)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    p.add_argument("--rate", type=float, default=50.0, help="requests a second through each router")
    p.add_argument("--gap", type=float, default=1.0, help="seconds between one fault's end and the next")
    p.add_argument("--keep", type=Path, default=None, help="keep every log in this directory")
    args = p.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"cluster bench: cannot run: {reason}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed}", flush=True)
    sigterm_as_interrupt()
    if args.keep is not None:
        return asyncio.run(run(args, seed, args.keep))
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        return asyncio.run(run(args, seed, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
