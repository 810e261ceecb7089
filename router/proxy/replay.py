"""Which requests may go again after their first try failed.

Rules:

1. A request that was never sent (its connection to the backend failed) may go anywhere,
   whatever its method: its body is still unread in the client's connection.
2. One that may have reached the backend goes again only if its method is in the
   service's safe set or it carries an ``Idempotency-Key``, and its whole body is still
   in hand (no larger than ``failover.replay_buffer``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["replay_refusal_reason"]


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
