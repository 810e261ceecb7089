"""Sending generated inputs (tests/router/fuzzgen.py) to a real router and checking the
invariants after each (issue 10). Shared by tests/router/test_fuzz.py and
bench/fuzz_bench.py.

Rules:

1. Inputs are sent strictly one at a time; what the backends saw is the difference of
   their counters around the input. A router-made 4xx with more backend heads than
   backend answers means the router answered a request itself AND forwarded it.
2. What the client, the backends and the decoys saw is checked after every input, inside
   hypothesis, so a violation is shrunk to a small example.
3. The router's own numbers (``/metrics``: a detected failure, an upstream error, a
   failover, an epoch change) are read once per batch (a hypothesis round), not per
   input: one scrape costs as much as several inputs. Damage after a batch is named by
   replaying the batch (and the input before it) one input at a time on a restarted
   router, reading /metrics after each, exactly as every input was checked before
   batching: damage seen only before the NEXT input is blamed on the previous one
   ("late") and the router restarted. Damage no single input reproduces is reported
   against the whole batch. A 5xx seen while the router is already damaged starts the
   same replay at once, so a later input is not blamed for an earlier one's damage.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .fuzzgen import FuzzInput, fuzz_inputs
from .fuzzkit import Decoy, Exchange, exchange
from .fuzzstack import Stack, metric_total

# A router's answers to the client's own fault that are 5xx by definition: method not
# implemented, HTTP version not supported. Any other 5xx blames a (healthy) backend.
_CLIENT_FAULT_5XX = frozenset({501, 505})
_DAMAGE = (
    ("hotspare_failures_detected_total", "a backend was marked DOWN"),
    ("hotspare_upstream_errors_total", "a request failed 'at the backend'"),
    ("hotspare_failovers_total", "a failover happened"),
    ("hotspare_epoch", "the epoch moved"),
)
# Ends of an exchange where a request of ours may still have been in flight when we hung
# up or sent EOF: blame for it would show within this window (the router notices in ms).
_HUNG_UP = ("quiet", "deadline", "eof")
_WINDOW = 0.1
# After a replayed batch: a failure seen by probes (interval 200 ms, fall 2) shows late.
_LAST_WINDOW = 1.0


@dataclass
class FuzzTarget:
    """Two recording backends, two decoys (127.0.0.1 and 127.0.0.2), a router in front."""

    workdir: Path
    tried: int = 0
    restarts: int = 0
    late: list[str] = field(default_factory=list)
    previous: FuzzInput | None = None
    batch: list[FuzzInput] = field(default_factory=list)  # sent since /metrics was last clean
    blamed: list[str] = field(default_factory=list)  # violations named by a replay (rule 3)
    per_input: bool = False  # read /metrics after every input (a replay)

    def __post_init__(self) -> None:
        self.decoys = [Decoy(host, self._router_pid) for host in ("127.0.0.1", "127.0.0.2")]
        try:
            self.stack = Stack(self.workdir)
        except BaseException:
            self._close_decoys()
            raise
        self.backends, self.router = self.stack.backends, self.stack.router
        self._before: list[FuzzInput] = []  # the last input of the previous batch

    def _router_pid(self) -> int | None:
        """The process a decoy connection is held against (None before it exists)."""
        stack = getattr(self, "stack", None)
        proc = stack.router.proc if stack is not None else None
        return proc.pid if proc is not None else None

    @property
    def decoy_ports(self) -> tuple[int, int]:
        return self.decoys[0].port, self.decoys[1].port

    def close(self) -> None:
        self.stack.close()
        self._close_decoys()

    def _close_decoys(self) -> None:
        for d in reversed(self.decoys):
            d.close()

    def damage(self) -> list[str]:
        """What in the router's own numbers shows that some input hurt a backend."""
        text = self.router.metrics()
        out = [f"{what} ({name} = {metric_total(text, name):g})"
               for name, what in _DAMAGE if metric_total(text, name) != 0]
        if metric_total(text, "hotspare_active_backend", backend="a") != 1:
            out.append("a is no longer the active")
        if metric_total(text, "hotspare_backend_up") != len(self.backends):
            out.append("a backend is not up")
        return out

    def state_problems(self) -> list[str]:
        """The end-of-batch check, from /v1/status and /metrics."""
        svc = self.router.service()
        out = self.damage()
        if (svc["active"], svc["epoch"], svc["state"]) != ("a", 0, "active"):
            out.append(f"status: active {svc['active']}, epoch {svc['epoch']}, state {svc['state']}")
        out += [f"status: backend {b['name']} unhealthy" for b in svc["backends"] if not b["healthy"]]
        if any(d.accepted for d in self.decoys):
            out.append(f"decoys contacted: {[d.accepted for d in self.decoys]}")
        return out

    def _restart(self) -> None:
        self.router.stop()
        (self.workdir / "state.json").unlink(missing_ok=True)
        shutil.copy(self.router.stderr, self.workdir / f"router-{self.restarts}.stderr")
        self.restarts += 1
        self.router.start()

    # -- one input ----------------------------------------------------------------------

    def check(self, inp: FuzzInput) -> list[str]:
        """Send one input; return every invariant it broke (empty: none). Damage to the
        router is found per batch (:meth:`check_batch`) unless ``per_input``."""
        self.tried += 1
        self.batch.append(inp)
        out = self._check_one(inp)
        if out and not self.per_input and self.damage():
            # The router was already hurt: this answer may be the damage's consequence.
            self.blamed += self._replay()
            return []
        return out

    def _check_one(self, inp: FuzzInput) -> list[str]:
        if self.per_input and (late := self.damage()):
            self.late.append(f"after {self.previous!r}: {'; '.join(late)}")
            self._restart()
        self.previous = inp
        before = [b.snapshot() for b in self.backends]
        decoys = [d.accepted for d in self.decoys]
        ex = exchange(self.router.port, inp.raw, inp.methods, answers=inp.answers)
        out = self._exchange_problems(inp, ex, before)
        if [d.accepted for d in self.decoys] != decoys:
            out.append(f"a decoy was contacted: {decoys} -> {[d.accepted for d in self.decoys]}")
        if self.per_input:
            out += self._damage_within(_WINDOW if ex.ended in _HUNG_UP else 0.0)
        return out

    def _exchange_problems(self, inp: FuzzInput, ex: Exchange, before: list[tuple[int, int, int]]) -> list[str]:
        out = []
        heads = ex.heads
        out += [f"router answered {s}" for s, _ in heads if s >= 500 and s not in _CLIENT_FAULT_5XX]
        pairs = list(zip(self.backends, before, strict=True))
        seen = [b.requests[n:] for b, (_, n, _) in pairs]
        forwarded = sum(b.snapshot()[0] - h for b, (h, _, _) in pairs)
        recorded = sum(1 for _, r in heads if r)
        made_4xx = [s for s, r in heads if not r and (400 <= s < 500 or s in _CLIENT_FAULT_5XX)]
        unanswered = max(0, len(inp.messages) - len(heads)) if ex.ended in ("quiet", "deadline") else 0
        if made_4xx and forwarded > recorded + unanswered:
            out.append(f"router answered {made_4xx} itself yet a backend got {forwarded} request(s) "
                       f"and answered {recorded}")
        elif ex.ended in ("complete", "eof") and forwarded != recorded:
            out.append(f"backends got {forwarded} request(s) but the client got {recorded} backend answer(s)")
        out += self._forwarded_problems(inp, [r for rs in seen for r in rs])
        out += [p for b, (_, _, n) in pairs for p in b.problems[n:]]
        return out

    def _damage_within(self, window: float) -> list[str]:
        deadline = time.monotonic() + window
        while not (found := self.damage()) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling interval
        return found

    @staticmethod
    def _forwarded_problems(inp: FuzzInput, seen: list) -> list[str]:  # type: ignore[type-arg]
        out = []
        for r in seen:
            if r.header("X-Fuzz-Reject") or "fuzz-reject" in r.target:
                out.append(f"forwarded a request that must be refused: {r.method} {r.target[:100]}")
            for name, value in (nv for m in inp.messages for nv in m.nominated):
                if any(value in v for v in r.header(name)):
                    out.append(f"forwarded {name}: {value} although Connection nominated it")
        return out

    # -- one batch (rule 3) ------------------------------------------------------------------

    def check_batch(self) -> list[str]:
        """Damage done by the inputs sent since the last call, each piece blamed on the
        input that did it (empty: none); the router is pristine afterwards."""
        blamed, self.blamed = self.blamed, []
        if self.damage():
            blamed += self._replay()
        self._before, self.batch = self.batch[-1:], []
        return blamed

    def _replay(self) -> list[str]:
        """Restart the router and send the batch again, /metrics read after every input."""
        batch, self.batch = [*self._before, *self.batch], []
        found = self.damage()
        self._restart()
        self.per_input, self.previous, out = True, None, []
        try:
            for inp in batch:
                out += [f"{p} <- {inp!r:.2000}" for p in self._check_one(inp)]
            if batch and (last := self._damage_within(_LAST_WINDOW)):
                out.append(f"{'; '.join(last)} (late) <- {batch[-1]!r:.2000}")
        finally:
            self.per_input = False
        out = [f"{p} (late)" for p in self.late] + out
        self.late = []
        if not out:
            listed = ", ".join(f"{inp!r:.300}" for inp in batch)
            out.append(f"{'; '.join(found)} after a batch of {len(batch)} inputs that no single one "
                       f"reproduces: {listed:.6000}")
        if self.damage():
            self._restart()
        return out


