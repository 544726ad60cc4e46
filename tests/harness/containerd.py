"""Private containerd instances for tests and benchmarks (1.6, 1.7 or 2.1, the development installs
of `make install`): the product's bulkhead.demo.instance.PrivateContainerd, plus what only the
suite needs: its own dirs (TEST_ROOT_BASE) and namespace, CRI with a private CNI network and
pods removed through CRI, a crash of the daemon, and reaping of instances left by killed runs.
Every config is rendered by bulkhead.install.containerd_config, so the suite runs the
installer's handler table."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bulkhead.demo import procs, shared_dirs
from bulkhead.demo.binaries import DEV_INSTALLS, ContainerdBinaries, dev_install, dev_versions
from bulkhead.demo.errors import ContainerdError
from bulkhead.demo.instance import NAME_RE
from bulkhead.demo.instance import PrivateContainerd as DemoContainerd
from bulkhead.install import containerd_config as cc

from harness import cni, cri, runsc
from harness.mounts import unmount_leftovers

TEST_ROOT_BASE = Path("/var/lib/bulkhead-test")
TEST_RUN_BASE = Path("/run/bulkhead-test")
DEFAULT_NAMESPACE = "bulkhead-test"
INSTALLS: dict[str, ContainerdBinaries] = DEV_INSTALLS  # every version the suite knows
# The sandbox image CRI-enabled instances import (packaging/demo-image/build --image pause):
# fully qualified, since CRI would normalise `pause:1` to docker.io/library/pause:1.
PAUSE_IMAGE = "localhost/bulkhead/pause:1"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin always works in
PINNED_LABEL = "io.cri-containerd.pinned=pinned"  # 1.7+: ListImages reports the image pinned
CRI_PLUGIN = cc.CRI_GRPC_PLUGIN
CGROUP_PARENT_BASE = "bulkhead-test"  # CRI pods of instance X go under /bulkhead-test/X
# gVisor (harness/runsc.py), where runsc is installed: the CRI handler, run by containerd's runc
# shim; lone ctr containers select it with gvisor_run_args().
GVISOR_HANDLER = "gvisor"


def available_versions() -> dict[str, str]:
    """Installed containerd versions, e.g. {"1.6": "1.6.20~ds1", "2.1": "2.1.9+unknown"}."""
    return dev_versions()


@dataclass
class ContainerdConfig(cc.PrivateConfig):
    """The installer's private config with the suite's pause image."""

    sandbox_image: str = PAUSE_IMAGE


def gvisor_handler_settings(wrapper: Path, root: Path) -> dict[str, object]:
    """The `gvisor` CRI handler: containerd's runc shim running runsc through its wrapper
    (harness/runsc.py) with runsc's state in root, next to the installer's runc handler."""
    return {**cc.runc_handler_settings(),
            "options": {"BinaryName": str(wrapper), "Root": str(root)}}


def archive_image_names(tar: Path | str) -> list[str]:
    """The image names (io.containerd.image.name) an OCI archive's index.json declares."""
    with tarfile.open(tar) as archive:
        member = archive.extractfile("index.json")
        index = json.load(member) if member is not None else {}
    names = [m.get("annotations", {}).get("io.containerd.image.name", "")
             for m in index.get("manifests", [])]
    return [n for n in names if n]


def _test_shared_dirs(namespace: str) -> list[Path]:
    """The demo's shared dirs plus CRI's namespace, libcni's caches and our cgroup parents."""
    dirs = shared_dirs.candidates((namespace, "default", CRI_NAMESPACE))
    dirs += [cni.CNI_CACHE_DIR, cni.CNI_RESULTS_DIR]  # libcni caches CRI pods' results there
    dirs += [ctl / CGROUP_PARENT_BASE for ctl in shared_dirs.cgroup_controllers()]
    return dirs


