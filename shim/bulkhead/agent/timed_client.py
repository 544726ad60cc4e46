"""A ttrpc client that counts every call in RpcStats: the shim's agent link uses it."""

from __future__ import annotations

import time
from typing import TypeVar

from bulkhead_wire.ttrpc import Client, TtrpcError
from google.protobuf.message import Message

from bulkhead.agent.rpc_stats import RpcStats

CONNECTION = "connection"  # the error "code" of a call whose link to the agent broke

M = TypeVar("M", bound=Message)

# A guest that never answers must not hang the host: every call has this deadline unless the
# caller passes its own, or None for a long poll that is meant to wait (WaitProcess, WaitOOM).
DEFAULT_DEADLINE = 60.0


class TimedClient:
    """A ttrpc Client whose every call is timed and counted; cancelled calls are not counted
    (they were given up by the caller, not failed by the agent)."""

    def __init__(self, client: Client, stats: RpcStats) -> None:
        self._client = client
        self.stats = stats

    async def call(self, service: str, method: str, request: Message, response_type: type[M],
                   timeout: float | None = DEFAULT_DEADLINE) -> M:
        """Client.call, counted; DEFAULT_DEADLINE unless the caller says otherwise."""
        start = time.monotonic()
        try:
            reply = await self._client.call(service, method, request, response_type, timeout)
        except TtrpcError as exc:
            self.stats.observe(method, time.monotonic() - start, exc.code.name.lower())
            raise
        except ConnectionError:
            self.stats.observe(method, time.monotonic() - start, CONNECTION)
            raise
        self.stats.observe(method, time.monotonic() - start)
        return reply
