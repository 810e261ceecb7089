"""A small async etcd v3 client over etcd's grpc-gateway JSON API, through aiohttp.

Why not a gRPC client (aetcd, etcd3): grpcio brings large wheels and its own event loop
integration; the gateway (``POST /v3/...``) is etcd's documented API, and aiohttp is
already our base. The wire format lives in :mod:`.etcd_wire`.

Rules:

1. One call is bounded by ``timeout`` in all: endpoints are tried in turn, starting
   from the one that answered last, until one answers or the time is up
   (:class:`EtcdUnavailable`). The first attempts get a share of the time each
   (``remaining / endpoints left``), so one hung member cannot eat the whole budget.
2. A read (range, status, keepalive, revoke) is retried on the next endpoint after any
   failure. A write (put, delete, txn, lease grant) is retried only when it was never
   sent (connect refused or timed out, or etcd said it has no leader); once sent, a lost
   answer is :class:`EtcdUnavailable` with ``maybe_applied=True`` and the next call
   starts from the next endpoint. Every unary call uses a new connection, so a refused
   connect is proof that nothing was sent.
3. An error etcd gives as an answer (a bad request, a lease not found, a wrong password)
   is :class:`EtcdError` naming the call, with etcd's gRPC code; it is never retried
   elsewhere — except an expired auth token, renewed once.
4. Every byte is bounded: a response body and a watch line at most 4 MiB.
5. A watch is one stream from one endpoint: its batches are yielded in order; the
   stream breaking (member killed, no leader) is :class:`EtcdUnavailable`, a compacted
   start revision :class:`WatchCompacted`. Resuming is the caller's job (re-read,
   watch from the read's revision + 1). The member is asked to require a leader
   (``hasleader``), so a member cut off from the cluster ends the stream instead of
   falling silent.
6. The password is sent only to ``/v3/auth/authenticate`` and never appears in an
   error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import ssl as _ssl
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from .etcd_watch import watch_stream
from .etcd_wire import (
    KV,
    Compare,
    EtcdError,
    EtcdUnavailable,
    Op,
    TxnResult,
    WatchCompacted,
    WatchEvent,
    b64,
    compare_json,
    error_of,
    header_revision,
    int64,
    key_range,
    mapping,
    op_json,
    parse_kvs,
    parse_txn,
)

if TYPE_CHECKING:
    from router.config.sections import EtcdConfig

__all__ = [
    "KV",
    "Compare",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "Op",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
]

MAX_BODY = 4 * 1024 * 1024
MAX_LINE = 4 * 1024 * 1024
# Answers that prove the request was not applied: safe to send a write elsewhere.
_NOT_APPLIED = ("no leader", "not capable", "server stopped", "too many requests", "leader changed")
_AUTH_EXPIRED = ("invalid auth token", "user name is empty")
_UNSENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class _Retry(EtcdUnavailable):
    """This endpoint failed before anything was applied; another may answer (internal)."""


class EtcdClient:
    """The etcd calls the cluster room needs. Create it anywhere; it opens its HTTP
    session on first use inside the running loop. ``close()`` ends it."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        ssl: _ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("expected at least one etcd endpoint, got none")
        if (username is None) != (password is None):
            raise ValueError("expected both username and password for etcd auth, or neither")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self._ssl = ssl
        self._username = username
        self._password = password
        self._token: str | None = None
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, cfg: EtcdConfig) -> EtcdClient:
        context: _ssl.SSLContext | None = None
        if cfg.tls or cfg.ca_file is not None or cfg.cert_file is not None:
            context = _ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file is not None else None
            )
            if cfg.cert_file is not None and cfg.key_file is not None:
                context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        return cls(
            cfg.endpoints, timeout=cfg.timeout, ssl=context, username=cfg.username, password=cfg.password
        )

    @property
    def current_endpoint(self) -> str:
        """The endpoint that answered last (the first one tried by the next call)."""
        return self.endpoints[self._current]

    # -- the calls ---------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        where = f"etcd get {key!r}"
        node = await self._call("kv/range", key_range(key, False), where, idempotent=True)
        kvs = parse_kvs(node, where)
        return kvs[0] if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        where = f"etcd get prefix {prefix!r}"
        node = await self._call("kv/range", key_range(prefix, True), where, idempotent=True)
        return parse_kvs(node, where), header_revision(node, where)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        where = f"etcd put {key!r}"
        return header_revision(await self._call("kv/put", body, where, idempotent=False), where)

    async def delete(self, key: str, prefix: bool = False) -> int:
        where = f"etcd delete {key!r}"
        node = await self._call("kv/deleterange", key_range(key, prefix), where, idempotent=False)
        return int64(node, "deleted", where)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        body = {
            "compare": [compare_json(c) for c in compare],
            "success": [op_json(op) for op in success],
            "failure": [op_json(op) for op in failure],
        }
        where = f"etcd txn on {compare[0].key if compare else (success or failure or [Op.get('')])[0].key!r}"
        node = await self._call("kv/txn", body, where, idempotent=False)
        ran = success if node.get("succeeded", False) is True else failure
        return parse_txn(node, ran, where)

    async def lease_grant(self, ttl: int) -> int:
        where = f"etcd lease grant ttl={ttl}"
        node = await self._call("lease/grant", {"TTL": str(ttl)}, where, idempotent=False)
        lease = int64(node, "ID", where)
        if lease <= 0:
            raise EtcdError(f"{where}: expected a lease id, got {node.get('ID')!r:.40}")
        return lease

    async def lease_keepalive(self, lease: int) -> int:
        where = f"etcd lease keepalive {lease:x}"
        try:
            node = await self._call("lease/keepalive", {"ID": str(lease)}, where, idempotent=True)
        except EtcdError as exc:
            if exc.code == 5 or "lease not found" in str(exc):
                return 0
            raise
        return max(0, int64(mapping(node.get("result", node), where), "TTL", where))

    async def lease_revoke(self, lease: int) -> None:
        where = f"etcd lease revoke {lease:x}"
        try:
            await self._call("lease/revoke", {"ID": str(lease)}, where, idempotent=True)
        except EtcdError as exc:
            if exc.code != 5 and "lease not found" not in str(exc):
                raise

    async def status(self) -> dict[str, Any]:
        node = await self._call("maintenance/status", {}, "etcd status", idempotent=True)
        return {**node, "endpoint": self.current_endpoint}

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[list[WatchEvent]]:
        return watch_stream(self, key, prefix=prefix, start_revision=start_revision)

    # -- the machinery -----------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, ssl=self._ssl if self._ssl else True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
            )
        return self._session

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
        if self._token is not None:
            headers["Authorization"] = self._token
        return headers

    def answered(self, index: int) -> None:
        self._current = index

    def failed(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    def order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def _call(self, path: str, body: dict[str, Any], where: str, *, idempotent: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        order = self.order()
        errors: list[str] = []
        renewed = False
        i = 0
        while i < len(order):
            index = order[i]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            share = remaining / (len(order) - i)
            try:
                node = await self._attempt(index, path, body, where, share, remaining, idempotent)
            except _Retry as exc:
                errors.append(f"{self.endpoints[index]}: {exc}")
                self.failed(index)
                i += 1
                continue
            except EtcdError as exc:
                if exc.code is not None and not renewed and _expired(exc) and self._username:
                    renewed = True
                    self._token = None
                    continue  # same endpoint, with a new token
                raise
            self.answered(index)
            return node
        tried = "; ".join(errors) or "no time left"
        raise EtcdUnavailable(f"{where}: no etcd endpoint answered within {self.timeout:g}s ({tried})")

    async def _attempt(
        self, index: int, path: str, body: dict[str, Any], where: str,
        share: float, remaining: float, idempotent: bool,
    ) -> dict[str, Any]:
        endpoint = self.endpoints[index]
        await self.ensure_token(endpoint, where, share)
        # A write gets all the time left once connected: it cannot be sent again anyway.
        timeout = aiohttp.ClientTimeout(total=share if idempotent else remaining, sock_connect=share)
        try:
            async with self.session().post(
                f"{endpoint}/v3/{path}", data=json.dumps(body), headers=self.headers(), timeout=timeout
            ) as resp:
                raw = await _read_body(resp)
                status = resp.status
        except _UNSENT as exc:
            raise _Retry(_describe(exc)) from None
        except (aiohttp.ClientError, TimeoutError, LineTooLong) as exc:
            if idempotent:
                raise _Retry(_describe(exc)) from None
            raise EtcdUnavailable(
                f"{where}: {endpoint} did not answer ({_describe(exc)}); the write may or may not "
                "have been applied",
                maybe_applied=True,
            ) from None
        return self._answer(raw, status, endpoint, where, idempotent)

    def _answer(self, raw: bytes, status: int, endpoint: str, where: str, idempotent: bool) -> dict[str, Any]:
        try:
            node = json.loads(raw)
        except ValueError:
            if status >= 500 or idempotent:
                raise _Retry(f"HTTP {status}, not JSON: {raw[:80]!r}") from None
            raise EtcdError(f"{where}: {endpoint} answered HTTP {status}, not JSON: {raw[:80]!r}") from None
        err = error_of(node)
        if err is None and status == 200:
            return dict(mapping(node, where))
        code, message = err if err is not None else (None, f"HTTP {status}")
        unavailable = code == 14 or any(m in message for m in _NOT_APPLIED)
        if unavailable and (idempotent or any(m in message for m in _NOT_APPLIED)):
            raise _Retry(message)
        if unavailable or "request timed out" in message:
            raise EtcdUnavailable(
                f"{where}: {endpoint}: {message}" + ("" if idempotent else " (the write may have been applied)"),
                maybe_applied=not idempotent,
            )
        raise EtcdError(f"{where}: {endpoint} refused: {message}", code=code)

    async def _authenticate(self, endpoint: str, where: str, share: float) -> None:
        body = json.dumps({"name": self._username, "password": self._password})
        try:
            async with self.session().post(
                f"{endpoint}/v3/auth/authenticate", data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=share, sock_connect=share),
            ) as resp:
                raw = await _read_body(resp)
        except (aiohttp.ClientError, TimeoutError, LineTooLong) as exc:
            raise _Retry(f"authenticate: {_describe(exc)}") from None
        try:
            node = json.loads(raw)
        except ValueError:
            raise _Retry(f"authenticate: not JSON: {raw[:80]!r}") from None
        err = error_of(node)
        if err is not None:
            code, message = err
            if code == 14:
                raise _Retry(f"authenticate: {message}")
            raise EtcdError(f"{where}: etcd authentication as {self._username!r} failed: {message}", code=code)
        token = node.get("token") if isinstance(node, dict) else None
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise EtcdError(f"{where}: etcd authentication as {self._username!r} gave no token")
        self._token = token

    @property
    def has_auth(self) -> bool:
        return self._username is not None

    async def ensure_token(self, endpoint: str, where: str, share: float) -> None:
        """Authenticate on ``endpoint`` unless a token is held (auth configured only)."""
        if self._username is not None and self._token is None:
            await self._authenticate(endpoint, where, share)

    def forget_token(self) -> None:
        self._token = None


def _expired(exc: EtcdError) -> bool:
    return exc.code == 16 or any(m in str(exc) for m in _AUTH_EXPIRED)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, aiohttp.ClientError) else f"{type(exc).__name__}: {text}"


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY:
            raise aiohttp.ClientPayloadError(f"answer larger than {MAX_BODY} bytes")
        chunks.append(chunk)
