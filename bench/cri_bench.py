"""Frame of the CRI (pod) benchmarks: a CRI-enabled private containerd with its own CNI bridge,
the test suite's CRI client, pods timed from RunPodSandbox to their container's first log line,
and cleanup that survives errors, Ctrl-C and SIGTERM.

The CRI client lives in tests/cri (client.py, logs.py and the generated runtime_v1_pb2) and the
private containerd in tests/harness; rather than move or copy them, harness_path puts the
repository's tests/ directory on sys.path and they are imported from there, as pytest does.
Only cri.client and cri.logs are used: they need grpcio and protobuf (installed with the test
extras), not pytest.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import harness_path  # noqa: F401  (tests/ on sys.path: the harness)
from bulkhead.demo.container import DEMO_IMAGE, DEMO_IMAGE_TAR
from cri import logs
from cri.client import CriClient, CriError, Pod, PodDefaults
from harness.containerd import PrivateContainerd
from interrupts import interrupts_raise, uninterrupted

__all__ = ["CriError", "Pod"]

PAUSE_IMAGE_TAR = Path("/usr/local/share/bulkhead/pause-image.tar")
HANDLERS = ("runc", "bulkhead")
CONTAINER = "app"  # the one container of every benchmark pod; it logs to <pod log dir>/app.log
READY_LINE = b"ready"
READY_COMMAND = ["sh", "-c", "echo ready; sleep 600"]
START_TIMEOUT = 180.0  # one pod, RunPodSandbox to first output; TCG boots share 2 busy cores
POLL = 0.01  # seconds between looks at a log file: well below the figures measured


class Cancelled(RuntimeError):
    """The run is being aborted (Ctrl-C, SIGTERM, an error elsewhere): stop waiting."""


@dataclass
class CriBench:
    """One CRI-enabled containerd, a client for it, and every pod the benchmark ran in it (so
    that all of them are stopped and removed, whatever happens)."""

    instance: PrivateContainerd
    client: CriClient
    log_root: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    _pods: dict[str, Pod] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run_pod(self, name: str, handler: str) -> Pod:
        """RunPodSandbox with a fresh log directory; the pod is tracked for cleanup."""
        if self.cancel.is_set():
            raise Cancelled(f"not starting pod {name}")
        pod = self.client.run_pod(self.client.pod_config(name), handler)
        with self._lock:
            self._pods[pod.id] = pod
        return pod

    def start_container(self, pod: Pod, command: Sequence[str]) -> str:
        """CreateContainer + StartContainer of the demo image running command in pod."""
        if self.cancel.is_set():
            raise Cancelled(f"not starting a container in {pod.name}")
        config = self.client.container_config(CONTAINER, DEMO_IMAGE, command=list(command))
        return self.client.create_and_start(pod, config)

    def remove_pod(self, pod: Pod) -> None:
        """StopPodSandbox + RemovePodSandbox; forgotten once gone."""
        self.client.stop_and_remove_pod(pod.id)
        with self._lock:
            self._pods.pop(pod.id, None)
        if pod.log_directory is not None:
            shutil.rmtree(pod.log_directory, ignore_errors=True)

    def remove_all(self) -> list[str]:
        """Remove every pod still tracked; returns what failed (instance.stop() retries)."""
        with self._lock:
            pods = list(self._pods.values())
        problems = []
        for pod in pods:
            try:
                self.remove_pod(pod)
            except CriError as exc:
                problems.append(f"pod {pod.id[:12]}: {exc}")
        return problems

    def wait_quiet(self, timeout: float = 60.0) -> None:
        """Let removed pods' shims (and VMs) exit so they do not eat the next figure's CPU."""
        deadline = time.monotonic() + timeout
        while self.instance.shim_processes() and time.monotonic() < deadline:
            if self.cancel.wait(0.2):
                raise Cancelled("waiting for shims to exit")

    def pod_ip(self, pod: Pod) -> str:
        """The pod's IP from PodSandboxStatus, refused unless it is a host on this instance's
        own bridge: the benchmark must never send traffic to any other address."""
        ip = self.client.pod_sandbox_status(pod.id).status.network.ip
        network = self.instance.network
        if network is None:
            raise RuntimeError("the private containerd has no CNI network")
        address = ipaddress.ip_address(ip) if ip else None
        if (address is None or address not in network.subnet or address == network.gateway
                or address in (network.subnet.network_address, network.subnet.broadcast_address)):
            raise RuntimeError(f"pod {pod.name} has IP {ip!r}, not a pod address on "
                               f"{network.bridge} ({network.subnet}): not connecting to it")
        return ip


def log_path(pod: Pod) -> Path:
    """Where CRI writes the benchmark container's output (pod log dir + container log_path)."""
    assert pod.log_directory is not None, "pods are created with a log directory"
    return pod.log_directory / f"{CONTAINER}.log"


def has_line(path: Path, line: bytes) -> bool:
    """True once the CRI log file holds line as a complete stdout line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if not data.endswith(b"\n"):  # a record is being written: look again shortly
        return False
    return line in logs.lines(logs.parse(data), "stdout")


def wait_first_line(bench: CriBench, pod: Pod, start: float,
                    timeout: float = START_TIMEOUT) -> float:
    """Poll the container's log until READY_LINE appears; seconds since start (monotonic)."""
    path = log_path(pod)
    deadline = start + timeout
    while not has_line(path, READY_LINE):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"no {READY_LINE!r} in {path} after {timeout:g} s")
        if bench.cancel.wait(POLL):
            raise Cancelled(f"waiting for {pod.name}'s first line")
    return time.monotonic() - start


def time_to_first_line(bench: CriBench, handler: str, name: str) -> tuple[Pod, float]:
    """RunPodSandbox + CreateContainer + StartContainer of `echo ready; sleep 600`, until
    `ready` is in the container's CRI log file: the pod (left running) and the seconds taken."""
    start = time.monotonic()
    pod = bench.run_pod(name, handler)
    bench.start_container(pod, READY_COMMAND)
    return pod, wait_first_line(bench, pod, start)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def cri_bench(version: str) -> Iterator[CriBench]:
    """A CRI-enabled private containerd (bridge network, pause and demo images in k8s.io);
    on the way out every pod is stopped and removed and the instance stopped, even on Ctrl-C."""
    with interrupts_raise():
        instance = PrivateContainerd(name=unique_name("bench-pods"), version=version,
                                     enable_cri=True,
                                     cri_images=[PAUSE_IMAGE_TAR, DEMO_IMAGE_TAR])
        log_root = Path(tempfile.mkdtemp(prefix="bulkhead-bench-pods-"))
        bench: CriBench | None = None
        try:
            instance.start()
            client = CriClient(instance.address,
                               PodDefaults(cgroup_parent=instance.cgroup_parent,
                                           log_root=log_root))
            bench = CriBench(instance, client, log_root)
            client.wait_ready()
            yield bench
        finally:
            with uninterrupted("cleanup"):
                cleanup(instance, bench, log_root)


def cleanup(instance: PrivateContainerd, bench: CriBench | None, log_root: Path) -> None:
    """Remove the pods, stop the instance (which removes whatever is left), drop the logs."""
    print("cleaning up: removing pods, stopping containerd ...", flush=True)
    problems: list[str] = []
    if bench is not None:
        bench.cancel.set()
        problems += bench.remove_all()
        bench.client.close()
    try:
        instance.stop()
    except Exception as exc:  # noqa: BLE001 - report it, keep cleaning
        problems.append(str(exc))
    shutil.rmtree(log_root, ignore_errors=True)
    for problem in problems:
        print(f"  cleanup problem: {problem}", flush=True)
