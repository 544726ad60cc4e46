"""bulkhead.event_loop: the daemon's loop reaps children through pidfds, with no helper thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings

from bulkhead import event_loop


async def _child_status_and_threads() -> tuple[int, int]:
    """Run `sh -c 'exit 3'` and count threads while it is being waited for."""
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", "sleep 0.1; exit 3")
    threads = threading.active_count()
    return await proc.wait(), threads


def test_run_reaps_children_without_a_thread_each() -> None:
    before = threading.active_count()
    status, during = event_loop.run(_child_status_and_threads())
    assert status == 3
    assert during == before  # the threaded watcher would have added one


def test_new_event_loop_is_current_and_watches_children() -> None:
    loop = event_loop.new_event_loop()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert asyncio.get_event_loop() is loop
        status, _ = loop.run_until_complete(_child_status_and_threads())
        assert status == 3
        if sys.version_info < (3, 12):
            assert isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
