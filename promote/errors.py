"""The promotion pipeline's own exceptions.

A step runner raises :class:`StepFailed` for an expected failure (exit status, HTTP
status, database refused...). Low-level errors (``OSError``, ``aiohttp.ClientError``,
asyncpg's) are translated into it once, in the runner that called them, with a message
written for the operator. A timeout is not an exception of ours: the pipeline bounds each
attempt with ``asyncio.timeout`` and records ``timeout``.
"""

from __future__ import annotations

__all__ = ["StepFailed"]


class StepFailed(Exception):
    """The step ran and did not succeed; ``str(exc)`` says why, for the audit log."""
