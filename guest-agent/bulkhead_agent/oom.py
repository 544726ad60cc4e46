"""Watches each container's memory.events for OOM kills and queues one event per new kill count.

cgroup v2 wakes poll(2) waiters with POLLPRI when memory.events changes, so one epoll set
(itself readable in the agent's event loop) covers every container without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from dataclasses import dataclass

from bulkhead_agent.cgroup import ROOT, oom_kills

log = logging.getLogger(__name__)


@dataclass
class _Watch:
    container_id: str
    path: str  # cgroup path ("/bulkhead/<id>")
    fd: int
    reported: int = 0


class OOMWatcher:
    """Per-container OOM kill counters; `next_event()` is the agent's WaitOOM long poll."""

    def __init__(self, root: str = ROOT) -> None:
        self.root = root
        self._epoll: select.epoll | None = None
        self._watches: dict[int, _Watch] = {}
        self._by_container: dict[str, _Watch] = {}
        self._events: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    def watch(self, container_id: str, path: str) -> None:
        """Start watching a container's cgroup (no-op without a memory controller)."""
        try:
            fd = os.open(f"{self.root}{path.rstrip('/')}/memory.events",
                         os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.info("container %s: no OOM events (%s)", container_id, exc)
            return
        if self._epoll is None:
            self._epoll = select.epoll()
            asyncio.get_running_loop().add_reader(self._epoll.fileno(), self._on_ready)
        watch = _Watch(container_id, path, fd, oom_kills(path, self.root))
        self._watches[fd] = watch
        self._by_container[container_id] = watch
        self._epoll.register(fd, select.EPOLLPRI | select.EPOLLERR)

    def unwatch(self, container_id: str) -> None:
        """Stop watching (container removed); pending events for it stay queued."""
        watch = self._by_container.pop(container_id, None)
        if watch is None:
            return
        self._watches.pop(watch.fd, None)
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(watch.fd)
        os.close(watch.fd)

    def check(self, container_id: str) -> int:
        """Read the count now, queue an event if it grew; returns the count (exit path)."""
        watch = self._by_container.get(container_id)
        if watch is None:
            return 0
        count = oom_kills(watch.path, self.root)
        if count > watch.reported:
            watch.reported = count
            log.info("container %s: OOM kill (count %d)", container_id, count)
            self._events.put_nowait((container_id, count))
        return count

    async def next_event(self) -> tuple[str, int]:
        """Block until a container records an OOM kill that was not reported yet."""
        return await self._events.get()

    def _on_ready(self) -> None:
        """memory.events of some containers changed: re-read them."""
        assert self._epoll is not None
        for fd, _ in self._epoll.poll(0):
            watch = self._watches.get(fd)
            if watch is None:
                continue
            with contextlib.suppress(OSError):
                os.pread(fd, 4096, 0)  # re-arms the kernfs notification
            self.check(watch.container_id)

    def close(self) -> None:
        """Drop every watch and the epoll set."""
        for container_id in list(self._by_container):
            self.unwatch(container_id)
        if self._epoll is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
