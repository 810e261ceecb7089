"""``hotspare demo``: the whole system on loopback, no config file.

Starts, as subprocesses, two demo application servers (``hotspare.demo.app``), their
two replication agents (``hotspare agent``) and the router (``hotspare router``), with
a deployment file generated into a folder (ports and file: ``demo_config.py``); prints
the URLs and a walkthrough whose every command works in a new terminal
(``demo_steps.py``); answers ``hotspare demo kill|stop|restart NODE --dir DIR`` on its
control socket (``demo_control.py``); and stops everything on Ctrl-C.

Rules:

1. Everything listens on 127.0.0.1 only.
2. Children start in dependency order (apps, agents, router) and each must show it is
   ready (answers HTTP) before the next starts; a child that exits early stops the demo
   with the tail of its log. Logs go to files in the demo folder, not the terminal.
3. Shutdown is the reverse order: SIGTERM, a grace period, then SIGKILL. Signal
   handlers only set a flag.
4. The deployment file is built by :func:`build_config` (pure), written 0600 (it holds
   the admin token the printed commands read), and validated by the one config loader
   before anything starts.
5. An app server the demo restarts is started with its first command line, so it is
   the same server; the agents fence an app server through the demo (``demo stop``),
   which knows its current process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from router.cli import demo_control
from router.cli.demo_config import DemoPorts, build_config, pick_ports
from router.cli.demo_steps import DemoFacts, apps_only_banner, walkthrough

__all__ = ["DemoPorts", "add_arguments", "build_config", "pick_ports", "run"]

STOP_GRACE = 5.0
READY_TIMEOUT = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    ready_url: str
    proc: asyncio.subprocess.Process | None = None


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


def hotspare_command() -> str:
    """How a new terminal runs this hotspare: the console script beside this interpreter
    (``.venv/bin/hotspare``), else this interpreter with ``-m hotspare``."""
    script = Path(sys.executable).parent / "hotspare"
    if os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m hotspare"


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
        self.acting = asyncio.Lock()  # one control action at a time

    async def start_child(self, child: Child) -> None:
        log = os.open(child.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        finally:
            os.close(log)  # the child has its own copy
        if child not in self.children:
            self.children.append(child)
        await self._wait_until(lambda: _http_ok(child.ready_url), child, "ready")

    async def _wait_until(self, check: Callable[[], bool], child: Child, what: str) -> None:
        assert child.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while not await asyncio.to_thread(check):
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{_tail(child.log)}")
            if self.stop.is_set():
                raise RuntimeError("interrupted")
            if loop.time() > deadline:
                raise RuntimeError(f"{child.name} not {what} after {READY_TIMEOUT:g}s:\n{_tail(child.log)}")
            # Poll with a deadline; waking on stop keeps Ctrl-C instant.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.1)

    def app(self, node: str) -> Child:
        return next(c for c in self.children if c.name == f"app server {node}")

    async def start_all(self) -> None:
        py = sys.executable
        for sub in ("a", "b", "logs", "state"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        p = self.ports
        for node, seed in (("a", ["--seed"]), ("b", [])):
            await self.start_child(Child(
                f"app server {node}",
                [py, "-m", "hotspare.demo.app", "--name", node, "--data", str(self.base / node),
                 "--port", str(p.app(node)), *seed],
                self.base / "logs" / f"app-{node}.log", f"http://127.0.0.1:{p.app(node)}/health",
            ))
        if self.apps_only:
            return
        stop = {n: [py, "-m", "hotspare", "demo", "stop", n, "--dir", str(self.base)] for n in ("a", "b")}
        config = build_config(p, self.base, self.admin_token, self.replication_token, stop)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump(config, sort_keys=False))
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
        pids = {n: proc.pid for n in ("a", "b") if (proc := self.app(n).proc) is not None}
        facts = DemoFacts(self.base, self.ports, pids, hotspare_command())
        return apps_only_banner(facts) if self.apps_only else walkthrough(facts)

    # -- control actions (demo_control) ------------------------------------------------

    async def act(self, action: str, node: str) -> tuple[bool, str]:
        procs = {"app": self.app(node)}
        if not self.apps_only:
            procs["agent"] = next(c for c in self.children if c.name == f"agent {node}")
        async with self.acting:
            steps = demo_control.plan(
                action, {k: c.proc is not None and c.proc.returncode is None for k, c in procs.items()})
            if isinstance(steps, str):
                return False, f"server {node}: {steps}"
            if not steps:
                return True, f"nothing to {action}: app server {node} is not running"  # what a fencing stop wants
            done = []
            for op, what in steps:  # all signals first: a crash takes them together
                child = procs[what]
                if op == "start":
                    try:
                        await self.start_child(child)
                    except RuntimeError as exc:
                        return False, f"{child.name} did not start: {exc}"
                elif child.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGKILL if op == "kill" else signal.SIGTERM)
                assert child.proc is not None
                done.append(f"{child.name} (pid {child.proc.pid})")
            for op, what in steps:
                proc = procs[what].proc
                if op != "start" and proc is not None:
                    await self._reap(proc)
        verb = {"kill": "killed", "stop": "stopped", "restart": "restarted"}[action]
        head = f"{verb} {' and '.join(done)}"
        if action == "restart" and any(what == "app" for _, what in steps):
            return True, await self._restarted(procs["app"], node, head)
        return True, head

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _restarted(self, child: Child, node: str, head: str) -> str:
        """Wait (with a deadline) until the router sees the app server healthy, so the
        next printed step (a switchover to it) is not refused."""
        head = f"{head}; http://127.0.0.1:{self.ports.app(node)}/ answers"
        if self.apps_only:
            return head
        from router.cli.client import AdminClient, AdminError

        client = AdminClient(f"http://127.0.0.1:{self.ports.admin}", self.admin_token, 2.0)
        seen: dict[str, object] = {}

        def healthy() -> bool:
            try:
                (svc,) = client.request("GET", "/v1/status")["services"]
            except (AdminError, KeyError, TypeError, ValueError):
                return False
            seen["active"] = svc.get("active")
            return any(b.get("name") == node and b.get("healthy") for b in svc.get("backends") or [])

        try:
            await self._wait_until(healthy, child, "seen healthy by the router")
        except RuntimeError as exc:
            return f"{head}; {exc}"
        role = "the active" if seen.get("active") == node else "the spare (no automatic failback)"
        return f"{head}; the router sees it healthy: it is {role}"

    # -- lifetime ------------------------------------------------------------------------

    async def shutdown(self) -> None:
        # Reverse order: router first (no new decisions), then agents, then app servers.
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            await self._reap(proc)

    async def watch(self) -> None:
        """Report children that exit (a killed app server is part of the demo)."""
        reported: set[int] = set()
        while not self.stop.is_set():
            for c in self.children:
                proc = c.proc
                if proc is not None and proc.returncode is not None and proc.pid not in reported:
                    reported.add(proc.pid)
                    again = ""
                    if c.name.startswith(("app server", "agent")):
                        again = f"; restart it with: {hotspare_command()} demo restart {c.name[-1]} " \
                                f"--dir {shlex.quote(str(self.base))}"
                    print(f"[demo] {c.name} exited with status {proc.returncode}{again}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)


async def _main(demo: Demo) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.stop.set)  # handlers only set a flag
    control: asyncio.AbstractServer | None = None
    try:
        try:
            # First: the agents' fencing command (demo stop) goes through it.
            control = await demo_control.serve(demo.base, demo.act)
            await demo.start_all()
        except (RuntimeError, demo_control.ControlError) as exc:
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
        if control is not None:
            control.close()
            with contextlib.suppress(OSError):
                (demo.base / demo_control.SOCKET_NAME).unlink()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=demo_control.ACTIONS,
                        help="ask the demo running in --dir to kill (SIGKILL), stop (SIGTERM) or "
                        "restart one of its app servers; without it, run a demo")
    parser.add_argument("node", nargs="?", choices=demo_control.NODES, help="the app server: a or b")
    parser.add_argument("--dir", type=Path, help="folder for data, logs and the generated config "
                        "(default: a new temporary folder, removed at exit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder at exit")
    parser.add_argument("--any-port", action="store_true", help="let the kernel pick every port")
    parser.add_argument("--apps-only", action="store_true",
                        help="only the two demo application servers (no agents, no router)")


def run_action(args: argparse.Namespace) -> int:
    if args.node is None or args.dir is None:
        print(f"hotspare demo {args.action}: give the app server and the demo's folder: "
              f"hotspare demo {args.action} a|b --dir DIR", file=sys.stderr)
        return 1
    try:
        ok, message = demo_control.call(args.dir.resolve(), args.action, args.node)
    except demo_control.ControlError as exc:
        print(f"hotspare demo {args.action}: {exc}", file=sys.stderr)
        return 1
    print(message if ok else f"hotspare demo {args.action}: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def run(args: argparse.Namespace) -> int:
    if args.action is not None:
        return run_action(args)
    base = args.dir.resolve() if args.dir else Path(tempfile.mkdtemp(prefix="hotspare-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    demo = Demo(base, pick_ports(args.any_port), args.apps_only)
    try:
        return asyncio.run(_main(demo))
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
