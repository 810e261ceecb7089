"""``hotspare demo``: the whole system on loopback, no config file.

Starts, as subprocesses, two demo application servers (``hotspare.demo.app``), their
two replication agents (``hotspare agent``) and the router (``hotspare router``), with
a deployment file generated into a fresh folder; prints the URLs and what to try; and
stops everything on Ctrl-C.

Rules:

1. Everything listens on 127.0.0.1 only.
2. The well-known ports of the README (router 8080, admin 9100, apps 8001/8002, agents
   9101/9102) are used when free, so the printed URLs are memorable; a busy one is
   replaced by a free port the kernel picks (``--any-port`` always does that).
3. Children start in dependency order (apps, agents, router) and each must show it is
   ready (answers HTTP) before the next starts; a child that exits early stops the demo
   with the tail of its log. Logs go to files in the demo folder, not the terminal.
4. Shutdown is the reverse order: SIGTERM, a grace period, then SIGKILL. Signal
   handlers only set a flag.
5. The deployment file is built by :func:`build_config` (pure), validated by the one
   config loader before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DemoPorts", "add_arguments", "build_config", "pick_ports", "run"]

WELL_KNOWN = {"router": 8080, "admin": 9100, "app_a": 8001, "app_b": 8002, "agent_a": 9101, "agent_b": 9102}
STOP_GRACE = 5.0
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoPorts:
    router: int
    admin: int
    app_a: int
    app_b: int
    agent_a: int
    agent_b: int


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(any_port: bool = False) -> DemoPorts:
    """Well-known ports where free, else ports the kernel picks (held open together, so
    no two picks collide; a race with another program remains, which a demo can accept)."""
    chosen: dict[str, int] = {}
    held: list[socket.socket] = []
    try:
        for name, port in WELL_KNOWN.items():
            if not any_port and _free(port):
                chosen[name] = port
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
            chosen[name] = s.getsockname()[1]
    finally:
        for s in held:
            s.close()
    return DemoPorts(**chosen)


def build_config(
    ports: DemoPorts, base: Path, admin_token: str, replication_token: str, app_pids: dict[str, int] | None = None
) -> dict[str, Any]:
    """The deployment file of the demo: service ``library`` on backends a and b."""
    stop: dict[str, list[str]] | None = None
    if app_pids:
        # Fencing in the demo: the agent stops its node's app server (SIGTERM).
        stop = {node: ["/bin/kill", "-TERM", str(pid)] for node, pid in app_pids.items()}
    config: dict[str, Any] = {
        "listen": [f"127.0.0.1:{ports.router}"],
        "admin": {"listen": f"127.0.0.1:{ports.admin}", "token": admin_token},
        "state_file": str(base / "state" / "hotspare-state.json"),
        "log": {"access_log": str(base / "logs" / "access.log")},
        "shutdown_grace": "2s",
        "services": [
            {
                "name": "library",
                "backends": [
                    {"name": "a", "url": f"http://127.0.0.1:{ports.app_a}", "agent": f"http://127.0.0.1:{ports.agent_a}"},
                    {"name": "b", "url": f"http://127.0.0.1:{ports.app_b}", "agent": f"http://127.0.0.1:{ports.agent_b}"},
                ],
                # Quick for a demo: a killed app server is noticed in about a second.
                "health": {"path": "/health", "interval": "500ms", "timeout": "500ms", "rise": 2, "fall": 2},
                "failover": {"hold_down": "10s"},
                # A killed node cannot confirm its own stop; in the demo, go on with an alarm.
                "fence_failure": "proceed",
                "promote": [
                    # Planned switchover: b gets everything a had (a dead a: fails fast, go on).
                    {"name": "final sync", "agent": "final-sync", "timeout": "10s", "on_failure": "continue"},
                    {"name": "stop old app", "agent": "stop-app", "timeout": "5s", "on_failure": "continue"},
                    {"name": "new app ready", "wait_healthy": {"successes": 2, "interval": "200ms"}, "timeout": "20s"},
                ],
            }
        ],
        "replication": {
            "token": replication_token,
            "roots": [
                {"name": "jobs", "path": str(base / "a" / "jobs"), "paths": {"b": str(base / "b" / "jobs")}},
                {"name": "index", "path": str(base / "a" / "index"), "paths": {"b": str(base / "b" / "index")}},
            ],
            "role_interval": "250ms",
            "rescan_interval": "5s",
            "reconcile_interval": "30s",
        },
    }
    if stop:
        config["replication"]["app_stop"] = stop
    return config


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    ready_url: str
    proc: asyncio.subprocess.Process | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as r:
            return bool(200 <= r.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Demo:
    def __init__(self, base: Path, ports: DemoPorts, apps_only: bool) -> None:
        self.base = base
        self.ports = ports
        self.apps_only = apps_only
        self.children: list[Child] = []
        self.stop = asyncio.Event()
        self.admin_token = secrets.token_urlsafe(18)
        self.replication_token = secrets.token_urlsafe(18)
        self.config_path = base / "hotspare.yaml"

    async def start_child(self, child: Child) -> None:
        log = os.open(child.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        finally:
            os.close(log)  # the child has its own copy
        self.children.append(child)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while not await asyncio.to_thread(_http_ok, child.ready_url):
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{_tail(child.log)}")
            if self.stop.is_set():
                raise RuntimeError("interrupted")
            if loop.time() > deadline:
                raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT:g}s:\n{_tail(child.log)}")
            # Poll readiness with a deadline; waking on stop keeps Ctrl-C instant.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.1)

    async def start_all(self) -> None:
        py = sys.executable
        for sub in ("a", "b", "logs", "state"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        p = self.ports
        for node, port, seed in (("a", p.app_a, ["--seed"]), ("b", p.app_b, [])):
            await self.start_child(Child(
                f"app server {node}",
                [py, "-m", "hotspare.demo.app", "--name", node, "--data", str(self.base / node),
                 "--port", str(port), *seed],
                self.base / "logs" / f"app-{node}.log", f"http://127.0.0.1:{port}/health",
            ))
        if self.apps_only:
            return
        pids = {c.name[-1]: c.proc.pid for c in self.children if c.proc is not None}
        config = build_config(p, self.base, self.admin_token, self.replication_token, pids)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        from router.config import load_config

        load_config(self.config_path)  # the one loader; a ConfigError ends the demo (exit 2)
        for node, port in (("a", p.agent_a), ("b", p.agent_b)):
            await self.start_child(Child(
                f"agent {node}",
                [py, "-m", "hotspare", "agent", "-c", str(self.config_path), "--node", node, "--init"],
                self.base / "logs" / f"agent-{node}.log", f"http://127.0.0.1:{port}/metrics",
            ))
        await self.start_child(Child(
            "router", [py, "-m", "hotspare", "router", "-c", str(self.config_path)],
            self.base / "logs" / "router.log", f"http://127.0.0.1:{p.admin}/v1/status",
        ))

    def banner(self) -> str:
        p = self.ports
        pid = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        if self.apps_only:
            return (
                f"demo app servers running (files in {self.base})\n"
                f"  app server a: http://127.0.0.1:{p.app_a}/   pid {pid['app server a']}\n"
                f"  app server b: http://127.0.0.1:{p.app_b}/   pid {pid['app server b']}\n"
                "Ctrl-C stops everything."
            )
        admin = f"http://127.0.0.1:{p.admin}"
        return f"""\
