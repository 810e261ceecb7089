"""``hotspare doctor``'s results and verdicts: plain data and pure functions, no I/O.

Rules:

1. A check is one :class:`Check`: an id (``backend:app/a``, ``agent:b``...), a status, what
   was found (``detail``) and, unless it passed, what to do (``fix``). The probes in
   ``doctor_net`` and ``doctor_local`` gather facts; the verdicts below turn facts into
   checks, so every message is decided (and tested) without a socket.
2. Statuses: PASS; INFO (as expected, worth knowing: the state file held by the running
   router); WARN (works, look at it: clock skew over the threshold); FAIL; SKIP (could
   not be checked because another check failed: that one names the fault). Only FAIL
   makes the exit status 1, so one fault shows as exactly one failed check.
3. Nothing secret is ever in a check: DSNs are shown with ``redact_dsn`` and tokens are
   never shown at all.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Check",
    "Status",
    "exit_code",
    "free_space_verdict",
    "health_verdict",
    "lock_verdict",
    "skew_verdict",
]


class Status(enum.Enum):
    PASS = "pass"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    status: Status
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def health_verdict(
    cid: str, url: str, status: int | None, error: str | None, expect: frozenset[int],
    body_ok: bool = True, expect_body: str | None = None,
) -> Check:
    """A backend's health path: answered with an expected status (and body)?"""
    if error is not None or status is None:
        return Check(cid, Status.FAIL, f"{url}: no answer ({error})",
                     "start the application server, or fix the backend's url (host, port, "
                     "firewall between this host and it)")
    if status not in expect:
        return Check(cid, Status.FAIL, f"{url} answered {status}, expected {_codes(expect)}",
                     "fix health.path (the application's health page) or health.expect_status")
    if not body_ok:
        return Check(cid, Status.FAIL, f"{url} answered {status} without {expect_body!r} in its body",
                     "fix health.expect_body or the application's health page")
    return Check(cid, Status.PASS, f"{url} answered {status}")


def skew_verdict(cid: str, skew: float, uncertainty: float, limit: float) -> Check:
    """This host's clock against an agent's; ``skew`` > 0: the agent is ahead."""
    shown = f"{abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} this host (±{uncertainty:.1f} s)"
    if abs(skew) - uncertainty > limit:
        return Check(cid, Status.WARN, f"clock {shown}, over {limit:g} s",
                     "run time synchronisation on both hosts (apt install systemd-timesyncd, or chrony)")
    return Check(cid, Status.PASS, f"clock {shown}")


def free_space_verdict(
    cid: str, path: str, exists: bool, marker: bool, marker_name: str, free: int | None, needed: int,
) -> Check:
    """A root on one node: folder, marker, and room for the largest file of that root on
    any node (after a failover, this node may have to take the other's largest file)."""
    if not exists:
        return Check(cid, Status.FAIL, f"{path}: no such folder",
                     "mount the disk or create the folder, then start the agent with --init once")
    if not marker:
        return Check(cid, Status.FAIL, f"{path}: marker {marker_name} missing (disk not mounted?)",
                     f"once the folder is the right one: touch {path}/{marker_name} "
                     "(or restart the agent with --init)")
    if free is not None and free < needed:
        return Check(cid, Status.FAIL,
                     f"{path}: {human_bytes(free)} free, less than the largest file ({human_bytes(needed)})",
                     "free space on that disk or grow it; a copy needs room for the whole file")
    room = "" if free is None else f", {human_bytes(free)} free"
    return Check(cid, Status.PASS, f"{path}: marker present{room}, largest file {human_bytes(needed)}")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds the state file's lock: its pid (from the lock file), and what
    /proc says about it (``argv`` None: not visible from here)."""

    pid: int | None
    argv: tuple[str, ...] | None
    cwd: str | None


def lock_verdict(cid: str, lock: Path, holder: LockHolder | None, config: Path) -> Check:
    """The lock of the state file: free (PASS), held by a ``hotspare router`` (INFO: doctor
    runs next to the running router; a second router could not have taken the lock), or
    by anything else (FAIL: no router can start on this state file)."""
    if holder is None:
        return Check(cid, Status.PASS, f"{lock}: free (no router running on this state file)")
    pid = holder.pid
    if pid is None or holder.argv is None:
        who = f"pid {pid}" if pid else "a process that wrote no pid"
        return Check(cid, Status.FAIL, f"{lock}: held by {who}, which this user cannot see",
                     "run hotspare doctor as root or as the router's user to see who holds it")
    theirs = _router_config(holder.argv, holder.cwd)
    if theirs is not None:
        other = "" if os.path.normpath(theirs) == os.path.normpath(config) else f" (started with {theirs})"
        return Check(cid, Status.INFO, f"{lock}: held by the running router pid {pid}{other}")
    cmd = " ".join(holder.argv)[:120]
    return Check(cid, Status.FAIL, f"{lock}: held by pid {pid}, which is not a hotspare router ({cmd})",
                 f"stop that process (kill {pid}) or point state_file elsewhere; the router cannot start")


def _router_config(argv: Sequence[str], cwd: str | None) -> str | None:
    """The ``-c FILE`` of a ``hotspare router`` command line, made absolute; else None."""
    if "router" not in argv:
        return None
    args = list(argv)
    for i, arg in enumerate(args):
        value = None
        if arg in ("-c", "--config") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.partition("=")[2]
        if value is not None:
            return value if os.path.isabs(value) or cwd is None else os.path.join(cwd, value)
    return None


def _codes(codes: frozenset[int]) -> str:
    """{200..299, 301} -> '2xx, 301'."""
    out: list[str] = []
    for first in range(100, 600, 100):
        block = set(range(first, first + 100))
        if block <= codes:
            out.append(f"{first // 100}xx")
        else:
            out += [str(c) for c in sorted(block & codes)]
    return ", ".join(out)
