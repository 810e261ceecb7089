"""What the chaos harness records, and how it is read back from files.

Rules:

1. Times are unix wall-clock seconds (``time.time()``) in every record, so the client's,
   the backends' and etcd's (``state.at``) can be compared on one machine.
2. Readers never fail on a torn last line (a SIGKILLed writer): it is skipped.
3. ``StepRun`` lines are written by the promotion's exec step (``STEP_SCRIPT``): one line
   when the step starts and one when it ends, ``<phase> <step> <epoch> <run_id> <router>
   <pid>``. Counting ``start`` lines per (step, epoch) is the most direct proof that a
   step ran at most once per epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The exec promotion step: logs its start, waits for GATE (a test that wants a step to
# block removes it), logs its end. $1 step name, $2 runs file, $3 gate file.
STEP_SCRIPT = (
    'echo "start $1 $HOTSPARE_EPOCH $HOTSPARE_RUN_ID $CHAOS_ROUTER $$" >> "$2"; '
    'while [ ! -e "$3" ]; do sleep 0.05; done; '
    'echo "end $1 $HOTSPARE_EPOCH $HOTSPARE_RUN_ID $CHAOS_ROUTER $$" >> "$2"'
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One request a backend answered (a line of its log)."""

    t: float
    backend: str
    epoch: str
    router: str
    req: str
    method: str


@dataclass(slots=True)
class Sent:
    """One request the client sent through a router, and what came back."""

    router: str
    req: str
    method: str
    sent: float
    done: float = 0.0
    status: int | None = None  # None: no HTTP answer at all
    backend: str = ""
    epoch: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True, slots=True)
class StepRun:
    phase: str  # "start" | "end"
    step: str
    epoch: int
    run_id: str
    router: str
    pid: int


@dataclass(frozen=True, slots=True)
class EtcdEvent:
    """One change of one key, from the etcd history (revision order)."""

    rev: int
    key: str
    type: str  # "put" | "delete"
    value: bytes
    create_revision: int = 0


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_answers(path: Path) -> list[Answer]:
    out = []
    for line in _lines(path):
        try:
            d = json.loads(line)
            out.append(Answer(float(d["t"]), str(d["b"]), str(d["e"]), str(d["r"]), str(d["q"]), str(d["m"])))
        except (ValueError, KeyError, TypeError):
            continue  # torn last line
    return out


def read_steps(path: Path) -> list[StepRun]:
    out = []
    for line in _lines(path):
        parts = line.split()
        if len(parts) != 6 or parts[0] not in ("start", "end"):
            continue
        try:
            out.append(StepRun(parts[0], parts[1], int(parts[2]), parts[3], parts[4], int(parts[5])))
        except ValueError:
            continue
    return out


def read_audit_starts(path: Path) -> list[dict[str, object]]:
    """The ``run_start`` records of one router's audit log."""
    out = []
    for line in _lines(path):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("event") == "run_start":
            out.append(d)
    return out
