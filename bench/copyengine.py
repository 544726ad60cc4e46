#!/usr/bin/env python3
"""Data-channel throughput: the C copy engine vs the pure-Python DataChannel pumps.

Topology, the same for both: producer -> socketpair -> sending end (OUT) -> channel socketpair
-> receiving end (IN) -> socketpair -> consumer, with credit flowing back. Only the engines (or
the two DataChannels and their pumps, on one asyncio loop) sit between the two outer
socketpairs; --ends pipe uses pipes there instead (what a process has). Producers and
consumers are forked processes (threads would measure the GIL): a producer writes a fixed
buffer, a consumer counts bytes (the unit tests check contents). For scale, it also times a
producer and a consumer on one direct link (no channel). Prints figures only; asserts nothing.
Usage:
    python bench/copyengine.py [--mib 1024] [--python-mib 256] [--streams 1] [--repeat 3]
                               [--ends socket|pipe] [--sockbuf KIB]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from functools import partial

from bulkhead_wire.stdio import cengine
from bulkhead_wire.stdio.channel import DataChannel
from bulkhead_wire.stdio.pump import pump_fd_to_stream, pump_stream_to_fd

BLOCK = 1 << 20
SOCKBUF = 0  # SO_SNDBUF/SO_RCVBUF of every socket, bytes (0: the system default)
ENDS = "socket"
Ends = tuple[int, int, int, int]  # producer end, engine source end, engine sink end, consumer end


def fork(child: Callable[[], None], keep: set[int], close: list[int]) -> int:
    """Run child() in a forked process that closes every fd of `close` not in `keep`."""
    pid = os.fork()
    if pid == 0:
        try:
            for fd in close:
                if fd >= 0 and fd not in keep:
                    os.close(fd)
            child()
        finally:
            os._exit(0)
    return pid


def produce(fd: int, total: int) -> None:
    """Write total bytes, then close (the stream's EOF)."""
    buf = memoryview(b"\xa5" * BLOCK)
    left = total
    while left:
        left -= os.write(fd, buf[:min(left, BLOCK)])
    os.close(fd)


def consume(fd: int, result: int) -> None:
    """Read until EOF, then report the count on `result`."""
    buf = bytearray(BLOCK)
    total = 0
    while n := os.readv(fd, [buf]):
        total += n
    os.write(result, total.to_bytes(8, "little"))


class Workers:
    """Forked producers and consumers on the outer ends; the parent keeps only engine ends."""

    def __init__(self, pairs: list[Ends], per_stream: int, engine_fds: list[int]) -> None:
        outer = [fd for p, _, _, c in pairs for fd in (p, c)]
        every = outer + [fd for _, s, k, _ in pairs for fd in (s, k)] + engine_fds
        self.results: list[int] = []
        self.pids: list[int] = []
        for p, _, _, c in pairs:
            r, w = os.pipe()
            self.pids.append(fork(partial(produce, p, per_stream), {p}, every + [r, w]))
            self.pids.append(fork(partial(consume, c, w), {c, w}, every + [r, w]))
            os.close(w)
            self.results.append(r)
        for fd in outer:
            os.close(fd)

    def wait(self) -> int:
        """Bytes the consumers got in all, once every worker exited."""
        total = sum(int.from_bytes(os.read(r, 8), "little") for r in self.results)
        for r in self.results:
            os.close(r)
        for pid in self.pids:
            os.waitpid(pid, 0)
        return total


def socketpair() -> tuple[int, int]:
    a, b = socket.socketpair()
    for s in (a, b):
        if SOCKBUF:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKBUF)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKBUF)
    return a.detach(), b.detach()


def link(kind: str) -> tuple[int, int]:
    """(write end, read end) of a pipe or a socketpair; both blocking."""
    if kind == "pipe":
        r, w = os.pipe()
        return w, r
    return socketpair()


def outer_pairs(streams: int) -> list[Ends]:
    """Per stream: the producer's and consumer's blocking ends, the engine's non-blocking ones."""
    out = []
    for _ in range(streams):
        p, src = link(ENDS)
        sink, c = link(ENDS)
        os.set_blocking(src, False)
        os.set_blocking(sink, False)
        out.append((p, src, sink, c))
    return out


def direct(total: int) -> float:
    """Seconds for producer -> one link -> consumer: the cost of a single hop."""
    w, r = link(ENDS)
    start = time.perf_counter()
    workers = Workers([(w, -1, -1, r)], total, [])
    got = workers.wait()
    elapsed = time.perf_counter() - start
    if got != total:
        raise SystemExit(f"direct link lost bytes: {got} of {total}")
    return elapsed


