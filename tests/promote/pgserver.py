"""A real PostgreSQL server for tests and benchmarks: ``start_postgres()``.

``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/*/bin (./scripts/system-deps installs
the ``postgresql`` package on a fresh machine), a data directory in a temporary folder,
listening on 127.0.0.1 only at a port picked here, run as the ``postgres`` user through
``runuser`` when running as root (postgres refuses to run as root). Password (scram)
authentication for 127.0.0.0/8, so DSN handling is exercised for real.

``shared_postgres()`` hands every user in one process the same server (started by the
first, stopped when the last leaves): the session fixtures of tests/promote and tests/e2e
both use it, so a run of both directories starts one server, not two.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here; the message says why and what to install."""


PG_PASSWORD = "promote-test-secret"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db}"


def _pg_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2].split(".")[0])
    )
    for d in reversed(found):
        if os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    return None


def _free_port() -> int:
    # postgres binds its own socket, so the port is read from a socket closed just
    # before; a clash is retried below.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_postgres() -> Iterator[Postgres]:
    """Start a throw-away server; stop it and delete its files on exit."""
    bindir = _pg_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (run ./scripts/system-deps as root to install it)"
        )
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root and shutil.which("runuser") is None:
        raise PostgresUnavailable(
            "running as root without runuser: cannot start postgres as non-root"
        )
    tmp = Path(tempfile.mkdtemp(prefix="hotspare-pg-"))
    data, sock, pwfile = tmp / "data", tmp / "sock", tmp / "pw"
    sock.mkdir()
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_root:
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhost all all 127.0.0.0/8 scram-sha-256\n"
    )
    if as_root:
        shutil.chown(data / "pg_hba.conf", "postgres")
    port = 0
    for _ in range(5):
        port = _free_port()
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sock} "
            "-c fsync=off -c max_connections=60"
        )
        started = subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
             str(tmp / "log"), "-w", "-t", "30", "start"],
            capture_output=True, env=env,
        )  # fmt: skip
        if started.returncode == 0:
            break
    else:
        log = (tmp / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"postgres did not start: {started.stderr!r}\n{log}")
    try:
        yield Postgres("127.0.0.1", port, "postgres", PG_PASSWORD)
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, env=env,
        )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


class _Shared:
    """The process's shared server: started by the first user, stopped by the last."""

    server: Postgres | None = None
    stack: contextlib.ExitStack | None = None
    users = 0


@contextlib.contextmanager
def shared_postgres() -> Iterator[Postgres]:
    """One server per process for every caller (reference counted); raises
    :class:`PostgresUnavailable` like :func:`start_postgres`."""
    if _Shared.server is None:
        stack = contextlib.ExitStack()
        _Shared.server = stack.enter_context(start_postgres())
        _Shared.stack = stack
    _Shared.users += 1
    try:
        yield _Shared.server
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.stack is not None:
            stack, _Shared.stack, _Shared.server = _Shared.stack, None, None
            stack.close()
