"""The data channel: every stdio stream of every process multiplexed on one byte link.

Frame: u32 stream id, u8 kind, u32 length (big-endian), then the payload. Kinds: DATA (bytes),
EOF (no more data on that stream), CREDIT (u32: the receiver drained that many more bytes).
A sender never has more than WINDOW unacknowledged bytes per stream, so a slow sink applies
backpressure all the way to the producing process and nothing is ever dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IBI")
CREDIT = struct.Struct(">I")
KIND_DATA = 1
KIND_EOF = 2
KIND_CREDIT = 3
MAX_CHUNK = 64 * 1024
WINDOW = 1024 * 1024


class ChannelClosed(ConnectionError):
    """The data channel link is gone."""


class ProtocolError(Exception):
    """The peer broke the framing or the credit rules."""


def check_header(stream: int, kind: int, length: int) -> None:
    """Judge a frame by its header, before its payload is awaited (the C parser's rules)."""
    if kind == KIND_DATA:
        if length > MAX_CHUNK:
            raise ProtocolError(f"DATA frame of {length} bytes on stream {stream} "
                                f"(at most {MAX_CHUNK})")
    elif kind == KIND_EOF:
        if length:
            raise ProtocolError(f"EOF frame with a {length}-byte payload on stream {stream}")
    elif kind == KIND_CREDIT:
        if length != CREDIT.size:
            raise ProtocolError(f"CREDIT frame with a {length}-byte payload (must be 4)")
    else:
        raise ProtocolError(f"unknown frame kind {kind} on stream {stream}")


def encode_frame(stream: int, kind: int, payload: bytes = b"") -> bytes:
    """Serialize one data-channel frame."""
    return HEADER.pack(stream, kind, len(payload)) + payload


@dataclass
class Inbound:
    """Received chunks of one stream waiting for their consumer."""

    chunks: deque[bytes] = field(default_factory=deque)
    buffered: int = 0
    eof: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class DataChannel:
    """Both ends use this class; stream ids are agreed through the control API."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 window: int = WINDOW) -> None:
        self._reader = reader
        self._writer = writer
        self._window = window
        self._credit: dict[int, int] = {}
        self._credit_changed: dict[int, asyncio.Event] = {}
        self._inbound: dict[int, Inbound] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed: str | None = None
        self.closed_event = asyncio.Event()
        self.dropped_frames = 0  # DATA/EOF for streams nobody registered: the peer's doing
        self.dropped_bytes = 0

    def start(self) -> None:
        """Start the receive loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._receive_loop())

    async def close(self) -> None:
        """Stop receiving and close the link."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._mark_closed("closed")
        self._writer.close()

    # -- sending -----------------------------------------------------------------------------

    async def send(self, stream: int, data: bytes) -> None:
        """Send bytes on a stream, waiting for credit as needed."""
        view = memoryview(data)
        while view:
            credit = await self._wait_credit(stream)
            n = min(credit, len(view), MAX_CHUNK)
            self._credit[stream] = credit - n
            await self._write(encode_frame(stream, KIND_DATA, bytes(view[:n])))
            view = view[n:]

    def open_output(self, stream: int) -> None:
        """Register a stream we will send on: its credit is counted (and checked) from now."""
        self._credit.setdefault(stream, self._window)

    async def send_eof(self, stream: int) -> None:
        """Tell the peer no more data follows on this stream."""
        await self._write(encode_frame(stream, KIND_EOF))
        self._credit.pop(stream, None)
        self._credit_changed.pop(stream, None)

    async def grant(self, stream: int, n: int) -> None:
        """Return n bytes of credit after they reached the sink."""
        if n > 0 and self._closed is None:
            await self._write(encode_frame(stream, KIND_CREDIT, CREDIT.pack(n)))

    async def _wait_credit(self, stream: int) -> int:
        """Block until the peer lets us send at least one byte on `stream`."""
        while True:
            if self._closed is not None:
                raise ChannelClosed(f"data channel {self._closed}")
            credit = self._credit.setdefault(stream, self._window)
            if credit > 0:
                return credit
            event = self._credit_changed.setdefault(stream, asyncio.Event())
            event.clear()
            closed = asyncio.ensure_future(self.closed_event.wait())
            changed = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({closed, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                changed.cancel()

    async def _write(self, data: bytes) -> None:
        """Write a frame; frames are written whole, so concurrent senders never interleave."""
        if self._closed is not None:
            raise ChannelClosed(f"data channel {self._closed}")
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._mark_closed(f"lost: {exc}")
            raise ChannelClosed(f"data channel lost: {exc}") from exc

    # -- receiving ---------------------------------------------------------------------------

    def inbound(self, stream: int) -> Inbound:
        """The receive buffer of a stream, created when this side registers it: frames the
        peer sends for a stream nobody registered are dropped, never buffered."""
        box = self._inbound.get(stream)
        if box is None:
            box = self._inbound[stream] = Inbound()
            if self._closed is not None:
                box.eof = True
                box.ready.set()
        return box

    async def read(self, stream: int) -> bytes:
        """Next chunk of a stream, b"" at EOF. The caller grants credit once it is written."""
        box = self.inbound(stream)
        while not box.chunks and not box.eof:
            box.ready.clear()
            await box.ready.wait()
        if box.chunks:
            chunk = box.chunks.popleft()
            box.buffered -= len(chunk)
            return chunk
        self._inbound.pop(stream, None)
        return b""

    async def _receive_loop(self) -> None:
        """Dispatch incoming frames to stream buffers and credit counters; a frame that breaks
        the rules closes the channel with the reason in the log (as the C engine does)."""
        reason = "closed by peer"
        try:
            while True:
                try:
                    header = await self._reader.readexactly(HEADER.size)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise ProtocolError("truncated frame header") from None
                    break
                stream, kind, length = HEADER.unpack(header)
                check_header(stream, kind, length)
                try:
                    payload = await self._reader.readexactly(length) if length else b""
                except asyncio.IncompleteReadError as exc:
                    raise ProtocolError(f"truncated frame: got {len(exc.partial)} of "
                                        f"{length} payload bytes") from None
                self._dispatch(stream, kind, payload)
        except (ConnectionError, ProtocolError) as exc:
            reason = str(exc)
            log.error("data channel: %s", exc)
        finally:
            self._mark_closed(reason)

    def _drop(self, stream: int, payload: bytes) -> None:
        """Count a frame for an unregistered stream; the first one is logged."""
        if not self.dropped_frames:
            log.warning("data channel: the peer sent on stream %d, which is not open here; "
                        "frames for unopened streams are dropped", stream)
        self.dropped_frames += 1
        self.dropped_bytes += len(payload)

    def _dispatch(self, stream: int, kind: int, payload: bytes) -> None:
        """Apply one frame (its header already checked)."""
        if kind in (KIND_DATA, KIND_EOF) and stream not in self._inbound:
            self._drop(stream, payload)
        elif kind == KIND_DATA:
            box = self._inbound[stream]
            if box.eof:
                raise ProtocolError(f"DATA after EOF on stream {stream}")
            if box.buffered + len(payload) > self._window:
                raise ProtocolError(f"stream {stream} exceeded its credit window")
            box.chunks.append(payload)
            box.buffered += len(payload)
            box.ready.set()
        elif kind == KIND_EOF:
            box = self._inbound[stream]
            if box.eof:
                raise ProtocolError(f"second EOF on stream {stream}")
            box.eof = True
            box.ready.set()
        else:
            (n,) = CREDIT.unpack(payload)
            if stream not in self._credit:
                return  # late credit for a stream that ended (or never sent): ignored
            credit = self._credit[stream] + n
            if credit > self._window:
                raise ProtocolError(f"credit overflow on stream {stream} (have + {n} > window)")
            self._credit[stream] = credit
            event = self._credit_changed.get(stream)
            if event is not None:
                event.set()

    def _mark_closed(self, reason: str) -> None:
        """Wake every waiter: readers see EOF, senders see ChannelClosed."""
        if self._closed is not None:
            return
        self._closed = reason
        self.closed_event.set()
        for box in self._inbound.values():
            box.eof = True
            box.ready.set()