hotspare demo is running (files in {self.base})

  library, through the router   http://127.0.0.1:{p.router}/
  status page                   {admin}/
  app server a (active)         http://127.0.0.1:{p.app_a}/   pid {pid['app server a']}
  app server b (spare)          http://127.0.0.1:{p.app_b}/   pid {pid['app server b']}
  deployment file               {self.config_path}
  logs                          {self.base / 'logs'}

  export HOTSPARE_ADMIN_TOKEN={self.admin_token}

Try this:
  1. Open the library, log in (any name, password "library"), search for "dragon",
     and write a report. It lands in {self.base / 'a' / 'jobs' / 'reports'}
     and the agents copy it to {self.base / 'b' / 'jobs' / 'reports'}.
  2. Kill the active app server:        kill -9 {pid['app server a']}
  3. Watch the status page flip to b within a second or two; reload the library:
     you are served by b (log in again: sessions are not replicated) and your
     report is there: GET /jobs/reports.
  4. From another terminal:
       {sys.executable} -m hotspare status --admin {admin}
       {sys.executable} -m hotspare switchover --admin {admin} --service library --to a --dry-run

Ctrl-C stops everything."""

    async def shutdown(self) -> None:
        # Reverse order: router first (no new decisions), then agents, then app servers.
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def watch(self) -> None:
        """Report children that exit (a killed app server is part of the demo)."""
        reported: set[str] = set()
        while not self.stop.is_set():
            for c in self.children:
                if c.proc is not None and c.proc.returncode is not None and c.name not in reported:
                    reported.add(c.name)
                    print(f"[demo] {c.name} exited with status {c.proc.returncode}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)


async def _main(demo: Demo) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.stop.set)  # handlers only set a flag
    try:
        try:
            await demo.start_all()
        except RuntimeError as exc:
            if demo.stop.is_set():
                return 130
            print(f"hotspare demo: could not start: {exc}", file=sys.stderr)
            return 1
        print(demo.banner(), flush=True)
        await demo.watch()
        print("\n[demo] stopping...", flush=True)
        return 0
    finally:
        await demo.shutdown()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="folder for data, logs and the generated config "
                        "(default: a new temporary folder, removed at exit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder at exit")
    parser.add_argument("--any-port", action="store_true", help="let the kernel pick every port")
    parser.add_argument("--apps-only", action="store_true",
                        help="only the two demo application servers (no agents, no router)")


def run(args: argparse.Namespace) -> int:
    base = args.dir.resolve() if args.dir else Path(tempfile.mkdtemp(prefix="hotspare-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    demo = Demo(base, pick_ports(args.any_port), args.apps_only)
    try:
        return asyncio.run(_main(demo))
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
