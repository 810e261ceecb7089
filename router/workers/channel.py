"""The local channel between the decider and one worker process: a unix socketpair,
one message per frame.

Rules:

1. A frame is a 4-byte big-endian length, one kind byte and the payload: ``j`` JSON (an
   object), ``p`` pickle. A frame longer than ``MAX_FRAME`` ends the channel with
   :class:`ChannelError` (it names the size and the limit).
2. The decider only ever reads JSON: a worker parses hostile bytes from the network, and
   nothing it sends may become code in the decider. A worker accepts pickle, and only
   from the decider that started it (the config, a Python object, crosses whole).
3. ``send`` never blocks: it queues the frame on the transport. ``receive`` returns None
   at end of channel (the other process exited or closed it).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import struct
from typing import Any

__all__ = ["MAX_FRAME", "Channel", "ChannelError"]

MAX_FRAME = 16 * 1024 * 1024  # the biggest message is a worker's metrics snapshot
_HEAD = struct.Struct(">IB")
_JSON, _PICKLE = ord("j"), ord("p")


class ChannelError(Exception):
    """The other side broke the framing rules (rule 1 or 2)."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, accept_pickle: bool) -> None:
        self._reader = reader
        self._writer = writer
        self._accept_pickle = accept_pickle

    @classmethod
    async def open(cls, sock: socket.socket, *, accept_pickle: bool) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**20)
        return cls(reader, writer, accept_pickle=accept_pickle)

    def send(self, message: dict[str, Any]) -> None:
        self._frame(_JSON, json.dumps(message, separators=(",", ":")).encode())

    def send_object(self, message: object) -> None:
        self._frame(_PICKLE, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _frame(self, kind: int, payload: bytes) -> None:
        if len(payload) > MAX_FRAME:
            raise ChannelError(f"channel: a message of {len(payload)} bytes is over the {MAX_FRAME}-byte limit")
        if not self._writer.is_closing():
            self._writer.write(_HEAD.pack(len(payload), kind) + payload)

    @property
    def backlog(self) -> int:
        """Bytes queued for the other side and not yet taken by it."""
        transport = self._writer.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> Any:
        try:
            head = await self._reader.readexactly(_HEAD.size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        size, kind = _HEAD.unpack(head)
        if size > MAX_FRAME:
            raise ChannelError(f"channel: a frame of {size} bytes is over the {MAX_FRAME}-byte limit")
        try:
            payload = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        if kind == _JSON:
            message = json.loads(payload)
            if not isinstance(message, dict):
                raise ChannelError(f"channel: a JSON message must be an object, got {type(message).__name__}")
            return message
        if kind == _PICKLE and self._accept_pickle:
            return pickle.loads(payload)  # rule 2: only the decider that started us sends it
        raise ChannelError(f"channel: frame kind {kind!r} not accepted here")

    def close(self) -> None:
        self._writer.close()
