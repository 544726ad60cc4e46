"""The C copy engine (bulkhead_wire._copyengine): framing, every byte and EOF through two engines,
credit backpressure with bounded memory, interop with the Python DataChannel, and malformed
input that must close the channel with a clear reason (never crash, overread or hang).

BULKHEAD_CE_MODULE_DIR=DIR runs these tests against DIR/bulkhead_wire/_copyengine*.so instead of the
installed module (test_sanitized_build does that with an ASan/UBSan build).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_OVERRIDE = os.environ.get("BULKHEAD_CE_MODULE_DIR")
if _OVERRIDE:  # must happen before bulkhead_wire._copyengine is first imported
    import bulkhead_wire

    bulkhead_wire.__path__.insert(0, os.path.join(_OVERRIDE, "bulkhead_wire"))

from bulkhead_wire.stdio import cengine  # noqa: E402
from bulkhead_wire.stdio.cengine import IN, OUT, CopyEngine, StreamStatus  # noqa: E402
from bulkhead_wire.stdio.channel import (  # noqa: E402
    CREDIT,
    HEADER,
    KIND_CREDIT,
    KIND_DATA,
    KIND_EOF,
    MAX_CHUNK,
    WINDOW,
    DataChannel,
    encode_frame,
)

REPO = Path(__file__).resolve().parents[2]
F_SETPIPE_SZ = 1031

pytestmark = pytest.mark.skipif(not cengine.available(),
                                reason="bulkhead_wire._copyengine is not built")


# -- helpers ----------------------------------------------------------------------------------


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def engine_pair(window: int = WINDOW) -> tuple[CopyEngine, CopyEngine]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    left, right = CopyEngine(a.detach(), window), CopyEngine(b.detach(), window)
    left.start()
    right.start()
    return left, right


def engine_and_peer(window: int = WINDOW) -> tuple[CopyEngine, socket.socket]:
    """An engine on one end of a socketpair; the test speaks raw frames on the other."""
    a, b = socket.socketpair()
    a.setblocking(False)
    engine = CopyEngine(a.detach(), window)
    engine.start()
    b.settimeout(10)
    return engine, b


def pipe(engine_end: str) -> tuple[int, int]:
    """A pipe whose engine-side end ("r" or "w") is non-blocking; the test's end blocks."""
    r, w = os.pipe()
    os.set_blocking(r if engine_end == "r" else w, False)
    return r, w


def wait_closed(engine: CopyEngine, timeout: float = 10.0) -> str:
    """Wait on the notify fd until the engine reports the channel closed; its reason."""
    deadline = time.monotonic() + timeout
    while engine.close_reason is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("engine did not close the channel")
        select.select([engine.notify_fd], [], [], left)
        engine.poll()
    return engine.close_reason


def status(engine: CopyEngine, stream: int, direction: int) -> StreamStatus:
    st_ = engine.status(stream, direction)
    assert st_ is not None
    return st_


def read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# -- framing ----------------------------------------------------------------------------------


def test_constants_match_the_python_channel() -> None:
    lib = cengine.lib
    assert (lib.CE_HEADER_SIZE, lib.CE_MAX_CHUNK, lib.CE_WINDOW) == (HEADER.size, MAX_CHUNK,
                                                                      WINDOW)
    assert (lib.CE_KIND_DATA, lib.CE_KIND_EOF, lib.CE_KIND_CREDIT) == (KIND_DATA, KIND_EOF,
                                                                        KIND_CREDIT)


def test_encode_header_matches_python() -> None:
    out = cengine.ffi.new("uint8_t[9]")
    cengine.lib.ce_encode_header(out, 0xDEADBEEF, KIND_DATA, 65536)
    assert bytes(out) == HEADER.pack(0xDEADBEEF, KIND_DATA, 65536)


def test_parse_whole_frames_and_every_prefix() -> None:
    frames = [encode_frame(7, KIND_DATA, b"hello"), encode_frame(7, KIND_EOF),
              encode_frame(9, KIND_CREDIT, CREDIT.pack(4096)), encode_frame(1, KIND_DATA)]
    for frame in frames:
        for cut in range(len(frame)):
            assert cengine.parse(frame[:cut]) == (0, None)
        assert cengine.parse(frame + b"trailing")[0] == len(frame)
    assert cengine.parse(frames[2])[1] == {"stream": 9, "kind": KIND_CREDIT, "length": 4,
                                          "credit": 4096}


