"""The processes of a chaos world: recording backends and ``hotspare router`` processes.

Rules:

1. Each process logs to its own file in its own directory (``router.log``, appended to,
   so a restart keeps the earlier life's lines); readiness is read from that file (or
   the backend's ``PORT`` line) with a deadline, never a sleep.
2. Ports are chosen before the start (bind 0, read back, close) and kept across restarts:
   the load and the portals keep pointing at the same place.
3. ``kill`` is SIGKILL, ``freeze`` SIGSTOP, ``thaw`` SIGCONT, ``term`` SIGTERM (a clean
   stop); ``reap`` (teardown) thaws first so a frozen process can die. Only processes
   started here are ever signalled, by their own id.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RECORDER = HERE / "recorder.py"
START_DEADLINE = 20.0


def free_port() -> int:
    """A port bindable now, picked BELOW the kernel's ephemeral range: these ports are
    chosen before the router binds them (a restarted router keeps its address), and a
    port from the ephemeral range can meanwhile become the local end of one of the
    load's many outgoing connections ("address already in use" at start)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port below the ephemeral range (starting at {low})")


class Child:
    """One started process (a mixin of the dataclasses below, which hold ``name``,
    ``proc`` and ``frozen``); signals are sent to it only while it runs."""

    name: str
    proc: subprocess.Popen[bytes] | None
    frozen: bool

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.thaw()
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self.signal(signal.SIGCONT)
            self.frozen = False

    async def term(self, deadline: float = 10.0) -> None:
        """SIGTERM and wait for the exit (SIGKILL past ``deadline``)."""
        self.thaw()
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                await asyncio.to_thread(self.proc.wait, deadline)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def reap(self) -> None:
        self.kill()


@dataclass
class BackendProc(Child):
    name: str
    dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.answers"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.dir / f"{self.name}.stderr", "ab") as err:
            return subprocess.Popen(
                [sys.executable, str(RECORDER), "--name", self.name, "--port", str(self.port), "--log", str(self.log)],
                stdout=subprocess.PIPE, stderr=err,
            )

    async def start(self) -> None:
        """Start (or restart, on the same port) and return once it listens."""
        self.proc = self._spawn()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), START_DEADLINE)
        assert line.startswith(b"PORT "), f"backend {self.name} did not announce its port: {line!r}"
        self.port = int(line.split()[1])


@dataclass
class RouterProc(Child):
    name: str
    dir: Path
    listen_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    portals: dict[str, int] = field(default_factory=dict)  # "a", "b", "etcd0".. -> portal port
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    starts: int = 0

    @property
    def config(self) -> Path:
        return self.dir / "hotspare.yaml"

    @property
    def log(self) -> Path:
        return self.dir / "router.log"

    @property
    def audit(self) -> Path:
        return self.dir / "state.json.audit.jsonl"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _spawn(self, mark: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as err:
            err.write(mark.encode())
            err.flush()
            return subprocess.Popen(
                [sys.executable, "-m", "hotspare", "router", "-c", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, cwd=str(REPO), env=env,
            )

    async def start(self) -> None:
        """Start ``hotspare router -c FILE`` and return once its admin API listens."""
        self.starts += 1
        mark = f"=== chaos: start {self.starts} of {self.name}\n"
        self.proc = self._spawn(mark)
        end = time.monotonic() + START_DEADLINE
        while True:
            life = self.log_text().rsplit(mark, 1)[-1]
            if "admin API on" in life:
                return
            if not self.running:
                raise AssertionError(f"router {self.name} exited at start:\n{life[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"router {self.name} not listening after {START_DEADLINE}s:\n{life[-3000:]}")
            await asyncio.sleep(0.05)  # polling interval of a deadline loop
