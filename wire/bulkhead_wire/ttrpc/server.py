"""asyncio ttrpc server: concurrent handlers per connection, responses in completion order."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError, Message

from bulkhead_wire.proto import ttrpc_pb2
from bulkhead_wire.ttrpc import frame
from bulkhead_wire.ttrpc.errors import Code, TtrpcError

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[Message]]
MethodTable = dict[str, tuple[type[Message], Handler]]


def status_for(exc: BaseException) -> tuple[Code, str]:
    """Map a handler exception to a status the way Go ttrpc/errdefs do."""
    if isinstance(exc, TtrpcError):
        return exc.code, exc.message
    if isinstance(exc, asyncio.TimeoutError):
        return Code.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, asyncio.CancelledError):
        return Code.CANCELLED, "canceled"
    if isinstance(exc, FileNotFoundError | ProcessLookupError):
        return Code.NOT_FOUND, str(exc)
    if isinstance(exc, FileExistsError):
        return Code.ALREADY_EXISTS, str(exc)
    if isinstance(exc, PermissionError):
        return Code.PERMISSION_DENIED, str(exc)
    if isinstance(exc, EOFError):
        return Code.OUT_OF_RANGE, str(exc)
    if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
        return Code.FAILED_PRECONDITION, str(exc)
    return Code.UNKNOWN, str(exc) or type(exc).__name__


def encode_response(payload: bytes = b"", code: Code = Code.OK, message: str = "") -> bytes:
    """Build a Response body; success carries no status at all, like the Go server."""
    resp = ttrpc_pb2.Response(payload=payload)
    if code != Code.OK:
        resp.status.code = int(code)
        resp.status.message = message
    return resp.SerializeToString()


@dataclass
class _Connection:
    """Per-connection state: the writer, the last stream id and the handlers in flight."""

    writer: asyncio.StreamWriter
    last_stream: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def send(self, stream_id: int, body: bytes) -> None:
        """Write one Response frame; a vanished peer is not an error here."""
        if self.writer.is_closing():
            return
        self.writer.write(frame.encode(stream_id, frame.TYPE_RESPONSE, body))
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def send_status(self, stream_id: int, code: Code, message: str) -> None:
        """Reply with an error status and no payload."""
        await self.send(stream_id, encode_response(code=code, message=message))


class Server:
    """Dispatches ttrpc Requests to registered services; one instance can serve many links."""

    def __init__(self) -> None:
        self._services: dict[str, MethodTable] = {}

    def register(self, service: str, methods: MethodTable) -> None:
        """Serve `methods` under the full service name (e.g. containerd.task.v2.Task)."""
        self._services[service] = dict(methods)

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection until the peer closes it; cancels its handlers then."""
        conn = _Connection(writer)
        try:
            await self._read_loop(reader, conn)
        finally:
            for task in list(conn.tasks):
                task.cancel()
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        """Read frames until EOF; malformed frames get an error reply or end the link."""
        while True:
            try:
                fr = await frame.read_frame(reader)
            except frame.OversizedFrame as exc:
                await conn.send_status(exc.stream_id, Code.RESOURCE_EXHAUSTED, str(exc))
                continue
            except (asyncio.IncompleteReadError, ConnectionError):
                log.debug("ttrpc: connection ended mid-frame")
                return
            if fr is None:
                return
            if fr.type == frame.TYPE_REQUEST:
                await self._accept_request(conn, fr)
            elif fr.type == frame.TYPE_DATA:
                await conn.send_status(fr.stream_id, Code.INVALID_ARGUMENT,
                                       "StreamID is no longer active")
            # Responses and unknown frame types sent to a server are ignored.

    async def _accept_request(self, conn: _Connection, fr: frame.Frame) -> None:
        """Validate the stream id, then run the handler concurrently."""
        if fr.stream_id % 2 == 0:
            await conn.send_status(fr.stream_id, Code.INVALID_ARGUMENT,
                                   "StreamID must be odd for client initiated streams")
            return
        if fr.stream_id <= conn.last_stream:
            await conn.send_status(fr.stream_id, Code.INVALID_ARGUMENT,
                                   "StreamID cannot be re-used and must increment")
            return
        conn.last_stream = fr.stream_id
        req = ttrpc_pb2.Request()
        try:
            req.ParseFromString(fr.payload)
        except DecodeError as exc:
            await conn.send_status(fr.stream_id, Code.INVALID_ARGUMENT,
                                   f"unmarshal request error: {exc}")
            return
        if fr.flags & (frame.FLAG_REMOTE_OPEN | frame.FLAG_REMOTE_CLOSED):
            await conn.send_status(fr.stream_id, Code.UNIMPLEMENTED,
                                   f"streaming method {req.service}/{req.method}")
            return
        task = asyncio.create_task(self._handle(conn, fr.stream_id, req))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _handle(self, conn: _Connection, stream_id: int, req: ttrpc_pb2.Request) -> None:
        """Decode, run and answer one request."""
        methods = self._services.get(req.service)
        if methods is None:
            await conn.send_status(stream_id, Code.UNIMPLEMENTED, f"service {req.service}")
            return
        entry = methods.get(req.method)
        if entry is None:
            await conn.send_status(stream_id, Code.UNIMPLEMENTED, f"method {req.method}")
            return
        req_type, handler = entry
        log.debug("ttrpc: %s/%s (stream %d)", req.service, req.method, stream_id)
        msg = req_type()
        try:
            msg.ParseFromString(req.payload)
        except DecodeError as exc:
            await conn.send_status(stream_id, Code.INVALID_ARGUMENT,
                                   f"unmarshal request error: {exc}")
            return
        timeout = req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        try:
            reply = await asyncio.wait_for(handler(msg), timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every handler failure becomes a status, never a crash
            code, text = status_for(exc)
            if not isinstance(exc, TtrpcError):  # a bug or an unexpected OS error: keep the trace
                log.warning("%s/%s failed: %s", req.service, req.method, exc, exc_info=True)
            else:
                log.info("%s/%s: %s (%s)", req.service, req.method, text, code.name)
            await conn.send_status(stream_id, code, text)
            return
        await conn.send(stream_id, encode_response(reply.SerializeToString()))
