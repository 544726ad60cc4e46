"""Signal handling shared by the benchmarks: SIGTERM and SIGHUP end a run like Ctrl-C does (so
`finally` blocks remove what it started), and cleanup itself cannot be cut short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType


@contextlib.contextmanager
def signal_handlers(signals: tuple[signal.Signals, ...],
                    handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """handler for these signals during the block; the previous handlers afterwards."""
    saved = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, previous in saved.items():
            signal.signal(s, previous)


def interrupts_raise() -> contextlib.AbstractContextManager[None]:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt like Ctrl-C does, so `finally` blocks run."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    return signal_handlers((signal.SIGTERM, signal.SIGHUP), interrupt)


def uninterrupted(what: str) -> contextlib.AbstractContextManager[None]:
    """Cleanup that Ctrl-C or SIGTERM must not cut short: they only print that it is under way."""
    def notice(signum: int, frame: FrameType | None) -> None:
        print(f"  ({signal.Signals(signum).name} ignored: {what} under way)", flush=True)
    return signal_handlers((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), notice)
