"""The etcd v3 grpc-gateway JSON wire format: what :mod:`.etcd` sends and how it reads
the answers. Pure: no I/O, so every rule here is tested without an etcd.

Rules:

1. Keys and values are bytes, base64 in JSON; keys are ``str`` (UTF-8) on our side.
2. int64 fields travel as JSON strings (``"revision": "12"``); proto3 leaves out every
   field at its default (``succeeded`` false, ``count`` 0, an empty ``kvs``, a ``PUT``
   event type, a lease of 0), so every read here has a default.
3. A range over a prefix ends at the prefix with its last byte plus one (``/a/`` ->
   ``/a0``); a prefix of only 0xff bytes (or empty) ranges to the end of the keyspace.
4. Everything read from the network is hostile: a field of the wrong type is an
   :class:`EtcdError` naming the call and the field, never a ``KeyError``/``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KV",
    "Compare",
    "EtcdError",
    "EtcdUnavailable",
    "Op",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
    "b64",
    "compare_json",
    "int64",
    "op_json",
    "parse_kv",
    "parse_txn",
    "parse_watch_events",
    "prefix_end",
]


class EtcdError(Exception):
    """etcd answered with an error (or nonsense); the message names the call.

    ``code`` is the gRPC status code etcd gave (3 invalid argument, 5 not found,
    9 failed precondition, 11 out of range, 14 unavailable, 16 unauthenticated), or None.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the timeout (or the watch stream broke).

    ``maybe_applied`` is true when a write was sent and its answer lost: it may or may
    not have been applied (re-read before deciding anything from it).
    """

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message, code=14)
        self.maybe_applied = maybe_applied


class WatchCompacted(EtcdError):
    """The watch's start revision was compacted: re-read and watch again from the read's
    revision + 1. ``compact_revision`` is the oldest revision still kept."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message, code=11)
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


