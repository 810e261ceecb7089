"""``hotspare doctor``'s checks of this host: the promotion steps' programs, the state
file's folder, and the state file's lock.

Rules:

1. Read-only as far as the router can tell: the writability probe creates and removes a
   temporary file; the lock probe takes the lock without waiting and drops it at once
   (the router's :meth:`StateFile.acquire` would meet it only in that instant, and then
   stop with its own clear error and be restarted by systemd). A missing lock file is
   not created: as root, doctor would leave a file the router's user cannot open.
2. Programs are resolved the way the promotion will run them: ``argv[0]`` as a path when
   it has a slash (relative to the step's ``cwd``), else on the step's ``PATH`` (its
   ``env``, else this process's).
3. The lock's holder is read from the pid the router writes into the lock file and from
   /proc; what it means is decided by :func:`doctor_model.lock_verdict`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from promote.config import Step
from router.config import Config
from router.errors import StateFileError
from router.failover.state import StateFile

from .doctor_model import Check, LockHolder, Status, lock_verdict

__all__ = ["check_programs", "check_state_file", "check_state_lock"]


def check_programs(config: Config) -> list[Check]:
    return [_program(f"program:{svc.name}/{step.name}", step)
            for svc in config.services for step in svc.promote if step.exec is not None]


def _program(cid: str, step: Step) -> Check:
    if step.cwd is not None and not step.cwd.is_dir():
        return Check(cid, Status.FAIL, f"cwd {step.cwd}: no such folder", "create it or fix the step's cwd")
    if isinstance(step.exec, str):
        program = "/bin/sh"  # shell: true; the command itself is the shell's business
    else:
        assert step.exec is not None
        program = step.exec[0]
    if "{" in program:
        return Check(cid, Status.SKIP, f"{program!r}: a template, known only during a promotion")
    if "/" in program:
        path = Path(program) if os.path.isabs(program) else Path(step.cwd or ".") / program
        if not path.exists():
            return Check(cid, Status.FAIL, f"{path}: not found",
                         "install the program there, or fix the step's exec")
    else:
        found = shutil.which(program, path=step.env.get("PATH") or os.environ.get("PATH", os.defpath))
        if found is None:
            return Check(cid, Status.FAIL, f"{program}: not found on PATH",
                         "install it, or give its absolute path in exec")
        path = Path(found)
    if path.is_dir() or not os.access(path, os.X_OK):
        return Check(cid, Status.FAIL, f"{path}: not executable", f"chmod +x {path} (and check its owner)")
    return Check(cid, Status.PASS, f"{path}: present and executable")


def check_state_file(config: Config) -> Check:
    """The folder is writable (a real temporary file) and the file, if any, is valid."""
    cid, path = "state-file", config.state_file
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.doctor.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return Check(cid, Status.FAIL, f"{folder}: cannot write there ({exc.strerror or exc})",
                     "create the folder and give it to the router's user (systemd: StateDirectory=)")
    try:
        states = StateFile(path).load(config.services)
    except StateFileError as exc:
        return Check(cid, Status.FAIL, str(exc), "see docs/runbook.md before editing the state file by hand")
    if not path.exists():
        return Check(cid, Status.PASS, f"{folder}: writable; no state file yet (first start)")
    shown = ", ".join(f"{name} on {s.active} epoch {s.epoch}" for name, s in states.items())
    return Check(cid, Status.PASS, f"{path}: writable, valid ({shown})")


def check_state_lock(config: Config) -> Check:
    lock = StateFile(config.state_file).lock_path
    source = config.source or Path("hotspare.yaml")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)  # flock works on a read-only descriptor
    except FileNotFoundError:
        return lock_verdict("state-lock", lock, None, source.resolve())
    except OSError as exc:
        return Check("state-lock", Status.FAIL, f"{lock}: cannot open ({exc.strerror or exc})",
                     "run doctor as root or as the router's user")
    holder: LockHolder | None = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(_read_pid(fd))
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return lock_verdict("state-lock", lock, holder, source.resolve())


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _holder(pid: int | None) -> LockHolder:
    if pid is None:
        return LockHolder(None, None, None)
    argv: tuple[str, ...] | None = None
    cwd: str | None = None
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    with contextlib.suppress(OSError):
        cwd = os.readlink(f"/proc/{pid}/cwd")
    return LockHolder(pid, argv, cwd)