def bench_c(total: int, streams: int, splice: bool = True) -> tuple[float, dict[str, int]]:
    """Seconds to move total bytes (split over streams) through two C engines."""
    a, b = socketpair()
    os.set_blocking(a, False)
    os.set_blocking(b, False)
    pairs = outer_pairs(streams)
    per_stream = total // streams
    start = time.perf_counter()
    workers = Workers(pairs, per_stream, [a, b])  # forked before the engines' threads exist
    left, right = cengine.CopyEngine(a), cengine.CopyEngine(b)
    if not splice:
        left.set_splice(cengine.SPLICE_OFF)
    for sid, (_, src, sink, _) in enumerate(pairs, start=1):
        right.add_input(sid, sink)
        left.add_output(sid, src)
        os.close(src)  # the engines hold their own dups
        os.close(sink)
    left.start()
    right.start()
    got = workers.wait()
    elapsed = time.perf_counter() - start
    counters = left.counters()
    left.close()
    right.close()
    if got != per_stream * streams:
        raise SystemExit(f"C engine lost bytes: {got} of {per_stream * streams}")
    return elapsed, counters


def bench_python(total: int, streams: int) -> float:
    """Seconds for the same transfer through two DataChannels and the pump coroutines."""
    async def run() -> float:
        fa, fb = socketpair()
        pairs = outer_pairs(streams)
        per_stream = total // streams
        start = time.perf_counter()
        workers = Workers(pairs, per_stream, [fa, fb])
        ra, wa = await asyncio.open_unix_connection(sock=socket.socket(fileno=fa))
        rb, wb = await asyncio.open_unix_connection(sock=socket.socket(fileno=fb))
        left, right = DataChannel(ra, wa), DataChannel(rb, wb)
        left.start()
        right.start()
        pumps = []
        for sid, (_, src, sink, _) in enumerate(pairs, start=1):
            right.inbound(sid)
            pumps.append(pump_fd_to_stream(left, src, sid))
            pumps.append(pump_stream_to_fd(right, sid, sink))
        await asyncio.gather(*pumps)
        for _, src, sink, _ in pairs:
            os.close(src)
            os.close(sink)  # the consumer's EOF
        got = workers.wait()
        elapsed = time.perf_counter() - start
        await left.close()
        await right.close()
        if got != per_stream * streams:
            raise SystemExit(f"Python pumps lost bytes: {got} of {per_stream * streams}")
        return elapsed

    return asyncio.run(run())


def best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> int:
    global SOCKBUF, ENDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB through the C engine")
    parser.add_argument("--python-mib", type=int, default=256,
                        help="MiB through the Python pumps (0: skip them)")
    parser.add_argument("--streams", type=int, default=1, help="streams sharing the channel")
    parser.add_argument("--repeat", type=int, default=3, help="runs each; the best is shown")
    parser.add_argument("--ends", choices=("socket", "pipe"), default="socket",
                        help="what the producer and consumer use (the channel is a socketpair)")
    parser.add_argument("--sockbuf", type=int, default=0,
                        help="SO_SNDBUF/SO_RCVBUF of every socket in KiB (0: system default)")
    args = parser.parse_args()
    SOCKBUF, ENDS = args.sockbuf << 10, args.ends
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{args.streams} stream(s), {args.ends} ends, socket buffers "
          f"{f'{args.sockbuf} KiB' if args.sockbuf else 'default'}")
    total = args.mib << 20
    elapsed = best(lambda: direct(total), args.repeat)
    print(f"one {args.ends} hop, no channel (scale): {total / elapsed / 1e9:6.2f} GB/s")
    if not cengine.available():
        print("C engine: not built (bulkhead_wire._copyengine missing)")
    else:
        for splice in ((True, False) if args.ends == "pipe" else (True,)):
            runs = [bench_c(total, args.streams, splice) for _ in range(args.repeat)]
            elapsed, counters = min(runs, key=lambda r: r[0])
            frames = counters["frames_out"] / max(counters["channel_writes"], 1)
            how = ("" if args.ends != "pipe" else
                   f", {counters['spliced_bytes'] / total:.0%} spliced" if splice else ", copied")
            print(f"C engine:     {total / elapsed / 1e9:6.2f} GB/s  ({args.mib} MiB in "
                  f"{elapsed:.3f} s, {frames:.1f} frames per channel write{how})")
    if args.python_mib:
        total = args.python_mib << 20
        elapsed = best(lambda: bench_python(total, args.streams), args.repeat)
        print(f"Python pumps: {total / elapsed / 1e9:6.2f} GB/s  ({args.python_mib} MiB in "
              f"{elapsed:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
