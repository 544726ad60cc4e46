"""asyncio ttrpc client: odd stream ids, many calls in flight, replies matched by id."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from bulkhead_wire.proto import ttrpc_pb2
from bulkhead_wire.ttrpc import frame
from bulkhead_wire.ttrpc.errors import Code, ConnectionClosed, TtrpcError, peer_message

M = TypeVar("M", bound=Message)


class Client:
    """A ttrpc client over one stream pair; start() launches the reply reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 name: str = "ttrpc") -> None:
        self._reader = reader
        self._writer = writer
        self._name = name
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[ttrpc_pb2.Response]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None

    @classmethod
    async def connect_unix(cls, path: str, timeout: float = 5.0) -> Client:
        """Dial a unix socket and start the client."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        client = cls(reader, writer, name=path)
        client.start()
        return client

    def start(self) -> None:
        """Begin reading replies; must run inside the event loop."""
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._read_replies())

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._closed_reason is not None

    async def call(self, service: str, method: str, request: Message,
                   response_type: type[M], timeout: float | None = None) -> M:
        """Send one unary request and wait for its reply; errors raise TtrpcError."""
        if self._closed_reason is not None:
            raise ConnectionClosed(f"{self._name}: {self._closed_reason}")
        stream_id = self._next_id
        self._next_id += 2
        req = ttrpc_pb2.Request(service=service, method=method,
                                payload=request.SerializeToString(),
                                timeout_nano=int(timeout * 1e9) if timeout else 0)
        fut: asyncio.Future[ttrpc_pb2.Response] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = fut
        try:
            self._writer.write(frame.encode(stream_id, frame.TYPE_REQUEST,
                                            req.SerializeToString()))
            await self._writer.drain()
            resp = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TtrpcError(Code.DEADLINE_EXCEEDED,
                             f"{service}/{method} on {self._name}: no reply within {timeout} s"
                             ) from None
        except (ConnectionError, RuntimeError) as exc:
            if isinstance(exc, ConnectionClosed):
                raise
            raise ConnectionClosed(f"{self._name}: {exc}") from exc
        finally:
            self._pending.pop(stream_id, None)
        if resp.HasField("status") and resp.status.code != 0:
            raise TtrpcError(resp.status.code, peer_message(resp.status.message))
        out = response_type()
        try:
            out.ParseFromString(resp.payload)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL, f"{service}/{method}: bad reply: {exc}") from exc
        return out

    async def _read_replies(self) -> None:
        """Resolve pending calls as replies arrive, in whatever order the server sends them."""
        reason = "connection closed"
        try:
            while True:
                try:
                    fr = await frame.read_frame(self._reader)
                except frame.OversizedFrame as exc:
                    self._fail(exc.stream_id, TtrpcError(Code.RESOURCE_EXHAUSTED, str(exc)))
                    continue
                if fr is None:
                    break
                if fr.type != frame.TYPE_RESPONSE:
                    continue
                fut = self._pending.get(fr.stream_id)
                if fut is None or fut.done():
                    continue
                resp = ttrpc_pb2.Response()
                try:
                    resp.ParseFromString(fr.payload)
                except DecodeError as exc:
                    fut.set_exception(TtrpcError(Code.INTERNAL, f"bad response frame: {exc}"))
                    continue
                fut.set_result(resp)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._closed_reason = reason
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed(f"{self._name}: {reason}"))

    def _fail(self, stream_id: int, exc: BaseException) -> None:
        """Fail one pending call (its reply could not be accepted)."""
        fut = self._pending.get(stream_id)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def close(self) -> None:
        """Close the link and fail outstanding calls."""
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._closed_reason is None:
            self._closed_reason = "closed"
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(f"{self._name}: closed"))
