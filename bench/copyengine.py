#!/usr/bin/env python3
"""Data-channel throughput: the C copy engine vs the pure-Python DataChannel pumps.

Topology, the same for both: producer thread -> socketpair -> sending end (OUT) -> channel
socketpair -> receiving end (IN) -> socketpair -> consumer thread, with credit flowing back.
Only the engine (or the two DataChannels and their pumps, on one asyncio loop) sits between
the two outer socketpairs. The producer sends a fixed buffer, the consumer counts bytes (the
unit tests check contents). Prints figures only; asserts nothing. Usage:
    python bench/copyengine.py [--mib 1024] [--python-mib 256] [--streams 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from bulkhead.stdio import cengine
from bulkhead.stdio.channel import DataChannel
from bulkhead.stdio.pump import pump_fd_to_stream, pump_stream_to_fd

BLOCK = 1 << 20


def producer(sock: socket.socket, total: int) -> None:
    """Send total bytes, then close (the stream's EOF)."""
    buf = memoryview(b"\xa5" * BLOCK)
    left = total
    while left:
        n = min(left, BLOCK)
        sock.sendall(buf[:n])
        left -= n
    sock.close()


def consumer(sock: socket.socket, counts: list[int], i: int) -> None:
    """Read until EOF, counting."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    while n := sock.recv_into(view):
        total += n
    counts[i] = total
    sock.close()


def outer_pairs(streams: int) -> list[tuple[socket.socket, socket.socket, socket.socket,
                                            socket.socket]]:
    """Per stream: (producer end, engine source end, engine sink end, consumer end)."""
    out = []
    for _ in range(streams):
        p, src = socket.socketpair()
        sink, c = socket.socketpair()
        src.setblocking(False)
        sink.setblocking(False)
        out.append((p, src, sink, c))
    return out


def run_threads(pairs: list[tuple[socket.socket, socket.socket, socket.socket, socket.socket]],
                per_stream: int, counts: list[int]) -> list[threading.Thread]:
    threads = []
    for i, (p, _, _, c) in enumerate(pairs):
        threads.append(threading.Thread(target=producer, args=(p, per_stream)))
        threads.append(threading.Thread(target=consumer, args=(c, counts, i)))
    for t in threads:
        t.start()
    return threads


def bench_c(total: int, streams: int) -> tuple[float, dict[str, int]]:
    """Seconds to move total bytes (split over streams) through two C engines."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    left, right = cengine.CopyEngine(a.detach()), cengine.CopyEngine(b.detach())
    pairs = outer_pairs(streams)
    for sid, (_, src, sink, _) in enumerate(pairs, start=1):
        right.add_input(sid, sink.fileno())
        left.add_output(sid, src.fileno())
        src.close()  # the engines hold their own dups
        sink.close()
    counts = [0] * streams
    per_stream = total // streams
    start = time.perf_counter()
    left.start()
    right.start()
    threads = run_threads(pairs, per_stream, counts)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    counters = left.counters()
    left.close()
    right.close()
    if sum(counts) != per_stream * streams:
        raise SystemExit(f"C engine lost bytes: {sum(counts)} of {per_stream * streams}")
    return elapsed, counters


def bench_python(total: int, streams: int) -> float:
    """Seconds for the same transfer through two DataChannels and the pump coroutines."""
    async def run() -> float:
        a, b = socket.socketpair()
        ra, wa = await asyncio.open_unix_connection(sock=a)
        rb, wb = await asyncio.open_unix_connection(sock=b)
        left, right = DataChannel(ra, wa), DataChannel(rb, wb)
        left.start()
        right.start()
        pairs = outer_pairs(streams)
        counts = [0] * streams
        per_stream = total // streams
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        pumps = []
        for sid, (_, src, sink, _) in enumerate(pairs, start=1):
            right.inbound(sid)
            pumps.append(pump_fd_to_stream(left, src.fileno(), sid))
            pumps.append(pump_stream_to_fd(right, sid, sink.fileno()))
        threads = run_threads(pairs, per_stream, counts)
        await asyncio.gather(*pumps)
        for _, src, sink, _ in pairs:
            src.close()
            sink.close()  # the consumer's EOF

        def join() -> None:
            for t in threads:
                t.join()

        await loop.run_in_executor(None, join)
        elapsed = time.perf_counter() - start
        await left.close()
        await right.close()
        if sum(counts) != per_stream * streams:
            raise SystemExit(f"Python pumps lost bytes: {sum(counts)} of {per_stream * streams}")
        return elapsed

    return asyncio.run(run())


def best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB through the C engine")
    parser.add_argument("--python-mib", type=int, default=256,
                        help="MiB through the Python pumps (0: skip them)")
    parser.add_argument("--streams", type=int, default=1, help="streams sharing the channel")
    parser.add_argument("--repeat", type=int, default=3, help="runs each; the best is shown")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{args.streams} stream(s)")
    if not cengine.available():
        print("C engine: not built (bulkhead._copyengine missing)")
    else:
        total = args.mib << 20
        runs = [bench_c(total, args.streams) for _ in range(args.repeat)]
        elapsed, counters = min(runs, key=lambda r: r[0])
        frames = counters["frames_out"] / max(counters["channel_writes"], 1)
        print(f"C engine:     {total / elapsed / 1e9:6.2f} GB/s  ({args.mib} MiB in "
              f"{elapsed:.3f} s, {frames:.1f} frames per channel write)")
    if args.python_mib:
        total = args.python_mib << 20
        elapsed = best(lambda: bench_python(total, args.streams), args.repeat)
        print(f"Python pumps: {total / elapsed / 1e9:6.2f} GB/s  ({args.python_mib} MiB in "
              f"{elapsed:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