@dataclass
class PrivateContainerd(DemoContainerd):
    """A development install's containerd of a given version, for tests; a context manager.

    Layout: /var/lib/bulkhead-test/<name>/root and /run/bulkhead-test/<name>/{state,
    containerd.sock, containerd.sock.ttrpc, config.toml, containerd.log}.
    """

    namespace: str = DEFAULT_NAMESPACE
    root_base: Path = TEST_ROOT_BASE
    run_base: Path = TEST_RUN_BASE
    version: str = "1.6"
    enable_cri: bool = False
    cri_network: bool = True  # with CRI: a private bridge network (see harness.cni)
    cri_images: Sequence[Path] = ()  # OCI archives imported into k8s.io at start (the pause one)
    network: cni.TestNetwork | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.version not in INSTALLS:
            raise ContainerdError(f"unknown containerd version {self.version!r}")
        self.binaries = INSTALLS[self.version]
        super().__post_init__()

    @property
    def install(self) -> ContainerdBinaries:
        return self.bins

    @property
    def label(self) -> str:
        return f"containerd {self.version}"

    # CRI paths
    @property
    def cni_conf_dir(self) -> Path:
        return self.root_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        """host-local's lease files (per instance, so instances never hand out one address)."""
        return self.run_dir / "cni" / "ipam"

    @property
    def cri_root(self) -> Path:
        return self.root / CRI_PLUGIN

    @property
    def cri_state(self) -> Path:
        return self.state / CRI_PLUGIN

    @property
    def netns_dir(self) -> Path:
        """Where CRI bind-mounts pod network namespaces (netns_mounts_under_state_dir)."""
        return self.cri_state / "netns"

    # gVisor: runsc wrappers and runsc's state, all in the run dir
    @property
    def runsc_dir(self) -> Path:
        return self.run_dir / "runsc"

    @property
    def runsc_root(self) -> Path:
        """runsc's state dir (the runc shim's Root), not the shared /run/containerd/runc."""
        return self.runsc_dir / "root"

    @property
    def runsc_cri_wrapper(self) -> Path:
        return self.runsc_dir / "runsc-cri"

    @property
    def runsc_ctr_wrapper(self) -> Path:
        return self.runsc_dir / "runsc-ctr"

    def gvisor_run_args(self) -> list[str]:
        """The `ctr run` options that run a container under gVisor (runsc.missing() says if
        it cannot)."""
        return ["--runtime", runsc.RUNC_SHIM, "--runc-binary", str(self.runsc_ctr_wrapper),
                "--runc-root", str(self.runsc_root)]

    @property
    def cgroup_parent(self) -> str:
        """A cgroup_parent for this instance's pods; stop() removes what runc made under it."""
        return f"/{CGROUP_PARENT_BASE}/{self.name}"

    def config(self) -> ContainerdConfig:
        runtimes = {"runc": cc.runc_handler_settings(), cc.RUNTIME_NAME: cc.handler_settings()}
        if runsc.missing() is None:
            runtimes[GVISOR_HANDLER] = gvisor_handler_settings(self.runsc_cri_wrapper,
                                                               self.runsc_root)
        return ContainerdConfig(
            root=self.root,
            state=self.state,
            grpc_address=self.address,
            ttrpc_address=self.ttrpc_address,
            containerd_version=self.version,
            enable_cri=self.enable_cri,
            runtimes=runtimes,
            cni_conf_dir=self.cni_conf_dir,
        )

    def shared_dirs(self) -> list[Path]:
        return _test_shared_dirs(self.namespace)

    # lifecycle hooks of the demo's instance
    def _check_binaries(self) -> None:
        self.binaries = dev_install(self.version)  # names `make install` if it is missing

    def _before_start(self) -> None:
        self._cleanup_stale()

    def _before_spawn(self) -> None:
        if runsc.missing() is None:
            runsc.write_wrapper(self.runsc_cri_wrapper, runsc.GLOBAL_FLAGS)
            runsc.write_wrapper(self.runsc_ctr_wrapper, runsc.CTR_FLAGS)
        if self.enable_cri and self.cri_network:
            self.network = cni.allocate(self.name)
            self.network.write_conflist(self.cni_conf_dir, self.cni_ipam_dir)

    def _after_spawn(self) -> None:
        """Import the CRI images into k8s.io (so RunPodSandbox never pulls the pause image) and
        pin the sandbox image where CRI reports pins (1.7+), as 1.7/2.x do for pulled ones."""
        if not self.enable_cri:
            return
        for tar in self.cri_images:
            self.import_image(tar, namespace=CRI_NAMESPACE)
            if self.version != "1.6" and PAUSE_IMAGE in archive_image_names(tar):
                self.ctr("images", "label", PAUSE_IMAGE, PINNED_LABEL, namespace=CRI_NAMESPACE)

    def _before_stop(self) -> list[str]:
        if self.enable_cri:  # pods first: containerd runs CNI DEL and unmounts netns
            return cri.remove_all_pods(self.address)
        return []

    def _unmount_leftovers(self) -> None:
        runsc.kill_strays(str(self.run_dir))  # before unmounting: they hold the rootfs
        unmount_leftovers(self.root_dir, self.run_dir)

    def _release_extras(self) -> list[str]:
        problems = self._release_network()
        self._remove_cgroup_parent()
        return problems

    def crash_and_restart(self) -> None:
        """SIGKILL containerd (shims and tasks live on) and start it again on the same state,
        as after a crash of the daemon: what must survive a containerd restart."""
        if self._proc is None or not self.running:
            raise ContainerdError(f"{self.name} is not running")
        self._proc.kill()
        self._proc.wait()
        self._spawn()

    def sandbox_ids(self) -> set[str]:
        """Ids of the pod sandboxes CRI has state for (left over only if not removed)."""
        return set(shared_dirs.listdir(self.cri_root / "sandboxes")) | set(
            shared_dirs.listdir(self.cri_state / "sandboxes"))

    def _release_network(self) -> list[str]:
        """Delete our bridge(s) with what CNI left of them (rules, cached results)."""
        networks = {n.index: n for n in cni.owned_networks(self.name)}
        if self.network is not None:
            networks[self.network.index] = self.network
        problems: list[str] = []
        for net in networks.values():
            problems += cni.release(net, self.sandbox_ids())
        self.network = None
        return problems

    def _remove_cgroup_parent(self) -> None:
        """runc removes each pod's cgroup, not the parents it created for our cgroup_parent."""
        for ctl in shared_dirs.cgroup_controllers():
            shared_dirs.rmdir_if_empty(ctl / self.cgroup_parent.lstrip("/"))

    # runs that died
    def recorded_pid(self) -> int | None:
        """The pid of a containerd started earlier under this name, if it still runs."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        proc = procs.read_proc(pid)
        if proc is None or str(self.config_path) not in proc.argv or not procs.pid_alive(pid):
            return None
        return pid

    def owner_alive(self) -> bool:
        """True if the process that started this instance (e.g. a pytest run) still runs."""
        try:
            owner = int(self.owner_path.read_text().strip())
        except (OSError, ValueError):
            return False
        return procs.pid_alive(owner)

    def _cleanup_stale(self) -> None:
        """Crash-only start: end a previous run of the same name and remove its leftovers."""
        old_pid = self.recorded_pid()
        if old_pid is not None:
            self._remove_all_tasks()  # its API still answers: let it stop containers properly
            procs.kill_and_wait([old_pid])
        problems = self._cleanup_files()
        if problems:
            raise ContainerdError(f"leftovers of an earlier {self.name}: " + "; ".join(problems))

    def reap_if_dead(self) -> bool:
        """Remove this name's leftovers if the run that owned it is gone (a killed test run)."""
        if self.running or self.owner_alive():
            return False
        if not (self.root_dir.exists() or self.run_dir.exists()):
            return False
        self._cleanup_stale()
        return True


def reap_stale_instances(
    root_base: Path = TEST_ROOT_BASE, run_base: Path = TEST_RUN_BASE
) -> list[str]:
    """Clean up instances left by killed runs; instances whose containerd still runs are kept."""
    names: set[str] = set()
    for base in (root_base, run_base):
        if base.is_dir():
            names.update(os.listdir(base))
    reaped: list[str] = []
    for name in sorted(n for n in names if NAME_RE.match(n)):
        instance = PrivateContainerd(name=name, root_base=root_base, run_base=run_base)
        if instance.reap_if_dead():
            reaped.append(name)
            shared_dirs.remove_if_unused(_test_shared_dirs(instance.namespace), run_base)
    _reap_orphan_networks(root_base, run_base)
    return reaped


def _reap_orphan_networks(root_base: Path, run_base: Path) -> None:
    """A test bridge outlives its instance's dirs only if a run died while stopping: the
    instance creates its dirs before the bridge and deletes them after it."""
    for bridge, owner in cni.all_test_bridges().items():
        if not NAME_RE.match(owner) or (root_base / owner).exists() or (run_base / owner).exists():
            continue
        cni.release(cni.TestNetwork(int(bridge.removeprefix(cni.BRIDGE_PREFIX))))