_OPS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _result(op: str) -> str:
    try:
        return _OPS[op]
    except KeyError:
        raise ValueError(f"expected a compare op in {sorted(_OPS)}, got {op!r}") from None


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction; build it with the classmethods."""

    key: str
    target: str  # "MOD" | "CREATE" | "VERSION" | "VALUE"
    result: str  # "EQUAL" | "NOT_EQUAL" | "LESS" | "GREATER"
    number: int = 0
    data: bytes = b""  # the value compared with (target VALUE)

    @classmethod
    def mod_revision(cls, key: str, op: str, rev: int) -> Compare:
        return cls(key, "MOD", _result(op), number=rev)

    @classmethod
    def create_revision(cls, key: str, op: str, rev: int) -> Compare:
        return cls(key, "CREATE", _result(op), number=rev)

    @classmethod
    def value(cls, key: str, op: str, value: bytes) -> Compare:
        return cls(key, "VALUE", _result(op), data=value)

    @classmethod
    def version(cls, key: str, op: str, version: int) -> Compare:
        return cls(key, "VERSION", _result(op), number=version)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch; build it with the classmethods."""

    kind: str  # "put" | "delete" | "get"
    key: str
    value: bytes = b""
    lease: int = 0
    prefix: bool = False

    @classmethod
    def put(cls, key: str, value: bytes, lease: int = 0) -> Op:
        return cls("put", key, value=value, lease=lease)

    @classmethod
    def delete(cls, key: str, prefix: bool = False) -> Op:
        return cls("delete", key, prefix=prefix)

    @classmethod
    def get(cls, key: str, prefix: bool = False) -> Op:
        return cls("get", key, prefix=prefix)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``responses[i]`` belongs to op ``i`` of the branch that ran: the kvs of a get,
    ``[]`` for a put or a delete."""

    succeeded: bool
    revision: int
    responses: tuple[list[KV], ...]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # "put" | "delete"
    kv: KV
    prev: KV | None


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range_end covering every key that starts with ``prefix``."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # etcd: range_end "\0" with key "\0" means every key


def key_range(key: str, prefix: bool) -> dict[str, str]:
    raw = key.encode()
    body = {"key": b64(raw)}
    if prefix:
        body["range_end"] = b64(prefix_end(raw) if raw else b"\0")
        if not raw:
            body["key"] = b64(b"\0")
    return body


def int64(node: Mapping[str, Any], name: str, where: str) -> int:
    raw = node.get(name, 0)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise EtcdError(f"{where}: expected an integer in {name!r}, got {raw!r:.80}")
    try:
        return int(raw)
    except ValueError:
        raise EtcdError(f"{where}: expected an integer in {name!r}, got {raw!r:.80}") from None


def _bytes(node: Mapping[str, Any], name: str, where: str) -> bytes:
    raw = node.get(name, "")
    if not isinstance(raw, str):
        raise EtcdError(f"{where}: expected base64 text in {name!r}, got {raw!r:.80}")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise EtcdError(f"{where}: expected base64 text in {name!r}, got {raw!r:.80}") from None


def mapping(node: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        raise EtcdError(f"{where}: expected a JSON object, got {type(node).__name__}")
    return node


def parse_kv(node: Any, where: str) -> KV:
    kv = mapping(node, where)
    return KV(
        key=_bytes(kv, "key", where).decode("utf-8", errors="replace"),
        value=_bytes(kv, "value", where),
        create_revision=int64(kv, "create_revision", where),
        mod_revision=int64(kv, "mod_revision", where),
        version=int64(kv, "version", where),
        lease=int64(kv, "lease", where),
    )


def parse_kvs(node: Mapping[str, Any], where: str) -> list[KV]:
    kvs = node.get("kvs", [])
    if not isinstance(kvs, list):
        raise EtcdError(f"{where}: expected a list in 'kvs', got {type(kvs).__name__}")
    return [parse_kv(kv, where) for kv in kvs]


def header_revision(node: Mapping[str, Any], where: str) -> int:
    return int64(mapping(node.get("header", {}), where), "revision", where)


def compare_json(c: Compare) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(c.key), "target": c.target, "result": c.result}
    if c.target == "VALUE":
        body["value"] = b64(c.data)
    else:
        field = {"MOD": "mod_revision", "CREATE": "create_revision", "VERSION": "version"}[c.target]
        body[field] = str(c.number)
    return body


def op_json(op: Op) -> dict[str, Any]:
    if op.kind == "put":
        put: dict[str, Any] = {"key": b64(op.key), "value": b64(op.value)}
        if op.lease:
            put["lease"] = str(op.lease)
        return {"request_put": put}
    if op.kind == "delete":
        return {"request_delete_range": key_range(op.key, op.prefix)}
    if op.kind == "get":
        return {"request_range": key_range(op.key, op.prefix)}
    raise ValueError(f"expected an op kind put, delete or get, got {op.kind!r}")


def parse_txn(node: Mapping[str, Any], ops: Sequence[Op] | None, where: str) -> TxnResult:
    """``ops``: the branch that ran (decided by ``succeeded``) — checked against the
    answer so a response can never be read as another op's."""
    responses = node.get("responses", [])
    if not isinstance(responses, list):
        raise EtcdError(f"{where}: expected a list in 'responses'")
    succeeded = node.get("succeeded", False) is True
    out: list[list[KV]] = []
    for i, item in enumerate(responses):
        resp = mapping(item, f"{where} responses[{i}]")
        rng = resp.get("response_range")
        out.append(parse_kvs(mapping(rng, where), where) if rng is not None else [])
    if ops is not None and len(out) != len(ops):
        raise EtcdError(f"{where}: expected {len(ops)} responses, got {len(out)}")
    return TxnResult(succeeded=succeeded, revision=header_revision(node, where), responses=tuple(out))


def parse_watch_events(result: Mapping[str, Any], where: str) -> list[WatchEvent]:
    events = result.get("events", [])
    if not isinstance(events, list):
        raise EtcdError(f"{where}: expected a list in 'events'")
    batch: list[WatchEvent] = []
    for item in events:
        ev = mapping(item, where)
        kind = ev.get("type", "PUT")
        if kind not in ("PUT", "DELETE"):
            raise EtcdError(f"{where}: expected event type PUT or DELETE, got {kind!r:.40}")
        prev = ev.get("prev_kv")
        batch.append(
            WatchEvent(
                type=kind.lower(),
                kv=parse_kv(ev.get("kv", {}), where),
                prev=parse_kv(prev, where) if prev is not None else None,
            )
        )
    return batch


def error_of(node: Any) -> tuple[int | None, str] | None:
    """The gateway's error object (``{"error", "code", "message"}``, on a stream possibly
    wrapped as ``{"error": {...}}``) as (code, message), or None when there is none."""
    if not isinstance(node, Mapping) or "error" not in node:
        return None
    err = node["error"]
    if isinstance(err, Mapping):
        node = err
    code = node.get("code")
    message = node.get("message") or node.get("error")
    return (code if isinstance(code, int) and not isinstance(code, bool) else None, str(message)[:300])
