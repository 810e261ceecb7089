"""An answer the router makes itself, whole: what answers.py builds and respond.py
writes (apart from both, so neither imports the other).

Rules:

1. A reply is immutable and complete: status, headers (without framing: the writer adds
   Content-Length), body, and whether the connection ends after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    close: bool = False  # the connection ends after it (answers.py rule 3)
    reason: str | None = None  # None: the standard phrase
