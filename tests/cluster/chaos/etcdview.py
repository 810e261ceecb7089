"""The harness's own window on etcd, through etcd's JSON gateway (independent of the
router's client, so a bug there cannot hide a violation here).

Rules:

1. ``history`` returns every change of every key since revision 1, in revision order: it
   writes a sentinel key outside every router's prefix, then watches the whole keyspace
   from revision 1 until the sentinel's own event arrives (so nothing in between is
   missed). etcd keeps history until compacted; the tests never compact.
2. Each call has a deadline; a dead member is skipped for the next endpoint.
3. Answers are parsed defensively; a bound (64 MiB) caps what a history may read.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from .records import EtcdEvent

HISTORY_MAX = 64 * 1024 * 1024
SENTINEL = "/hotspare-chaos/end"


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


async def call(s: aiohttp.ClientSession, endpoints: Sequence[str], path: str, body: dict[str, Any],
               limit: float = 2.0) -> dict[str, Any]:
    errors = []
    for ep in endpoints:
        try:
            async with s.post(ep + path, json=body, timeout=aiohttp.ClientTimeout(total=limit)) as r:
                data = await r.json(content_type=None)
                if r.status == 200 and isinstance(data, dict):
                    return data
                errors.append(f"{ep}: {r.status} {str(data)[:200]}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            errors.append(f"{ep}: {type(exc).__name__} {exc}")
    raise AssertionError(f"etcd {path}: no endpoint answered: {errors}")


async def get(s: aiohttp.ClientSession, endpoints: Sequence[str], key: str) -> tuple[bytes | None, int]:
    """(value, create_revision) of ``key``; (None, 0) when absent."""
    data = await call(s, endpoints, "/v3/kv/range", {"key": _b64(key)})
    kvs = data.get("kvs") or []
    if not kvs:
        return None, 0
    return _unb64(kvs[0].get("value", "")), int(kvs[0].get("create_revision", 0))


async def get_prefix(s: aiohttp.ClientSession, endpoints: Sequence[str], prefix: str) -> list[tuple[str, bytes]]:
    """(key, value) of every key under ``prefix`` (which must not be empty)."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])
    data = await call(s, endpoints, "/v3/kv/range", {"key": _b64(raw), "range_end": _b64(end)})
    return [(_unb64(kv.get("key", "")).decode(errors="replace"), _unb64(kv.get("value", "")))
            for kv in data.get("kvs") or []]


async def get_json(s: aiohttp.ClientSession, endpoints: Sequence[str], key: str) -> dict[str, Any] | None:
    value, _ = await get(s, endpoints, key)
    return None if value is None else dict(json.loads(value))


async def put(s: aiohttp.ClientSession, endpoints: Sequence[str], key: str, value: bytes) -> int:
    data = await call(s, endpoints, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
    return int(data["header"]["revision"])


async def member_ids(s: aiohttp.ClientSession, endpoints: Sequence[str]) -> tuple[list[int | None], int | None]:
    """(member id of each endpoint (None: no answer), index of the raft leader or None)."""
    ids: list[int | None] = []
    leader: int | None = None
    for i, ep in enumerate(endpoints):
        try:
            data = await call(s, [ep], "/v3/maintenance/status", {}, limit=1.0)
        except AssertionError:
            ids.append(None)
            continue
        me = int(data.get("header", {}).get("member_id", 0))
        ids.append(me)
        if me and int(data.get("leader", 0)) == me:
            leader = i
    return ids, leader


async def leader_index(s: aiohttp.ClientSession, endpoints: Sequence[str]) -> int | None:
    """Index in ``endpoints`` of the member that is the raft leader (None: no answer)."""
    return (await member_ids(s, endpoints))[1]


def _events(result: dict[str, Any]) -> list[EtcdEvent]:
    out = []
    for ev in result.get("events") or []:
        kv = ev.get("kv") or {}
        out.append(EtcdEvent(
            rev=int(kv.get("mod_revision", 0)), key=_unb64(kv.get("key", "")).decode(errors="replace"),
            type="delete" if ev.get("type") == "DELETE" else "put", value=_unb64(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
        ))
    return out


async def history(s: aiohttp.ClientSession, endpoints: Sequence[str], deadline: float = 20.0) -> list[EtcdEvent]:
    """Every change since revision 1 up to now (see rule 1), sentinel excluded."""
    end_rev = await put(s, endpoints, SENTINEL, str(time.time()).encode())
    body = {"create_request": {"key": _b64(b"\0"), "range_end": _b64(b"\0"), "start_revision": "1"}}
    out: list[EtcdEvent] = []
    timeout = aiohttp.ClientTimeout(total=deadline)
    errors = []
    for ep in endpoints:
        try:
            async with s.post(ep + "/v3/watch", json=body, timeout=timeout) as r:
                buf, total = b"", 0
                async for chunk in r.content.iter_any():
                    total += len(chunk)
                    assert total < HISTORY_MAX, f"etcd history over {HISTORY_MAX} bytes"
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result") or {}
                        for ev in _events(result):
                            if ev.rev >= end_rev:
                                return out
                            out.append(ev)
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(f"{ep}: {type(exc).__name__} {exc}")
            out = []
    raise AssertionError(f"etcd history: no endpoint gave it up to revision {end_rev}: {errors}")
