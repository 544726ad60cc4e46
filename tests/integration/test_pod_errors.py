"""RunPodSandbox's failure paths at the shim, driven through ctr (which lets a test name the
network namespace a container joins): each gives a clear error naming what was wrong, and
the attempt leaves nothing behind (the `no_leaks` fixture checks QEMU, shims, mounts, state,
sockets and taps)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctrtools import GUEST, RUNTIME, qemu_pids, run, uid
from harness.containerd import PrivateContainerd
from netns_tools import netns_dir_made, release_netns_dir

pytestmark = [pytest.mark.containerd, pytest.mark.vm]


@pytest.fixture(autouse=True)
def _guest_image() -> None:
    if not (GUEST / "vmlinuz").is_file():
        pytest.fail(f"no guest image in {GUEST} (run `make install`)")


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    """A network namespace of the test's own with one veth end in it (no traffic leaves)."""
    name = f"bhpe{int(time.monotonic() * 1000) % 100000}"
    made = netns_dir_made()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name",
                        "eth0", "netns", name], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "10.250.77.2/24", "dev", "eth0"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "link", "del", f"{name}h"], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        release_netns_dir(made)


def links_and_filters(netns: Path) -> tuple[list[str], str]:
    """Link names in the namespace and the tc filters on its eth0 (the tap's redirect)."""
    out = subprocess.run(["ip", "-n", netns.name, "-o", "link"], capture_output=True,
                         text=True, check=True).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())
    tc = subprocess.run(["ip", "netns", "exec", netns.name, "tc", "filter", "show", "dev",
                         "eth0", "ingress"], capture_output=True, text=True).stdout
    return names, tc.strip()


def test_vanished_network_namespace_is_named(containerd: PrivateContainerd, demo_image: str,
                                             no_leaks: None) -> None:
    gone = "/run/netns/bulkhead-test-no-such-ns"
    code, _, err = run(containerd, demo_image, "true", opts=("--with-ns", f"network:{gone}"))
    assert code != 0
    assert gone in err and "pod network" in err, err


def test_pod_network_reaches_the_guest(containerd: PrivateContainerd, demo_image: str,
                                       netns: Path, no_leaks: None) -> None:
    """The interface of a namespace the container joins becomes the guest's NIC."""
    code, out, err = run(containerd, demo_image, "sh", "-c", "ip -4 addr show eth0",
                         opts=("--with-ns", f"network:{netns}"))
    assert code == 0, err
    assert "10.250.77.2/24" in out, out
    assert links_and_filters(netns) == (["eth0", "lo"], "")  # tap and redirect removed


def test_vm_killed_while_the_pod_starts(containerd: PrivateContainerd, demo_image: str,
                                        netns: Path, no_leaks: None) -> None:
    """QEMU dies between its spawn and the agent's answer: the start fails naming the VM,
    and the tap, mounts and state are gone."""
    cid = uid("killed")
    stop = threading.Event()

    def killer() -> None:  # only this test's VM: other tests' VMs may be running
        while not stop.is_set():
            for pid in qemu_pids():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if f"guest=bulkhead-{cid}".encode() in cmdline:
                    subprocess.run(["kill", "-9", str(pid)], check=False)
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        res = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--with-ns",
                             f"network:{netns}", demo_image, cid, "true", check=False,
                             timeout=120)
    finally:
        stop.set()
        thread.join()
    code, err = res.returncode, res.stderr
    assert code != 0
    assert "QEMU" in err or "VM" in err or "agent" in err, err
    assert links_and_filters(netns) == (["eth0", "lo"], "")
