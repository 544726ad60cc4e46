"""The data channel of the current host connection, as a stdio link whose engine the host
picks in SetupSandbox (C by default). It is built on first use, so a host that never says
(template builds, older shims) gets the default."""

from __future__ import annotations

import asyncio
import logging

from bulkhead_wire.stdio.engines import ENGINES
from bulkhead_wire.stdio.link import StreamLink

from bulkhead_agent.channel import Link
from bulkhead_agent.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)
DEFAULT_ENGINE = "c"


class DataLink:
    """Holds the handshaken data link until it is needed, then its stdio link."""

    def __init__(self) -> None:
        self._raw: Link | None = None
        self.link: StreamLink | None = None
        self._lock = asyncio.Lock()

    def offer(self, raw: Link) -> None:
        """A new host connection's data link (not read from yet)."""
        self._raw = raw
        self.link = None

    async def open(self, engine: str = "") -> StreamLink:
        """The stdio link, built with `engine` ("" for the default) if it does not exist yet."""
        engine = engine or DEFAULT_ENGINE
        if engine not in ENGINES:
            raise InvalidArgument(f"io_engine {engine!r} is not one of {', '.join(ENGINES)}")
        async with self._lock:
            if self.link is not None:
                return self.link
            if self._raw is None:
                raise FailedPrecondition("data channel is not connected")
            self.link = await self._raw.stdio_link(engine)
            log.info("data channel: %s engine", self.link.engine)
            return self.link

    async def close(self) -> None:
        """The host went away: stop every stream and close the link."""
        link, self.link = self.link, None
        raw, self._raw = self._raw, None
        if link is not None:
            await link.close()
        if raw is not None:
            raw.close()
