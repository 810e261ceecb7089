"""The long run of the raw-request fuzz suite (tests/router/test_fuzz.py): the same
generated inputs and invariants against a real ``hotspare router``, for a fixed time or
number of inputs, collecting every violation instead of stopping at the first.

    .venv/bin/python bench/fuzz_bench.py                  # 600 s
    .venv/bin/python bench/fuzz_bench.py --seconds 60 --seed 42
    .venv/bin/python bench/fuzz_bench.py --inputs 5000    # stop after 5000 inputs

Prints inputs tried, invariant violations (each with the raw input that broke it; must be
0) and inputs/s; exits 1 if there was any violation. Everything listens on 127.0.0.1 /
127.0.0.2 ports picked by the OS and is stopped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import sigterm_as_interrupt
from tests.router.fuzzrun import FuzzTarget, run_fuzz
from tests.router.fuzzstack import first_traceback


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0, help="run this long (default 600)")
    p.add_argument("--inputs", type=int, default=10**9, help="or stop after this many inputs")
    p.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    p.add_argument("--round", type=int, default=200, help="hypothesis examples per round (default 200)")
    p.add_argument("--show", type=int, default=20, help="violations to print in full (default 20)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.inputs <= 0 or args.round <= 0:
        p.error("--seconds, --inputs and --round must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    print(f"fuzz bench: seed {seed}, up to {args.seconds:g} s or {args.inputs} inputs", flush=True)
    sigterm_as_interrupt()
    with tempfile.TemporaryDirectory(prefix="hotspare-fuzz-") as tmp:
        target = FuzzTarget(Path(tmp))
        try:
            report = run_fuzz(target, seconds=args.seconds, max_inputs=args.inputs, seed=seed,
                              strict=False, round_size=args.round)
            traceback = first_traceback(target.router.log())
        finally:
            target.close()
    for v in report.violations[: args.show]:
        print(f"VIOLATION {v}")
    if len(report.violations) > args.show:
        print(f"... and {len(report.violations) - args.show} more")
    if traceback:
        print(f"router logged a traceback:\n{traceback}")
    print(report.summary(target))
    return 1 if report.violations or traceback else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
