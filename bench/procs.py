"""Starting and stopping the real programs a benchmark drives (nginx, HAProxy, hotspare).

Rules:

1. Everything listens on 127.0.0.1 only. Ports are picked by binding port 0 and reading
   the number back; a program that then fails to bind is reported with its own stderr.
2. Readiness is a condition polled with a deadline (the port accepts a connection), never
   a sleep. A program that exits while we wait is an error naming it and its output.
3. Every started program is owned by a :class:`Processes` stack and stopped in reverse
   order on exit, on error and on Ctrl-C / SIGTERM (see :func:`sigterm_as_interrupt`):
   SIGTERM to its own process group, SIGKILL after a grace period. Only processes this
   script started are ever signalled, by their own id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

__all__ = [
    "BenchError",
    "Proc",
    "Processes",
    "free_port",
    "require_program",
    "sigterm_as_interrupt",
    "wait_port",
]


class BenchError(Exception):
    """A benchmark cannot run (missing program, a server that would not start)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_program(name: str) -> str:
    path = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
    if path is None:
        raise BenchError(f"{name} is not installed (apt-get install {name})")
    return path


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def sigterm_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally`` blocks stop what we started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class Proc:
    """One started program, its output captured to files in the run's directory."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        if cpu is not None:
            self.argv = ["taskset", "-c", str(cpu), *self.argv]
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env,
                # Its own group: a terminal's Ctrl-C reaches only us, and we stop it in order.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output_tail(self, limit: int = 2000) -> str:
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                parts.append(text[-limit:])
        return "\n".join(parts) or "(no output)"

    def check_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(
                f"{self.name} exited with status {code} ({' '.join(self.argv)}):\n"
                f"{self.output_tail()}"
            )

    def signal(self, signum: int) -> None:
        """Send ``signum`` to this process alone (fault injection)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def stop(self, grace: float = 3.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            # The group we created at start: the program and any child it forked (nginx
            # workers, taskset's exec'd program). SIGCONT first in case it was frozen.
            os.killpg(self.popen.pid, signal.SIGCONT)
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=grace)


def wait_port(proc: Proc, port: int, timeout: float = 15.0) -> None:
    """Poll until ``port`` accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        proc.check_running()
        if time.monotonic() >= deadline:
            raise BenchError(
                f"{proc.name} did not open 127.0.0.1:{port} within {timeout}s:\n{proc.output_tail()}"
            )
        time.sleep(0.05)


class Processes:
    """A stack of started programs, stopped in reverse order when the block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None = None,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 15.0,
    ) -> Proc:
        proc = Proc(name, argv, self.workdir, cpu=cpu, env=env)
        self.procs.append(proc)
        if port is not None:
            wait_port(proc, port, timeout)
        return proc

    def stop_all(self) -> None:
        while self.procs:
            self.procs.pop().stop()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Ctrl-C during the stop itself must not leave programs behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, old)
