"""Operator commands through etcd: any router takes them, the decider carries them out.

Rules:

1. ``submit`` (any router): the command is put under ``commands/<svc>/<id>`` as
   ``{"command", "args", "from"}`` (``id`` from :func:`secrets.token_hex`, never
   guessed, never reused), then the submitter waits for ``results/<id>``.
2. ``serve`` (every router, acting only for the services it decides): a command is
   claimed by a transaction guarded on this router's decider term,
   ``[create_revision(services/<svc>/decider) == term, mod_revision(command) == read]
   -> delete command``. Only the claim's winner carries it out, so a command runs at
   most once, and a deposed decider (its term changed) claims nothing. The result is
   put under ``results/<id>`` with its own 60 s lease: it cleans itself up.
3. A record that is not a command (not JSON, not an object, unknown command, arguments
   not an object, a bad id) is claimed the same way and answered 400, never carried out.
4. At the submitter's deadline a command not yet claimed is withdrawn by a transaction
   (``mod_revision(command) == mine -> delete``): when that wins, nobody will run it and
   the answer is 503 naming why (no router decides the service, or its decider did not
   take it); when it loses, the decider has it and the answer is 504 (claimed, no result
   yet: its outcome shows in the status and the event log).
5. Every size is bounded: a record (16 KiB), a result (64 KiB, else a short error in its
   place), commands looked at per scan (256), commands carried out at once (8).
6. etcd unreachable: ``submit`` answers 503 at once, saying so; ``serve`` waits and
   tries again (0.5 s doubling to 5 s), and rescans all pending commands when etcd is
   back, and every ``RESCAN_SECONDS`` (a command of a service whose decider changed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .etcd import KV, Compare, EtcdClient, EtcdError, EtcdUnavailable, Op, WatchCompacted

__all__ = ["COMMANDS", "RESULT_LEASE_SECONDS", "CommandQueue", "parse_record"]

log = logging.getLogger("hotspare.cluster")

COMMANDS = frozenset({"switchover", "failover", "confirm-fenced", "resume", "drain", "ready"})
RESULT_LEASE_SECONDS = 60
MAX_RECORD_BYTES = 16 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_SCAN = 256
MAX_RUNNING = 8
RESCAN_SECONDS = 1.0
_ID = re.compile(r"^[0-9a-f]{16,64}$")

Answer = tuple[int, dict[str, Any]]
Execute = Callable[[str, str, dict[str, Any]], Awaitable[Answer]]


def parse_record(value: bytes) -> tuple[str, dict[str, Any], str] | str:
    """``(command, args, from)`` of a stored command, or why it is not one (rule 3)."""
    if len(value) > MAX_RECORD_BYTES:
        return f"record of {len(value)} bytes, more than {MAX_RECORD_BYTES}"
    try:
        record = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"record is not JSON ({exc})"
    if not isinstance(record, dict):
        return f"record: expected a JSON object, got {type(record).__name__}"
    command, args, sender = record.get("command"), record.get("args", {}), record.get("from", "")
    if command not in COMMANDS:
        return f"record: unknown command {command!r} (commands: {', '.join(sorted(COMMANDS))})"
    if not isinstance(args, dict):
        return f"record: 'args' expected a JSON object, got {type(args).__name__}"
    if not isinstance(sender, str) or len(sender) > 63:
        return f"record: 'from' expected a router name, got {sender!r:.80}"
    return command, args, sender


def _encode_result(status: int, body: dict[str, Any]) -> bytes:
    raw = json.dumps({"status": status, "body": body}).encode()
    if len(raw) > MAX_RESULT_BYTES:
        raw = json.dumps({"status": 500, "body": {
            "error": f"the decider's answer ({status}) was {len(raw)} bytes, more than {MAX_RESULT_BYTES}"}}).encode()
    return raw


def _decode_result(value: bytes) -> Answer:
    try:
        record = json.loads(value) if len(value) <= MAX_RESULT_BYTES else None
    except (ValueError, UnicodeDecodeError):
        record = None
    if (not isinstance(record, dict) or not isinstance(record.get("status"), int)
            or not isinstance(record.get("body"), dict)):
        return 502, {"error": "the decider's result in etcd is not {status, body}"}
    return int(record["status"]), dict(record["body"])


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class CommandQueue:
    def __init__(self, client: EtcdClient, prefix: str, name: str, timeout: float = 10.0) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.name = name
        self.timeout = timeout
        self._running = 0

    def _command_key(self, service: str, cid: str) -> str:
        return f"{self.prefix}/commands/{service}/{cid}"

    def _result_key(self, cid: str) -> str:
        return f"{self.prefix}/results/{cid}"

    def _decider_key(self, service: str) -> str:
        return f"{self.prefix}/services/{service}/decider"

    # -- any router --------------------------------------------------------------------

    async def submit(self, service: str, command: str, args: dict[str, Any]) -> Answer:
        """Rule 1 and 4: the decider's ``(status, body)``; 503 / 504 naming why not."""
        cid = secrets.token_hex(16)
        record = json.dumps({"command": command, "args": args, "from": self.name}).encode()
        if len(record) > MAX_RECORD_BYTES:
            return 400, {"error": f"{command}: arguments of {len(record)} bytes, more than {MAX_RECORD_BYTES}"}
        key = self._command_key(service, cid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            rev = await self.client.put(key, record)
        except EtcdError as exc:
            if isinstance(exc, EtcdUnavailable) and exc.maybe_applied and not await self._delete_unsent(key):
                return 503, {"error": f"{command} of {service}: etcd failed while it was sent from {self.name} "
                                      f"({exc}); it may have reached the decider: check the status before "
                                      "repeating it"}
            return 503, {"error": f"{command} of {service} not sent: etcd is unreachable from {self.name} ({exc}); "
                                  "nothing was done"}
        log.info("service %s: %s sent to the decider through etcd (command %s)", service, command, cid)
        result = await self._wait_result(cid, rev, deadline)
        if result is not None:
            return result
        return await self._withdraw(service, command, key, cid, rev)

    async def _delete_unsent(self, key: str) -> bool:
        """After a put whose answer was lost: True when the command is surely not there
        (never written, or deleted here before any decider claimed it)."""
        try:
            res = await self.client.txn([Compare.create_revision(key, ">", 0)], [Op.delete(key)])
        except EtcdError:
            return False
        return res.succeeded  # False: absent (never written, or claimed already: cannot tell)

    async def _wait_result(self, cid: str, rev: int, deadline: float) -> Answer | None:
        loop = asyncio.get_running_loop()
        key = self._result_key(cid)
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    kv = await self.client.get(key)  # also covers a result written in a watch's gap
                    if kv is not None:
                        return _decode_result(kv.value)
                    stream = self.client.watch(key, start_revision=rev + 1)
                    try:
                        async for batch in stream:
                            for ev in batch:
                                if ev.type == "put":
                                    return _decode_result(ev.kv.value)
                    finally:
                        await _close(stream)
            except TimeoutError:
                break
            except EtcdError as exc:
                log.warning("command %s: watching its result failed (%s); watching again", cid, exc)
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        return None

    async def _withdraw(self, service: str, command: str, key: str, cid: str, rev: int) -> Answer:
        try:
            res = await self.client.txn([Compare.mod_revision(key, "==", rev)], [Op.delete(key)],
                                        [Op.get(self._result_key(cid)), Op.get(self._decider_key(service))])
        except EtcdError as exc:
            return 504, {"error": f"{command} of {service}: no answer within {self.timeout:g}s and etcd is "
                                  f"unreachable ({exc}); it may still run: check the status"}
        if res.succeeded:
            decider = await self._decider(service)
            why = (f"no router decides service {service!r} (no decider in etcd)" if decider is None
                   else f"its decider {decider} did not take it")
            return 503, {"error": f"{command} of {service} not carried out within {self.timeout:g}s: {why}; "
                                  "it was withdrawn and nothing was done"}
        if res.responses and res.responses[0]:
            return _decode_result(res.responses[0][0].value)
        return 504, {"error": f"{command} of {service}: taken by the decider but no result within "
                              f"{self.timeout:g}s; it is still running: its outcome shows in the status and events"}

    async def _decider(self, service: str) -> str | None:
        try:
            kv = await self.client.get(self._decider_key(service))
        except EtcdError:
            return None
        return kv.value.decode(errors="replace")[:63] if kv is not None else None

    # -- the decider -------------------------------------------------------------------

    async def serve(self, decides: Callable[[str], bool], term_of: Callable[[str], int | None],
                    execute: Execute) -> None:
        """Rule 2: forever; cancel to stop (commands being carried out are cancelled too)."""
        backoff = 0.5
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    rev = await self._scan(decides, term_of, execute, tg)
                    backoff = 0.5
                    await self._follow(rev, decides, term_of, execute, tg)
                except WatchCompacted:
                    continue
                except EtcdError as exc:
                    log.warning("router %s: command queue: etcd failed (%s); trying again in %.1fs",
                                self.name, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def _follow(self, rev: int, decides: Callable[[str], bool], term_of: Callable[[str], int | None],
                      execute: Execute, tg: asyncio.TaskGroup) -> None:
        """Watch for new commands; rescan on each, and every RESCAN_SECONDS. The stream is
        read by its own task, so the rescan timer never cancels a read of it."""
        wake, failed = asyncio.Event(), list[EtcdError]()
        stream = self.client.watch(f"{self.prefix}/commands/", prefix=True, start_revision=rev + 1)

        async def pump() -> None:
            try:
                async for batch in stream:
                    if any(ev.type == "put" for ev in batch):
                        wake.set()
                failed.append(EtcdUnavailable("the commands watch ended"))
            except EtcdError as exc:
                failed.append(exc)
            finally:
                wake.set()
                await _close(stream)

        reader = tg.create_task(pump(), name=f"commands:watch:{self.name}")
        try:
            while True:
                try:
                    async with asyncio.timeout(RESCAN_SECONDS):
                        await wake.wait()
                except TimeoutError:
                    pass
                wake.clear()
                if failed:
                    raise failed[0]
                await self._scan(decides, term_of, execute, tg)
        finally:
            reader.cancel()

    async def _scan(self, decides: Callable[[str], bool], term_of: Callable[[str], int | None],
                    execute: Execute, tg: asyncio.TaskGroup) -> int:
        kvs, rev = await self.client.get_prefix(f"{self.prefix}/commands/")
        for kv in kvs[:MAX_SCAN]:
            if self._running >= MAX_RUNNING:
                break
            await self._consider(kv, decides, term_of, execute, tg)
        return rev

    async def _consider(self, kv: KV, decides: Callable[[str], bool], term_of: Callable[[str], int | None],
                        execute: Execute, tg: asyncio.TaskGroup) -> None:
        parts = kv.key[len(f"{self.prefix}/commands/"):].split("/")
        if len(parts) != 2 or not parts[0]:
            return  # not of a service: nobody's to answer
        service, cid = parts
        if not decides(service):
            return
        term = term_of(service)
        if term is None:
            return
        claim = await self.client.txn(
            [Compare.create_revision(self._decider_key(service), "==", term),
             Compare.mod_revision(kv.key, "==", kv.mod_revision)],
            [Op.delete(kv.key)])
        if not claim.succeeded:
            return  # deposed, or withdrawn/claimed meanwhile: never run
        if not _ID.match(cid):
            log.error("service %s: command key %s has a bad id; dropped", service, kv.key)
            return
        parsed = parse_record(kv.value)
        self._running += 1
        tg.create_task(self._carry_out(service, cid, parsed, execute), name=f"command:{service}:{cid}")

    async def _carry_out(self, service: str, cid: str, parsed: tuple[str, dict[str, Any], str] | str,
                         execute: Execute) -> None:
        try:
            if isinstance(parsed, str):
                log.error("service %s: command %s refused: %s", service, cid, parsed)
                status, body = 400, {"error": f"command {cid}: {parsed}; not carried out"}
            else:
                command, args, sender = parsed
                log.warning("service %s: carrying out %s from router %s (command %s)", service, command, sender, cid)
                try:
                    status, body = await execute(service, command, args)
                except Exception as exc:  # the submitter gets an answer whatever failed
                    log.exception("service %s: command %s (%s) failed", service, cid, command)
                    status, body = 500, {"error": f"{command} failed on the decider {self.name}: {exc}"}
            await self._put_result(cid, status, body)
        finally:
            self._running -= 1

    async def _put_result(self, cid: str, status: int, body: dict[str, Any]) -> None:
        try:
            lease = await self.client.lease_grant(RESULT_LEASE_SECONDS)
            await self.client.put(self._result_key(cid), _encode_result(status, body), lease=lease)
        except EtcdError as exc:
            log.error("command %s: its result (%d) could not be written to etcd: %s", cid, status, exc)
