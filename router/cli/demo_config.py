"""The demo's ports and deployment file (pure: no process is started here).

Rules:

1. Everything listens on 127.0.0.1 only.
2. The well-known ports of the README (router 8080, admin 9100, apps 8001/8002, agents
   9101/9102) are used when free, so the printed URLs are memorable; a busy one is
   replaced by a free port the kernel picks (``any_port`` always does that).
3. :func:`build_config` only builds the mapping; the demo validates it with the one
   config loader before anything starts.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WELL_KNOWN", "DemoPorts", "build_config", "pick_ports"]

WELL_KNOWN = {"router": 8080, "admin": 9100, "app_a": 8001, "app_b": 8002, "agent_a": 9101, "agent_b": 9102}


@dataclass(frozen=True)
class DemoPorts:
    router: int
    admin: int
    app_a: int
    app_b: int
    agent_a: int
    agent_b: int

    def app(self, node: str) -> int:
        return self.app_a if node == "a" else self.app_b


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
    ports: DemoPorts, base: Path, admin_token: str, replication_token: str,
    app_stop: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The deployment file of the demo: service ``library`` on backends a and b.
    ``app_stop`` is each node's fencing command (the demo's ``demo stop NODE``)."""
    config: dict[str, Any] = {
        "listen": [f"127.0.0.1:{ports.router}"],
        # The token is written here (the file is 0600) so that every printed command can
        # read it with -c FILE in a new terminal: nothing to export, nothing printed.
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
                    # Planned switchover: the target gets everything the active had (a dead
                    # active: fails fast, go on).
                    {"name": "final sync", "agent": "final-sync", "timeout": "10s", "on_failure": "continue"},
                    {"name": "stop old app", "agent": "stop-app", "timeout": "10s", "on_failure": "continue"},
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
    if app_stop:
        config["replication"]["app_stop"] = {node: list(argv) for node, argv in app_stop.items()}
    return config
