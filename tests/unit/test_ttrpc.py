"""ttrpc framing, dispatch, error mapping and malformed input, over real unix socket pairs."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from bulkhead_wire.proto import task_pb2, ttrpc_pb2
from bulkhead_wire.ttrpc import Client, Code, Server, TtrpcError, frame
from google.protobuf import empty_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVICE = "containerd.task.v2.Task"


def make_server() -> Server:
    """A server with a fast echo-ish method, a slow one and failing ones."""
    server = Server()
    release = asyncio.Event()

    async def state(req: task_pb2.StateRequest) -> task_pb2.StateResponse:
        return task_pb2.StateResponse(id=req.id, pid=42)

    async def wait(req: task_pb2.WaitRequest) -> task_pb2.WaitResponse:
        await release.wait()
        return task_pb2.WaitResponse(exit_status=7)

    async def kill(req: task_pb2.KillRequest) -> empty_pb2.Empty:
        if req.signal == 0:
            raise TtrpcError(Code.NOT_FOUND, "process already finished")
        release.set()
        return empty_pb2.Empty()

    async def pids(req: task_pb2.PidsRequest) -> task_pb2.PidsResponse:
        raise RuntimeError("boom")

    server.register(SERVICE, {
        "State": (task_pb2.StateRequest, state),
        "Wait": (task_pb2.WaitRequest, wait),
        "Kill": (task_pb2.KillRequest, kill),
        "Pids": (task_pb2.PidsRequest, pids),
    })
    return server


async def pair() -> tuple[Client, asyncio.Task[None], socket.socket]:
    """A client and a server task joined by a socketpair."""
    a, b = socket.socketpair()
    server = make_server()
    sr, sw = await asyncio.open_unix_connection(sock=a)
    task = asyncio.create_task(server.serve_connection(sr, sw))
    cr, cw = await asyncio.open_unix_connection(sock=b)
    client = Client(cr, cw)
    client.start()
    return client, task, b


def test_roundtrip_and_out_of_order() -> None:
    async def run() -> None:
        client, task, _ = await pair()
        waiting = asyncio.create_task(
            client.call(SERVICE, "Wait", task_pb2.WaitRequest(id="c"), task_pb2.WaitResponse))
        st_ = await client.call(SERVICE, "State", task_pb2.StateRequest(id="c"),
                                task_pb2.StateResponse)
        assert (st_.id, st_.pid) == ("c", 42)
        assert not waiting.done()  # answered later than a later call: out of order
        await client.call(SERVICE, "Kill", task_pb2.KillRequest(id="c", signal=9),
                          empty_pb2.Empty)
        assert (await waiting).exit_status == 7
        await client.close()
        await task
    asyncio.run(run())


def test_error_codes() -> None:
    async def run() -> None:
        client, task, _ = await pair()
        with pytest.raises(TtrpcError) as err:
            await client.call(SERVICE, "Kill", task_pb2.KillRequest(id="c"), empty_pb2.Empty)
        assert err.value.code == Code.NOT_FOUND
        assert err.value.message == "process already finished"
        with pytest.raises(TtrpcError) as err:
            await client.call(SERVICE, "Pids", task_pb2.PidsRequest(), task_pb2.PidsResponse)
        assert err.value.code == Code.UNKNOWN and "boom" in err.value.message
        with pytest.raises(TtrpcError) as err:
            await client.call(SERVICE, "Stats", task_pb2.StatsRequest(), task_pb2.StatsResponse)
        assert err.value.code == Code.UNIMPLEMENTED and err.value.message == "method Stats"
        with pytest.raises(TtrpcError) as err:
            await client.call("no.Such", "X", empty_pb2.Empty(), empty_pb2.Empty)
        assert err.value.code == Code.UNIMPLEMENTED and err.value.message == "service no.Such"
        await client.close()
        await task
    asyncio.run(run())


async def raw_exchange(frames: bytes, expect_replies: int) -> list[frame.Frame]:
    """Send raw bytes to a server and collect `expect_replies` response frames."""
    a, b = socket.socketpair()
    sr, sw = await asyncio.open_unix_connection(sock=a)
    task = asyncio.create_task(make_server().serve_connection(sr, sw))
    cr, cw = await asyncio.open_unix_connection(sock=b)
    cw.write(frames)
    await cw.drain()
    out = []
    for _ in range(expect_replies):
        fr = await asyncio.wait_for(frame.read_frame(cr), 5)
        assert fr is not None
        out.append(fr)
    cw.close()
    await asyncio.wait_for(task, 5)
    return out


def status_of(fr: frame.Frame) -> tuple[int, str]:
    resp = ttrpc_pb2.Response()
    resp.ParseFromString(fr.payload)
    return resp.status.code, resp.status.message


def request(sid: int, method: str = "State", payload: bytes = b"") -> bytes:
    req = ttrpc_pb2.Request(service=SERVICE, method=method, payload=payload)
    return frame.encode(sid, frame.TYPE_REQUEST, req.SerializeToString())


def test_success_has_no_status_and_exact_bytes() -> None:
    [fr] = asyncio.run(raw_exchange(request(1, payload=task_pb2.StateRequest(id="x")
                                                .SerializeToString()), 1))
    resp = ttrpc_pb2.Response()
    resp.ParseFromString(fr.payload)
    assert not resp.HasField("status")
    assert fr.stream_id == 1 and fr.type == frame.TYPE_RESPONSE and fr.flags == 0


def test_even_and_reused_stream_ids() -> None:
    data = request(2) + request(5) + request(3)
    replies = {fr.stream_id: fr for fr in asyncio.run(raw_exchange(data, 3))}
    even, ok, reused = replies[2], replies[5], replies[3]  # replies come in completion order
    assert (even.stream_id, status_of(even)) == (
        2, (Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"))
    assert ok.stream_id == 5 and status_of(ok)[0] == 0
    assert (reused.stream_id, status_of(reused)) == (
        3, (Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"))


def test_oversized_frame_is_rejected_and_connection_survives() -> None:
    big = frame.MAX_MESSAGE + 1
    data = struct.pack(">IIBB", big, 1, frame.TYPE_REQUEST, 0) + b"\0" * big + request(3)
    replies = {fr.stream_id: fr for fr in asyncio.run(raw_exchange(data, 2))}
    over, ok = replies[1], replies[3]
    assert over.stream_id == 1
    assert status_of(over) == (Code.RESOURCE_EXHAUSTED,
                               f"message length {big} exceed maximum message size of 4194304")
    assert ok.stream_id == 3 and status_of(ok)[0] == 0


def test_garbage_payloads() -> None:
    garbage_req = frame.encode(1, frame.TYPE_REQUEST, b"\xff\xff\xff")
    garbage_msg = request(3, payload=b"\x0a\xff")
    replies = {fr.stream_id: fr for fr in asyncio.run(raw_exchange(garbage_req + garbage_msg, 2))}
    r1, r2 = replies[1], replies[3]
    assert status_of(r1)[0] == Code.INVALID_ARGUMENT
    assert status_of(r1)[1].startswith("unmarshal request error")
    assert status_of(r2)[0] == Code.INVALID_ARGUMENT


def test_truncated_header_closes_cleanly() -> None:
    assert asyncio.run(raw_exchange(b"\x00\x00\x00", 0)) == []


def test_oversized_send_refused() -> None:
    with pytest.raises(ValueError):
        frame.encode(1, frame.TYPE_REQUEST, b"x" * (frame.MAX_MESSAGE + 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_random_bytes_never_crash_or_hang(blob: bytes) -> None:
    """Whatever arrives, the server answers or closes; a valid request afterwards still works."""
    async def run() -> None:
        a, b = socket.socketpair()
        sr, sw = await asyncio.open_unix_connection(sock=a)
        task = asyncio.create_task(make_server().serve_connection(sr, sw))
        cr, cw = await asyncio.open_unix_connection(sock=b)
        cw.write(blob)
        await cw.drain()
        cw.write_eof()
        while await asyncio.wait_for(cr.read(65536), 5):
            pass
        await asyncio.wait_for(task, 5)
        cw.close()
    asyncio.run(run())


def test_peer_disappears_fails_pending_calls() -> None:
    async def run() -> None:
        client, task, _ = await pair()
        waiting = asyncio.create_task(
            client.call(SERVICE, "Wait", task_pb2.WaitRequest(id="c"), task_pb2.WaitResponse))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 5)
        await client.close()
    asyncio.run(run())


def test_client_timeout() -> None:
    async def run() -> None:
        client, task, _ = await pair()
        with pytest.raises(TtrpcError) as err:
            await client.call(SERVICE, "Wait", task_pb2.WaitRequest(id="c"),
                              task_pb2.WaitResponse, timeout=0.2)
        assert err.value.code == Code.DEADLINE_EXCEEDED
        await client.close()
        await task
    asyncio.run(run())
