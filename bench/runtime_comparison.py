"""Shared frame of the benchmarks: one private containerd, runc, gVisor and Bulkhead measured in
one run."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE_TAR
from bulkhead.demo.errors import ContainerdError
from harness import runsc
from harness.containerd import PrivateContainerd
from interrupts import interrupts_raise, uninterrupted

BULKHEAD = "io.containerd.bulkhead.v2"
CONFIG_DIR = Path("/run/bulkhead-bench")  # Bulkhead config files, written while a bench runs
COLD_CONFIG = CONFIG_DIR / "cold.toml"
C_ENGINE_CONFIG = CONFIG_DIR / "io-c.toml"
PYTHON_ENGINE_CONFIG = CONFIG_DIR / "io-python.toml"
SHARED_ROOTFS_CONFIG = CONFIG_DIR / "rootfs-shared.toml"
CONFIGS = {COLD_CONFIG: 'boot = "cold"\n', C_ENGINE_CONFIG: 'io_engine = "c"\n',
           PYTHON_ENGINE_CONFIG: 'io_engine = "python"\n',
           SHARED_ROOTFS_CONFIG: 'rootfs = "shared"\n'}


@dataclass(frozen=True)
class Runtime:
    """A runtime as the benchmarks run it: containerd's name plus a Bulkhead config file, or
    gVisor (runsc under containerd's runc shim, set up by the harness: harness/runsc.py)."""

    name: str
    type: str
    config: str = ""
    gvisor: bool = False

    def run_args(self, ctd: PrivateContainerd) -> list[str]:
        """The ctr run options that select it in this containerd."""
        if self.gvisor:
            return ctd.gvisor_run_args()
        return ["--runtime", self.type] + (["--runtime-config-path", self.config]
                                           if self.config else [])

    @property
    def is_bulkhead(self) -> bool:
        return self.type == BULKHEAD

    def missing(self) -> str | None:
        """Why this runtime cannot run here (e.g. no runsc installed), or None."""
        return runsc.missing() if self.gvisor else None


RUNTIMES = {r.name: r for r in (Runtime("runc", "io.containerd.runc.v2"),
                                Runtime("gvisor", runsc.RUNC_SHIM, gvisor=True),
                                Runtime("bulkhead", BULKHEAD),
                                Runtime("bulkhead-cold", BULKHEAD, str(COLD_CONFIG)),
                                Runtime("bulkhead-c", BULKHEAD, str(C_ENGINE_CONFIG)),
                                Runtime("bulkhead-python", BULKHEAD, str(PYTHON_ENGINE_CONFIG)),
                                Runtime("bulkhead-shared", BULKHEAD, str(SHARED_ROOTFS_CONFIG)))}
Measure = Callable[[PrivateContainerd, Runtime, int], list[float]]


def add_runtimes_option(parser: argparse.ArgumentParser, default: str) -> None:
    """--runtimes runc,gvisor,bulkhead,... (gvisor is runsc --platform=systrap; bulkhead clones
    VMs from a template; bulkhead-cold boots each VM; bulkhead-c and bulkhead-python pin the
    stdio engine, io_engine; bulkhead-shared shares the snapshot itself instead of a layered root,
    rootfs = "shared")."""
    parser.add_argument("--runtimes", default=default,
                        help=f"comma-separated, from {', '.join(RUNTIMES)} (default {default})")


def add_parts_option(parser: argparse.ArgumentParser, parts: Sequence[str]) -> None:
    """--parts a,b,...: which of a benchmark's figures to take (default all, in order)."""
    def chosen(text: str) -> list[str]:
        names = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in names if p not in parts]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown parts {unknown}; known: {', '.join(parts)}")
        return names

    parser.add_argument("--parts", type=chosen, default=list(parts),
                        help=f"which figures, comma-separated (default {','.join(parts)})")


def selected(arg: str) -> dict[str, Runtime]:
    """The runtimes named in --runtimes, in that order; those that cannot run here are left
    out with a line saying why."""
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        raise SystemExit(f"unknown runtimes {unknown}; known: {', '.join(RUNTIMES)}")
    chosen = {}
    for name in names:
        why = RUNTIMES[name].missing()
        if why:
            print(f"skipping {name}: {why}")
        else:
            chosen[name] = RUNTIMES[name]
    return chosen


@contextlib.contextmanager
def bench_containerd(version: str) -> Iterator[PrivateContainerd]:
    """A private containerd with the demo image imported; stopping it removes all it ran, also
    after Ctrl-C or SIGTERM (a second one cannot cut that short)."""
    ctd = PrivateContainerd(name=f"bench-{secrets.token_hex(3)}", version=version)
    with interrupts_raise():
        try:
            CONFIG_DIR.mkdir(parents=True, exist_ok=True)
            for path, text in CONFIGS.items():
                path.write_text(text)
            ctd.start()
            ctd.import_image(DEMO_IMAGE_TAR)
            yield ctd
        finally:
            with uninterrupted("stopping containerd"):
                ctd.stop()
                shutil.rmtree(CONFIG_DIR, ignore_errors=True)


def new_container_id() -> str:
    """A fresh container id, so runs never collide with leftovers of earlier ones."""
    return f"bench-{secrets.token_hex(4)}"


def remove_container(ctd: PrivateContainerd, cid: str) -> None:
    """Kill and delete a container's task and the container; quiet if already gone."""
    for args in (("tasks", "kill", "-s", "KILL", cid), ("tasks", "rm", "-f", cid),
                 ("containers", "rm", cid)):
        with contextlib.suppress(ContainerdError):
            ctd.ctr(*args, check=False)


def ratio(values: dict[str, float], base: str = "runc") -> str:
    """Each other runtime over runc (or base) for one figure, as printed by every benchmark."""
    if not values.get(base):
        return "n/a"
    return ", ".join(f"{name}/{base} {value / values[base]:.2f}x"
                     for name, value in values.items() if name != base)


def compare(title: str, measure: Measure, n: int, version: str,
            runtimes: dict[str, Runtime],
            after: Callable[[PrivateContainerd], None] | None = None) -> None:
    """Print median/min/max per runtime and the Bulkhead/runc ratios of the medians."""
    with bench_containerd(version) as ctd:
        print(f"{title}, containerd {version}, n={n} each")
        medians = {}
        for name, runtime in runtimes.items():
            times = measure(ctd, runtime, n)
            medians[name] = statistics.median(times)
            print(f"  {name:13s} median {medians[name]:.3f} s  "
                  f"min {min(times):.3f}  max {max(times):.3f}")
        print(f"  ratios: {ratio(medians)}")
        if after is not None:
            after(ctd)
