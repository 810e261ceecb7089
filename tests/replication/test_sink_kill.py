"""The sink as a real subprocess, SIGKILLed in the middle of a large transfer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from replication.agent import Agent, AgentOptions
from replication.role import Role
from tests.helpers import wait_for

from .kit import TOKEN, rep_config, tree


def _config_file(tmp: Path, source_url: str) -> Path:
    cfg = tmp / "hotspare.yaml"
    cfg.write_text(f"""
listen: ["127.0.0.1:0"]
admin: {{listen: "127.0.0.1:0"}}
state_file: ./state.json
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:1", agent: "{source_url}"}}
      - {{name: b, url: "http://127.0.0.1:2", agent: "http://127.0.0.1:1"}}
replication:
  token: "{TOKEN}"
  roots:
    - {{name: jobs, path: ./a/jobs, paths: {{b: ./b/jobs}}}}
  transfers: 2
""")
    return cfg


def _spawn(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hotspare", "agent", "-c", str(cfg), "--node", "b", "--role", "sink",
             "--active", "a", "--listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT,
        )


def _tmp_size(b: Path) -> int:
    sizes = [p.stat().st_size for p in b.glob(".hstmp-r*")] if b.is_dir() else []
    return max(sizes, default=0)


@pytest.mark.slow
async def test_sink_killed_mid_transfer_resumes_without_corruption(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "jobs", tmp_path / "b" / "jobs"
    a.mkdir(parents=True)
    size = 400 * 1024 * 1024
    block = os.urandom(1024 * 1024)

    def write() -> None:
        with open(a / "export.bin", "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)

    await asyncio.to_thread(write)
    (a / "small.idx").write_text("small")
    want = hashlib.sha256((a / "export.bin").read_bytes()).hexdigest()
    source = Agent(rep_config(tmp_path), AgentOptions(node="a", fixed_role=Role("source", "app", "a", 1)))
    port = await source.start()
    cfg = _config_file(tmp_path, f"http://127.0.0.1:{port}")
    log = tmp_path / "sink.log"
    sink = _spawn(cfg, log)
    try:
        killed_at = await wait_for(lambda: _tmp_size(b) > 16 * 1024 * 1024 and _tmp_size(b), 30,
                                   what="the sink to be mid-transfer")
        sink.send_signal(signal.SIGKILL)
        sink.wait(timeout=10)
        assert not (b / "export.bin").exists(), "half a file must never sit under the final name"
        assert killed_at < size
        sink = _spawn(cfg, log)
        await wait_for(lambda: (b / "export.bin").exists(), 60, what="the file after restart")
        got = hashlib.sha256((b / "export.bin").read_bytes()).hexdigest()
        assert got == want, "replica differs from the source after the restart"
        assert tree(a) == tree(b)
        assert list(b.glob(".hstmp-*")) == [], "temp files left behind"
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=15) == 0
        assert "resuming export.bin at byte" in log.read_text(), "the restart did not resume"
    finally:
        if sink.poll() is None:
            sink.send_signal(signal.SIGKILL)
            sink.wait(timeout=10)
        await source.stop()
