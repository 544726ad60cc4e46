#!/usr/bin/env python3
"""Stdio throughput through containerd: runc vs Bulkhead with the C copy engine vs Python pumps.

One private containerd, one `ctr run --rm` per figure and runtime (figure by figure, runtimes in
turn, so drifting host load hits them alike); SIZE MiB (default 256) each way:
  start   wall time of `ctr run --rm IMAGE ID true`: what every other figure's wall time includes
  pipe    the container's own pipe rate: `dd if=/dev/zero bs=64k | dd of=/dev/null bs=64k`, timed
          inside with busybox adjtimex (its date has no %N, its dd prints no rate); under
          Bulkhead that is the guest's (1 vCPU, TCG), the ceiling for stdio leaving the guest
  stdout  `dd if=/dev/zero bs=64k count=N` in the container, ctr's stdout read and counted here
          (the exact byte count is checked); MiB/s between the first and the last byte
  stdin   SIZE MiB written to ctr's stdin, `dd bs=64k iflag=fullblock of=/dev/null` inside (its
          record count proves the byte count; busybox `wc -c` reads slower than the link under
          TCG); MiB/s from PRIME MiB accepted (more than every buffer in front of the container,
          so the container is reading) to dd's summary arriving
For stdout and stdin, the CPU time (utime+stime, 10 ms ticks) of the container's shim and of its
VM's QEMU over the same window, per GiB moved. Bulkhead runtimes: bulkhead-c and bulkhead-python
set io_engine in a runtime config file (host and guest); the engines each sandbox really used are
taken from the shim's "stdio engines" log line. Prints figures only; asserts nothing. Everything
started is removed, also on errors, Ctrl-C and SIGTERM.

Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/stdio_throughput.py [--size-mib 256]
        [--parts start,pipe,stdout,stdin] [--runtimes runc,bulkhead-c,bulkhead-python]
        [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo import procs
from bulkhead.demo.container import DEMO_IMAGE
from bulkhead.demo.errors import ContainerdError
from footprint import children_map, shim_pids
from harness.containerd import PrivateContainerd
from interrupts import uninterrupted
from runtime_comparison import (
    Runtime,
    add_parts_option,
    add_runtimes_option,
    bench_containerd,
    new_container_id,
    ratio,
    remove_container,
    selected,
)

PARTS = ("start", "pipe", "stdout", "stdin")
MIB, GIB = 1 << 20, 1 << 30
BLOCK = 64 << 10  # dd's block size, inside the container
PRIME = 4 * MIB  # stdin: the clock starts once this much was accepted (capped at a quarter)
TICK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT = 120.0  # seconds for one container's start and exit, on top of the transfer
MIN_RATE = 2 * MIB  # bytes/s below which a transfer is taken for hung
PIPE_SCRIPT = ("adjtimex; dd if=/dev/zero bs={bs} count={n} 2>/dev/null "
               "| dd of=/dev/null bs={bs} 2>/dev/null; adjtimex")
ENGINES_LINE = re.compile(r"sandbox (\S+): VM pid .* stdio engines host=(\w+) guest=(\w+)")


@dataclass
class Transfer:
    """One direction through one container: the streaming window, the run, CPU per GiB."""

    nbytes: int  # moved within the window
    seconds: float  # the window
    wall: float  # `ctr run` from spawn to exit
    cpu_per_gib: dict[str, float] = field(default_factory=dict)  # "shim"/"QEMU" -> s/GiB

    @property
    def rate(self) -> float:
        return self.nbytes / MIB / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Figures:
    """Everything measured for one runtime (None: not measured or failed)."""

    start: float | None = None
    pipe: float | None = None  # MiB/s
    stdout: Transfer | None = None
    stdin: Transfer | None = None
    cids: list[str] = field(default_factory=list)


# --- CPU of the shim and its VM -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process (all its threads, dead ones too), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class CpuWindow:
    """CPU used by a container's shim (and its VM's QEMU) between two byte counts."""

    pids: dict[str, int]
    bytes0: int = 0
    cpu0: dict[str, float] = field(default_factory=dict)

    @classmethod
    def open(cls, ctd: PrivateContainerd, runtime: Runtime, cid: str, nbytes: int) -> CpuWindow:
        """Find the processes now (a /proc scan, a few ms) and take the first sample."""
        shims = shim_pids(ctd, runtime, cid)
        pids = {"shim": shims[0]} if shims else {}
        if runtime.is_bulkhead and shims:  # QEMU is the shim's child
            for child in children_map().get(pids["shim"], []):
                proc = procs.read_proc(child)
                if proc is not None and proc.exe_name.startswith("qemu-system"):
                    pids["QEMU"] = child
        window = cls(pids, nbytes)
        window.cpu0 = window.sample()
        return window

    def sample(self) -> dict[str, float]:
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return {name: cpu for name, cpu in found.items() if cpu is not None}

    def per_gib(self, nbytes: int) -> dict[str, float]:
        """CPU seconds per GiB from the first sample to now, nbytes being the count now."""
        moved = (nbytes - self.bytes0) / GIB
        now = self.sample()
        return {name: (now[name] - self.cpu0[name]) / moved
                for name in now if name in self.cpu0 and moved > 0}


# --- running containers ------------------------------------------------------------------------


@contextlib.contextmanager
def container(ctd: PrivateContainerd, figures: Figures) -> Iterator[str]:
    """A fresh id for one `ctr run --rm`; what is left of it is removed if the run failed."""
    cid = new_container_id()
    figures.cids.append(cid)
    try:
        yield cid
    except BaseException:
        with uninterrupted("removing the container"):
            remove_container(ctd, cid)
        raise


def kill_task(ctd: PrivateContainerd, cid: str) -> None:
    with contextlib.suppress(ContainerdError):
        ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False, timeout=30)


def drain(fd: int) -> None:
    """Read fd to EOF, discarding."""
    with contextlib.suppress(OSError):
        while os.read(fd, MIB):
            pass


def stop_ctr(ctd: PrivateContainerd, cid: str, proc: subprocess.Popen[bytes]) -> None:
    """End a `ctr run` that is still streaming by killing its task while its output is drained:
    Bulkhead holds a task's exit (and, seen here, even Kill) while its output is not taken, so
    killing ctr first would leave the task stuck. SIGKILL for ctr only if that fails."""
    if proc.poll() is not None:
        return
    assert proc.stdout is not None
    reader = threading.Thread(target=drain, args=(proc.stdout.fileno(),), daemon=True)
    reader.start()
    kill_task(ctd, cid)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)


@contextlib.contextmanager
def ctr_run(ctd: PrivateContainerd, runtime: Runtime, cid: str, script: str, size: int,
            stdin: int, stderr: int) -> Iterator[subprocess.Popen[bytes]]:
    """`ctr run --rm ... sh -c script` streaming through pipes, in its own session (Ctrl-C
    reaches us, not ctr, which would forward it to the container). A watchdog kills the task
    if the transfer hangs; a failed block stops it (stop_ctr); ctr is always reaped."""
    argv = ctd.ctr_argv("run", "--rm", *runtime.run_args(ctd), DEMO_IMAGE, cid, "sh", "-c", script)
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr,
                            start_new_session=True)
    watchdog = threading.Timer(RUN_TIMEOUT + size / MIN_RATE, kill_task, (ctd, cid))
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        with uninterrupted("stopping the container"):
            stop_ctr(ctd, cid, proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def checked_exit(proc: subprocess.Popen[bytes], what: str, err: bytes = b"") -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: ctr exited with {proc.returncode}: "
                           f"{err.decode(errors='replace').strip()[-300:]}")


def measure_start(ctd: PrivateContainerd, runtime: Runtime, figures: Figures, size: int) -> None:
    with container(ctd, figures) as cid:
        begin = time.monotonic()
        ctd.ctr("run", "--rm", *runtime.run_args(ctd), DEMO_IMAGE, cid, "true",
                timeout=RUN_TIMEOUT)
        figures.start = time.monotonic() - begin


def measure_pipe(ctd: PrivateContainerd, runtime: Runtime, figures: Figures, size: int) -> None:
    """dd | dd inside the container, between two adjtimex clock readings (microseconds)."""
    script = PIPE_SCRIPT.format(bs=BLOCK, n=size // BLOCK)
    with container(ctd, figures) as cid:
        out = ctd.ctr("run", "--rm", *runtime.run_args(ctd), DEMO_IMAGE, cid, "sh", "-c", script,
                      timeout=RUN_TIMEOUT + size / MIN_RATE).stdout
    secs = re.findall(r"time\.tv_sec:\s*(\d+)", out)
    usecs = re.findall(r"time\.tv_usec:\s*(\d+)", out)
    if len(secs) != 2 or len(usecs) != 2:
        raise RuntimeError(f"no two adjtimex readings in {out[-300:]!r}")
    begin, end = (int(s) + int(u) / 1e6 for s, u in zip(secs, usecs, strict=True))
    figures.pipe = size / MIB / (end - begin)


def measure_stdout(ctd: PrivateContainerd, runtime: Runtime, figures: Figures, size: int
                   ) -> None:
    """Count ctr's stdout; the window runs from the first read to the one completing size."""
    script = f"dd if=/dev/zero bs={BLOCK} count={size // BLOCK} 2>/dev/null"
    buf = bytearray(MIB)
    got, first, last, head = 0, 0.0, 0.0, 0
    window: CpuWindow | None = None
    cpu: dict[str, float] = {}
    with container(ctd, figures) as cid:
        begin = time.monotonic()
        with ctr_run(ctd, runtime, cid, script, size, subprocess.DEVNULL,
                     subprocess.PIPE) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError):  # fewer, larger reads; above pipe-max-size: no
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, MIB)
            while n := os.readv(fd, [buf]):
                last = time.monotonic()
                got += n
                if window is None:
                    first, head = last, got
                    window = CpuWindow.open(ctd, runtime, cid, got)
                elif got == size:
                    cpu = window.per_gib(got)  # before ctr's --rm ends the shim
            err = proc.stderr.read()
            proc.wait()
        wall = time.monotonic() - begin
        checked_exit(proc, "stdout", err)
    if got != size:
        raise RuntimeError(f"stdout: {got} bytes arrived, {size} expected")
    figures.stdout = Transfer(size - head, last - first, wall, cpu)


