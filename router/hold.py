"""Requests held while a service switches to its spare, and which ones may be replayed.

Rules:

1. Pure bookkeeping: no I/O, no clock (``now`` comes in). The proxy keeps a future per
   held request under a key of its choosing; this queue decides admit/refuse, which
   keys have waited too long, and the order of release.
2. The queue is bounded three ways: ``max_requests`` held at once, ``max_bytes`` of
   request bodies kept in memory, and ``max_time`` each request may wait. Over any
   bound a request is refused at once: 503 with Retry-After, never a hang.
3. Release is in arrival order (first held, first sent). Refuse-all empties the queue.
4. Replay (:func:`may_replay`): a request that was never sent (the connection to the
   old active failed) may go anywhere whatever its method. One that may have reached
   the old active goes again only if its method is safe or it carries an
   ``Idempotency-Key``, and its whole body is still in hand.
5. Clients that accept HTML get a small page saying the service is switching to its
   standby, which reloads itself after Retry-After seconds; the others a line of text.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .config import FailoverConfig

__all__ = [
    "Admitted",
    "HoldLimits",
    "HoldQueue",
    "Refusal",
    "Reply",
    "may_replay",
    "refusal_reply",
    "replay_refusal_reason",
    "switching_page",
    "wants_html",
]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class HoldLimits:
    max_requests: int = 1000
    max_bytes: int = 64 * 1024 * 1024
    max_time: float = 10.0

    @classmethod
    def from_config(cls, failover: FailoverConfig) -> HoldLimits:
        h = failover.hold
        return cls(h.max_requests, h.max_bytes, h.max_time)


@dataclass(frozen=True, slots=True)
class Admitted:
    deadline: float  # refuse it (expired) if still held at this time


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    retry_after: int
    reason: str


@dataclass(slots=True)
class _Entry:
    size: int
    deadline: float


class HoldQueue(Generic[K]):
    def __init__(self, limits: HoldLimits, retry_after: int) -> None:
        self.limits = limits
        self.retry_after = retry_after
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def admit(self, key: K, size: int, now: float) -> Admitted | Refusal:
        """Hold ``key`` (a request keeping ``size`` body bytes in memory) or refuse it."""
        if size < 0:
            raise ValueError(f"size: expected bytes >= 0, got {size}")
        if key in self._entries:
            raise ValueError(f"request {key!r} is already held")
        lim = self.limits
        if len(self._entries) >= lim.max_requests:
            return self._refusal(f"hold queue full ({lim.max_requests} requests)")
        if self._bytes + size > lim.max_bytes:
            return self._refusal(f"hold queue over its {lim.max_bytes} bytes")
        deadline = now + lim.max_time
        self._entries[key] = _Entry(size, deadline)
        self._bytes += size
        return Admitted(deadline)

    def remove(self, key: K) -> bool:
        """The request left on its own (client hung up). False if it was not held."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True

    def expired(self, now: float) -> list[K]:
        """Keys held ``max_time`` or longer, removed from the queue (refuse them)."""
        out = [k for k, e in self._entries.items() if e.deadline <= now]
        for k in out:
            self.remove(k)
        return out

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._entries.values()), default=None)

    def release_all(self) -> list[K]:
        """Every held key in arrival order; the queue is empty afterwards."""
        return self._drain()

    def refuse_all(self) -> list[K]:
        """Every held key (to be answered with :meth:`refusal`); the queue is empty afterwards."""
        return self._drain()

    def refusal(self, reason: str) -> Refusal:
        return self._refusal(reason)

    def _refusal(self, reason: str) -> Refusal:
        return Refusal(503, self.retry_after, reason)

    def _drain(self) -> list[K]:
        keys = list(self._entries)
        self._entries.clear()
        self._bytes = 0
        return keys


# -- replay ------------------------------------------------------------------------------


def may_replay(
    method: str,
    has_idempotency_key: bool,
    body_size: int | None,
    sent: bool,
    safe_methods: Iterable[str],
    replay_buffer: int,
) -> bool:
    """May this request go to another backend after its first try failed?

    ``body_size`` is the bytes of body kept, or None when the body was streamed and not
    kept. ``sent`` is False only when the request certainly never reached the backend
    (its connection failed): such a request is always replayable, its body is still
    unread in the client's connection.
    """
    return replay_refusal_reason(method, has_idempotency_key, body_size, sent, safe_methods, replay_buffer) is None


def replay_refusal_reason(
    method: str,
    has_idempotency_key: bool,
    body_size: int | None,
    sent: bool,
    safe_methods: Iterable[str],
    replay_buffer: int,
) -> str | None:
    """None if the request may be replayed, else the short explanation for its 502."""
    if not sent:
        # Never reached the backend: its body (if any) was not read from the client yet.
        return None
    if method.upper() not in {m.upper() for m in safe_methods} and not has_idempotency_key:
        return (
            f"the backend failed after it may have received this {method.upper()} request; "
            "it was not sent again because that could repeat its effect (an Idempotency-Key "
            "header allows a retry)"
        )
    if body_size is None or body_size > replay_buffer:
        return (
            "the backend failed after it may have received this request, and its body was "
            f"not kept (larger than the {replay_buffer}-byte replay buffer), so it cannot be sent again"
        )
    return None


# -- refusal pages ------------------------------------------------------------------------


def wants_html(accept: str | None) -> bool:
    """True if the Accept header lists text/html (or text/*) with a non-zero q."""
    if not accept:
        return False
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if media not in ("text/html", "text/*", "application/xhtml+xml"):
            continue
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def switching_page(service: str, retry_after: int) -> str:
    """The page a browser sees while its service switches to the standby server."""
    name = html.escape(service)
    seconds = max(1, retry_after)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{seconds}">
<title>{name}: switching to the standby server</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;line-height:1.5;color:#222}}</style>
</head>
<body>
<h1>One moment, please</h1>
<p>{name} is switching to its standby server. This page will reload by itself in
{seconds} second{"s" if seconds != 1 else ""}.</p>
<p>If you were logged in, you may need to log in again.</p>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def refusal_reply(refusal: Refusal, service: str, accept: str | None) -> Reply:
    """The whole answer to a refused request: status, Retry-After, page or text."""
    headers: list[tuple[str, str]] = [("Retry-After", str(refusal.retry_after)), ("Cache-Control", "no-store")]
    if wants_html(accept):
        body = switching_page(service, refusal.retry_after).encode("utf-8")
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    else:
        body = (f"{service} is switching to its standby server ({refusal.reason}); "
                f"retry in {refusal.retry_after} s\n").encode()
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return Reply(refusal.status, tuple(headers), body)
