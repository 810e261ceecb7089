"""A real ``hotspare router -c FILE`` subprocess in front of two recording backends, and
what tests read back from it (/v1/status, /metrics, its stderr). Shared by
tests/router/test_fuzz.py, tests/router/test_attacks.py and bench/fuzz_bench.py.

Rules: readiness is the "admin API on" log line and both backends healthy, polled with a
deadline; the router gets SIGTERM (SIGKILL after 10 s) and nothing else is signalled.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import wait_for_sync

from .fuzzkit import RecordingBackend

ADMIN_TOKEN = "fuzz-admin-token-" + "x" * 16


class RouterProcess:
    """``hotspare router -c FILE`` in front of two recording backends (a active)."""

    def __init__(self, workdir: Path, backends: list[RecordingBackend], probe_path: str, **top: Any) -> None:
        self.dir, self.backends = workdir, backends
        self.config = workdir / "hotspare.yaml"
        self.stderr = workdir / "router.stderr"
        data = {
            "listen": ["127.0.0.1:0"],
            "admin": {"listen": "127.0.0.1:0", "token": ADMIN_TOKEN},
            "state_file": str(workdir / "state.json"),
            "log": {"access_log": None},
            "shutdown_grace": "2s",
            "services": [{
                "name": "app",
                "backends": [{"name": b.name, "url": b.url} for b in backends],
                "health": {"path": probe_path, "interval": "200ms", "timeout": "500ms", "rise": 1, "fall": 2},
                "failover": {"traffic_failures": 1},
            }],
            **top,
        }
        self.config.write_text(yaml.safe_dump(data))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = self.admin_port = 0

    def log(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def start(self) -> None:
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hotspare", "router", "-c", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=err,
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"router exited:\n{self.log()}"
            return "admin API on" in self.log()

        wait_for_sync(ready, timeout=20, what="the router to listen")
        text = self.log()
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(http\)", text).group(1))  # type: ignore[union-attr]
        self.admin_port = int(re.search(r"admin API on http://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        wait_for_sync(self.all_healthy, timeout=10, what="both backends to be healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def service(self) -> dict[str, Any]:
        svc: dict[str, Any] = json.loads(self._get("/v1/status"))["services"][0]
        return svc

    def all_healthy(self) -> bool:
        return all(b["healthy"] for b in self.service()["backends"])

    def metrics(self) -> str:
        return self._get("/metrics")


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def probe_path() -> str:
    """A health-check path no generated input will hit by chance."""
    return f"/__probe_{secrets.token_hex(8)}"


class Stack:
    """Two recording backends (a active) and a router subprocess in front; ``close()``
    stops them in reverse order."""

    def __init__(self, workdir: Path, **top: Any) -> None:
        path = probe_path()
        self.backends = [RecordingBackend("a", path), RecordingBackend("b", path)]
        self.router = RouterProcess(workdir, self.backends, path, **top)
        try:
            self.router.start()
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int:
        return self.router.port

    def forwarded(self) -> int:
        """Request heads the backends have seen (probes not counted)."""
        return sum(b.snapshot()[0] for b in self.backends)

    def close(self) -> None:
        self.router.stop()
        for b in reversed(self.backends):
            b.close()


def first_traceback(log: str) -> str:
    """The first traceback in a router's stderr and the line that logged it ('' if none),
    for an assertion message that says what broke."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            return "\n".join(lines[max(0, i - 2) : i + 14])
    return ""
