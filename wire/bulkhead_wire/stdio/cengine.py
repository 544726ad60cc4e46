"""The C copy engine (bulkhead_wire._copyengine, built by cffi_build/) behind a small Python API.

One CopyEngine owns one data-channel fd and moves the bytes of many streams in a C thread:
OUT streams read a process-side fd and send DATA frames within the peer's credit, IN streams
write received DATA to an fd and grant credit once written. Python keeps the control: it adds
and removes streams, ends an OUT stream early (close_output), and learns about progress through
notify_fd, whose readiness means poll() has news. With attach(), each stream's progress lands
in a pump.Progress (the counters the exit ordering already waits on).

The wire format is channel.py's, so either end may be the C engine or a DataChannel.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bulkhead_wire.stdio.channel import WINDOW
from bulkhead_wire.stdio.pump import Progress

try:
    from bulkhead_wire._copyengine import ffi, lib
except ImportError:  # not built (a source tree without `pip install`): use the Python pumps
    ffi = lib = None

OUT = 1  # process fd -> channel
IN = 2  # channel -> process fd
POLL_BATCH = 64
SPLICE_OFF, SPLICE_ON, SPLICE_TEST_FALLBACK = 0, 1, 2


def available() -> bool:
    """True when the C module was built and imports."""
    return lib is not None


class EngineError(Exception):
    """The engine could not be created, or a stream could not be added."""


class EngineClosed(EngineError):
    """The data channel is closed: no stream can be added any more."""


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream as the engine last saw it (see struct ce_status in copyengine.h)."""

    stream: int
    direction: int
    taken: int  # OUT: read from the fd; IN: received from the channel
    done: int  # OUT: written to the channel; IN: written to (or dropped for) the fd
    eof: bool
    finished: bool
    error: int  # errno of a failed fd, 0 if none

    @classmethod
    def from_c(cls, c: Any) -> StreamStatus:
        return cls(int(c.stream), int(c.direction), int(c.taken), int(c.done), bool(c.eof),
                   bool(c.finished), int(c.error))


