"""Publishes task events to containerd's ttrpc Events service, strictly in order."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from bulkhead_wire.proto import events_service_pb2
from bulkhead_wire.ttrpc import Client, TtrpcError
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

log = logging.getLogger(__name__)

SERVICE = "containerd.services.events.ttrpc.v1.Events"
RETRIES = 5  # with 1 s, 2 s, ... between them: rides out a containerd restart of ~10 s
# Events the shim holds while containerd is slow or away. What the guest can trigger (OOM
# events) is rate-bound upstream; this caps what is left, so no guest can grow the shim.
MAX_QUEUED = 4096


class EventSink(Protocol):
    """Where the task service's events go (EventPublisher; a recorder in the unit tests)."""

    def publish(self, topic: str, event: Message) -> None:
        """Queue one event; order of calls is the order containerd sees."""


class EventPublisher:
    """A single FIFO queue drained by one task, so exit can never overtake start."""

    def __init__(self, ttrpc_address: str, namespace: str) -> None:
        self._address = ttrpc_address
        self._namespace = namespace
        self._queue: asyncio.Queue[events_service_pb2.ForwardRequest] = asyncio.Queue()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # events refused because the queue was full

    def publish(self, topic: str, event: Message) -> None:
        """Queue an event (type URL = its proto full name, as containerd's typeurl uses)."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped == 1:
                log.error("events: %d queued for containerd, dropping %s and later ones "
                          "until it catches up", MAX_QUEUED, topic)
            return
        req = events_service_pb2.ForwardRequest()
        env = req.envelope
        env.timestamp.FromNanoseconds(time.time_ns())
        env.namespace = self._namespace
        env.topic = topic
        env.event.CopyFrom(any_pb2.Any(type_url=event.DESCRIPTOR.full_name,
                                       value=event.SerializeToString()))
        self._queue.put_nowait(req)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued event was delivered (or given up on)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("events: %d events not delivered", self._queue.qsize())

    async def _run(self) -> None:
        """Deliver queued events one by one, reconnecting with backoff on failure."""
        while True:
            req = await self._queue.get()
            try:
                await self._deliver(req)
            finally:
                self._queue.task_done()

    async def _deliver(self, req: events_service_pb2.ForwardRequest) -> None:
        """Forward one event; retries on a lost connection."""
        for attempt in range(1, RETRIES + 1):
            try:
                if self._client is None or self._client.closed:
                    self._client = await Client.connect_unix(self._address)
                await self._client.call(SERVICE, "Forward", req, empty_pb2.Empty, timeout=5.0)
                return
            except (TimeoutError, OSError, TtrpcError) as exc:
                log.warning("events: forwarding %s failed (attempt %d): %s",
                            req.envelope.topic, attempt, exc)
                if self._client is not None:
                    await self._client.close()
                    self._client = None
                if attempt < RETRIES:
                    await asyncio.sleep(float(attempt))
        log.error("events: dropped %s after %d attempts", req.envelope.topic, RETRIES)

    async def close(self) -> None:
        """Stop the sender (flush first if events matter) and close the connection."""
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            await self._client.close()
