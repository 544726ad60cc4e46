"""Stdio through the data channel with either engine (io_engine = c | python), end to end
through ctr, containerd 1.7 and a VM: which engine each end runs, 1 GiB to a deliberately slow
reader with bounded shim and agent memory, 256 MiB of stdin counted exactly, execs and CloseIO.

Memory bound (docs/architecture.md, "stdio engines"): per engine, rx + tx buffers of 512 KiB
each, plus at most the credit window (1 MiB) of queued bytes per input stream; the Python
engine holds at most one window per stream too. The tests allow 32 MiB of growth over the
idle process: a leak of the streamed data (1 GiB) would blow through it at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from bulkhead.demo.procs import processes
from ctrtools import RUNTIME, detached, exec_, run, uid
from harness.containerd import PrivateContainerd
from leaks import is_bulkhead_shim

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
ENGINES = ["c", "python"]
GIB = 1 << 30
MEMORY_GROWTH_LIMIT = 32 << 20
SLOW_PART = 32 << 20  # the reader crawls through this much first: backpressure all the way


@pytest.fixture
def ctd(containerd: PrivateContainerd) -> PrivateContainerd:
    """Stdio does not depend on the containerd version: these run on 1.7 only, to keep time."""
    if containerd.version != "1.7":
        pytest.skip("covered on containerd 1.7")
    return containerd


def engine_config(tmp_path: Path, engine: str) -> tuple[str, ...]:
    path = tmp_path / f"bulkhead-{engine}.toml"
    path.write_text(f"io_engine = {json.dumps(engine)}\n")
    return ("--runtime-config-path", str(path))


def engines_logged(ctd: PrivateContainerd, mark: int) -> list[tuple[str, str]]:
    """(host, guest) engines of every sandbox started since the log was mark long."""
    text = ctd.log_text()[mark:]
    return re.findall(r"stdio engines host=(\w+) guest=(\w+)", text)


def shim_pids() -> set[int]:
    return {p.pid for p in processes() if is_bulkhead_shim(p)}


def memory_fields(status_text: str) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a /proc/PID/status text, in bytes."""
    return {key: int(value.split()[0]) * 1024
            for key, _, value in (line.partition(":") for line in status_text.splitlines())
            if key.startswith("Vm") and value.strip().endswith("kB")}


def host_memory(pid: int) -> dict[str, int]:
    """The memory fields of a host process."""
    return memory_fields(Path(f"/proc/{pid}/status").read_text())


def agent_memory(ctd: PrivateContainerd, cid: str) -> dict[str, int]:
    """The memory fields of the guest agent (PID 1 of the VM), read through an exec."""
    res = exec_(ctd, cid, "cat", "/proc/1/status")
    assert res.returncode == 0, res.stderr
    return memory_fields(res.stdout)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_end_runs_the_engine_asked_for(ctd: PrivateContainerd, demo_image: str,
                                            no_leaks: None, tmp_path: Path,
                                            engine: str) -> None:
    mark = len(ctd.log_text())
    code, out, err = run(ctd, demo_image, "sh", "-c", "echo out; echo err >&2",
                         opts=engine_config(tmp_path, engine))
    assert (code, out, err) == (0, "out\n", "err\n")
    assert engines_logged(ctd, mark) == [(engine, engine)]


