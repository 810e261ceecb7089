"""The ``exec`` step: run a program (fencing via ssh/ipmitool, warm-up scripts...).

Contract:

- The program is started from an argv list, without a shell. ``shell: true`` with
  ``exec`` as one string runs ``/bin/sh -c STRING``; template values are then
  shell-quoted, so a value is always one word.
- Templates (``{old.name}``...) are rendered in each argument and in ``env`` values. The
  environment is the router's plus ``HOTSPARE_SERVICE``, ``HOTSPARE_OLD_ACTIVE``,
  ``HOTSPARE_NEW_ACTIVE``, ``HOTSPARE_OLD_URL``, ``HOTSPARE_NEW_URL``,
  ``HOTSPARE_OLD_ADDRESS``, ``HOTSPARE_EPOCH``, ``HOTSPARE_CAUSE``, ``HOTSPARE_TRIGGER``,
  ``HOTSPARE_RUN_ID``, plus the step's ``env``. Standard input is /dev/null.
- Secrets are not inherited: variables named ``HOTSPARE_*_TOKEN`` and any variable
  holding the replication token are removed from the router's environment. A step that
  needs a secret is given it explicitly in its ``env`` (``X: "${VAR}"`` in the config).
- **Success**: exit status 0. **Failure**: any other status, death by a signal, or a
  program that cannot be started (not found, not executable).
- stdout and stderr are captured together; only the last ``output_limit`` bytes are
  kept (default 64 KiB), so a step printing megabytes costs no memory.
- The program runs in its own session and process group. **Timeout**: the whole group
  (children included) gets SIGTERM, then SIGKILL after ``kill_grace`` (default 2 s).
  The same happens if the run is cancelled (router shutting down).
- After the main process exits, its output is read for at most ``_DRAIN`` seconds more:
  a background child that keeps the pipe open does not hold the step (it is left
  running; start daemons through systemd, not from a step).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from .attempt import Attempt, Runtime
from .config import Step
from .errors import StepFailed
from .templates import ENV_NAMES, render, render_shell

__all__ = ["exec_argv", "exec_env", "run_exec"]

_DRAIN = 0.5  # seconds to keep reading after the main process exited
_CHUNK = 64 * 1024


def exec_argv(step: Step, values: dict[str, str] | None = None) -> list[str]:
    """The argv the step runs, templates rendered (``values``) or left as written."""
    assert step.exec is not None
    if isinstance(step.exec, str):
        command = render_shell(step.exec, values) if values is not None else step.exec
        return ["/bin/sh", "-c", command]
    return [render(a, values) if values is not None else a for a in step.exec]


def _secret(name: str, value: str, secrets: frozenset[str]) -> bool:
    return (name.startswith("HOTSPARE_") and name.endswith("_TOKEN")) or value in secrets


def exec_env(step: Step, values: dict[str, str], secrets: frozenset[str] = frozenset()) -> dict[str, str]:
    """The router's environment without its secrets, plus the context and the step's env."""
    env = {k: v for k, v in os.environ.items() if not _secret(k, v, secrets)}
    env.update({var: values[name] for var, name in ENV_NAMES.items()})
    env.update({k: render(v, values) for k, v in step.env.items()})
    return env


async def run_exec(step: Step, rt: Runtime, attempt: Attempt) -> None:
    values = dict(rt.values)
    argv = exec_argv(step, values)
    read_fd, write_fd = os.pipe()
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=exec_env(step, values, frozenset({rt.agent_token} if rt.agent_token else ())),
                cwd=str(step.cwd) if step.cwd else None,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_fd)
            raise StepFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    finally:
        os.close(write_fd)  # the child has its copy; EOF comes when all writers are gone
    attempt.note = f"pid {proc.pid}"
    reader = asyncio.create_task(_read_into(read_fd, attempt), name=f"exec-output-{proc.pid}")
    try:
        code = await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN)
    except BaseException:
        # Timeout (asyncio.timeout cancels us) or cancellation: end the whole group.
        await _kill_group(proc, step.kill_grace, attempt)
        raise
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    attempt.exit_code = code
    if code != 0:
        if code < 0:
            raise StepFailed(f"{Path(argv[0]).name} killed by signal {signal.Signals(-code).name}")
        raise StepFailed(f"{Path(argv[0]).name} exited with status {code}")


async def _read_into(fd: int, attempt: Attempt) -> None:
    """Copy the pipe into the attempt's bounded buffer until EOF or cancellation."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while chunk := await reader.read(_CHUNK):
            attempt.output.write(chunk)
    finally:
        transport.close()


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


async def _kill_group(proc: asyncio.subprocess.Process, grace: float, attempt: Attempt) -> None:
    """SIGTERM the step's process group, SIGKILL it after ``grace``; reap the leader.

    The SIGKILL goes out even if this coroutine is cancelled while waiting.
    """
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    if not _signal_group(pgid, signal.SIGTERM):
        return
    attempt.note = f"process group {pgid}: SIGTERM"
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    finally:
        # Children may outlive the leader (or ignore SIGTERM): the group gets SIGKILL
        # either way, unless it is already empty.
        if _signal_group(pgid, signal.SIGKILL):
            attempt.note = f"process group {pgid}: SIGTERM, then SIGKILL after {grace:g}s"
        if proc.returncode is None:
            await proc.wait()
