"""The C engine of the stdio link: one CopyEngine thread moves every stream's bytes, and the
event loop only hears about progress (through the engine's notify fd), never per chunk."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable

from bulkhead_wire.stdio.cengine import (
    IN,
    OUT,
    SPLICE_OFF,
    CopyEngine,
    EngineClosed,
    EngineError,
    StreamStatus,
)
from bulkhead_wire.stdio.channel import WINDOW
from bulkhead_wire.stdio.link import LinkError, Pump, StreamLink
from bulkhead_wire.stdio.pump import Progress

log = logging.getLogger(__name__)
QUIET_REASONS = ("closed", "closed by peer")


class EnginePump(Pump):
    """One stream registered with the engine."""

    def __init__(self, link: EngineLink, stream: int, direction: int,
                 progress: Progress) -> None:
        super().__init__(stream, progress)
        self._link = link
        self._direction = direction

    def exit_mark(self) -> int:
        mark = None
        with contextlib.suppress(EngineError):
            mark = self._link.copy_engine.exit_mark(self.stream)
        # None: the stream finished (EOF sent) and was forgotten: everything was read.
        return self.progress.taken if mark is None else mark

    def close_output(self) -> None:
        with contextlib.suppress(EngineError):
            self._link.copy_engine.close_output(self.stream)

    def cancel(self) -> None:
        """An output stream still ends with EOF (as a cancelled Python pump does), so the
        peer's sink closes; an input stream is dropped."""
        with contextlib.suppress(EngineError):
            if self._direction == OUT:
                self._link.copy_engine.abort_output(self.stream)
            else:
                self._link.copy_engine.remove(self.stream, self._direction)
        self.progress.finish()


class EngineLink(StreamLink):
    """The C copy engine on one data-channel fd (non-blocking; the link takes it)."""

    engine = "c"

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        super().__init__()
        try:
            self.copy_engine = CopyEngine(fd, window)
            # Off: with splice into a VM's virtio-serial port, an exit behind a stalled reader
            # was never reported (cffi_build/STATUS.md); copying is as fast on AF_UNIX here.
            self.copy_engine.set_splice(SPLICE_OFF)
            self.copy_engine.start()
        except EngineError as exc:
            raise LinkError(f"C copy engine: {exc}") from None
        self.copy_engine.attach(after=self._after_dispatch)

    def send_from(self, stream: int, fd: int) -> Pump:
        return self._add(stream, OUT, fd, Progress())

    def receive_into(self, stream: int, fd: int,
                     on_data: Callable[[int], None] | None = None) -> Pump:
        return self._add(stream, IN, fd, Progress(listener=on_data))

    def _add(self, stream: int, direction: int, fd: int, progress: Progress) -> Pump:
        pump = EnginePump(self, stream, direction, progress)
        try:
            if direction == OUT:
                self.copy_engine.add_output(stream, fd, progress)
            else:
                self.copy_engine.add_input(stream, fd, progress)
        except EngineClosed:  # as a Python pump on a closed channel: it ends at once
            progress.error = f"data channel {self.copy_engine.close_reason or 'closed'}"
            progress.finish()
        except EngineError as exc:
            raise LinkError(str(exc)) from None
        return pump

    def _after_dispatch(self, statuses: list[StreamStatus]) -> None:
        """Once the engine's news reached the Progress objects: report stream errors, forget
        finished streams, say why the channel closed."""
        for st in statuses:
            if st.error:
                self._note_error(st.stream, st.direction, st.error)
            if st.finished:
                self.copy_engine.remove(st.stream, st.direction)
        reason = self.copy_engine.close_reason
        if reason is not None and not self.closed_event.is_set():
            if reason not in QUIET_REASONS:
                log.error("data channel: %s", reason)
            self.closed_event.set()

    def _note_error(self, stream: int, direction: int, code: int) -> None:
        what = "output" if direction == OUT else "input"
        log.warning("stdio stream %d (%s): %s", stream, what, errno.errorcode.get(code, code))

    async def close(self) -> None:
        self.copy_engine.close()
        self.closed_event.set()
