"""One access-log line per request: Apache "combined" (default) or JSON lines.

Rules:

1. Combined is exactly Apache's ``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"``
   so existing log tools keep working, followed by two fields they ignore:
   ``rid=<request id> rt=<seconds>``. Quotes, backslashes and control bytes in quoted
   fields are escaped as Apache does (``\\"``, ``\\\\``, ``\\xNN``).
2. JSON lines carry the same facts with names (and the service and backend).
3. Lines are buffered and written in batches: within ``FLUSH_INTERVAL`` (100 ms) of the
   first buffered line, at once when the buffer passes ``FLUSH_SIZE``, and on ``close()``
   (the router's graceful stop, so SIGTERM loses nothing) or, should the stop never reach
   it, at interpreter exit. A busy router makes one write(2) per batch, not per request.
   ``reopen()`` (on SIGHUP) reopens a file for log rotation. The formatted timestamp is
   cached per second.
4. Several worker processes may write one log (router/workers/): a file is opened
   O_APPEND and each batch is one write(2), which Linux appends whole; standard output
   (``"-"``, a pipe to journald or a terminal) is written in pieces of at most
   ``PIPE_BUF`` bytes cut at line ends, the size a pipe writes atomically, so two
   processes' lines never interleave (a single line longer than that is written alone).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import re
import select
import sys
import time
from typing import IO

__all__ = ["FLUSH_INTERVAL", "FLUSH_SIZE", "AccessLog", "AccessRecord"]

FLUSH_INTERVAL = 0.1  # seconds a line may wait in the buffer
PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # bytes a pipe writes atomically (Linux: 4096; POSIX: >= 512)
FLUSH_SIZE = 65536  # bytes buffered before a write regardless of the interval

_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _one(m: re.Match[str]) -> str:
    c = m.group(0)
    return "\\" + c if c in '"\\' else f"\\x{ord(c):02x}"


def _esc(value: str) -> str:
    return value if _ESCAPE.search(value) is None else _ESCAPE.sub(_one, value)


class AccessRecord:
    __slots__ = (
        "backend",
        "bytes_sent",
        "duration",
        "method",
        "peer",
        "referer",
        "request_id",
        "service",
        "status",
        "target",
        "user_agent",
        "version",
    )

    def __init__(
        self,
        *,
        peer: str,
        method: str,
        target: str,
        version: str,
        status: int,
        bytes_sent: int,
        referer: str,
        user_agent: str,
        request_id: str,
        duration: float,
        service: str,
        backend: str,
    ) -> None:
        self.peer = peer
        self.method = method
        self.target = target
        self.version = version
        self.status = status
        self.bytes_sent = bytes_sent
        self.referer = referer
        self.user_agent = user_agent
        self.request_id = request_id
        self.duration = duration
        self.service = service
        self.backend = backend


class AccessLog:
    """Formats and writes access-log lines; ``path`` "-" is standard output."""

    def __init__(self, path: str | None, fmt: str = "combined") -> None:
        self.path = path
        self.fmt = fmt
        self._out: IO[bytes] | None = None
        self._buf: list[bytes] = []
        self._size = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._stamp_second = -1
        self._stamp = ""
        self.reopen()
        atexit.register(self.flush)  # for an exit whose graceful stop never reached close()

    @property
    def enabled(self) -> bool:
        return self._out is not None

    def reopen(self) -> None:
        self.flush()
        if self._out is not None and self.path != "-":
            self._out.close()
        if self.path is None:
            self._out = None
        elif self.path == "-":
            self._out = sys.stdout.buffer
        else:
            self._out = open(self.path, "ab")

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
        return self._stamp

    def format(self, r: AccessRecord, now: float) -> str:
        if self.fmt == "json":
            return json.dumps(
                {
                    "time": round(now, 3),
                    "remote": r.peer,
                    "method": r.method,
                    "target": r.target,
                    "version": r.version,
                    "status": r.status,
                    "bytes": r.bytes_sent,
                    "referer": r.referer,
                    "user_agent": r.user_agent,
                    "request_id": r.request_id,
                    "duration": round(r.duration, 6),
                    "service": r.service,
                    "backend": r.backend,
                },
                separators=(",", ":"),
            )
        size = str(r.bytes_sent) if r.bytes_sent else "-"
        return (
            f'{r.peer} - - [{self._timestamp(now)}] "{_esc(r.method)} {_esc(r.target)} {r.version}" '
            f'{r.status} {size} "{_esc(r.referer) or "-"}" "{_esc(r.user_agent) or "-"}" '
            f"rid={r.request_id} rt={r.duration:.6f}"
        )

    def write(self, record: AccessRecord) -> None:
        if self._out is None:
            return
        line = (self.format(record, time.time()) + "\n").encode("utf-8", "backslashreplace")
        self._buf.append(line)
        self._size += len(line)
        if self._size > FLUSH_SIZE:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._buf or self._out is None:
            self._buf.clear()
            self._size = 0
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            for piece in _pieces(data) if self.path == "-" else (data,):
                self._out.write(piece)
                self._out.flush()
        except OSError:
            pass  # a full disk must not take the proxy down; the error log says more

    def close(self) -> None:
        atexit.unregister(self.flush)
        self.flush()
        if self._out is not None and self.path != "-":
            self._out.close()
        self._out = None


def _pieces(data: bytes, limit: int = PIPE_BUF) -> list[bytes]:
    """``data`` (whole lines) cut at line ends into pieces of at most ``limit`` bytes
    (rule 4); a longer line is a piece of its own."""
    out: list[bytes] = []
    start = 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        end = cut + 1 if cut >= start else data.index(b"\n", start) + 1
        out.append(data[start:end])
        start = end
    if start < len(data):
        out.append(data[start:])
    return out
