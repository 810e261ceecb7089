"""The state file: which backend is active for each service, and at which epoch.

Rules:

1. Format: a JSON object ``{"services": {"app": {"active": "b", "epoch": 3}}, "version": 1}``.
   (A bare ``{"app": {...}}`` mapping is read too.)
2. Writing is atomic and durable: a temporary file in the same directory, fsynced,
   renamed over the old one, then the directory fsynced. A crash at any moment leaves
   either the old file or the new one, never half of one.
3. A missing file means first start: every service starts on its first backend at
   epoch 0. Anything else that is wrong (unreadable, not JSON, truncated, a backend
   the config does not name, a negative epoch) raises :class:`StateFileError` naming
   the file and the problem. Never a silent reset: resetting to the first backend could
   send traffic to a node that was fenced.
4. A service in the config but not in the file (added since) starts on its first
   backend at epoch 0; a service in the file but not in the config is kept as written,
   so removing a service from the config by mistake loses nothing.
5. One router per file: :meth:`StateFile.acquire` takes an exclusive ``flock`` on the
   sibling ``<state_file>.lock`` (the state file itself is replaced by rename at every
   save, so it cannot carry the lock) and writes the holder's pid into it. The lock is
   held for the router's whole life and dropped by :meth:`StateFile.release` (or by the
   kernel when the process dies: a crashed router never leaves a stale lock). A second
   router gets :class:`StateFileError` naming the file and the holder's pid. Readers
   (``load`` alone, ``hotspare status``) take no lock.
6. A failed :meth:`StateFile.save` changes nothing in memory; the caller (the failover
   controller) decides what the failure means for the machine.
7. :meth:`StateFile.save` is synchronous, on the event loop, on purpose (not aiofiles,
   not a thread): the epoch must be on disk before the machine commits the move and
   before any request is routed by it, with nothing else interleaved. It is a few
   hundred bytes and two fsyncs, once per change of active.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.config import ServiceConfig
from router.errors import StateFileError

__all__ = ["ServiceState", "StateFile", "StateFileError"]

VERSION = 1


@dataclass(frozen=True, slots=True)
class ServiceState:
    active: str
    epoch: int


class StateFile:
    """Load once at start; :meth:`save` before every change of active."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._states: dict[str, ServiceState] = {}
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def acquire(self) -> None:
        """Hold the file for this process (rule 5); :class:`StateFileError` if another
        process holds it or the lock file cannot be opened."""
        if self._lock_fd is not None:
            return
        lock = self.lock_path
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot open the lock file {lock}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateFileError(
                f"{self.path}: held by another router (pid {holder or 'unknown'}, lock {lock}); "
                f"two routers must never share a state file: stop the other one or give this one "
                f"its own state_file"
            ) from None
        with contextlib.suppress(OSError):  # the pid is for the operator; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def load(self, services: Iterable[ServiceConfig]) -> dict[str, ServiceState]:
        """Read the file and check it against the configured services."""
        services = list(services)
        raw = self._read()
        stored = {} if raw is None else self._parse(raw)
        result: dict[str, ServiceState] = dict(stored)
        for svc in services:
            names = [b.name for b in svc.backends]
            st = stored.get(svc.name)
            if st is None:
                result[svc.name] = ServiceState(names[0], 0)
            elif st.active not in names:
                raise StateFileError(
                    f"{self.path}: service {svc.name!r} has active backend {st.active!r}, which the "
                    f"config does not name (expected one of {names}); fix the config or the state "
                    f"file by hand"
                )
        self._states = result
        return {svc.name: result[svc.name] for svc in services}

    def check(self, services: Iterable[ServiceConfig], running: Mapping[str, ServiceState]) -> None:
        """Before a reload: can the new config run on this file? Re-reads the file (it
        must still be readable and valid) and checks every service's active backend
        (``running`` for the services that run now, else the stored one) against the new
        config. Raises :class:`StateFileError`; changes nothing."""
        raw = self._read()
        stored = {} if raw is None else self._parse(raw)
        for svc in services:
            names = [b.name for b in svc.backends]
            st = running.get(svc.name) or stored.get(svc.name)
            if st is not None and st.active not in names:
                raise StateFileError(
                    f"{self.path}: service {svc.name!r} has active backend {st.active!r} (epoch "
                    f"{st.epoch}), which the new config does not name (expected one of {names}); "
                    f"switch over first, then remove the backend"
                )

    def get(self, service: str) -> ServiceState:
        return self._states[service]

    def save(self, service: str, active: str, epoch: int) -> None:
        """Record ``service`` on ``active`` at ``epoch``, durably, before returning."""
        states = {**self._states, service: ServiceState(active, epoch)}
        doc = {
            "version": VERSION,
            "services": {name: {"active": s.active, "epoch": s.epoch} for name, s in sorted(states.items())},
        }
        data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise StateFileError(
                f"{self.path}: cannot write the state file: {exc.strerror or exc}; "
                f"traffic stays where it was"
            ) from None
        self._states = states

    # -- reading --------------------------------------------------------------------------

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot read the state file: {exc.strerror}") from None

    def _parse(self, raw: bytes) -> dict[str, ServiceState]:
        where = str(self.path)
        if not raw.strip():
            raise StateFileError(f"{where}: the state file is empty (truncated?); expected a JSON object")
        try:
            doc: Any = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise StateFileError(f"{where}: not UTF-8 text (bad byte at offset {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise StateFileError(
                f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                f"truncated or corrupt"
            ) from None
        if not isinstance(doc, Mapping):
            raise StateFileError(f"{where}: expected a JSON object, found {type(doc).__name__}")
        if "services" in doc:
            version = doc.get("version")
            if version != VERSION:
                raise StateFileError(f"{where}: version: expected {VERSION}, found {version!r}")
            services = doc["services"]
            prefix = "services."
        else:
            services, prefix = doc, ""
        if not isinstance(services, Mapping):
            raise StateFileError(f"{where}: services: expected a JSON object, found {type(services).__name__}")
        out: dict[str, ServiceState] = {}
        for name, entry in services.items():
            key = f"{prefix}{name}"
            if not isinstance(entry, Mapping):
                raise StateFileError(f"{where}: {key}: expected {{active, epoch}}, found {entry!r}")
            active, epoch = entry.get("active"), entry.get("epoch")
            if not isinstance(active, str) or not active:
                raise StateFileError(f"{where}: {key}.active: expected a backend name, found {active!r}")
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise StateFileError(f"{where}: {key}.epoch: expected an integer >= 0, found {epoch!r}")
            unknown = sorted(set(entry) - {"active", "epoch"})
            if unknown:
                raise StateFileError(f"{where}: {key}: unknown key(s) {unknown}")
            out[str(name)] = ServiceState(active, epoch)
        return out


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over ``path``, fsync the directory."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