@pytest.mark.parametrize(("header", "message"), [
    (HEADER.pack(1, KIND_DATA, MAX_CHUNK + 1), "DATA frame of 65537 bytes on stream 1"),
    (HEADER.pack(1, KIND_DATA, 0xFFFFFFFF), "DATA frame of 4294967295 bytes"),
    (HEADER.pack(2, 0, 0), "unknown frame kind 0 on stream 2"),
    (HEADER.pack(2, 200, 4), "unknown frame kind 200 on stream 2"),
    (HEADER.pack(3, KIND_EOF, 1), "EOF frame with a 1-byte payload on stream 3"),
    (HEADER.pack(4, KIND_CREDIT, 8), "CREDIT frame with a 8-byte payload on stream 4"),
    (HEADER.pack(4, KIND_CREDIT, 0), "CREDIT frame with a 0-byte payload"),
])
def test_parse_rejects_bad_headers_at_once(header: bytes, message: str) -> None:
    """A bad header fails without waiting for (or reading) its payload."""
    n, err = cengine.parse(header)
    assert n == -1
    assert isinstance(err, str) and message in err


# A reference parser, straight from the format's definition.
def reference_parse(buf: bytes) -> tuple[list[tuple[int, int, bytes]], bool]:
    """(frames, error): every whole frame up to the first malformed one."""
    frames: list[tuple[int, int, bytes]] = []
    off = 0
    while len(buf) - off >= HEADER.size:
        stream, kind, length = HEADER.unpack_from(buf, off)
        allowed = {KIND_DATA: length <= MAX_CHUNK, KIND_EOF: length == 0,
                   KIND_CREDIT: length == 4}
        if not allowed.get(kind, False):
            return frames, True
        if len(buf) - off - HEADER.size < length:
            break
        frames.append((stream, kind, buf[off + HEADER.size:off + HEADER.size + length]))
        off += HEADER.size + length
    return frames, False


def c_parse_stream(chunks: list[bytes]) -> tuple[list[tuple[int, int, bytes]], bool]:
    """Feed chunks as a channel would deliver them, parsing like the engine does."""
    frames: list[tuple[int, int, bytes]] = []
    buf = b""
    for chunk in chunks:
        buf += chunk
        while True:
            n, info = cengine.parse(buf)
            if n < 0:
                assert isinstance(info, str) and info
                return frames, True
            if n == 0:
                break
            assert isinstance(info, dict) and HEADER.size <= n <= len(buf)
            assert n == HEADER.size + info["length"]
            frames.append((info["stream"], info["kind"], buf[HEADER.size:n]))
            if info["kind"] == KIND_CREDIT:
                assert info["credit"] == CREDIT.unpack(buf[HEADER.size:n])[0]
            buf = buf[n:]
    return frames, False


u32 = st.integers(0, 0xFFFFFFFF)
frame_bytes = st.one_of(
    st.builds(lambda s, p: encode_frame(s, KIND_DATA, p), u32, st.binary(max_size=300)),
    st.builds(lambda s: encode_frame(s, KIND_EOF), u32),
    st.builds(lambda s, n: encode_frame(s, KIND_CREDIT, CREDIT.pack(n)), u32, u32),
    # arbitrary headers: any kind, any length, maybe followed by some bytes
    st.builds(lambda s, k, n, tail: HEADER.pack(s, k, n) + tail, u32, st.integers(0, 255),
              st.one_of(st.integers(0, 70000), u32), st.binary(max_size=64)),
    st.binary(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_bytes, max_size=12), st.lists(st.integers(1, 400), max_size=8))
def test_parser_agrees_with_reference_on_random_streams(parts: list[bytes],
                                                         cuts: list[int]) -> None:
    data = b"".join(parts)
    chunks, off = [], 0
    for cut in cuts:
        chunks.append(data[off:off + cut])
        off += cut
    chunks.append(data[off:])
    assert c_parse_stream(chunks) == reference_parse(data)


# -- two engines --------------------------------------------------------------------------------