@dataclass
class StdinFeed:
    """Writes size zero bytes into ctr's stdin (a thread); opens the CPU window at PRIME."""

    fd: int
    size: int
    prime: int
    on_prime: Callable[[int], CpuWindow]
    primed: float = 0.0
    window: CpuWindow | None = None
    error: BaseException | None = None

    def run(self) -> None:
        chunk = memoryview(bytes(MIB))
        written = 0
        try:
            while written < self.size:
                written += os.write(self.fd, chunk[:self.size - written])
                if self.window is None and written >= self.prime:
                    self.primed = time.monotonic()
                    self.window = self.on_prime(written)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            self.error = exc
        finally:
            os.close(self.fd)  # ctr's stdin EOF, then the container's


def measure_stdin(ctd: PrivateContainerd, runtime: Runtime, figures: Figures, size: int) -> None:
    """Feed ctr's stdin; the window ends when the container's dd reports what it read."""
    script = f"dd bs={BLOCK} iflag=fullblock of=/dev/null"
    prime = min(PRIME, size // 4)
    with container(ctd, figures) as cid:
        begin = time.monotonic()
        with ctr_run(ctd, runtime, cid, script, size, subprocess.PIPE,
                     subprocess.STDOUT) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            feed = StdinFeed(os.dup(proc.stdin.fileno()), size, prime,
                             lambda n: CpuWindow.open(ctd, runtime, cid, n))
            proc.stdin.close()  # the feed holds the only write end
            thread = threading.Thread(target=feed.run, daemon=True)
            thread.start()
            out = os.read(proc.stdout.fileno(), 4096)  # dd's summary: it read everything
            done = time.monotonic()
            cpu = feed.window.per_gib(size) if feed.window is not None else {}
            out += proc.stdout.read()
            proc.wait()
            thread.join()
        wall = time.monotonic() - begin
        if feed.error is not None:
            raise RuntimeError(f"stdin: writing failed: {feed.error!r}")
        checked_exit(proc, "stdin", out)
    text = out.decode(errors="replace")
    records = re.search(r"(\d+)\+(\d+) records in", text)
    if records is None or (int(records[1]) * BLOCK, int(records[2])) != (size, 0):
        raise RuntimeError(f"stdin: dd in the container read {text.strip()!r}, want "
                           f"{size // BLOCK}+0 records of {BLOCK}")
    if feed.window is None:
        raise RuntimeError("stdin: the CPU window never opened")
    figures.stdin = Transfer(size - feed.window.bytes0, done - feed.primed, wall, cpu)


MEASURES = {"start": measure_start, "pipe": measure_pipe, "stdout": measure_stdout,
            "stdin": measure_stdin}


# --- report ------------------------------------------------------------------------------------


def engines(ctd: PrivateContainerd, results: dict[str, Figures]) -> dict[str, str]:
    """Per Bulkhead runtime, the distinct `host=X guest=Y` its sandboxes logged."""
    seen: dict[str, str] = {}
    for line in ctd.log_lines("stdio engines"):
        match = ENGINES_LINE.search(line)
        if match:
            seen[match[1]] = f"host={match[2]} guest={match[3]}"
    return {name: ", ".join(sorted({seen[c] for c in fig.cids if c in seen})) or "not logged"
            for name, fig in results.items()}


def num(value: float | None, fmt: str = "8.1f") -> str:
    return format(value, fmt) if value is not None else format("n/a", ">" + fmt.split(".")[0])


def rate(transfer: Transfer | None) -> float | None:
    return transfer.rate if transfer is not None else None


def cpu_of(transfer: Transfer | None, part: str) -> float | None:
    return transfer.cpu_per_gib.get(part) if transfer is not None else None


def share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def wall_rate(transfer: Transfer | None, start: float | None, size_mib: int) -> float | None:
    """MiB/s over the wall time less the container's start time."""
    if transfer is None or not start or transfer.wall <= start:
        return None
    return size_mib / (transfer.wall - start)


def ratios(label: str, values: dict[str, float | None]) -> str:
    """Bulkhead/runc for each Bulkhead runtime, then engine c over python, where both exist."""
    have = {name: value for name, value in values.items() if value}
    shown = [ratio(have)] if "runc" in have and len(have) > 1 else []
    if have.get("bulkhead-c") and have.get("bulkhead-python"):
        shown.append(f"bulkhead-c/bulkhead-python "
                     f"{have['bulkhead-c'] / have['bulkhead-python']:.2f}x")
    return f"  ratios, {label}: {'; '.join(shown) or 'n/a'}"


def print_transfers(results: dict[str, Figures], direction: str,
                    extra: Callable[[str, Transfer | None], str]) -> None:
    """One row per runtime: MiB/s, the extra column, wall time, CPU per GiB; then ratios."""
    runs = {name: getattr(fig, direction) for name, fig in results.items()}
    for name, t in runs.items():
        print(f"  {name:16s} {num(rate(t))} {extra(name, t)} {num(t and t.wall, '7.2f')} "
              f"{num(cpu_of(t, 'shim'), '10.2f')} {num(cpu_of(t, 'QEMU'), '10.2f')}")
    print(ratios(f"{direction} MiB/s", {n: rate(t) for n, t in runs.items()}))
    print(ratios(f"{direction} shim CPU per GiB", {n: cpu_of(t, "shim") for n, t in runs.items()}))


def pipe_references(results: dict[str, Figures]) -> dict[str, float | None]:
    """The pipe rate each runtime's stdout is held against: runc its own (the host's), every
    Bulkhead runtime the best guest figure, since the guest pipe does not depend on the engine
    and one noisy sample should not make the target look met."""
    guest = [f.pipe for n, f in results.items() if n != "runc" and f.pipe is not None]
    best = max(guest) if guest else None
    return {n: f.pipe if n == "runc" else best for n, f in results.items()}


def report(results: dict[str, Figures], used: dict[str, str], size_mib: int,
           parts: list[str]) -> None:
    """The tables of the parts that ran, the ratios, and the issue's target for stdout."""
    reference = pipe_references(results)
    print("\nstdio engines in use (shim log): "
          + "; ".join(f"{n} {e}" for n, e in used.items() if n != "runc"))
    if "start" in parts or "pipe" in parts:
        print(f"container start (`true`) and pipe rate (dd | dd in the container, {size_mib} MiB):")
        print(f"  {'runtime':16s} {'start s':>8s} {'pipe MiB/s':>11s}")
        for name, fig in results.items():
            print(f"  {name:16s} {num(fig.start, '8.3f')} {num(fig.pipe, '11.1f')}")
    head = (f"  {'runtime':16s} {'MiB/s':>8s} {{}} {'wall s':>7s} {'shim CPU':>10s} "
            f"{'QEMU CPU':>10s}")
    if "stdout" in parts:
        print(f"stdout: {size_mib} MiB from dd in the container, counted on ctr's stdout; MiB/s "
              "from first to last byte; of pipe: share of the pipe rate (runc: the host's; "
              "Bulkhead: the best guest figure); CPU seconds per GiB")
        print(head.format(f"{'of pipe':>8s}"))
        print_transfers(results, "stdout",
                        lambda name, t: num(share(rate(t), reference[name]), "8.0%"))
    if "stdin" in parts:
        prime = min(PRIME, (size_mib * MIB) // 4) / MIB
        print(f"stdin: {size_mib} MiB into ctr's stdin, read by dd in the container; MiB/s from "
              f"{prime:g} MiB accepted to dd's summary, and over the wall time less the start "
              "time; CPU seconds per GiB")
        print(head.format(f"{'(wall-start)':>12s}"))
        print_transfers(results, "stdin", lambda name, t: num(
            wall_rate(t, results[name].start, size_mib), "12.1f"))
    verdicts = [f"{n} {s:.0%} ({'met' if s >= 0.6 else 'not met'})"
                for n, f in results.items() if n != "runc"
                if (s := share(rate(f.stdout), reference[n])) is not None]
    if verdicts:
        print(f"target: stdout end to end >= 60% of the guest pipe rate: {', '.join(verdicts)}")


# --- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, runtimes: dict[str, Runtime]) -> int:
    """Each part for every runtime in turn; a failure is printed and the rest still run."""
    results = {name: Figures() for name in runtimes}
    size, failed = args.size_mib * MIB, 0
    with bench_containerd(args.containerd_version) as ctd:
        for part in (p for p in PARTS if p in args.parts):
            for name, runtime in runtimes.items():
                begin = time.monotonic()
                try:
                    MEASURES[part](ctd, runtime, results[name], size)
                except Exception as exc:  # noqa: BLE001 - reported; the others are still useful
                    failed += 1
                    print(f"  {part} {name} failed: {exc!r}"[:600], flush=True)
                    continue
                print(f"  {part:6s} {name:16s} done in {time.monotonic() - begin:6.2f} s",
                      flush=True)
        used = engines(ctd, results)
    report(results, used, args.size_mib, args.parts)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256,
                        help="MiB moved per transfer (default 256)")
    add_parts_option(parser, PARTS)
    parser.add_argument("--containerd-version", default="1.7")
    add_runtimes_option(parser, "runc,bulkhead-c,bulkhead-python")
    args = parser.parse_args()
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"stdio throughput through containerd {args.containerd_version} (ctr run), "
          f"{args.size_mib} MiB per transfer, one run; host: {os.cpu_count()} CPUs, "
          f"load average {load} at start", flush=True)
    started = time.monotonic()
    try:
        status = run(args, selected(args.runtimes))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'SIGINT'}); cleanup ran (problems, if any, are above)")
        return 130
    print(f"total {time.monotonic() - started:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
