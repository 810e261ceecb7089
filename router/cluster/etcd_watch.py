"""One etcd watch stream over the grpc-gateway (``POST /v3/watch``), for
:meth:`router.cluster.etcd.EtcdClient.watch`.

Rules:

1. The gateway answers with one JSON object per line, each ``{"result": {...}}``: first
   ``{"created": true}``, then batches of ``events`` (in revision order); a cancel is
   ``{"canceled": true, "compact_revision": N}`` (start revision compacted) or with a
   ``cancel_reason`` (bad token, no leader). A line is at most 4 MiB.
2. Opening the stream follows the client's endpoint order and timeout; once created, the
   stream may be silent for ever (no events is not an error), so there is no read
   timeout. The stream ending, for whatever reason, is :class:`EtcdUnavailable`:
   callers resume by re-reading and watching again.
3. Closing the iterator (``aclose()``, or cancelling the task that iterates) closes the
   HTTP response at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from .etcd_wire import (
    EtcdError,
    EtcdUnavailable,
    WatchCompacted,
    WatchEvent,
    error_of,
    int64,
    key_range,
    mapping,
    parse_watch_events,
)

__all__ = ["MAX_LINE", "Endpoints", "watch_stream"]

MAX_LINE = 4 * 1024 * 1024


class Endpoints(Protocol):
    """What a watch needs of the client (:class:`router.cluster.etcd.EtcdClient`)."""

    endpoints: tuple[str, ...]
    timeout: float

    @property
    def has_auth(self) -> bool: ...
    def order(self) -> list[int]: ...
    def answered(self, index: int) -> None: ...
    def failed(self, index: int) -> None: ...
    def session(self) -> aiohttp.ClientSession: ...
    def headers(self) -> dict[str, str]: ...
    def forget_token(self) -> None: ...
    async def ensure_token(self, endpoint: str, where: str, share: float) -> None: ...


async def watch_stream(
    client: Endpoints, key: str, *, prefix: bool, start_revision: int | None
) -> AsyncIterator[list[WatchEvent]]:
    where = f"etcd watch {key!r}" + (" (prefix)" if prefix else "")
    create: dict[str, Any] = {**key_range(key, prefix), "prev_kv": True}
    if start_revision is not None:
        create["start_revision"] = str(start_revision)
    body = json.dumps({"create_request": create})
    resp, endpoint = await _open(client, body, where)
    try:
        while True:
            result = await _next_result(resp, endpoint, where)
            _check_cancel(result, endpoint, where)
            if result.get("created") is True:
                continue
            batch = parse_watch_events(result, where)
            if batch:
                yield batch
    finally:
        resp.close()


async def _open(client: Endpoints, body: str, where: str) -> tuple[aiohttp.ClientResponse, str]:
    """Open the stream on the first endpoint that accepts it and confirms ``created``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + client.timeout
    errors: list[str] = []
    renewed = False
    order = client.order()
    i = 0
    while i < len(order):
        index = order[i]
        endpoint = client.endpoints[index]
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        share = remaining / (len(order) - i)
        try:
            resp = await _open_one(client, endpoint, body, where, share)
        except EtcdUnavailable as exc:
            errors.append(str(exc))
            client.failed(index)
            i += 1
            continue
        except EtcdError as exc:
            if not renewed and client.has_auth and ("auth token" in str(exc) or exc.code == 16):
                renewed = True
                client.forget_token()
                continue
            raise
        client.answered(index)
        return resp, endpoint
    tried = "; ".join(errors) or "no time left"
    raise EtcdUnavailable(f"{where}: no etcd endpoint opened the watch within {client.timeout:g}s ({tried})")


async def _open_one(
    client: Endpoints, endpoint: str, body: str, where: str, share: float
) -> aiohttp.ClientResponse:
    try:
        async with asyncio.timeout(share):
            await client.ensure_token(endpoint, where, share)
            resp = await client.session().post(
                f"{endpoint}/v3/watch", data=body, headers=client.headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=share),
            )
            try:
                if resp.status != 200:
                    raw = await resp.content.read(65536)
                    _raise_error(raw, resp.status, endpoint, where)
                first = await _next_result(resp, endpoint, where)
                _check_cancel(first, endpoint, where)
            except BaseException:
                resp.close()
                raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise EtcdUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}") from None
    return resp


def _raise_error(raw: bytes, status: int, endpoint: str, where: str) -> None:
    try:
        node = json.loads(raw)
    except ValueError:
        raise EtcdUnavailable(f"{endpoint}: HTTP {status}: {raw[:80]!r}") from None
    err = error_of(node)
    code, message = err if err is not None else (None, f"HTTP {status}")
    if code == 14:
        raise EtcdUnavailable(f"{endpoint}: {message}")
    raise EtcdError(f"{where}: {endpoint} refused: {message}", code=code)


async def _next_result(resp: aiohttp.ClientResponse, endpoint: str, where: str) -> Mapping[str, Any]:
    try:
        line = await resp.content.readuntil(b"\n", max_size=MAX_LINE)
    except LineTooLong:
        raise EtcdError(f"{where}: {endpoint} sent a watch line longer than {MAX_LINE} bytes") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise EtcdUnavailable(f"{where}: the stream from {endpoint} broke ({exc or type(exc).__name__})") from None
    if not line.endswith(b"\n"):
        raise EtcdUnavailable(f"{where}: the stream from {endpoint} ended")
    try:
        node = json.loads(line)
    except ValueError:
        raise EtcdError(f"{where}: {endpoint} sent a watch line that is not JSON: {line[:80]!r}") from None
    err = error_of(node)
    if err is not None:
        code, message = err
        if code == 14 or "no leader" in message:
            raise EtcdUnavailable(f"{where}: {endpoint}: {message}")
        raise EtcdError(f"{where}: {endpoint} refused: {message}", code=code)
    return mapping(mapping(node, where).get("result", {}), where)


def _check_cancel(result: Mapping[str, Any], endpoint: str, where: str) -> None:
    if result.get("canceled") is not True:
        return
    compact = int64(result, "compact_revision", where)
    if compact > 0:
        raise WatchCompacted(
            f"{where}: the start revision was compacted (oldest kept: {compact}); re-read and watch again",
            compact,
        )
    reason = str(result.get("cancel_reason", ""))[:300]
    if "no leader" in reason:
        raise EtcdUnavailable(f"{where}: {endpoint} canceled the watch: {reason}")
    code = 16 if "auth token" in reason else None
    raise EtcdError(f"{where}: {endpoint} canceled the watch: {reason or 'no reason given'}", code=code)