class CopyEngine:
    """A C copy engine on one channel fd; the engine takes the fd (it must be non-blocking)."""

    def __init__(self, channel_fd: int, window: int = WINDOW) -> None:
        if lib is None:
            raise EngineError("the C copy engine (bulkhead_wire._copyengine) is not built")
        err = ffi.new("char[]", lib.CE_ERRLEN)
        handle = lib.ce_new(channel_fd, window, err, lib.CE_ERRLEN)
        if handle == ffi.NULL:
            raise EngineError(ffi.string(err).decode(errors="replace"))
        self._e: Any = handle
        self._progress: dict[tuple[int, int], Progress] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed_event = asyncio.Event()
        self.close_reason: str | None = None

    def set_splice(self, mode: int) -> None:
        """SPLICE_ON (default), SPLICE_OFF, or SPLICE_TEST_FALLBACK (act as if the channel
        refused splice once: tests)."""
        lib.ce_set_splice(self._handle(), mode)

    def start(self) -> None:
        """Start the C thread."""
        rc = lib.ce_start(self._handle())
        if rc:
            raise EngineError(f"cannot start the engine thread: {os.strerror(rc)}")

    @property
    def notify_fd(self) -> int:
        """Readable when poll() has news (the fd belongs to the engine)."""
        return int(lib.ce_notify_fd(self._handle()))

    def add_output(self, stream: int, fd: int, progress: Progress | None = None) -> Progress:
        """Send what fd yields on `stream`, then EOF. The engine dups fd (close yours freely)."""
        return self._add(stream, OUT, fd, progress)

    def add_input(self, stream: int, fd: int, progress: Progress | None = None) -> Progress:
        """Write `stream` into fd; the engine's dup is closed at the stream's EOF."""
        return self._add(stream, IN, fd, progress)

    def _add(self, stream: int, direction: int, fd: int, progress: Progress | None) -> Progress:
        rc = lib.ce_add(self._handle(), stream, direction, fd)
        if rc:
            what = "output" if direction == OUT else "input"
            error = EngineClosed if rc == errno.EPIPE else EngineError
            raise error(f"stream {stream} ({what}, fd {fd}): {os.strerror(rc)}")
        progress = progress or Progress()
        self._progress[(stream, direction)] = progress
        return progress

    def close_output(self, stream: int) -> None:
        """CloseIO: forward what the fd holds now, then EOF (no-op for an unknown stream)."""
        lib.ce_close_output(self._handle(), stream)

    def abort_output(self, stream: int) -> None:
        """Cancel an OUT stream: read no more, send its EOF now (no-op for an unknown one)."""
        lib.ce_abort_output(self._handle(), stream)

    def remove(self, stream: int, direction: int) -> None:
        """Forget a stream (the engine closes its dup of the fd); no-op if unknown."""
        lib.ce_remove(self._handle(), stream, direction)
        progress = self._progress.pop((stream, direction), None)
        if progress is not None:
            progress.finish()

    def status(self, stream: int, direction: int) -> StreamStatus | None:
        """The stream's counters now, None if it is not registered."""
        out = ffi.new("struct ce_status *")
        if lib.ce_status(self._handle(), stream, direction, out):
            return None
        return StreamStatus.from_c(out)

    def exit_mark(self, stream: int) -> int | None:
        """An OUT stream's length once what its fd holds now is read (read so far + FIONREAD,
        atomic against the engine's reads): call when the process was reaped, then wait for
        its Progress to reach it. None if the stream is not registered."""
        mark = ffi.new("uint64_t *")
        if lib.ce_exit_mark(self._handle(), stream, mark):
            return None
        return int(mark[0])

    def poll(self) -> list[StreamStatus]:
        """Streams that changed since the last poll (resets notify_fd)."""
        buf = ffi.new("struct ce_status[]", POLL_BATCH)
        closed = ffi.new("int *")
        out: list[StreamStatus] = []
        while True:
            n = lib.ce_poll(self._handle(), buf, POLL_BATCH, closed)
            out.extend(StreamStatus.from_c(buf[i]) for i in range(n))
            if n < POLL_BATCH:
                break
        if closed[0] and self.close_reason is None:
            self.close_reason = self._reason()
        return out

    def _reason(self) -> str:
        buf = ffi.new("char[]", lib.CE_ERRLEN)
        lib.ce_close_reason(self._handle(), buf, lib.CE_ERRLEN)
        return ffi.string(buf).decode(errors="replace")

    def counters(self) -> dict[str, int]:
        """frames_in, frames_out, channel_reads, channel_writes, dropped_bytes,
        spliced_bytes."""
        c = ffi.new("struct ce_counters *")
        lib.ce_get_counters(self._handle(), c)
        names = ("frames_in", "frames_out", "channel_reads", "channel_writes", "dropped_bytes",
                 "spliced_bytes")
        return {name: int(getattr(c, name)) for name in names}

    # -- asyncio ---------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None = None,
               after: Callable[[list[StreamStatus]], None] | None = None) -> None:
        """Update the streams' Progress (and closed_event) from the running loop; `after`
        then gets each batch of statuses. close() detaches."""
        self._loop = loop or asyncio.get_running_loop()
        if after is None:
            self._loop.add_reader(self.notify_fd, self.dispatch)
        else:
            self._loop.add_reader(self.notify_fd, lambda: after(self.dispatch()))

    def dispatch(self) -> list[StreamStatus]:
        """Poll, and apply what changed to the Progress objects; returns the statuses."""
        statuses = self.poll()
        for st in statuses:
            progress = self._progress.get((st.stream, st.direction))
            if progress is None:
                continue
            progress.taken = st.taken
            if st.done > progress.done:
                progress.advance(st.done - progress.done)
            if st.finished:
                progress.finish()
        if self.close_reason is not None:
            self.closed_event.set()
        return statuses

    def close(self) -> None:
        """Stop the thread, close the channel fd and the engine's dups; Progress finishes."""
        if self._e is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.notify_fd)
            self._loop = None
        lib.ce_free(self._e)
        self._e = None
        for progress in self._progress.values():
            progress.finish()
        self._progress.clear()
        if self.close_reason is None:
            self.close_reason = "closed"
        self.closed_event.set()

    def _handle(self) -> Any:
        if self._e is None:
            raise EngineError("the engine is closed")
        return self._e

    def __enter__(self) -> CopyEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse(buf: bytes) -> tuple[int, dict[str, int] | str | None]:
    """Parse one frame at the start of buf with the C parser (tests, fuzzing).

    Returns (size, fields) for a whole frame, (0, None) when more bytes are needed, and
    (-1, message) for a malformed frame.
    """
    if lib is None:
        raise EngineError("the C copy engine (bulkhead_wire._copyengine) is not built")
    frame = ffi.new("struct ce_frame *")
    err = ffi.new("char[]", lib.CE_ERRLEN)
    cbuf = ffi.from_buffer(buf)
    n = int(lib.ce_parse(cbuf, len(buf), frame, err, lib.CE_ERRLEN))
    if n < 0:
        return n, ffi.string(err).decode(errors="replace")
    if n == 0:
        return 0, None
    return n, {"stream": int(frame.stream), "kind": int(frame.kind),
               "length": int(frame.length), "credit": int(frame.credit)}
