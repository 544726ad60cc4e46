"""`ctr run --cni` (containerd 1.7 and 2.1): CNI configures the namespace of the task's pid
after Create, as for runc; Bulkhead's VM runs in that namespace and takes its interface at
Start. HTTP reaches the container at its IP and through portmap's published port.

ctr reads CNI from fixed paths (/etc/cni/net.d, /opt/cni/bin): it runs in a mount namespace
of its own where the test's conflist and Debian's plugins are bind-mounted there.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri.pod_tools import free_port, http_get
from ctrtools import RUNTIME, end_foreground_run, uid
from harness import cni
from harness.containerd import PrivateContainerd

CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CTR_CNI_PATHS = (Path("/etc/cni/net.d"), Path("/opt/cni/bin"))  # go-cni's defaults, for ctr
BODY = "hello from a microVM"
SERVE = f"mkdir -p /www && echo '{BODY}' > /www/index.html && exec httpd -f -p 80 -h /www"


# ctr has --cni from 1.7 on: this module runs on 1.7 and 2.1 only (conftest's `containerd`,
# which demo_image and no_leaks use too).
pytestmark = pytest.mark.parametrize("containerd", ["1.7", "2.1"],
                                     ids=["containerd1.7", "containerd2.1"], indirect=True)


@pytest.fixture
def mountpoints() -> Iterator[None]:
    """The directories ctr's private mounts cover; removed again if the test made them."""
    made = [p for p in CTR_CNI_PATHS if not p.exists()]
    for path in made:
        path.mkdir(parents=True)
    try:
        yield
    finally:
        for path in made:
            path.rmdir()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[cni.TestNetwork, Path, int]]:
    """A bridge of the test's own, its conflist (with a published port) and the port."""
    net = cni.allocate(f"ctr-cni-{os.getpid()}")
    port = free_port()
    try:
        conflist = net.conflist(tmp_path / "ipam")
        mapping = {"hostPort": port, "containerPort": 80, "protocol": "tcp",
                   "hostIP": str(net.gateway)}
        # ctr passes no port capability: a static runtimeConfig reaches portmap as it is.
        conflist["plugins"] = [conflist["plugins"][0],  # type: ignore[index]
                               {"type": "portmap", "runtimeConfig": {"portMappings": [mapping]}}]
        conf_dir = tmp_path / "net.d"
        conf_dir.mkdir()
        (conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
        yield net, conf_dir, port
    finally:
        assert cni.release(net) == []


def in_cni_mounts(ctd: PrivateContainerd, conf_dir: Path, *ctr_args: str) -> list[str]:
    """ctr in a mount namespace of its own with the test's CNI config where ctr looks for it
    (`ctr task kill` of a --cni container removes its network too)."""
    script = ('mount --bind "$1" /etc/cni/net.d && mount --bind "$2" /opt/cni/bin && '
              'shift 2 && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            str(conf_dir), str(CNI_PLUGINS), *ctd.ctr_argv(*ctr_args)]


def leased_ip(ipam_dir: Path) -> str | None:
    """The address host-local handed out (its lease files are named by address)."""
    for path in ipam_dir.glob("*/*"):
        if path.name.count(".") == 3:
            return path.name
    return None


def wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(url, timeout=2)
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"ctr run exited {proc.returncode}: "
                                     f"{proc.communicate()}") from None
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.3)


def test_ctr_run_cni_http_to_ip_and_published_port(
        containerd: PrivateContainerd, demo_image: str, mountpoints: None,
        network: tuple[cni.TestNetwork, Path, int], tmp_path: Path, no_leaks: None) -> None:
    net, conf_dir, port = network
    cid = uid("cni")
    proc = subprocess.Popen(
        in_cni_mounts(containerd, conf_dir, "run", "--cni", "--runtime", RUNTIME, "--rm",
                      demo_image, cid, "sh", "-c", SERVE),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (ip := leased_ip(tmp_path / "ipam")) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "CNI never leased an address"
            time.sleep(0.2)
        assert ipaddress.ip_address(ip) in net.subnet
        assert wait_http(f"http://{ip}/", proc) == BODY + "\n"
        assert http_get(f"http://{net.gateway}:{port}/") == BODY + "\n"
        kill = in_cni_mounts(containerd, conf_dir, "task", "kill", "-s", "KILL", cid)
        subprocess.run(kill, check=True, timeout=60)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 137, (out, err)  # httpd as PID 1 ignores SIGTERM
    finally:
        end_foreground_run(containerd, proc, cid)
    assert cni.rules_of(net) == [], "ctr's CNI DEL left portmap rules"
    assert leased_ip(tmp_path / "ipam") is None, "ctr's CNI DEL left the lease"


def test_lone_container_without_cni_has_only_lo(containerd: PrivateContainerd, demo_image: str,
                                                no_leaks: None) -> None:
    """No CNI: the VM's namespace has nothing up, so the guest has lo only (as under runc)."""
    res = containerd.ctr("run", "--runtime", RUNTIME, "--rm", demo_image, uid("nonet"),
                  "sh", "-c", "ip -o addr | grep -v ' lo ' | grep inet || echo none",
                  timeout=120)
    assert res.stdout.strip() == "none", res.stdout
