"""A compromised guest against the host (containerd 1.7): root in the VM, outside the
containers, through `bulkhead shell` (debug_shell = true), attacks the 9p share while the host
creates and removes the pod's containers. The host must stay untouched: a canary tmpfs outside
the share keeps its mount and its file, mountinfo outside the sandbox is as before, and
nothing is left behind (no_leaks)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.paths import sandbox_dir
from bulkhead.vmm.capabilities import qemu_caps
from bulkhead_wire.guest_abi import GUEST_SHARED_DIR
from ctrtools import RUNTIME, detached, uid
from harness.containerd import PrivateContainerd

BULKHEAD = "/usr/local/bin/bulkhead"
SHARE = GUEST_SHARED_DIR  # where the guest mounts the share
# A lone container's QEMU (ctr run) also keeps NET_ADMIN, for the tap in its own netns.
LONE_QEMU_CAPS = sum(1 << c for c in qemu_caps(own_tap=True))
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


# containerd 1.7 alone: conftest's `containerd`, which demo_image and no_leaks use too.
pytestmark = pytest.mark.parametrize("containerd", ["1.7"], ids=["containerd1.7"], indirect=True)


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A host tmpfs with a file in it: what the guest's links point at."""
    path = tmp_path / "canary"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "canary", str(path)], check=True)
    (path / "precious").write_text("keep")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A host directory the pod's second container binds at /data."""
    path = tmp_path / "volume"
    path.mkdir()
    return path


def _host_mounts_outside_bulkhead() -> set[str]:
    """mountinfo's mount points, less the sandboxes' own (which come and go)."""
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4] for line in f}
    return {p for p in points if not p.startswith("/run/bulkhead/")
            and "/run/containerd" not in p and "/bulkhead-test" not in p}


