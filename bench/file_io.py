#!/usr/bin/env python3
"""File I/O, exec and CPU inside `ctr run` containers: runc, gVisor and Bulkhead in one run.

Each workload runs in a fresh container of the busybox demo image (the Python row: the python
image, `packaging/demo-image/build --image python`) and is timed inside the container, from
/proc/uptime (10 ms resolution) read just before and after it, -n times in that container; the
table shows the median in seconds and the ratios to runc and to gVisor. Setup (copies, the tar
file) and cleanup stay outside the timed part. Figures only; asserts nothing.

The rootfs rows write to /bench-data, a directory of the image's rootfs: not /tmp, which gVisor
makes a tmpfs of its own when the image's /tmp is empty. gVisor's rootfs itself is an overlay
whose upper layer is in the sandbox's memory (runsc's default --overlay2=root:self), runc's the
snapshot's overlayfs on the host, Bulkhead's the image layers cached in the guest under a
writable layer in guest memory, written back to the snapshot (`bulkhead-shared`: the snapshot
itself over 9p, the path before layered roots).

Usage (as root, after `make install`):
    /opt/bulkhead/venv/bin/python bench/file_io.py [-n 3] [--runtimes runc,gvisor,bulkhead]
        [--rows exec,exec-tmpfs,...] [--containerd-version 1.7]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE
from bulkhead.demo.errors import ContainerdError
from harness.containerd import PrivateContainerd
from runtime_comparison import (
    Runtime,
    add_runtimes_option,
    bench_containerd,
    new_container_id,
    remove_container,
    selected,
)

PYTHON_IMAGE = "localhost/bulkhead/python:3.11"
PYTHON_IMAGE_TAR = Path("/usr/local/share/bulkhead/python-image.tar")
SHIM = Path("/usr/local/bin/containerd-shim-bulkhead-v2")
DATA = "/bench-data"  # in the rootfs
FAST = "/bench-tmpfs"  # a tmpfs mounted by the OCI spec (the guest's own, under Bulkhead)
TMPFS_MOUNT = f"type=tmpfs,src=tmpfs,dst={FAST},options=rw:nosuid:nodev:size=268435456"
TIME_RE = re.compile(r"^BENCH-TIME (\d+) (\d+)$", re.M)
CHECK_RE = re.compile(r"^BENCH-CHECK (.*)$", re.M)

# 60 standard-library modules, pure Python and extensions (each imported once, no side effects).
PYTHON_MODULES = (
    "abc argparse array ast asyncio base64 bisect calendar collections concurrent.futures "
    "contextlib copy csv dataclasses datetime decimal difflib enum fnmatch fractions "
    "functools glob gzip hashlib heapq hmac http.client inspect io ipaddress "
    "itertools json logging lzma math operator pathlib pickle platform pprint queue random "
    "shlex shutil socket sqlite3 statistics string struct subprocess tarfile tempfile textwrap "
    "threading typing unittest urllib.parse uuid xml.etree.ElementTree zipfile"
).split()
assert len(PYTHON_MODULES) == 60
PYTHON_IMPORTS = "-c 'import " + ", ".join(PYTHON_MODULES) + "'"

LOOP = 'i=0; while [ "$i" -lt {n} ]; do {body}; i=$((i+1)); done'


@dataclass(frozen=True)
class Row:
    """One workload: shell run once before the repetitions, before and after each timed part,
    and the timed part itself."""

    name: str
    title: str
    work: str
    setup: str = ""
    before: str = ""
    after: str = ""
    image: str = DEMO_IMAGE
    mounts: tuple[str, ...] = ()


def files_row(name: str, title: str, base: str, mounts: tuple[str, ...] = ()) -> Row:
    """2000 one-line files made under base, then rm -r."""
    return Row(name, title,
               LOOP.format(n=2000, body=f'echo x > {base}/d/"$i"') + f"; rm -r {base}/d",
               before=f"mkdir -p {base}/d", mounts=mounts)


def dd_row(name: str, title: str, base: str, mounts: tuple[str, ...] = ()) -> Row:
    """64 MiB written to a file under base, then sync."""
    return Row(name, title, f"dd if=/dev/zero of={base}/f bs=1M count=64 2>/dev/null; sync",
               after=f"rm -f {base}/f", mounts=mounts)


def tar_row(name: str, title: str, base: str, mounts: tuple[str, ...] = ()) -> Row:
    """tar xf of a 2000-file tree made under base (untimed), then find | wc -l and rm -r."""
    return Row(name, title,
               f"mkdir {base}/x && tar xf {base}/t.tar -C {base}/x && n=$(find {base}/x | wc -l)"
               f" && rm -r {base}/x",
               setup=(f"mkdir -p {base}/src && "
                      + LOOP.format(n=2000, body=f'echo "file $i" > {base}/src/f"$i"')
                      + f" && tar cf {base}/t.tar -C {base}/src . && rm -r {base}/src"),
               after='echo "BENCH-CHECK $n entries"', mounts=mounts)


ROWS = {r.name: r for r in (
    Row("exec", "1000 x fork+exec /bin/true (rootfs)",
        LOOP.format(n=1000, body="/bin/true")),
    Row("exec-tmpfs", "1000 x fork+exec true (busybox copied to a tmpfs)",
        LOOP.format(n=1000, body=f"{FAST}/true"),
        setup=f"cp /bin/busybox {FAST}/busybox && ln -s busybox {FAST}/true",
        mounts=(TMPFS_MOUNT,)),
    files_row("files", "2000 small files (echo x > f) in the rootfs, then rm -r", DATA),
    dd_row("dd-64m", "64 MiB dd to a rootfs file, then sync", DATA),
    Row("syscalls", "1 M one-byte dd reads+writes (/dev/zero to /dev/null)",
        "dd if=/dev/zero of=/dev/null bs=1 count=1000000 2>/dev/null"),
    Row("cpu", "shell arithmetic loop, 1 M iterations",
        LOOP.format(n=1000000, body=":")),
    Row("python", "python3 -c 'import <60 stdlib modules>' (python image)",
        f"python3 {PYTHON_IMPORTS}", image=PYTHON_IMAGE),
    tar_row("tar", "tar xf of 2000 files, find | wc -l, rm -r", DATA),
    # The floors: the same workloads on a tmpfs the container mounts (the guest's own memory
    # under Bulkhead, the sandbox's under gVisor), so no rootfs design is in the figure.
    files_row("files-tmpfs", "2000 small files + rm -r, in a tmpfs (floor of files)", FAST,
              (TMPFS_MOUNT,)),
    dd_row("dd-tmpfs", "64 MiB dd to a tmpfs file, then sync (floor of dd-64m)", FAST,
           (TMPFS_MOUNT,)),
    Row("python-tmpfs", "the python row, interpreter and stdlib copied to a tmpfs (floor)",
        f"PYTHONHOME={FAST} {FAST}/bin/python3 {PYTHON_IMPORTS}",
        setup=(f"mkdir -p {FAST}/bin {FAST}/lib && cp /usr/bin/python3.11 {FAST}/bin/python3"
               f" && cp -a /usr/lib/python3.11 {FAST}/lib/"),
        image=PYTHON_IMAGE, mounts=(TMPFS_MOUNT,)),
    tar_row("tar-tmpfs", "the tar row in a tmpfs (floor of tar)", FAST, (TMPFS_MOUNT,)),
)}

SCRIPT = """set -e
mkdir -p {data}
now() {{ read -r up _ < /proc/uptime; echo $(( ${{up%.*}} * 100 + 1${{up#*.}} - 100 )); }}
{setup}
r=0
while [ "$r" -lt {n} ]; do
  {before}
  t0=$(now)
  {work}
  t1=$(now)
  {after}
  echo "BENCH-TIME $r $(( (t1 - t0) * 10 ))"
  r=$((r+1))
done
"""


def script(row: Row, n: int) -> str:
    """The container's sh -c script: times are printed in milliseconds (centiseconds x 10;
    `1${frac} - 100` because a fraction such as 08 would be read as octal)."""
    return SCRIPT.format(data=DATA, setup=row.setup or ":", n=n, before=row.before or ":",
                         work=row.work, after=row.after or ":")


def run_row(ctd: PrivateContainerd, runtime: Runtime, row: Row, n: int
            ) -> tuple[list[float], str]:
    """n in-container timings (seconds) of a row under a runtime, and its check line if any."""
    cid = new_container_id()
    mounts = [a for m in row.mounts for a in ("--mount", m)]
    try:
        res = ctd.ctr("run", "--rm", *runtime.run_args(ctd), *mounts, row.image, cid,
                      "sh", "-c", script(row, n), timeout=1800, check=False)
    finally:
        remove_container(ctd, cid)  # --rm removes only what finished
    times = [int(ms) / 1000 for _, ms in TIME_RE.findall(res.stdout)]
    if res.returncode != 0 or len(times) != n:
        detail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise ContainerdError(f"exit {res.returncode}: {' | '.join(detail)}")
    checks = CHECK_RE.findall(res.stdout)
    return times, checks[0] if checks else ""


def missing_rows(rows: list[Row]) -> dict[str, str]:
    return {r.name: f"{PYTHON_IMAGE_TAR} missing (`make demo-image` builds it)"
            for r in rows if r.image == PYTHON_IMAGE and not PYTHON_IMAGE_TAR.exists()}


def missing_runtimes(runtimes: dict[str, Runtime]) -> dict[str, str]:
    return {name: f"{SHIM} missing (`make install`)"
            for name, r in runtimes.items() if r.is_bulkhead and not SHIM.exists()}


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def print_table(rows: list[Row], names: list[str], medians: dict[str, dict[str, float]]) -> None:
    """Seconds per runtime, then each runtime over runc and over gVisor."""
    bases = [b for b in ("runc", "gvisor") if b in names]
    ratio_cols = [(n, b) for i, b in enumerate(bases) for n in names
                  if n != b and n not in bases[:i]]  # no runc/gvisor beside gvisor/runc
    width = max([10, *(len(n) + 2 for n in names)])
    ratio_width = max([17, *(len(n) + len(b) + 3 for n, b in ratio_cols)])
    head = f"{'row':11s}" + "".join(f"{n:>{width}s}" for n in names) + "".join(
        f"{n + '/' + b:>{ratio_width}s}" for n, b in ratio_cols)
    print(head)
    for row in rows:
        got = medians.get(row.name, {})
        cells = "".join(f"{got[n]:{width}.2f}" if n in got else f"{'-':>{width}s}"
                        for n in names)
        ratios = "".join(f"{fmt_ratio(got.get(n), got.get(b)):>{ratio_width}s}"
                         for n, b in ratio_cols)
        print(f"{row.name:11s}{cells}{ratios}")
    print("rows (seconds, median, timed inside the container):")
    for row in rows:
        print(f"  {row.name:11s} {row.title}")
    exec_ = medians.get("exec", {})
    tmpfs = medians.get("exec-tmpfs", {})
    shown = [f"{n} {exec_[n] / tmpfs[n]:.2f}x" for n in names
             if exec_.get(n) and tmpfs.get(n)]
    if shown:
        print("exec from the rootfs over exec from a tmpfs (goal: Bulkhead within 1.3x): "
              + ", ".join(shown))


def run(args: argparse.Namespace, runtimes: dict[str, Runtime], rows: list[Row]) -> int:
    skipped_rows = missing_rows(rows)
    skipped_runtimes = missing_runtimes(runtimes)
    for what, why in {**skipped_rows, **skipped_runtimes}.items():
        print(f"skipping {what}: {why}")
    rows = [r for r in rows if r.name not in skipped_rows]
    runtimes = {n: r for n, r in runtimes.items() if n not in skipped_runtimes}
    if not rows or not runtimes:
        print("nothing to measure")
        return 1
    medians: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    with bench_containerd(args.containerd_version) as ctd:
        if any(r.image == PYTHON_IMAGE for r in rows):
            ctd.import_image(PYTHON_IMAGE_TAR)
        print(f"file I/O inside containers, containerd {args.containerd_version}, "
              f"n={args.n} each (median)")
        for row in rows:
            for name, runtime in runtimes.items():
                try:
                    times, check = run_row(ctd, runtime, row, args.n)
                except ContainerdError as exc:
                    failed.append(f"{row.name} under {name}: {exc}")
                    print(f"  {row.name:11s} {name:16s} failed: {exc}", flush=True)
                    continue
                medians.setdefault(row.name, {})[name] = statistics.median(times)
                extra = f"  ({check})" if check else ""
                print(f"  {row.name:11s} {name:16s} {statistics.median(times):8.2f} s  "
                      f"[{', '.join(f'{t:.2f}' for t in times)}]{extra}", flush=True)
        with contextlib.suppress(ContainerdError):
            ctd.ctr("images", "rm", PYTHON_IMAGE, check=False)
    print()
    print_table(rows, list(runtimes), medians)
    for line in failed:
        print(f"failed: {line}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="timed repetitions per row (median)")
    parser.add_argument("--containerd-version", default="1.7")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated, from {', '.join(ROWS)} (default all)")
    add_runtimes_option(parser, "runc,gvisor,bulkhead")
    args = parser.parse_args()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    return run(args, selected(args.runtimes), [ROWS[n] for n in names])


if __name__ == "__main__":
    sys.exit(main())
