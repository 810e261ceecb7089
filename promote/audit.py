"""The audit log: an append-only JSON-lines record of every promotion run.

Rules:

1. One JSON object per line, never rewritten. Each carries ``ts`` (UTC, ISO 8601),
   ``run`` (the run id) and ``event``: ``run_start``, ``step_start``, ``step_end``,
   ``alarm`` or ``run_end``.
2. Each line is flushed and fsynced before the pipeline goes on, so after a crash the
   log shows exactly which steps had started. fsync runs in a worker thread
   (:meth:`AuditLog.write`) so the router's event loop never waits on the disk.
3. A run with a ``run_start`` and no ``run_end`` is *unfinished*: the router died (or
   was stopped) in the middle. :meth:`AuditLog.unfinished` finds them so the router
   can report them, or resume them.
4. A torn last line (crash mid-write) or a foreign line is skipped and counted in
   ``bad_lines``, never fatal: the log is evidence, reading it must not fail.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AuditLog", "RunRecord", "format_table"]

EVENTS = ("run_start", "step_start", "step_end", "alarm", "run_end")


@dataclass
class RunRecord:
    """One run as read back from the log."""

    run_id: str
    started: str
    service: str = ""
    trigger: str = ""
    cause: str = ""
    epoch: int | None = None
    old: str = ""
    new: str = ""
    resumes: str | None = None
    ended: str | None = None
    outcome: str | None = None  # None: unfinished
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)  # step_end records
    started_steps: list[dict[str, Any]] = field(default_factory=list)  # step_start records
    alarms: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def last_step(self) -> dict[str, Any] | None:
        """The last step that started (for an unfinished run: where it stopped)."""
        return self.started_steps[-1] if self.started_steps else None


class AuditLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.bad_lines = 0
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------

    def append(self, event: str, run: str, **fields: Any) -> dict[str, Any]:
        """Write one record (blocking: flush and fsync). Returns what was written."""
        if event not in EVENTS:
            raise ValueError(f"event: expected one of {', '.join(EVENTS)}, got {event!r}")
        record = {"ts": _now(), "run": run, "event": event, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record

    async def write(self, event: str, run: str, **fields: Any) -> dict[str, Any]:
        """:meth:`append` in a worker thread."""
        return await asyncio.to_thread(self.append, event, run, **fields)

    # -- reading ---------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every well-formed record, in file order (a missing file is an empty log)."""
        self.bad_lines = 0
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if not isinstance(rec, dict) or rec.get("event") not in EVENTS or not rec.get("run"):
                self.bad_lines += 1
                continue
            out.append(rec)
        return out

    def history(self, service: str | None = None) -> list[RunRecord]:
        """Every run, oldest first (optionally only one service's)."""
        runs: dict[str, RunRecord] = {}
        for rec in self.records():
            run_id = str(rec["run"])
            event = rec["event"]
            if event == "run_start":
                runs[run_id] = RunRecord(
                    run_id=run_id,
                    started=str(rec.get("ts", "")),
                    service=str(rec.get("service", "")),
                    trigger=str(rec.get("trigger", "")),
                    cause=str(rec.get("cause", "")),
                    epoch=rec.get("epoch") if isinstance(rec.get("epoch"), int) else None,
                    old=str(rec.get("old", "")),
                    new=str(rec.get("new", "")),
                    resumes=rec.get("resumes"),
                )
                continue
            run = runs.get(run_id)
            if run is None:
                self.bad_lines += 1  # an event of a run whose start is missing
                continue
            if event == "step_start":
                run.started_steps.append(rec)
            elif event == "step_end":
                run.steps.append(rec)
            elif event == "alarm":
                run.alarms.append(str(rec.get("text", "")))
            elif event == "run_end":
                run.ended = str(rec.get("ts", ""))
                run.outcome = str(rec.get("outcome", "unknown"))
                run.reason = str(rec.get("reason", ""))
        result = list(runs.values())
        return [r for r in result if service is None or r.service == service]

    def unfinished(self, service: str | None = None) -> list[RunRecord]:
        """Runs with a start and no end: the router died (or stopped) during them."""
        return [r for r in self.history(service) if not r.finished]


def format_table(runs: list[RunRecord]) -> str:
    """The history as a plain-text table, one line per run plus one per step."""
    header = ("STARTED", "SERVICE", "OLD->NEW", "EPOCH", "TRIGGER", "CAUSE", "OUTCOME", "RUN")
    rows: list[tuple[str, ...]] = [header]
    for r in runs:
        rows.append(
            (
                r.started[:19].replace("T", " "),
                r.service,
                f"{r.old}->{r.new}",
                "" if r.epoch is None else str(r.epoch),
                r.trigger,
                r.cause,
                r.outcome or "UNFINISHED",
                r.run_id + (f" (resumes {r.resumes})" if r.resumes else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            continue
        run = runs[i - 1]
        for s in run.steps:
            extra = []
            if s.get("sessions_ended") is not None:
                extra.append(f"{s['sessions_ended']} session(s) ended")
            if s.get("exit_code") is not None:
                extra.append(f"exit {s['exit_code']}")
            if s.get("http_status") is not None:
                extra.append(f"HTTP {s['http_status']}")
            detail = str(s.get("detail", ""))
            lines.append(
                f"    {s.get('index', '?')}. {s.get('name', '?')} [{s.get('kind', '?')}] "
                f"attempt {s.get('attempt', '?')}: {s.get('status', '?')} "
                f"in {float(s.get('duration', 0)):.2f}s"
                + (f" ({', '.join(extra)})" if extra else "")
                + (f" - {detail}" if detail else "")
            )
        if not run.finished and run.last_step is not None:
            ls = run.last_step
            lines.append(
                f"    !! stopped during step {ls.get('index')}. {ls.get('name')} (no end recorded)"
            )
        for a in run.alarms:
            lines.append(f"    ALARM: {a}")
    return "\n".join(lines)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
