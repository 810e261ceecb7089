"""Cutting one TCP link on loopback with iptables, and only that link.

Rules:

1. Every link a router opens (to a backend, to an etcd member) goes to a *portal*: a
   port of its own on 127.0.0.1 that a DNAT rule (nat OUTPUT) sends on to the real
   port. The portal port is held by a bound, non-listening socket for the whole run, so
   nothing else can take it. Router r2's config names backend a as
   ``http://127.0.0.1:<portal(r2, a)>``; nobody else uses that port.
2. Cutting a link is one filter rule dropping every packet whose connection was opened
   to that portal (``-m conntrack --ctorigdstport``): both directions, new and
   established connections alike, nothing else. Healing deletes the rule.
3. Rules live in two dedicated chains named ``HSC<pid>`` (filter and nat) hooked into
   OUTPUT; ``close`` unhooks and deletes them (call it in a ``finally``). ``open`` first
   removes the chains of dead processes, so a crashed run leaves nothing behind for the
   next.
4. Only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess

PREFIX = "HSC"
TABLES = ("filter", "nat")


class NetCutError(Exception):
    """An iptables command failed; the message names the command and its stderr."""


def unavailable() -> str | None:
    """Why links cannot be cut here (a reason for a skip), or None."""
    if os.geteuid() != 0:
        return "the chaos tests cut links with iptables, which needs root"
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables)"
    res = subprocess.run(["iptables", "-t", "nat", "-S", "OUTPUT"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return f"iptables does not work here: {res.stderr.strip()}"
    return None


def _ipt(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise NetCutError(f"iptables {' '.join(args)}: {res.stderr.strip()}")
    return res


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_chain(table: str, chain: str) -> None:
    while _ipt("-t", table, "-D", "OUTPUT", "-j", chain, check=False).returncode == 0:
        pass
    _ipt("-t", table, "-F", chain, check=False)
    _ipt("-t", table, "-X", chain, check=False)


def sweep_stale() -> list[str]:
    """Remove the chains of runs whose process is gone; returns their names."""
    removed = []
    for table in TABLES:
        listing = _ipt("-t", table, "-S").stdout
        for m in re.finditer(rf"^-N ({PREFIX}(\d+))$", listing, re.M):
            if not _alive(int(m.group(2))):
                _drop_chain(table, m.group(1))
                removed.append(f"{table}/{m.group(1)}")
    return removed


class NetCut:
    """Portals and cuts of one run (see the module rules)."""

    def __init__(self) -> None:
        self.chain = f"{PREFIX}{os.getpid()}"
        self._held: dict[int, socket.socket] = {}
        self._cut: set[int] = set()
        self._open = False

    def open(self) -> None:
        sweep_stale()
        for table in TABLES:
            _drop_chain(table, self.chain)
            _ipt("-t", table, "-N", self.chain)
            _ipt("-t", table, "-I", "OUTPUT", "-j", self.chain)
        self._open = True

    def portal(self, target_port: int) -> int:
        """A new port on 127.0.0.1 whose connections reach ``target_port``."""
        assert self._open, "NetCut.open() first"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        self._held[port] = s
        _ipt("-t", "nat", "-A", self.chain, "-o", "lo", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port),
             "-j", "DNAT", "--to-destination", f"127.0.0.1:{target_port}")
        return port

    def _rule(self, port: int) -> list[str]:
        return ["-p", "tcp", "-m", "conntrack", "--ctorigdst", "127.0.0.1", "--ctorigdstport", str(port), "-j", "DROP"]

    def cut(self, *ports: int) -> None:
        for port in ports:
            assert port in self._held, f"port {port} is not a portal of this run"
            if port not in self._cut:
                _ipt("-t", "filter", "-A", self.chain, *self._rule(port))
                self._cut.add(port)

    def heal(self, *ports: int) -> None:
        for port in ports:
            if port in self._cut:
                _ipt("-t", "filter", "-D", self.chain, *self._rule(port))
                self._cut.discard(port)

    def is_cut(self, port: int) -> bool:
        return port in self._cut

    def close(self) -> None:
        for table in TABLES:
            _drop_chain(table, self.chain)
        for s in self._held.values():
            s.close()
        self._held.clear()
        self._cut.clear()
        self._open = False