@pytest.mark.parametrize("splice", ["on", "off", "fallback"])
def test_many_streams_every_byte_and_eof(splice: str) -> None:
    """16 streams at once, 1 MiB..3 MiB each with a 256 KiB window, arrive intact and end;
    with pipe payloads spliced, copied, or copied after the channel refused splice."""
    left, right = engine_pair(window=256 * 1024)
    mode = {"on": cengine.SPLICE_ON, "off": cengine.SPLICE_OFF,
            "fallback": cengine.SPLICE_TEST_FALLBACK}[splice]
    left.set_splice(mode)
    right.set_splice(mode)
    streams = list(range(1, 17))
    payloads = {s: os.urandom((1 << 20) + s * 131_071) for s in streams}
    results: dict[int, bytes] = {}
    threads = []
    for s in streams:
        src_r, src_w = pipe("r")
        dst_r, dst_w = pipe("w")
        # Odd streams flow left -> right, even ones right -> left.
        sender, receiver = (left, right) if s % 2 else (right, left)
        receiver.add_input(s, dst_w)
        sender.add_output(s, src_r)
        os.close(dst_w)
        os.close(src_r)

        def produce(fd: int = src_w, data: bytes = payloads[s]) -> None:
            with open(fd, "wb") as f:
                f.write(data)

        def consume(fd: int = dst_r, key: int = s) -> None:
            results[key] = read_all(fd)
            os.close(fd)

        threads += [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert {s: hashlib.sha256(results.get(s, b"")).hexdigest() for s in streams} == {
            s: hashlib.sha256(p).hexdigest() for s, p in payloads.items()}
        for s in streams:
            sender, receiver = (left, right) if s % 2 else (right, left)

            def sent(s: int = s, sender: CopyEngine = sender) -> bool:
                return status(sender, s, OUT).finished

            wait_for(sent, what="EOF sent")
            out, inn = status(sender, s, OUT), status(receiver, s, IN)
            assert out.taken == out.done == inn.taken == inn.done == len(payloads[s])
            assert out.eof and inn.eof and inn.finished and not out.error and not inn.error
        counters = left.counters()
        assert counters["channel_writes"] < counters["frames_out"]  # frames batched per syscall
        spliced = counters["spliced_bytes"] + right.counters()["spliced_bytes"]
        assert (spliced > 0) == (splice == "on")
        assert left.close_reason is None and right.close_reason is None
    finally:
        left.close()
        right.close()


def test_remove_mid_splice_still_completes_the_frame() -> None:
    """A stream removed while its payload is being spliced into a full channel: the frame
    still goes out whole (the engine keeps the fd until then), and the channel stays usable.
    The channel is TCP over loopback with small buffers: there a splice stops inside a payload
    (an AF_UNIX socket takes whole 64 KiB payloads and stops between frames)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        mine = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 50_000)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 30_000)
    mine.setblocking(False)
    engine = CopyEngine(mine.detach())
    engine.start()
    src_r, src_w = pipe("r")
    fcntl.fcntl(src_w, F_SETPIPE_SZ, 1 << 20)
    data = os.urandom(768 * 1024)
    os.write(src_w, data)  # fits the pipe: no reader needed
    try:
        engine.add_output(1, src_r)
        os.close(src_r)
        # The peer reads nothing yet: the channel fills and a splice stalls (most likely
        # inside a payload, else at a frame boundary; both must end well).
        wait_for(lambda: engine.counters()["spliced_bytes"] > 0, what="splicing")
        time.sleep(0.05)
        assert engine.counters()["spliced_bytes"] % MAX_CHUNK, "stalled between frames"
        engine.remove(1, OUT)
        dst_r, dst_w = pipe("w")
        engine.add_input(2, dst_w)
        os.close(dst_w)
        peer.sendall(encode_frame(2, KIND_DATA, b"still alive") + encode_frame(2, KIND_EOF))
        assert read_all(dst_r) == b"still alive"
        os.close(dst_r)
        got = bytearray()
        peer.settimeout(0.5)
        buf = b""
        while True:
            try:
                chunk = peer.recv(1 << 20)
            except TimeoutError:
                break
            buf += chunk
        while buf:
            n, info = cengine.parse(buf)
            assert n > 0 and isinstance(info, dict), "the channel carried a broken frame"
            if info["kind"] == KIND_DATA:
                assert info["stream"] == 1
                got += buf[HEADER.size:n]
            else:
                assert info["kind"] == KIND_CREDIT and info["stream"] == 2
            buf = buf[n:]
        assert data.startswith(bytes(got)) and len(got) >= MAX_CHUNK
        assert engine.close_reason is None
    finally:
        os.close(src_w)
        engine.close()
        peer.close()


def test_slow_consumer_backpressure_and_bounded_memory() -> None:
    """With a 64 KiB window and a consumer that lags, neither engine holds more than the
    window of the stream: the producer is held back, and nothing is lost."""
    window = 64 * 1024
    left, right = engine_pair(window=window)
    src_r, src_w = pipe("r")
    dst_r, dst_w = pipe("w")
    fcntl.fcntl(dst_w, F_SETPIPE_SZ, 4096)  # a small sink, so the engine queues
    right.add_input(1, dst_w)
    left.add_output(1, src_r)
    os.close(dst_w)
    os.close(src_r)
    payload = os.urandom(3 << 20)

    def produce() -> None:
        with open(src_w, "wb") as f:
            f.write(payload)

    producer = threading.Thread(target=produce)
    producer.start()
    got = bytearray()
    worst = 0
    try:
        with open(dst_r, "rb", buffering=0) as sink:
            while True:
                out = status(left, 1, OUT)  # sampled first: out.taken <= window + inn.done
                inn = status(right, 1, IN)
                worst = max(worst, out.taken - inn.done)
                assert inn.taken - inn.done <= window  # right's queue for the stream
                assert out.taken - inn.done <= window  # in flight overall
                chunk = sink.read(4096)
                if not chunk:
                    break
                got += chunk
                if len(got) < (1 << 20):
                    time.sleep(0.0005)  # lag for the first MiB
        producer.join(30)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert worst > window // 2  # the window was actually used: the test saw backpressure
    finally:
        left.close()
        right.close()


def test_progress_through_asyncio_attach() -> None:
    """attach(): Progress objects follow the engine, as the exit ordering needs."""
    async def run() -> None:
        left, right = engine_pair()
        left.attach()
        right.attach()
        src_r, src_w = pipe("r")
        dst_r, dst_w = pipe("w")
        inbound = right.add_input(5, dst_w)
        outbound = left.add_output(5, src_r)
        os.close(src_r)
        os.close(dst_w)
        os.write(src_w, b"x" * 60_000)  # less than a pipe holds: no reader needed yet
        await asyncio.wait_for(inbound.reach(60_000), 10)
        assert inbound.done == 60_000 and outbound.taken == 60_000
        assert os.read(dst_r, 100_000) == b"x" * 60_000
        os.close(src_w)
        await asyncio.wait_for(outbound.reach(1 << 40), 10)  # returns once finished
        assert outbound.finished
        await asyncio.wait_for(inbound.reach(1 << 40), 10)
        assert os.read(dst_r, 10) == b""  # the engine's dup was closed at EOF
        os.close(dst_r)
        left.close()
        right.close()

    asyncio.run(run())


def test_exit_mark_counts_what_the_pipe_still_holds() -> None:
    """Without credit the engine stops reading: the mark is what it read plus what is queued
    in the pipe, and once credit flows, done reaches exactly that."""
    engine, peer = engine_and_peer(window=1000)
    src_r, src_w = pipe("r")
    try:
        engine.add_output(1, src_r)
        os.write(src_w, b"z" * 5000)
        wait_for(lambda: status(engine, 1, OUT).taken == 1000, what="window used")
        assert engine.exit_mark(1) == 5000
        assert engine.exit_mark(99) is None
        got = 0
        while got < 5000:  # the peer drains the channel and grants credit frame by frame
            header = peer.recv(HEADER.size, socket.MSG_WAITALL)
            stream, kind, length = HEADER.unpack(header)
            assert (stream, kind) == (1, KIND_DATA)
            got += len(peer.recv(length, socket.MSG_WAITALL))
            peer.sendall(encode_frame(1, KIND_CREDIT, CREDIT.pack(length)))
        wait_for(lambda: status(engine, 1, OUT).done == 5000, what="done at the mark")
        os.close(src_w)
        wait_for(lambda: status(engine, 1, OUT).eof, what="EOF")
        assert engine.exit_mark(1) == 5000
    finally:
        os.close(src_r)
        engine.close()
        peer.close()


def test_interop_with_python_data_channel() -> None:
    """C engine on one end, DataChannel on the other: both directions, past the window."""
    payload_out = os.urandom(3 * WINDOW + 12345)
    payload_in = os.urandom(2 * WINDOW + 777)

    async def run() -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        engine = CopyEngine(a.detach())
        engine.start()
        reader, writer = await asyncio.open_unix_connection(sock=b)
        channel = DataChannel(reader, writer)
        channel.inbound(3)  # opened before the engine sends on it, as the links do
        channel.start()
        src_r, src_w = pipe("r")
        dst_r, dst_w = pipe("w")
        engine.add_output(3, src_r)
        engine.add_input(4, dst_w)
        os.close(src_r)
        os.close(dst_w)
        loop = asyncio.get_running_loop()

        def produce() -> None:
            with open(src_w, "wb") as f:
                f.write(payload_out)

        produced = loop.run_in_executor(None, produce)
        consumed = loop.run_in_executor(None, read_all, dst_r)

        async def receive() -> bytes:
            got = bytearray()
            while chunk := await channel.read(3):
                got += chunk
                await channel.grant(3, len(chunk))
            return bytes(got)

        async def send() -> None:
            await channel.send(4, payload_in)
            await channel.send_eof(4)

        received, _, _, sunk = await asyncio.wait_for(
            asyncio.gather(receive(), send(), produced, consumed), 60)
        assert received == payload_out
        assert sunk == payload_in
        os.close(dst_r)
        await channel.close()
        engine.close()

    asyncio.run(run())


def test_fifo_reads_zero_before_a_writer_is_not_eof(tmp_path: Path) -> None:
    """A stdin FIFO opened before containerd's client: read() == 0 is EOF only after POLLHUP."""
    left, right = engine_pair()
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    src = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    dst_r, dst_w = pipe("w")
    try:
        right.add_input(2, dst_w)
        left.add_output(2, src)
        os.close(dst_w)
        os.close(src)
        time.sleep(0.2)
        assert not status(left, 2, OUT).eof
        with open(fifo, "wb") as writer:
            writer.write(b"typed")
        assert read_all(dst_r) == b"typed"
        os.close(dst_r)
    finally:
        left.close()
        right.close()


def test_close_output_forwards_what_is_there_then_eof() -> None:
    left, right = engine_pair()
    src_r, src_w = pipe("r")
    dst_r, dst_w = pipe("w")
    try:
        right.add_input(2, dst_w)
        left.add_output(2, src_r)
        os.close(dst_w)
        os.close(src_r)
        os.write(src_w, b"abc")
        wait_for(lambda: status(left, 2, OUT).done == 3, what="abc sent")
        left.close_output(2)
        assert read_all(dst_r) == b"abc"  # EOF although the writer is still open
        os.close(dst_r)
        os.close(src_w)
    finally:
        left.close()
        right.close()


def test_regular_file_sink_shared_by_two_streams(tmp_path: Path) -> None:
    """file:// logs: one blocking fd (not pollable) takes stdout and stderr."""
    engine, peer = engine_and_peer()
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        engine.add_input(1, fd)
        engine.add_input(2, fd)
        os.close(fd)
        peer.sendall(encode_frame(1, KIND_DATA, b"out\n") + encode_frame(2, KIND_DATA, b"err\n")
                     + encode_frame(1, KIND_EOF) + encode_frame(2, KIND_EOF))
        wait_for(lambda: status(engine, 1, IN).finished and status(engine, 2, IN).finished,
                 what="both streams finished")
        assert log.read_bytes() == b"out\nerr\n"
        # Both were credited back to the peer.
        credits: dict[int, int] = {}
        peer.settimeout(5)
        buf = b""
        while len(credits) < 2:
            buf += peer.recv(4096)
            while len(buf) >= 13:
                s, kind, _ = HEADER.unpack_from(buf)
                assert kind == KIND_CREDIT
                credits[s] = credits.get(s, 0) + CREDIT.unpack_from(buf, 9)[0]
                buf = buf[13:]
        assert credits == {1: 4, 2: 4}
    finally:
        engine.close()
        peer.close()


def test_removed_stream_drops_late_data() -> None:
    engine, peer = engine_and_peer()
    dst_r, dst_w = pipe("w")
    try:
        engine.add_input(1, dst_w)
        os.close(dst_w)
        engine.remove(1, IN)
        assert os.read(dst_r, 10) == b""  # the engine let go of its end
        peer.sendall(encode_frame(1, KIND_DATA, b"late"))
        wait_for(lambda: engine.counters()["dropped_bytes"] == 4, what="drop counted")
        assert engine.close_reason is None and engine.status(1, IN) is None
    finally:
        os.close(dst_r)
        engine.close()
        peer.close()


def test_peer_close_ends_every_stream() -> None:
    engine, peer = engine_and_peer()
    dst_r, dst_w = pipe("w")
    src_r, src_w = pipe("r")
    try:
        engine.add_input(1, dst_w)
        engine.add_output(2, src_r)
        os.close(dst_w)
        os.close(src_r)
        peer.close()
        assert wait_closed(engine) == "closed by peer"
        assert os.read(dst_r, 10) == b""
        out = status(engine, 2, OUT)
        assert out.finished and out.error == errno.EPIPE
        assert status(engine, 1, IN).finished
        with pytest.raises(cengine.EngineError, match="Broken pipe"):
            engine.add_output(3, src_w)
    finally:
        os.close(dst_r)
        os.close(src_w)
        engine.close()


def test_blocking_fd_is_refused() -> None:
    engine, peer = engine_and_peer()
    r, w = os.pipe()
    try:
        with pytest.raises(cengine.EngineError, match="Invalid argument"):
            engine.add_output(1, r)
        with pytest.raises(cengine.EngineError, match="File exists"):
            os.set_blocking(r, False)
            engine.add_output(1, r)
            engine.add_output(1, r)
    finally:
        os.close(r)
        os.close(w)
        engine.close()
        peer.close()


def test_blocking_channel_is_refused() -> None:
    a, b = socket.socketpair()
    with pytest.raises(cengine.EngineError, match="must be non-blocking"):
        CopyEngine(a.fileno())
    a.close()
    b.close()


# -- malformed input ----------------------------------------------------------------------------

def _full_sink(size: int = 4096) -> tuple[int, int]:
    """A pipe whose (non-blocking) write end is full, so DATA for it has to queue."""
    r, w = pipe("w")
    fcntl.fcntl(w, F_SETPIPE_SZ, size)
    with pytest.raises(BlockingIOError):
        while True:
            os.write(w, b"\0" * size)
    return r, w


MALFORMED = [
    ("long DATA", HEADER.pack(1, KIND_DATA, MAX_CHUNK + 1),
     "protocol error: DATA frame of 65537 bytes on stream 1 (at most 65536)"),
    ("unknown kind", HEADER.pack(1, 7, 0), "protocol error: unknown frame kind 7 on stream 1"),
    ("EOF payload", HEADER.pack(1, KIND_EOF, 2) + b"xx",
     "protocol error: EOF frame with a 2-byte payload on stream 1"),
    ("short CREDIT", HEADER.pack(2, KIND_CREDIT, 2) + b"xx",
     "protocol error: CREDIT frame with a 2-byte payload on stream 2 (must be 4)"),
    ("credit overflow", encode_frame(2, KIND_CREDIT, CREDIT.pack(1)),
     "protocol error: credit overflow on stream 2 (1024 + 1 > 1024)"),
    ("huge credit", encode_frame(2, KIND_CREDIT, CREDIT.pack(0xFFFFFFFF)),
     "protocol error: credit overflow on stream 2 (1024 + 4294967295 > 1024)"),
    ("window exceeded", encode_frame(1, KIND_DATA, b"a" * 1000) + encode_frame(1, KIND_DATA,
                                                                               b"b" * 25),
     "protocol error: stream 1 exceeded its credit window (1000 + 25 > 1024)"),
    ("DATA after EOF", encode_frame(1, KIND_EOF) + encode_frame(1, KIND_DATA, b"x"),
     "protocol error: DATA after EOF on stream 1"),
    ("second EOF", encode_frame(1, KIND_EOF) + encode_frame(1, KIND_EOF),
     "protocol error: second EOF on stream 1"),
    ("truncated frame", HEADER.pack(1, KIND_DATA, 100) + b"y" * 11,
     "protocol error: truncated frame: 20 of 109 bytes (stream 1, kind 1)"),
    ("truncated header", b"\0\0\0\1\1",
     "protocol error: truncated frame header: 5 of 9 bytes"),
]


@pytest.mark.parametrize(("case", "data", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_closes_the_channel(case: str, data: bytes, reason: str) -> None:
    engine, peer = engine_and_peer(window=1024)
    dst_r, dst_w = _full_sink()
    src_r, src_w = pipe("r")
    try:
        engine.add_input(1, dst_w)
        engine.add_output(2, src_r)
        peer.sendall(data)
        peer.shutdown(socket.SHUT_WR)  # what follows a truncated frame: the link ends
        assert wait_closed(engine) == reason
        assert peer.recv(100) == b""  # the engine shut the link down: the peer sees it
        assert status(engine, 1, IN).finished and status(engine, 2, OUT).finished
    finally:
        for fd in (dst_r, dst_w, src_r, src_w):
            os.close(fd)
        engine.close()
        peer.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from([1, 3]), st.just(KIND_DATA), st.binary(max_size=200)),
    st.tuples(st.sampled_from([1, 3]), st.just(KIND_EOF), st.just(b"")),
    st.tuples(st.sampled_from([2, 3]), st.just(KIND_CREDIT),
              st.sampled_from([0, 1, 5]).map(CREDIT.pack)),
    st.tuples(st.integers(0, 4), st.integers(0, 255), st.binary(max_size=8)),
), max_size=15), st.binary(max_size=12))
def test_engine_on_random_frame_sequences(frames: list[tuple[int, int, bytes]],
                                          tail: bytes) -> None:
    """A live engine fed random frames (stream 1 IN, 2 OUT, 3 unknown) does what a model of
    the protocol says: the same bytes reach the sink, and it closes with the model's reason."""
    data = b"".join(HEADER.pack(s, k, len(p)) + p for s, k, p in frames) + tail
    # The model: every whole frame in order, until the first error.
    parsed, error = reference_parse(data)
    sink, eof, expect, consumed = bytearray(), False, "closed by peer", 0
    for stream, kind, payload in parsed:
        consumed += HEADER.size + len(payload)
        if kind == KIND_DATA and stream == 1:
            if eof:
                expect = "protocol error: DATA after EOF on stream 1"
                break
            sink += payload
        elif kind == KIND_EOF and stream == 1:
            if eof:
                expect = "protocol error: second EOF on stream 1"
                break
            eof = True
        elif kind == KIND_CREDIT and stream == 2 and CREDIT.unpack(payload)[0] > 0:
            expect = "protocol error: credit overflow on stream 2"
            break
    else:
        if error:
            expect = "protocol error: "
        elif consumed < len(data):
            expect = "protocol error: truncated frame"
    engine, peer = engine_and_peer()  # window 1 MiB: DATA here never exceeds it
    dst_r, dst_w = pipe("w")
    src_r, src_w = pipe("r")
    try:
        engine.add_input(1, dst_w)
        engine.add_output(2, src_r)
        os.close(dst_w)
        os.close(src_r)
        peer.sendall(data)
        peer.shutdown(socket.SHUT_WR)
        assert wait_closed(engine).startswith(expect)
        assert read_all(dst_r) == bytes(sink)  # the engine's end is closed once closed
    finally:
        os.close(dst_r)
        os.close(src_w)
        engine.close()
        peer.close()


