"""A container root assembled in the guest: cached image layers under a writable layer in memory.

The image view (read through the cached 9p mount, guest_abi.GUEST_CACHED_SHARE_DIR) is the
overlay's lower layer; the upper and work directories live on a tmpfs of the container's own,
so opens, execs, creates and writes never leave the guest. What the container writes reaches
its snapshot on the host by write-back (writeback.py): every WRITEBACK_INTERVAL while it runs,
and once more after its init exited, before the exit is reported. A VM that dies loses what
was written since the last pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

from bulkhead_wire.guest_abi import GUEST_LAYERED_ROOT, GUEST_LAYERS_DIR

from bulkhead_agent import mounting
from bulkhead_agent.writeback import PassStats, Writeback

log = logging.getLogger(__name__)

WRITEBACK_INTERVAL = 10.0  # seconds between passes while the container runs (kubelet's cadence)
# The writable layer's bound: tmpfs's default of half the VM's memory, per container.
LAYER_TMPFS_OPTIONS = "mode=0700,size=50%"
OVERLAY_OPTIONS = "redirect_dir=off,index=off,metacopy=off,xino=off"


class LayerError(Exception):
    """The container's root could not be assembled; names the container and the step."""


@dataclass
class RootfsLayer:
    """One container's assembled root, and the write-back of its writable layer."""

    container_id: str
    lower: str  # the image view, through the cached mount
    target: str  # the bundle's rootfs on the coherent mount: the snapshot on the host
    base: str  # the container's tmpfs: upper/, work/ and the overlay's mount point
    writeback: Writeback = field(init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _ticker: asyncio.Task[None] | None = field(default=None, init=False)
    _final: asyncio.Future[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.writeback = Writeback(os.path.join(self.base, "upper"), self.target)

    @property
    def root(self) -> str:
        """The spec's root.path for this container (the shim writes the same path)."""
        return os.path.join(self.base, GUEST_LAYERED_ROOT)

    @classmethod
    def assemble(cls, container_id: str, lower: str, bundle: str) -> RootfsLayer:
        """Mount the tmpfs and the overlay; on failure nothing stays mounted."""
        layer = cls(container_id, lower, os.path.join(bundle, "rootfs"),
                    os.path.join(GUEST_LAYERS_DIR, container_id))
        if not os.path.isdir(lower):
            raise LayerError(f"container {container_id}: image view {lower} is not a directory")
        try:
            mounting.mount("layer", layer.base, "tmpfs", 0, LAYER_TMPFS_OPTIONS)
            for name in ("upper", "work", GUEST_LAYERED_ROOT):
                os.mkdir(os.path.join(layer.base, name), 0o755)
            upper, work = layer.writeback.upper, os.path.join(layer.base, "work")
            mounting.mount("overlay", layer.root, "overlay", 0,
                           f"lowerdir={lower},upperdir={upper},workdir={work},"
                           + OVERLAY_OPTIONS)
        except OSError as exc:
            layer.unmount()
            raise LayerError(f"container {container_id}: assemble its root: {exc}") from None
        return layer

    def start_writeback(self) -> None:
        """Write back every WRITEBACK_INTERVAL until the final pass."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(WRITEBACK_INTERVAL)
            await self._pass("periodic")

    async def _pass(self, why: str) -> None:
        """One write-back pass in a worker thread (it may copy megabytes over 9p)."""
        async with self._lock:
            try:
                stats: PassStats = await asyncio.to_thread(self.writeback.run)
            except OSError as exc:
                log.warning("container %s: %s write-back failed: %s", self.container_id, why,
                            exc)
                return
        if stats.failed:
            log.warning("container %s: %s write-back: %d entries failed, first %s",
                        self.container_id, why, len(stats.failed), stats.failed[0])
        elif stats.written or stats.removed:
            log.debug("container %s: %s write-back: %d written (%d bytes), %d removed",
                      self.container_id, why, stats.written, stats.bytes, stats.removed)

    async def finish(self) -> None:
        """The last pass, after the container's processes are gone; repeated calls share it."""
        if self._final is None:
            if self._ticker is not None:
                self._ticker.cancel()
            self._final = asyncio.ensure_future(self._pass("final"))
        await asyncio.shield(self._final)

    def unmount(self) -> None:
        """Detach the overlay and the tmpfs (what was not written back is gone then)."""
        if self._ticker is not None:
            self._ticker.cancel()
        for path in (self.root, self.base):
            try:
                mounting.detach(path)
            except OSError as exc:
                log.warning("container %s: %s", self.container_id, exc)
        with contextlib.suppress(OSError):
            os.rmdir(self.base)
