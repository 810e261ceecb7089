"""Generated raw requests against a real ``hotspare router`` subprocess (issue 10).

Invariants (tests/router/fuzzrun.py, inputs from tests/router/fuzzgen.py): the router never answers 5xx to client input in
front of healthy backends; a request it answered itself with 4xx never reached a backend;
what the issue says must be refused (CONNECT, HTTP/0.9, authority-form, ``*``, bad
framing, malformed field lines) is never forwarded; Connection-nominated headers are
removed; only origin-form targets reach a backend; no decoy listener is ever contacted;
no input changes a backend's health, the active or the epoch.

Budget: ``FUZZ_SECONDS`` (default 35) or ``FUZZ_MAX_INPUTS`` (default 20000), whichever
comes first, so the file stays under 60 s (about 80 inputs/s on two cores: /metrics is read
per round, and an input the router cannot answer costs no silence; fuzzrun.py, fuzzkit.py). ``FUZZ_SEED`` replays a run. The number of
inputs tried goes to test-artifacts/fuzz-summary.txt and stdout.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fuzzrun import FuzzTarget, run_fuzz
from .fuzzstack import first_traceback

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Iterator[FuzzTarget]:
    target = FuzzTarget(tmp_path)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def short_shrink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure is shrunk for at most 20 s (hypothesis's own cap is 5 min), so a failing
    run still names its example inside the per-test timeout."""
    from hypothesis.internal.conjecture import engine

    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", 20, raising=False)


@pytest.mark.timeout(110)
def test_fuzz_raw_requests_keep_the_invariants(fuzz_target: FuzzTarget, short_shrink: None) -> None:
    seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().getrandbits(32))
    print(f"\nfuzz seed {seed} (replay: FUZZ_SEED={seed})")
    seconds = float(os.environ.get("FUZZ_SECONDS", "35"))
    report = None
    try:
        report = run_fuzz(
            fuzz_target,
            seconds=seconds,
            max_inputs=int(os.environ.get("FUZZ_MAX_INPUTS", "20000")),
            seed=seed,
            strict=True,
            round_size=50,
        )
    finally:
        text = (report.summary(fuzz_target) if report else
                f"fuzz: FAILED after {fuzz_target.tried} inputs tried, seed {seed}")
        out = ROOT / "test-artifacts" / "fuzz-summary.txt"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")
        print(text)
    assert report.violations == [], report.violations
    assert fuzz_target.state_problems() == []
    assert [d.accepted for d in fuzz_target.decoys] == [0, 0]
    assert fuzz_target.restarts == 0
    # A full-length run that tried few inputs tested little: say so rather than pass
    # (800 in 35 s is under half the rate the suite reaches on two busy cores).
    floor = 800 if seconds >= 30 else 1
    assert fuzz_target.tried >= floor, f"too few inputs for a meaningful run: {report.summary(fuzz_target)}"
    assert not (tb := first_traceback(fuzz_target.router.log())), tb