def _assert_canary_untouched(canary: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        assert any(line.split()[4] == str(canary) for line in f), "the canary was unmounted"
    assert sorted(p.name for p in canary.iterdir()) == ["precious"]
    assert (canary / "precious").read_text() == "keep"


def guest(sandbox: str, ns: str, script: str, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root in the VM, outside every container."""
    return subprocess.run([BULKHEAD, "shell", sandbox, "-n", ns, "-c", script],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def _joining(sandbox: str) -> tuple[str, ...]:
    """ctr options that make a container join the sandbox's VM, as a CRI pod container does."""
    return ("--annotation", "io.kubernetes.cri.container-type=container",
            "--annotation", f"io.kubernetes.cri.sandbox-id={sandbox}")


def _run_joined(ctd: PrivateContainerd, image: str, sandbox: str, volume: Path,
                cfg: tuple[str, ...]) -> tuple[str, subprocess.CompletedProcess[str]]:
    cid = uid("pod-c")
    res = ctd.ctr("run", "--runtime", RUNTIME, "-d", *cfg, *_joining(sandbox),
                  "--mount", f"type=bind,src={volume},dst=/data,options=rbind:rw",
                  image, cid, "sleep", "600", check=False, timeout=120)
    return cid, res


def _remove(ctd: PrivateContainerd, cid: str) -> None:
    ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
    ctd.ctr("tasks", "rm", "-f", cid, check=False)
    ctd.ctr("containers", "rm", cid, check=False)


def test_renames_and_links_in_the_share_never_reach_the_host(
        containerd: PrivateContainerd, demo_image: str, debug_config: tuple[str, ...],
        canary: Path, volume: Path, no_leaks: None) -> None:
    before = _host_mounts_outside_bulkhead()
    ns = containerd.namespace
    with detached(containerd, demo_image, "sleep", "600", opts=debug_config) as sandbox:
        cid, res = _run_joined(containerd, demo_image, sandbox, volume, debug_config)
        try:
            assert res.returncode == 0, res.stderr
            # The attack: move the second container's directory away, put a link to a
            # host path in its place; and the same one level down, where the volumes are.
            attack = guest(sandbox, ns, f"""
                cd {SHARE}
                mv {cid} moved && echo MOVED-CONTAINER-DIR
                mv {cid}/rootfs {cid}/r2 && echo MOVED-ROOTFS
                mv {cid}/volumes/0-volume {cid}/v2 && echo MOVED-VOLUME
                mv {cid}/volumes {cid}/volumes.old && ln -s {canary} {cid}/volumes \
                    && echo LINKED-VOLUMES
                ln -s {canary} {cid}/escape; ln -s {canary} planted-{cid}
                ln -s {canary}/precious {cid}/.config.json.tmp
                mknod {cid}/null c 1 3 && echo MADE-DEVICE
                mknod {cid}/rootfs/null c 1 3 && echo MADE-DEVICE-IN-ROOTFS
                ln {cid}/rootfs/bin/busybox {cid}/hardlink && echo HARD-LINKED
                cp {cid}/rootfs/bin/busybox {cid}/rootfs/suid && chmod 4755 {cid}/rootfs/suid \
                    && echo MADE-SETUID
                echo done
            """)
            assert "done" in attack.stdout, attack
            # Mount points cannot be renamed; the volumes dir (not one) could be, harmlessly.
            assert "MOVED-CONTAINER-DIR" not in attack.stdout, attack.stdout
            assert "MOVED-ROOTFS" not in attack.stdout and "MOVED-VOLUME" not in attack.stdout
            # QEMU has no CAP_MKNOD: no device node anywhere; a hard link cannot leave the
            # mount it is made in (each container's part of the share is its own mount).
            assert "MADE-DEVICE" not in attack.stdout, attack.stdout
            assert "HARD-LINKED" not in attack.stdout, attack.stdout
            # A setuid-root file can be made in the guest's own rootfs (it is the guest's root
            # filesystem), but every host mount in the share ignores setuid bits and devices,
            # and no other host user can reach it.
            state = sandbox_dir(ns, sandbox)
            with open("/proc/self/mountinfo") as f:
                ours = [line.split() for line in f if f" {state}/" in line]
            assert len(ours) >= 4, ours  # the share, the container dir, its rootfs, its volume
            assert all({"nosuid", "nodev"} <= set(m[5].split(",")) for m in ours), ours
            if "MADE-SETUID" in attack.stdout:
                suid = Path(state, "shared", cid, "rootfs", "suid")
                as_nobody = subprocess.run(  # sh: setpriv itself still has root's caps
                    [*AS_NOBODY, "sh", "-c", 'exec "$0" id -u', str(suid)],
                    capture_output=True, text=True, check=False)
                assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr
                assert oct(Path(state).stat().st_mode & 0o777) == "0o700"
        finally:
            _remove(containerd, cid)
        _assert_canary_untouched(canary)
    _assert_canary_untouched(canary)
    assert _host_mounts_outside_bulkhead() == before


def test_a_guest_planting_links_in_a_loop_while_containers_come_and_go(
        containerd: PrivateContainerd, demo_image: str, debug_config: tuple[str, ...],
        canary: Path, volume: Path, no_leaks: None) -> None:
    before = _host_mounts_outside_bulkhead()
    ns = containerd.namespace
    names = "rootfs volumes config.json .config.json.tmp volumes/0-volume"
    with detached(containerd, demo_image, "sleep", "600", opts=debug_config) as sandbox:
        racer = subprocess.Popen(
            [BULKHEAD, "shell", sandbox, "-n", ns, "-c", f"""
                echo RACING; i=0; planted=0
                while [ $i -lt 1500 ]; do
                    for d in {SHARE}/*/ {SHARE}/new-*; do
                        for n in {names}; do
                            ln -s {canary} "$d/$n" 2>/dev/null && planted=$((planted + 1))
                        done
                    done
                    usleep 20000  # leave the vCPU to the agent: TCG runs one guest CPU slowly
                    i=$((i + 1))
                done; echo PLANTED $planted"""],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert racer.stdout is not None
        assert racer.stdout.readline().strip() == "RACING"  # the loop runs before any create
        outcomes = []
        try:
            for _ in range(4):
                cid, res = _run_joined(containerd, demo_image, sandbox, volume, debug_config)
                outcomes.append(res.returncode == 0)
                if res.returncode != 0:  # failing closed is fine; it must say why
                    assert "exist" in res.stderr, res.stderr
                _remove(containerd, cid)
                _assert_canary_untouched(canary)
            assert racer.poll() is None, "the racing loop ended before the containers did"
        finally:
            racer.kill()
            racer.wait()
    print(f"racing guest: {outcomes.count(True)} containers created, "
          f"{outcomes.count(False)} refused")
    assert len(outcomes) == 4
    _assert_canary_untouched(canary)
    assert _host_mounts_outside_bulkhead() == before


def test_other_users_reach_nothing_of_a_sandbox(
        containerd: PrivateContainerd, demo_image: str, debug_config: tuple[str, ...],
        no_leaks: None) -> None:
    """QMP is host root and the debug socket a root shell in the VM: the state directory is
    0700, every socket and file in it 0600, and an unprivileged user's connect is refused by
    the kernel (not by a client-side check)."""
    with detached(containerd, demo_image, "sleep", "600", opts=debug_config) as sandbox:
        state = Path(sandbox_dir(containerd.namespace, sandbox))
        assert state.stat().st_mode & 0o777 == 0o700
        # Its QEMU keeps only the share's capabilities (and its tap's), with no_new_privs
        # (which its Landlock jail needs).
        qemu = int((state / "qemu.pid").read_text())
        status = Path(f"/proc/{qemu}/status").read_text()
        caps = {k: int(v, 16) for k, v in (ln.split(":\t") for ln in status.splitlines()
                                            if ln.startswith(("CapEff", "CapBnd")))}
        assert caps == {"CapEff": LONE_QEMU_CAPS, "CapBnd": LONE_QEMU_CAPS}, caps
        assert "NoNewPrivs:\t1" in status
        entries = [p for p in state.iterdir() if not p.is_dir()]
        sockets = [p for p in entries if p.is_socket()]
        assert {"qmp.sock", "ctl.sock", "data.sock", "debug.sock"} <= {p.name for p in sockets}
        loose = {p.name: oct(p.stat().st_mode & 0o777) for p in entries
                 if p.stat().st_mode & 0o077}
        assert not loose, loose
        probe = ("import socket, sys\n"
                 "for path in sys.argv[1:]:\n"
                 "    s = socket.socket(socket.AF_UNIX)\n"
                 "    try:\n"
                 "        s.connect(path); print('CONNECTED', path)\n"
                 "    except PermissionError:\n"
                 "        print('REFUSED', path)\n")
        res = subprocess.run([*AS_NOBODY, "/usr/bin/python3", "-c", probe, *map(str, sockets)],
                             capture_output=True, text=True, check=False, timeout=30)
        assert res.returncode == 0, res.stderr
        assert "CONNECTED" not in res.stdout and res.stdout.count("REFUSED") == len(sockets)
        shell = subprocess.run([*AS_NOBODY, BULKHEAD, "shell", sandbox, "-n",
                                containerd.namespace, "-c", "id"],
                               capture_output=True, text=True, check=False, timeout=30)
        assert shell.returncode != 0 and "uid=0" not in shell.stdout
