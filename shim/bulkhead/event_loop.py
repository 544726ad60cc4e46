"""asyncio loops whose child processes (QEMU above all) are reaped through a pidfd each, never a
helper thread per child: Python 3.11's default watcher starts one thread per child, while
Python 3.12 picks pidfds itself (and deprecates setting a watcher)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on a loop that watches its children by pidfd."""
    _watch_children_by_pidfd()
    return asyncio.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new current loop that watches its children by pidfd, for a caller that drives it step
    by step (it closes the loop and calls asyncio.set_event_loop(None) when done)."""
    _watch_children_by_pidfd()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # on Python 3.11 this attaches the watcher to the loop
    return loop


def _watch_children_by_pidfd() -> None:
    """Install the pidfd watcher where it is not the default; the loop set next gets it."""
    if sys.version_info < (3, 12):
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
