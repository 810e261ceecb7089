"""The running demo's control socket, and ``hotspare demo kill|stop|restart NODE --dir DIR``.

A person in another terminal (or an agent's ``app_stop`` during a switchover) asks the
running demo to act on one of the app servers it manages: the demo knows each one's
current process and its exact command line, so a restarted app server is started as
the first one was and is still stopped with the demo.

Rules:

1. A Unix socket in the demo's folder (``DIR/demo.sock``): whoever may enter that folder
   may ask; no token, nothing listens on the network.
2. One request line ``ACTION NODE``, one answer line ``ok MESSAGE`` or ``error MESSAGE``.
   :func:`parse_request`, :func:`plan` and :func:`parse_answer` are pure; the demo
   performs. ``kill`` is a crash of the whole server (app and agent, SIGKILL); ``stop``
   is the fencing of its app (SIGTERM; the agent asking lives on); ``restart`` starts
   what is down, with the command lines of the first start.
3. The command prints the message and exits 0 (ok) or 1 (refused, or no demo there).
4. Every wait has a deadline: the client waits at most ``CLIENT_TIMEOUT`` for the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

__all__ = [
    "ACTIONS", "NODES", "SOCKET_NAME", "ControlError", "call", "parse_answer", "parse_request",
    "plan", "serve", "socket_path",
]

ACTIONS = ("kill", "stop", "restart")
NODES = ("a", "b")
SOCKET_NAME = "demo.sock"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL (Linux)
MAX_LINE = 256
CLIENT_TIMEOUT = 60.0  # a restart waits for the app and for the router to see it healthy

Act = Callable[[str, str], Awaitable[tuple[bool, str]]]


class ControlError(Exception):
    """No demo answers at that folder, or the socket cannot be made there."""


def socket_path(base: Path) -> Path:
    path = base / SOCKET_NAME
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ControlError(
            f"{path}: a Unix socket path may have at most {MAX_SOCKET_PATH} bytes; "
            "give the demo a shorter --dir"
        )
    return path


def parse_request(line: str) -> tuple[str, str] | str:
    """``(action, node)``, or the reason the line is refused."""
    words = line.split()
    if len(words) != 2 or words[0] not in ACTIONS or words[1] not in NODES:
        return f"expected 'ACTION NODE' with ACTION one of {', '.join(ACTIONS)} and NODE a or b, got {line[:60]!r}"
    return words[0], words[1]


def plan(action: str, running: Mapping[str, bool]) -> list[tuple[str, str]] | str:
    """What to do with one node's processes: ``[(op, process)]`` with op ``kill``,
    ``stop`` or ``start`` and process ``app`` or ``agent``, or why it is refused.
    ``running`` maps the node's processes in this demo (no agent with --apps-only) to
    whether each one runs."""
    if action == "kill":  # a crash of the whole server: its app and its agent
        return [("kill", proc) for proc, up in running.items() if up]
    if action == "stop":  # fencing: the app only, since its agent is the one asking
        return [("stop", "app")] if running.get("app") else []
    down = [("start", proc) for proc in ("app", "agent") if running.get(proc) is False]
    return down or "it is running; kill or stop it first"


def parse_answer(line: str) -> tuple[bool, str]:
    word, _, message = line.strip().partition(" ")
    if word not in ("ok", "error"):
        return False, f"unexpected answer from the demo: {line[:80]!r}"
    return word == "ok", message


async def serve(base: Path, act: Act) -> asyncio.AbstractServer:
    """Listen on ``DIR/demo.sock``; refuse to take it over from a demo still running there."""
    path = socket_path(base)
    if path.exists():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a demo that died: nobody answers on it
        else:
            raise ControlError(f"another demo is running in {base} (it answers on {path}); stop it first")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline())[:MAX_LINE].decode(errors="replace")
            request = parse_request(line)
            ok, message = (False, request) if isinstance(request, str) else await act(*request)
            writer.write(f"{'ok' if ok else 'error'} {message}\n".encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the asker went away; nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(handle, path=str(path))


def call(base: Path, action: str, node: str, timeout: float = CLIENT_TIMEOUT) -> tuple[bool, str]:
    """Ask the demo running in ``base``; ``(ok, message)``. Raises ControlError when no
    demo answers there."""
    path = socket_path(base)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise ControlError(
                f"no demo is running in {base} ({path}: {exc.strerror or exc}); "
                f"start one with: hotspare demo --dir {base}"
            ) from None
        try:
            s.sendall(f"{action} {node}\n".encode())
            answer = s.makefile("r", encoding="utf-8", errors="replace").readline(MAX_LINE * 4)
        except TimeoutError:
            return False, f"the demo did not answer within {timeout:g}s (see its logs in {base / 'logs'})"
    if not answer:
        return False, "the demo closed the connection without an answer (is it stopping?)"
    return parse_answer(answer)
