"""What one attempt of a step leaves behind, filled in while it runs.

The pipeline hands each runner a fresh :class:`Attempt`; the runner records output,
exit status, HTTP status and sessions ended *as they happen*, so that when the attempt
is cut short by its timeout the audit log still shows how far it got.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Attempt", "Runtime", "TailBuffer"]


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it and counts the rest.

    A step printing megabytes costs at most ``limit`` bytes of memory (plus one chunk).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected >= 1, got {limit}")
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if len(data) >= self.limit:
            self._buf[:] = data[-self.limit :]
            return
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self._buf)

    def tail(self, limit: int | None = None) -> str:
        """The kept bytes (the last ``limit`` of them) as text, with a note of the drop."""
        data = bytes(self._buf if limit is None else self._buf[-limit:])
        dropped = self.total - len(data)
        text = data.decode("utf-8", errors="replace")
        return f"[... {dropped} bytes dropped]\n{text}" if dropped else text


@dataclass
class Attempt:
    output: TailBuffer = field(default_factory=lambda: TailBuffer(64 * 1024))
    exit_code: int | None = None
    http_status: int | None = None
    sessions_ended: int | None = None
    # A short line for the operator: what the step has done or seen so far.
    note: str = ""


@dataclass(frozen=True)
class Runtime:
    """What a runner gets besides its step: template values and shared clients."""

    values: Mapping[str, str]
    agent_token: str | None
    http: aiohttp.ClientSession  # one per run, created and closed by the pipeline