@pytest.mark.parametrize("engine", ENGINES)
def test_one_gib_to_a_slow_reader_arrives_whole_with_bounded_memory(
        ctd: PrivateContainerd, demo_image: str, no_leaks: None, tmp_path: Path,
        engine: str) -> None:
    """The container writes 1 GiB (dd, 64 KiB writes); the reader crawls through the first
    32 MiB, so the channel's credits stall the writer in the guest. Every byte arrives; memory
    stays bounded."""
    cid = uid("gib")
    before = shim_pids()
    argv = ctd.ctr_argv("run", "--runtime", RUNTIME, "--rm", *engine_config(tmp_path, engine),
                        demo_image, cid, "sh", "-c",
                        "dd if=/dev/zero bs=64k count=16384 2>/dev/null; echo tail-on-stderr >&2")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    total, shim, shim_idle, shim_peak, next_sample = 0, 0, 0, 0, 0
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            total += len(chunk)
            if not shim:
                shims = shim_pids() - before
                assert len(shims) == 1, shims
                shim = shims.pop()
                shim_idle = host_memory(shim)["VmRSS"]
            if total >= next_sample:  # the shim's peak so far (it is gone once ctr returns)
                shim_peak = max(shim_peak, host_memory(shim)["VmHWM"])
                next_sample = total + (64 << 20)
            if total < SLOW_PART:
                time.sleep(0.005)  # ~13 MiB/s: far slower than the guest writes
        err = proc.stderr.read()
        assert proc.wait(60) == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert total == GIB
    assert err == b"tail-on-stderr\n"
    assert shim_peak - shim_idle < MEMORY_GROWTH_LIMIT, (shim_idle, shim_peak)


@pytest.mark.parametrize("engine", ENGINES)
def test_agent_memory_stays_bounded_under_backpressure(ctd: PrivateContainerd,
                                                       demo_image: str, no_leaks: None,
                                                       tmp_path: Path, engine: str) -> None:
    """An exec writes 256 MiB to a reader that does not read for a while: the agent's peak
    memory grows by less than the bound, as the credits stop the writer."""
    with detached(ctd, demo_image, "sleep", "600", opts=engine_config(tmp_path, engine)) as cid:
        idle_rss = agent_memory(ctd, cid)["VmRSS"]
        argv = ctd.ctr_argv("task", "exec", "--exec-id", uid("x"), cid, "sh", "-c",
                            "head -c 268435456 /dev/zero")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            time.sleep(3)  # the writer fills every buffer on the way and stalls
            stalled_rss = agent_memory(ctd, cid)["VmRSS"]
            total = 0
            while chunk := os.read(proc.stdout.fileno(), 1 << 20):
                total += len(chunk)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        peak = agent_memory(ctd, cid)["VmHWM"]
    assert total == 256 << 20
    assert stalled_rss - idle_rss < MEMORY_GROWTH_LIMIT, (idle_rss, stalled_rss)
    assert peak - idle_rss < MEMORY_GROWTH_LIMIT, (idle_rss, peak)


@pytest.mark.parametrize("engine", ENGINES)
def test_256_mib_of_stdin_is_counted_exactly(ctd: PrivateContainerd, demo_image: str,
                                             no_leaks: None, tmp_path: Path,
                                             engine: str) -> None:
    size = 256 << 20
    argv = ctd.ctr_argv("run", "--runtime", RUNTIME, "--rm",  # ctr run always passes stdin
                        *engine_config(tmp_path, engine), demo_image, uid("stdin"),
                        "sh", "-c", "wc -c")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    block = b"\xa5" * (1 << 20)
    try:
        for _ in range(size // len(block)):
            proc.stdin.write(block)
        proc.stdin.close()  # EOF: wc prints the count and exits
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.decode().strip() == str(size)


@pytest.mark.parametrize("engine", ENGINES)
def test_exec_stdin_eof_and_output_through_the_engine(ctd: PrivateContainerd,
                                                      demo_image: str, no_leaks: None,
                                                      tmp_path: Path, engine: str) -> None:
    """An exec's stdin (with its EOF), stdout and stderr, exit code; a second exec after it."""
    with detached(ctd, demo_image, "sleep", "600", opts=engine_config(tmp_path, engine)) as cid:
        data = "".join(f"line {i}\n" for i in range(20000))
        res = exec_(ctd, cid, "sh", "-c", "wc -l; echo to-err >&2; exit 6", input=data)
        assert (res.returncode, res.stdout.strip(), res.stderr) == (6, "20000", "to-err\n")
        res = exec_(ctd, cid, "echo", "again")
        assert (res.returncode, res.stdout) == (0, "again\n")