# -- running it ----------------------------------------------------------------------------


@dataclass
class FuzzReport:
    seed: int
    seconds: float = 0.0
    rounds: int = 0
    violations: list[str] = field(default_factory=list)

    def summary(self, target: FuzzTarget) -> str:
        rate = target.tried / self.seconds if self.seconds else 0.0
        return (f"fuzz: {target.tried} inputs tried in {self.seconds:.1f} s ({rate:.1f}/s), "
                f"{self.rounds} rounds, seed {self.seed}, {len(self.violations)} violations, "
                f"{target.restarts} router restarts")


def run_fuzz(target: FuzzTarget, *, seconds: float, max_inputs: int, seed: int, strict: bool,
             round_size: int = 100) -> FuzzReport:
    """Rounds of ``round_size`` hypothesis examples (seeds ``seed``, ``seed + 1``, ...) until
    ``seconds`` or ``max_inputs`` is reached, the router's state checked after each round.

    ``strict``: the first violation fails the hypothesis run (which shrinks it and prints
    the falsifying example), or, for damage found after a round, fails with the input a
    replay named; otherwise violations are collected and the run goes on."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as with_seed
    from hypothesis.configuration import set_hypothesis_home_dir

    # Its caches (constants, unicode data) go to the run's own folder, never the repo.
    set_hypothesis_home_dir(target.workdir / "hypothesis-home")

    report = FuzzReport(seed)
    started = time.monotonic()
    strategy = fuzz_inputs(*target.decoy_ports)

    @settings(max_examples=round_size, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(inp=strategy)
    def one(inp: FuzzInput) -> None:
        problems = target.check(inp)
        if problems and strict:
            raise AssertionError("; ".join(problems))
        report.violations += [f"{p} <- {inp!r:.2000}" for p in problems]

    while time.monotonic() - started < seconds and target.tried < max_inputs:
        with_seed(seed + report.rounds)(one)()
        report.rounds += 1
        state = target.check_batch()
        state += target.state_problems()
        if state and strict:
            raise AssertionError(f"after round {report.rounds}: {'; '.join(state)}")
        report.violations += state
    report.seconds = time.monotonic() - started
    return report
