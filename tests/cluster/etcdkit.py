"""A real etcd cluster for tests: N members on 127.0.0.1, data in a temporary directory,
real ``etcd`` subprocesses (Debian's etcd-server, installed by scripts/system-deps).

Rules:

1. Ports are found by binding port 0 and reading them back; etcd cannot take an open
   socket, so a port is released just before its member starts (a rare race; start()
   says which port when a member dies at start).
2. start() returns only once every member answers ``/health`` (it has a leader), polled
   with a 20 s deadline; never a fixed sleep.
3. kill(i) is SIGKILL (the fault under test), restart(i) starts the member again on the
   same data directory and ports, stop() kills every member and waits.
4. Each member logs to ``<root>/<name>.log``; a failure to start quotes its tail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ETCD", "EtcdCluster", "TlsFiles", "free_port", "make_tls", "wait_for"]

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 10.0, every: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what``."""
    end = time.monotonic() + deadline
    while True:
        if condition():
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(every)  # polling interval of a deadline loop, not a wait for a condition


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls(folder: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate.

    The server certificate carries clientAuth too: with --client-cert-auth, etcd 3.4's
    grpc-gateway dials its own gRPC server presenting the server certificate.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hotspare test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)
    return TlsFiles(
        ca=folder / "ca.pem", server_cert=folder / "server.pem", server_key=folder / "server.key",
        client_cert=folder / "client.pem", client_key=folder / "client.key",
    )


class EtcdCluster:
    """N etcd members on loopback. ``with EtcdCluster(tmp, 3) as c:`` or start()/stop()."""

    def __init__(
        self, root: Path, members: int = 3, *, extra_args: tuple[str, ...] = (), tls: TlsFiles | None = None
    ) -> None:
        if members < 1:
            raise ValueError(f"expected at least one member, got {members}")
        self.root = root
        self.size = members
        self.names = [f"m{i}" for i in range(members)]
        self._client_ports = [free_port() for _ in range(members)]
        self._peer_ports = [free_port() for _ in range(members)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self._extra = extra_args
        self.tls = tls
        self.token = f"hotspare-test-{os.getpid()}-{id(self):x}"

    # -- addresses ---------------------------------------------------------------------

    def client_port(self, i: int) -> int:
        return self._client_ports[i]

    def client_url(self, i: int) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._client_ports[i]}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(i) for i in range(self.size)]

    def _peer_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self._peer_ports[i]}"

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.size):
            self._spawn(i, "new")
        self.wait_healthy(range(self.size))

    def restart(self, i: int) -> None:
        if self.running(i):
            raise RuntimeError(f"etcd member {self.names[i]} is already running")
        self._spawn(i, "existing")

    def kill(self, i: int) -> None:
        proc = self._procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self._procs[i] = None

    def stop(self) -> None:
        for i in range(self.size):
            self.kill(i)

    def running(self, i: int) -> bool:
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, i: int, state: str) -> None:
        name = self.names[i]
        initial = ",".join(f"{n}={self._peer_url(j)}" for j, n in enumerate(self.names))
        args = [
            ETCD,
            "--name", name,
            "--data-dir", str(self.root / f"{name}.etcd"),
            "--listen-client-urls", self.client_url(i),
            "--advertise-client-urls", self.client_url(i),
            "--listen-peer-urls", self._peer_url(i),
            "--initial-advertise-peer-urls", self._peer_url(i),
            "--initial-cluster", initial,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self._tls_args(),
            *self._extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        log = open(self.root / f"{name}.log", "ab")  # the child holds its own copy
        try:
            self._procs[i] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        finally:
            log.close()

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
            "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth",
        ]

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client needs to talk to the members (TLS clusters only)."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    # -- readiness ---------------------------------------------------------------------

    def healthy(self, i: int) -> bool:
        """Member i answers ``/health`` with true (it is up and has a leader)."""
        try:
            url = f"{self.client_url(i)}/health"
            with urllib.request.urlopen(url, timeout=1.0, context=self.ssl_context()) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, members: Iterable[int], deadline: float = START_DEADLINE) -> None:
        indexes = list(members)
        end = time.monotonic() + deadline
        while True:
            for i in indexes:
                proc = self._procs[i]
                if proc is None or proc.poll() is not None:
                    raise RuntimeError(
                        f"etcd member {self.names[i]} (client port {self.client_port(i)}) exited at "
                        f"start; log tail:\n{self.log_tail(i)}"
                    )
            if all(self.healthy(i) for i in indexes):
                return
            if time.monotonic() > end:
                tails = "\n".join(f"--- {self.names[i]}\n{self.log_tail(i)}" for i in indexes)
                raise RuntimeError(f"etcd members not healthy after {deadline:g}s:\n{tails}")
            time.sleep(0.05)  # polling interval of a deadline loop

    def log_tail(self, i: int, lines: int = 15) -> str:
        path = self.root / f"{self.names[i]}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def etcdctl(self, *args: str, endpoint: int = 0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` against member ``endpoint`` (API v3)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        env["ETCDCTL_API"] = "3"
        ctl = shutil.which("etcdctl") or "/usr/bin/etcdctl"
        tls: list[str] = []
        if self.tls is not None:
            tls = [f"--cacert={self.tls.ca}", f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        return subprocess.run(
            [ctl, "--endpoints", self.client_url(endpoint), "--dial-timeout", "3s", *tls, *args],
            capture_output=True, text=True, env=env, timeout=20, check=check,
        )
