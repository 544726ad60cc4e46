"""The smoke test: one real sandbox with one container, through a private containerd (the
demo's: bulkhead.demo) of the node's containerd binary (`--containerd PATH`, else `containerd`
on PATH, else a development install), with the shim's boot phases; everything it started is
removed even when it fails or the operator interrupts it."""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from bulkhead.demo.binaries import ContainerdBinaries, find_containerd
from bulkhead.demo.container import (
    BULKHEAD_RUNTIME,
    DEMO_IMAGE_TAR,
    IMAGE_FIX,
    find_boot_phases,
    run_container,
)
from bulkhead.demo.errors import ContainerdError, CtrError
from bulkhead.demo.instance import PrivateContainerd
from bulkhead.doctor.context import Context
from bulkhead.doctor.report import Finding, Status, failure, ok

NAME = "smoke test"
NAMESPACE = "bulkhead-doctor"
TIMEOUT = 120.0  # seconds for `ctr run` (a missing template is built first)
GUEST_MARK = "hello from the guest: kernel "  # the demo container's first line


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while cleaning up (a second Ctrl-C must not strand a VM), then act
    on them as an interrupt."""
    caught: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]} during cleanup")


POINT_AT_ONE = "bulkhead doctor --containerd PATH   (the node's containerd binary)"


def short_phases(phases: str) -> str:
    """The milestones of a `boot phases:` line an operator reads first."""
    marks = dict(re.findall(r"(\w+)=(-?[0-9.]+)", phases))
    keys = ("agent_ready", "container_created", "container_first_output",
            "container_exit_reported")
    return ", ".join(f"{k} {marks[k]} s" for k in keys if k in marks)


def check_smoke(ctx: Context, image_tar: Path = DEMO_IMAGE_TAR) -> Iterator[Finding]:
    """Run the demo container in a microVM through a private containerd."""
    if not ctx.options.smoke:
        yield Finding(NAME, Status.SKIPPED, "skipped (--no-smoke)")
        return
    if not image_tar.is_file():
        yield failure(NAME, f"demo image {image_tar} is missing", IMAGE_FIX)
        return
    try:
        binaries = find_containerd(ctx.options.containerd)
    except ContainerdError as exc:
        yield failure(NAME, f"no containerd for a private instance: {exc}", POINT_AT_ONE)
        return
    yield _run(binaries, image_tar)


def _run(binaries: ContainerdBinaries, image_tar: Path) -> Finding:
    """Start, use and always stop one private containerd; its stop removes tasks, shims, VMs,
    mounts and directories."""
    start = time.monotonic()
    version = binaries.exact_version()
    instance = PrivateContainerd(name=f"doctor-{secrets.token_hex(3)}", binaries=binaries,
                                 namespace=NAMESPACE)
    retry = (f"`bulkhead demo --containerd {binaries.containerd}` reruns this step alone, with "
             "its output")
    cleanup = ""
    try:
        instance.start()
        instance.import_image(image_tar)
        result = run_container(instance, BULKHEAD_RUNTIME, TIMEOUT)
        phases = find_boot_phases(instance.log_text()) or ""
        tail = instance.log_tail(20)
    except (ContainerdError, CtrError, OSError) as exc:
        return failure(NAME, f"private containerd {version} ({binaries.containerd}): {exc}",
                       retry)
    finally:
        with deferred_signals():
            try:
                instance.stop()
            except ContainerdError as exc:
                cleanup = str(exc)
    total = time.monotonic() - start
    if cleanup:
        return failure(NAME, cleanup, "remove what is named above; " + retry)
    guest = next((line for line in result.stdout.splitlines() if GUEST_MARK in line), "")
    if result.exit_status != 0 or not guest:
        said = (result.stderr.strip() or result.stdout.strip()).replace("\n", " | ")
        return failure(NAME, f"`ctr run --runtime {BULKHEAD_RUNTIME}` exited with status "
                             f"{result.exit_status} after {result.seconds:.2f} s: {said}\n"
                             f"containerd log tail:\n{tail}",
                       "fix the failures above; " + retry)
    kernel = guest.split(GUEST_MARK, 1)[1]
    return ok(NAME, f"container ran in a microVM (guest kernel {kernel}) through containerd "
                    f"{version} ({binaries.containerd}): ctr run {result.seconds:.2f} s, "
                    f"{total:.2f} s from containerd start to the container's exit; "
                    f"{short_phases(phases)}; "
                    f"{phases or 'no boot phases line in the containerd log'}")