# -- the sanitized build ------------------------------------------------------------------------


def _libasan() -> str | None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def sanitized_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if _OVERRIDE:
        pytest.skip("already running against a module from BULKHEAD_CE_MODULE_DIR")
    if _libasan() is None:
        pytest.skip("no gcc with libasan here")
    out = tmp_path_factory.mktemp("ce-asan")
    subprocess.run([sys.executable, str(REPO / "cffi_build" / "build_copyengine.py"),
                    "--outdir", str(out), "--sanitize"], check=True, capture_output=True)
    yield out


def test_sanitized_build(sanitized_module: Path) -> None:
    """This file's tests again, against an ASan + UBSan build of the engine (one process)."""
    env = dict(os.environ, BULKHEAD_CE_MODULE_DIR=str(sanitized_module),
               LD_PRELOAD=str(_libasan()),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "--noconftest", "-p", "no:cacheprovider",
         "-k", "not sanitized", str(Path(__file__))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "passed" in proc.stdout


def test_loaded_module_is_the_requested_one() -> None:
    """Under BULKHEAD_CE_MODULE_DIR the override is what runs (the sanitized test relies on
    it); the module's path is also a useful line in a failure report."""
    import bulkhead_wire._copyengine as mod

    path = str(mod.__file__)
    if _OVERRIDE:
        assert path.startswith(_OVERRIDE)
    assert path.endswith(".so")
    assert struct.calcsize("P") == 8
