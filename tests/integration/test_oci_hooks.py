"""Host-side OCI hooks through `ctr run --config` (containerd 1.7): nerdctl's way of networking
a container, a createRuntime hook running CNI in /proc/<pid>/ns/net and a poststop hook
releasing it, reaches the container in its microVM over HTTP; a failing hook fails Create
with its name and output, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri.pod_tools import http_get
from ctrtools import RUNTIME, end_foreground_run, uid
from harness import cni
from harness.containerd import PrivateContainerd

BODY = "hello from a hooked microVM"
SERVE = f"mkdir -p /www && echo '{BODY}' > /www/index.html && exec httpd -f -p 80 -h /www"
CNI_HOOK = r"""
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
CNI_COMMAND=$1 CNI_CONTAINERID=hooked CNI_NETNS=${pid:+/proc/$pid/ns/net} CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge < "$2"
"""


# containerd 1.7 alone: conftest's `containerd`, which demo_image and no_leaks use too.
pytestmark = pytest.mark.parametrize("containerd", ["1.7"], ids=["containerd1.7"], indirect=True)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[cni.TestNetwork, Path]]:
    """The test's own bridge and the bridge plugin's config for it."""
    net = cni.allocate(f"hooks-{os.getpid()}")
    try:
        conf = dict(net.conflist(tmp_path / "ipam")["plugins"][0],  # type: ignore[index]
                    cniVersion="1.0.0", name=net.name)
        path = tmp_path / "bridge.json"
        path.write_text(json.dumps(conf))
        yield net, path
    finally:
        assert cni.release(net) == []


def busybox_spec(ctd: PrivateContainerd, tmp_path: Path, hooks: dict[str, object],
                 *cmd: str) -> Path:
    """ctr's default spec for a busybox rootfs on the host, with these hooks."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "mkdir", "httpd", "cat"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    spec = json.loads(ctd.ctr("oci", "spec").stdout)
    spec["root"] = {"path": str(rootfs)}
    spec["process"]["args"] = list(cmd)
    spec["hooks"] = hooks
    path = tmp_path / "config.json"
    path.write_text(json.dumps(spec))
    return path


def leased(ipam_dir: Path) -> list[str]:
    return [p.name for p in ipam_dir.glob("*/*") if p.name.count(".") == 3]


def test_create_runtime_hook_networks_the_vm_like_nerdctl(
        containerd: PrivateContainerd, network: tuple[cni.TestNetwork, Path], tmp_path: Path,
        no_leaks: None) -> None:
    net, conf = network
    hook = (tmp_path / "cni-hook")
    hook.write_text("#!/bin/sh\n" + CNI_HOOK)
    hook.chmod(0o755)
    hooks = {"createRuntime": [{"path": str(hook), "args": ["cni-hook", "ADD", str(conf)]}],
             "poststop": [{"path": str(hook), "args": ["cni-hook", "DEL", str(conf)]}]}
    config = busybox_spec(containerd, tmp_path, hooks, "/bin/sh", "-c", SERVE)
    cid = uid("hooked")
    proc = subprocess.Popen(containerd.ctr_argv("run", "--runtime", RUNTIME, "--rm", "--config",
                                                str(config), cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            ips = leased(tmp_path / "ipam")
            if ips:
                try:
                    assert http_get(f"http://{ips[0]}/", timeout=2) == BODY + "\n"
                    break
                except OSError:
                    pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"no HTTP answer from {ips}"
            time.sleep(0.3)
        containerd.ctr("task", "kill", "-s", "KILL", cid)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 137, (out, err)
    finally:
        end_foreground_run(containerd, proc, cid)
    assert leased(tmp_path / "ipam") == [], "the poststop hook released the address"


def test_failing_hook_fails_create_with_its_output(containerd: PrivateContainerd,
                                                  tmp_path: Path, no_leaks: None) -> None:
    hooks = {"createRuntime": [{"path": "/bin/sh",
                                "args": ["sh", "-c", "echo cannot reach the IPAM >&2; exit 7"]}]}
    config = busybox_spec(containerd, tmp_path, hooks, "/bin/sh", "-c", "echo never")
    cid = uid("badhook")
    res = containerd.ctr("run", "--runtime", RUNTIME, "--rm", "--config", str(config), cid,
                         check=False, timeout=120)
    containerd.ctr("container", "rm", cid, check=False)
    assert res.returncode != 0 and "never" not in res.stdout
    assert ("createRuntime hook /bin/sh: exited with status 7: cannot reach the IPAM"
            in res.stderr), res.stderr
