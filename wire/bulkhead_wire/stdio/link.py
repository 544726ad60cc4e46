"""The stdio link: what the shim and the agent use to move process stdio over the data channel.

Two engines implement it with the same wire format, so each end may use either: the C copy
engine (`engine_link.py`, the default) and the pure-Python pumps (`python_link.py`, the
fallback where the C module cannot load, and the reference); `engines.py` opens one. Python
keeps the control on both: which streams exist, CloseIO, and the exit ordering (an exit is
reported only once the process's output reached its sink: see `Pump.exit_mark` and
`Progress.reach`).

Both take their own duplicate of every fd they are given, closed when the stream ends, so the
caller closes its fd whenever it likes (a stdin pipe's write end must be closed by the caller
for the process to see EOF later).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable

from bulkhead_wire.stdio.pump import Progress

STREAM_LIMIT = 1 << 20


class LinkError(Exception):
    """A stream could not be added, or the engine asked for cannot be used."""


class Pump(ABC):
    """One stream being copied: fd -> channel (output) or channel -> fd (input)."""

    def __init__(self, stream: int, progress: Progress) -> None:
        self.stream = stream
        self.progress = progress

    @abstractmethod
    def exit_mark(self) -> int:
        """Output: the stream's length once what its fd holds now is read (read so far plus
        what is queued). Taken when the process was reaped, it counts exactly its output."""

    @abstractmethod
    def close_output(self) -> None:
        """Output (CloseIO): forward what the fd holds now, then EOF."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop copying and release the fd (container removal, failures)."""

    async def wait(self) -> None:
        """Return once the stream ended: EOF passed on, or the pump stopped."""
        await self.progress.wait_finished()


class StreamLink(ABC):
    """Many processes' stdio streams over one data-channel connection."""

    engine = ""

    def __init__(self) -> None:
        self.closed_event = asyncio.Event()

    @abstractmethod
    def send_from(self, stream: int, fd: int) -> Pump:
        """Send what fd yields on `stream`, then EOF (pipes and FIFOs: after the last writer
        left). fd must be non-blocking unless it is a regular file."""

    @abstractmethod
    def receive_into(self, stream: int, fd: int,
                     on_data: Callable[[int], None] | None = None) -> Pump:
        """Write `stream` into fd until its EOF; register before the peer may send on it.
        A sink that went away (EPIPE, EIO) has the rest dropped, so the sender never stalls."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every pump and close the channel."""
