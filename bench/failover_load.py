"""Open-loop load for the failover benchmark: a fixed request rate, whatever the answers.

Request ``seq`` is sent at ``seq / rate`` seconds from the start, whether earlier requests
have finished or not (a closed loop would slow down exactly when the proxy is in trouble
and hide the damage). Every fifth request is a small POST carrying a unique
``X-Bench-Id``; the rest are GETs. Each request becomes one
:class:`~bench.failover_analysis.RequestRecord`; nothing is retried by the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench.failover_analysis import RequestRecord

__all__ = ["Scheduled", "run_load"]

POST_EVERY = 5  # 20 % POSTs


class Scheduled:
    """Something to do at a time during the load (the fault injection)."""

    def __init__(self, at: float, action: Callable[[], Awaitable[None]], name: str) -> None:
        self.at = at
        self.action = action
        self.name = name
        self.done_at: float | None = None


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "client-timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect-error"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated-body"
    if isinstance(exc, aiohttp.ClientOSError):
        return "reset"
    return type(exc).__name__


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    seq: int,
    run_id: str,
    start: float,
    records: list[RequestRecord],
) -> None:
    method = "POST" if seq % POST_EVERY == POST_EVERY - 1 else "GET"
    post_id = f"{run_id}-{seq}" if method == "POST" else None
    headers = {"X-Bench-Id": post_id} if post_id else {}
    data = f'{{"id": "{post_id}", "note": "small form post"}}'.encode() if post_id else None
    sent = time.monotonic() - start
    try:
        async with session.request(method, url, headers=headers, data=data) as resp:
            await resp.read()
            records.append(
                RequestRecord(seq, method, sent, time.monotonic() - start, resp.status,
                              resp.headers.get("X-Backend"), None, post_id)
            )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        records.append(
            RequestRecord(seq, method, sent, time.monotonic() - start, None, None,
                          _error_name(exc), post_id)
        )


async def _at(start: float, job: Scheduled) -> None:
    await asyncio.sleep(max(0.0, start + job.at - time.monotonic()))
    await job.action()
    job.done_at = time.monotonic() - start


async def run_load(
    url: str,
    *,
    rate: float,
    duration: float,
    run_id: str,
    schedule: list[Scheduled],
    request_timeout: float = 15.0,
) -> list[RequestRecord]:
    """Send ``rate * duration`` requests to ``url``; run ``schedule`` on time meanwhile;
    return when every request has an answer or has timed out."""
    records: list[RequestRecord] = []
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for job in schedule:
                group.create_task(_at(start, job), name=f"bench-{job.name}")
            for seq in range(round(rate * duration)):
                # Pacing the open loop, not waiting for a condition.
                await asyncio.sleep(max(0.0, start + seq / rate - time.monotonic()))
                group.create_task(
                    _one(session, url, seq, run_id, start, records), name=f"bench-req-{seq}"
                )
    return records
