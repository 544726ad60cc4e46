"""ttrpc framing: a 10-byte big-endian header (length, stream id, type, flags) then the payload."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE = 4 << 20  # 4 MiB, the limit of every ttrpc implementation

TYPE_REQUEST = 0x01
TYPE_RESPONSE = 0x02
TYPE_DATA = 0x03

FLAG_REMOTE_CLOSED = 0x01
FLAG_REMOTE_OPEN = 0x02
FLAG_NO_DATA = 0x04


class OversizedFrame(Exception):
    """A peer announced a frame over MAX_MESSAGE; its payload was discarded."""

    def __init__(self, stream_id: int, length: int) -> None:
        super().__init__(f"message length {length} exceed maximum message size of {MAX_MESSAGE}")
        self.stream_id = stream_id
        self.length = length


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    stream_id: int
    type: int
    flags: int
    payload: bytes


def encode(stream_id: int, ftype: int, payload: bytes, flags: int = 0) -> bytes:
    """Serialize one frame; refuses payloads over the 4 MiB limit."""
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"ttrpc message of {len(payload)} bytes exceeds {MAX_MESSAGE}")
    return HEADER.pack(len(payload), stream_id, ftype, flags) + payload


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """Read one frame; None on a clean EOF between frames.

    Raises asyncio.IncompleteReadError on a truncated frame and OversizedFrame (after skipping
    the payload) on a frame larger than the limit.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    length, stream_id, ftype, flags = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        await _discard(reader, length)
        raise OversizedFrame(stream_id, length)
    payload = await reader.readexactly(length) if length else b""
    return Frame(stream_id, ftype, flags, payload)


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    """Skip an oversized payload without buffering it whole."""
    while length:
        chunk = await reader.read(min(length, 1 << 16))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
