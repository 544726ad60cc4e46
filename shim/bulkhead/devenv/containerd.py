"""Private containerd instances (1.6, 1.7 or 2.1) with their own root, state, sockets and log, so
tests and the demo neither disturb nor depend on a system containerd, and leave nothing behind."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from bulkhead.devenv import cni, cri, mounts, procs

TEST_ROOT_BASE = Path("/var/lib/bulkhead-test")
TEST_RUN_BASE = Path("/run/bulkhead-test")
SHIM_BIN_DIR = Path("/usr/local/bin")  # where containerd-shim-bulkhead-v2 is installed
CONTAINERD_RUN_DIR = Path("/run/containerd")  # compile-time default shared by every containerd
SHIM_SOCKET_DIR = CONTAINERD_RUN_DIR / "s"
SYSTEM_ADDRESS = CONTAINERD_RUN_DIR / "containerd.sock"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
DEFAULT_NAMESPACE = "bulkhead-test"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class ContainerdError(RuntimeError):
    """A private containerd could not be started, used or cleaned up."""


class CtrError(subprocess.CalledProcessError):
    """A `ctr` command failed; str() carries its argv, exit status and stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip()
        return f"{' '.join(map(str, self.cmd))} exited with status {self.returncode}: {err}"


# --- installed versions ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerdInstall:
    """Where the binaries of one containerd minor version live on a Bulkhead host."""

    version: str
    bin_dir: Path

    @property
    def containerd(self) -> Path:
        return self.bin_dir / "containerd"

    @property
    def ctr(self) -> Path:
        return self.bin_dir / "ctr"

    def exact_version(self) -> str | None:
        """The full version if both binaries exist and containerd reports this minor version."""
        if not (os.access(self.containerd, os.X_OK) and os.access(self.ctr, os.X_OK)):
            return None
        found = _binary_version(str(self.containerd))
        return found if found and found.startswith(self.version + ".") else None


def _unpacked_install(minor: str) -> ContainerdInstall:
    """packaging/host/install-deps unpacks newer Debian builds (1.7 from trixie, 2.1 from sid)
    into /opt/bulkhead/containerd-<minor>; BULKHEAD_CONTAINERD<NN>_DIR overrides the place."""
    variable = f"BULKHEAD_CONTAINERD{minor.replace('.', '')}_DIR"
    base = Path(os.environ.get(variable, f"/opt/bulkhead/containerd-{minor}"))
    return ContainerdInstall(minor, base / "usr" / "bin")


INSTALLS: dict[str, ContainerdInstall] = {
    "1.6": ContainerdInstall("1.6", Path("/usr/bin")),
    "1.7": _unpacked_install("1.7"),
    "2.1": _unpacked_install("2.1"),
}


@functools.cache
def _binary_version(binary: str) -> str | None:
    """Version token of `containerd --version` ("containerd <repo> <version> <revision>")."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split()
    return parts[2].lstrip("v") if len(parts) >= 3 else None


def available_versions() -> dict[str, str]:
    """Installed containerd versions, e.g. {"1.6": "1.6.20~ds1", "2.1": "2.1.9+unknown"}."""
    found = {minor: inst.exact_version() for minor, inst in INSTALLS.items()}
    return {minor: exact for minor, exact in found.items() if exact}


def install_for(version: str) -> ContainerdInstall:
    """The install of a minor version, or a clear error naming how to get it."""
    inst = INSTALLS.get(version)
    if inst is None:
        raise ContainerdError(f"unknown containerd version {version!r}; known: {sorted(INSTALLS)}")
    if inst.exact_version() is None:
        raise ContainerdError(
            f"containerd {version} is not installed at {inst.bin_dir} (run `make install`)"
        )
    return inst


def shim_socket_path(address: Path | str, namespace: str, shim_id: str) -> Path:
    """Where a Go shim puts its socket: /run/containerd/s/sha256(address/namespace/id)."""
    digest = hashlib.sha256(f"{address}/{namespace}/{shim_id}".encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


# --- configuration --------------------------------------------------------------------------


# Test annotations that CRI copies into the OCI specs of pods and containers (both handlers).
ANNOTATION_GLOBS = ("bulkhead.dev/*",)
# The sandbox image CRI-enabled instances import (packaging/demo-image/build --image pause):
# fully qualified, since CRI would normalise `pause:1` to docker.io/library/pause:1.
PAUSE_IMAGE = "localhost/bulkhead/pause:1"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin always works in
PINNED_LABEL = "io.cri-containerd.pinned=pinned"  # 1.7+: ListImages reports the image pinned


@dataclass
class CriRuntime:
    """One CRI runtime handler (`[...containerd.runtimes.<name>]`)."""

    name: str
    runtime_type: str
    runtime_path: str = ""
    options: dict[str, str] = field(default_factory=dict)
    privileged_without_host_devices: bool = False  # VM runtimes: no host /dev for privileged
    pod_annotations: tuple[str, ...] = ANNOTATION_GLOBS
    container_annotations: tuple[str, ...] = ANNOTATION_GLOBS


def _default_cri_runtimes() -> list[CriRuntime]:
    return [
        CriRuntime("runc", "io.containerd.runc.v2"),
        CriRuntime("bulkhead", "io.containerd.bulkhead.v2", privileged_without_host_devices=True),
    ]


# The CRI gRPC service, disabled when CRI is off. 2.x keeps the name; its helper plugins
# (io.containerd.cri.v1.images/.runtime) must stay: transfer and the sandbox controllers need them.
CRI_PLUGIN = "io.containerd.grpc.v1.cri"


@dataclass
class ContainerdConfig:
    """containerd config.toml: version 2 for 1.6/1.7, version 3 for 2.x; CRI is off unless
    enabled."""

    root: Path
    state: Path
    grpc_address: Path
    ttrpc_address: Path
    containerd_version: str = "1.6"
    log_level: str = "debug"
    enable_cri: bool = False
    restrict_oom_score_adj: bool = True  # we lack CAP_SYS_RESOURCE: never lower oom_score_adj
    snapshotter: str = "overlayfs"
    default_runtime: str = "runc"
    cri_runtimes: list[CriRuntime] = field(default_factory=_default_cri_runtimes)
    sandbox_image: str = PAUSE_IMAGE
    cni_bin_dir: Path = Path("/usr/lib/cni")
    cni_conf_dir: Path | None = None
    # Exec/Attach/PortForward URLs: loopback only, a port the kernel picks at each start.
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = "0"

    @property
    def schema(self) -> int:
        """The config.toml version this containerd reads natively (2.x migrates 2 with warnings)."""
        return 3 if int(self.containerd_version.split(".")[0]) >= 2 else 2

    def as_dict(self) -> dict[str, object]:
        """The configuration as nested tables, in the order they are written."""
        plugins: dict[str, object] = {
            "io.containerd.internal.v1.opt": {"path": str(self.root / "opt")},
        }
        doc: dict[str, object] = {
            "version": self.schema,
            "root": str(self.root),
            "state": str(self.state),
            "disabled_plugins": [] if self.enable_cri else [CRI_PLUGIN],
            "grpc": {"address": str(self.grpc_address)},
            "ttrpc": {"address": str(self.ttrpc_address)},
            "debug": {"level": self.log_level},
            "plugins": plugins,
        }
        if self.schema == 3:
            # 2.x enables NRI, whose socket (/var/run/nri/nri.sock) would be shared by instances.
            plugins["io.containerd.nri.v1.nri"] = {"disable": True}
        if self.enable_cri and self.schema == 3:
            plugins.update(self._cri_tables_v3())
        elif self.enable_cri:
            plugins[CRI_PLUGIN] = self._cri_table_v2()
        return doc

    def _runtimes_table(self) -> dict[str, object]:
        runtimes: dict[str, object] = {}
        for rt in self.cri_runtimes:
            entry: dict[str, object] = {"runtime_type": rt.runtime_type}
            if rt.runtime_path:
                entry["runtime_path"] = rt.runtime_path
            if rt.privileged_without_host_devices:
                entry["privileged_without_host_devices"] = True
            if rt.pod_annotations:
                entry["pod_annotations"] = list(rt.pod_annotations)
            if rt.container_annotations:
                entry["container_annotations"] = list(rt.container_annotations)
            if rt.options:
                entry["options"] = dict(rt.options)
            runtimes[rt.name] = entry
        return {"default_runtime_name": self.default_runtime, "runtimes": runtimes}

    @property
    def _cni_conf_dir(self) -> str:
        return str(self.cni_conf_dir or self.root / "cni" / "net.d")

    def _cri_table_v2(self) -> dict[str, object]:
        """1.x keeps all CRI settings in the one io.containerd.grpc.v1.cri table."""
        return {
            "sandbox_image": self.sandbox_image,
            "restrict_oom_score_adj": self.restrict_oom_score_adj,
            **self._stream_server(),
            # Pod network namespaces under our state dir, not the host-wide /var/run/netns.
            "netns_mounts_under_state_dir": True,
            "containerd": {"snapshotter": self.snapshotter, **self._runtimes_table()},
            "cni": {"bin_dir": str(self.cni_bin_dir), "conf_dir": self._cni_conf_dir},
        }

    def _cri_tables_v3(self) -> dict[str, object]:
        """2.x splits CRI into an images and a runtime plugin; cni.bin_dir is deprecated in 2.1."""
        images = {"snapshotter": self.snapshotter, "pinned_images": {"sandbox": self.sandbox_image}}
        runtime = {
            "restrict_oom_score_adj": self.restrict_oom_score_adj,
            # Pod network namespaces under our state dir, not the host-wide /var/run/netns.
            "netns_mounts_under_state_dir": True,
            "containerd": self._runtimes_table(),
            "cni": {"bin_dirs": [str(self.cni_bin_dir)], "conf_dir": self._cni_conf_dir},
        }
        return {
            "io.containerd.cri.v1.images": images,
            "io.containerd.cri.v1.runtime": runtime,
            CRI_PLUGIN: self._stream_server(),  # the gRPC/streaming plugin keeps these keys
        }

    def _stream_server(self) -> dict[str, object]:
        return {
            "stream_server_address": self.stream_server_address,
            "stream_server_port": self.stream_server_port,
        }

    def render(self) -> str:
        return render_toml(self.as_dict())


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: object) -> str:
    """Scalars and arrays; JSON string escapes are a subset of TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_toml(doc: Mapping[str, object], prefix: tuple[str, ...] = ()) -> str:
    """Write nested dicts as TOML tables (stdlib has no writer); scalars before sub-tables."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, object]]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables:
        path = (*prefix, key)
        text += "\n[" + ".".join(_toml_key(k) for k in path) + "]\n"
        text += render_toml(table, path)
    return text


# --- running ctr ----------------------------------------------------------------------------


@dataclass
class CtrClient:
    """Runs one ctr binary against one containerd address, in one default namespace."""

    ctr_bin: Path
    address: Path
    namespace: str = DEFAULT_NAMESPACE

    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        ns = namespace or self.namespace
        return [str(self.ctr_bin), "--address", str(self.address), "--namespace", ns, *args]

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 60.0,
        namespace: str | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ctr; with check, a non-zero exit raises CtrError carrying stderr."""
        argv = self.ctr_argv(*args, namespace=namespace)
        try:
            res = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(argv)} did not finish within {timeout} s") from exc
        if check and res.returncode != 0:
            raise CtrError(res.returncode, argv, res.stdout, res.stderr)
        return res

    def import_image(
        self, tar: Path | str, timeout: float = 120.0, namespace: str | None = None
    ) -> str:
        """Import (and unpack for the default snapshotter) an OCI archive; returns ctr's output."""
        return self.ctr("images", "import", str(tar), timeout=timeout, namespace=namespace).stdout

    def lines(self, *args: str, namespace: str | None = None) -> list[str]:
        """Non-empty output lines of a quiet listing command (e.g. `task ls -q`)."""
        out = self.ctr(*args, namespace=namespace, timeout=30).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]


# --- the private instance -------------------------------------------------------------------

_shared_lock = threading.Lock()
_live_instances: set[str] = set()
_shared_created: set[Path] = set()
_fifo_dirs_before: set[str] = set()  # /run/containerd/fifo entries when the first instance began
FIFO_DIR = CONTAINERD_RUN_DIR / "fifo"


def _shared_dir_candidates(namespace: str) -> list[Path]:
    """Global dirs containerd, ctr and runc create as a side effect of our runs."""
    dirs = [CONTAINERD_RUN_DIR, SHIM_SOCKET_DIR, CONTAINERD_RUN_DIR / "fifo"]
    dirs.append(CONTAINERD_RUN_DIR / "runc")
    dirs += [cni.CNI_CACHE_DIR, cni.CNI_RESULTS_DIR]  # libcni caches CRI pods' results there
    controllers = _cgroup_controllers()
    for ns in dict.fromkeys((namespace, "default", CRI_NAMESPACE)):
        dirs.append(CONTAINERD_RUN_DIR / "runc" / ns)
        dirs += [ctl / ns for ctl in controllers]
    dirs += [ctl / CGROUP_PARENT_BASE for ctl in controllers]
    return dirs


CGROUP_PARENT_BASE = "bulkhead-test"  # CRI pods of instance X go under /bulkhead-test/X


def _cgroup_controllers() -> list[Path]:
    """The cgroup v1 hierarchies (and the hybrid unified one) mounted under /sys/fs/cgroup."""
    if not CGROUP_V1_ROOT.is_dir():
        return []
    found = [c for c in sorted(CGROUP_V1_ROOT.iterdir()) if not c.is_symlink()]
    return [c for c in found if c.is_dir()]


def archive_image_names(tar: Path | str) -> list[str]:
    """The image names (io.containerd.image.name) an OCI archive's index.json declares."""
    with tarfile.open(tar) as archive:
        member = archive.extractfile("index.json")
        index = json.load(member) if member is not None else {}
    names = [m.get("annotations", {}).get("io.containerd.image.name", "")
             for m in index.get("manifests", [])]
    return [n for n in names if n]


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _remove_fifo_dirs(names: set[str]) -> None:
    """ctr leaves the FIFO directory of a detached task behind (with runc too): remove those
    our runs made, once no instance is left to use them, if they hold nothing but FIFOs."""
    for name in names:
        path = FIFO_DIR / name
        try:
            entries = list(path.iterdir())
            if all(stat.S_ISFIFO(e.lstat().st_mode) for e in entries):
                for entry in entries:
                    entry.unlink()
                path.rmdir()
        except OSError:
            continue


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


@dataclass
class PrivateContainerd(CtrClient):
    """A containerd of a given version with its own root/state/sockets/log; a context manager.

    Layout: /var/lib/bulkhead-test/<name>/root and /run/bulkhead-test/<name>/{state,
    containerd.sock, containerd.sock.ttrpc, config.toml, containerd.log}.
    """

    ctr_bin: Path = field(init=False)
    address: Path = field(init=False)
    name: str = "default"
    version: str = "1.6"
    enable_cri: bool = False
    cri_network: bool = True  # with CRI: a private bridge network (see devenv.cni)
    cri_images: Sequence[Path] = ()  # OCI archives imported into k8s.io at start (the pause one)
    extra_path: Sequence[Path] = ()  # prepended to PATH (e.g. a directory with a fake shim)
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    root_base: Path = TEST_ROOT_BASE
    run_base: Path = TEST_RUN_BASE
    install: ContainerdInstall = field(init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _last_log: str = field(default="", init=False, repr=False)
    _seen_tasks: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    network: cni.TestNetwork | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ContainerdError(f"bad instance name {self.name!r} (letters, digits, _.-; <= 40)")
        if self.version not in INSTALLS:
            raise ContainerdError(f"unknown containerd version {self.version!r}")
        self.install = INSTALLS[self.version]
        self.ctr_bin = self.install.ctr
        self.address = self.run_dir / "containerd.sock"

    # paths
    @property
    def root_dir(self) -> Path:
        return self.root_base / self.name

    @property
    def run_dir(self) -> Path:
        return self.run_base / self.name

    @property
    def root(self) -> Path:
        return self.root_dir / "root"

    @property
    def state(self) -> Path:
        return self.run_dir / "state"

    @property
    def ttrpc_address(self) -> Path:
        return Path(str(self.address) + ".ttrpc")

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "containerd.log"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "containerd.pid"

    @property
    def owner_path(self) -> Path:
        return self.run_dir / "owner.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

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

    @property
    def cgroup_parent(self) -> str:
        """A cgroup_parent for this instance's pods; stop() removes what runc made under it."""
        return f"/{CGROUP_PARENT_BASE}/{self.name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config(self) -> ContainerdConfig:
        return ContainerdConfig(
            root=self.root,
            state=self.state,
            grpc_address=self.address,
            ttrpc_address=self.ttrpc_address,
            containerd_version=self.version,
            enable_cri=self.enable_cri,
            cni_conf_dir=self.cni_conf_dir,
        )

    def environment(self) -> dict[str, str]:
        """containerd's env: our shim dir first, then this version's binaries (its runc shim)."""
        first = [*map(str, self.extra_path), str(SHIM_BIN_DIR), str(self.install.bin_dir)]
        rest = os.environ.get("PATH", SYSTEM_PATH).split(":") + SYSTEM_PATH.split(":")
        path: list[str] = []
        for entry in first + rest:
            if entry and entry not in path:
                path.append(entry)
        env = dict(os.environ)
        env["PATH"] = ":".join(path)
        return env

    # lifecycle
    def __enter__(self) -> PrivateContainerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> PrivateContainerd:
        """Start containerd and wait until its socket answers `ctr version`."""
        if self.running:
            return self
        self.install = install_for(self.version)
        self._cleanup_stale()
        self._register_shared()
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o711)
        try:
            if self.enable_cri and self.cri_network:
                self.network = cni.allocate(self.name)
                self.network.write_conflist(self.cni_conf_dir, self.cni_ipam_dir)
            self.config_path.write_text(self.config().render())
            self._spawn()
            if self.enable_cri:
                self._import_cri_images()
        except BaseException:
            self.stop()
            raise
        return self

    def _import_cri_images(self) -> None:
        """Import the CRI images into k8s.io (so RunPodSandbox never pulls the pause image) and
        pin the sandbox image where CRI reports pins (1.7+), as 1.7/2.x do for pulled ones."""
        for tar in self.cri_images:
            self.import_image(tar, namespace=CRI_NAMESPACE)
            if self.version != "1.6" and PAUSE_IMAGE in archive_image_names(tar):
                self.ctr("images", "label", PAUSE_IMAGE, PINNED_LABEL, namespace=CRI_NAMESPACE)

    def _spawn(self) -> None:
        """Run containerd on our config (log appended) and wait until it answers."""
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(self.install.containerd), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.run_dir,
            env=self.environment(),
            start_new_session=True,
        )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self.owner_path.write_text(f"{os.getpid()}\n")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def crash_and_restart(self) -> None:
        """SIGKILL containerd (shims and tasks live on) and start it again on the same state,
        as after a crash of the daemon: what must survive a containerd restart."""
        if self._proc is None or not self.running:
            raise ContainerdError(f"{self.name} is not running")
        self._proc.kill()
        self._proc.wait()
        self._spawn()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_err = "socket not created"
        while time.monotonic() < deadline:
            assert self._proc is not None
            rc = self._proc.poll()
            if rc is not None:
                raise ContainerdError(
                    f"containerd {self.version} ({self.name}) exited with status {rc} before "
                    f"its socket answered; log tail:\n{self.log_tail()}"
                )
            if self.address.exists():
                res = self.ctr("version", check=False, timeout=10)
                if res.returncode == 0:
                    return
                last_err = res.stderr.strip()
            time.sleep(0.1)
        raise ContainerdError(
            f"containerd {self.version} ({self.name}) did not answer on {self.address} within "
            f"{self.start_timeout} s ({last_err}); log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Remove tasks, stop containerd (TERM, then KILL), then remove every trace of it."""
        problems: list[str] = []
        if self.running:
            if self.enable_cri:  # pods first: containerd runs CNI DEL and unmounts netns
                problems += cri.remove_all_pods(self.address)
            problems += self._remove_all_tasks()
            self._terminate()
        self._last_log = self.log_text() or self._last_log
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None
        problems += self._cleanup_files()
        self._unregister_shared()
        if problems:
            raise ContainerdError(f"cleanup of {self.name} incomplete: " + "; ".join(problems))

    def _terminate(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=self.stop_timeout)

    def _remove_all_tasks(self) -> list[str]:
        """Kill and delete every task and container through the API, in every namespace."""
        problems: list[str] = []
        try:
            namespaces = self.lines("namespaces", "ls", "-q")
        except (CtrError, ContainerdError) as exc:
            return [f"listing namespaces: {exc}"]
        for ns in namespaces:
            problems += self._remove_namespace_tasks(ns)
        return problems

    def _remove_namespace_tasks(self, ns: str) -> list[str]:
        problems: list[str] = []
        try:
            tasks = self.lines("tasks", "ls", "-q", namespace=ns)
            for task_id in tasks:
                self._seen_tasks.add((ns, task_id))
                res = self.ctr("tasks", "rm", "-f", task_id, namespace=ns, check=False)
                if res.returncode != 0 and "not found" not in res.stderr:
                    problems.append(f"task rm -f {ns}/{task_id}: {res.stderr.strip()}")
            for cid in self.lines("containers", "ls", "-q", namespace=ns):
                self._seen_tasks.add((ns, cid))
                self.ctr("containers", "rm", cid, namespace=ns, check=False)
        except (CtrError, ContainerdError) as exc:
            problems.append(f"namespace {ns}: {exc}")
        return problems

    def shim_processes(self) -> list[procs.Proc]:
        """Shim processes started by this instance (they carry `-address <our socket>`)."""
        addr = str(self.address)
        return procs.find_processes(lambda p: procs.has_arg_pair(p, "-address", addr))

    def _cleanup_files(self) -> list[str]:
        """Clean up our shims' sandboxes as containerd would after a shim's death, kill what
        is left of our shims, unmount under our dirs, then delete them."""
        problems: list[str] = []
        self._cleanup_own_sandboxes()
        survivors = procs.kill_and_wait(p.pid for p in self.shim_processes())
        if survivors:
            problems.append(f"shim processes did not exit: {survivors}")
        for ns, task_id in self._seen_tasks:
            shim_socket_path(self.address, ns, task_id).unlink(missing_ok=True)
        self._seen_tasks.clear()
        left = mounts.unmount_under(self.root_dir, self.run_dir)
        if left:
            problems.append("could not unmount " + ", ".join(m.mount_point for m in left))
            return problems  # never rmtree across a mount
        problems += self._release_network()
        self._remove_cgroup_parent()
        for d in (self.root_dir, self.run_dir):
            shutil.rmtree(d, ignore_errors=True)
            if d.exists():
                problems.append(f"could not remove {d}")
        for base in (self.root_base, self.run_base):
            _rmdir_if_empty(base)
        return problems

    def _cleanup_own_sandboxes(self) -> None:
        """The shim's crash-only `delete` for every sandbox state dir of ours: a shim still
        shutting down (say, interrupted mid-Create) gets its grace period, then its VM,
        mounts and state dir go (containerd, already stopped, cannot do it any more)."""
        from bulkhead.monitor import discovery
        from bulkhead.shim.delete import cleanup_sandbox

        for found in discovery.discover():
            ours = shim_socket_path(self.address, found.namespace, found.sandbox_id)
            if found.state is not None and found.state.socket == str(ours):
                cleanup_sandbox(found.path, found.state.socket)

    def sandbox_ids(self) -> set[str]:
        """Ids of the pod sandboxes CRI has state for (left over only if not removed)."""
        return set(_listdir(self.cri_root / "sandboxes")) | set(
            _listdir(self.cri_state / "sandboxes"))

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
        for ctl in _cgroup_controllers():
            _rmdir_if_empty(ctl / self.cgroup_parent.lstrip("/"))

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

    def _register_shared(self) -> None:
        with _shared_lock:
            if not _live_instances:
                _shared_created.clear()
                _fifo_dirs_before.clear()
                _fifo_dirs_before.update(_listdir(FIFO_DIR))
            candidates = _shared_dir_candidates(self.namespace)
            _shared_created.update(p for p in candidates if not p.exists())
            _live_instances.add(self.name)

    def _unregister_shared(self) -> None:
        """The last instance to stop removes the (empty) shared dirs that runs created."""
        with _shared_lock:
            _live_instances.discard(self.name)
            if _live_instances:
                return
            if not SYSTEM_ADDRESS.exists():  # its clients' FIFOs are not ours to touch
                _remove_fifo_dirs(set(_listdir(FIFO_DIR)) - _fifo_dirs_before)
            for path in sorted(_shared_created, key=lambda p: len(p.parts), reverse=True):
                _rmdir_if_empty(path)
            _shared_created.clear()

    def reap_if_dead(self) -> bool:
        """Remove this name's leftovers if the run that owned it is gone (a killed test run)."""
        if self.running or self.owner_alive():
            return False
        if not (self.root_dir.exists() or self.run_dir.exists()):
            return False
        self._cleanup_stale()
        return True

    # logs
    def log_text(self) -> str:
        """containerd's log (it also carries the shims' log FIFO output); kept after stop()."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._last_log

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_lines(self, needle: str) -> Iterator[str]:
        return (line for line in self.log_text().splitlines() if needle in line)


def reap_stale_instances(
    root_base: Path = TEST_ROOT_BASE, run_base: Path = TEST_RUN_BASE
) -> list[str]:
    """Clean up instances left by killed runs; instances whose containerd still runs are kept."""
    names: set[str] = set()
    for base in (root_base, run_base):
        if base.is_dir():
            names.update(os.listdir(base))
    reaped: list[str] = []
    for name in sorted(n for n in names if _NAME_RE.match(n)):
        instance = PrivateContainerd(name=name, root_base=root_base, run_base=run_base)
        if instance.reap_if_dead():
            reaped.append(name)
            _rmdir_shared_if_unused(instance.namespace, run_base)
    _reap_orphan_networks(root_base, run_base)
    return reaped


def _reap_orphan_networks(root_base: Path, run_base: Path) -> None:
    """A test bridge outlives its instance's dirs only if a run died while stopping: the
    instance creates its dirs before the bridge and deletes them after it."""
    for bridge, owner in cni.all_test_bridges().items():
        if not _NAME_RE.match(owner) or (root_base / owner).exists() or (run_base / owner).exists():
            continue
        cni.release(cni.TestNetwork(int(bridge.removeprefix(cni.BRIDGE_PREFIX))))


def _rmdir_shared_if_unused(namespace: str, run_base: Path) -> None:
    """After reaping, drop empty shared dirs unless another containerd may be using them."""
    with _shared_lock:
        if _live_instances or SYSTEM_ADDRESS.exists():
            return
        if run_base.is_dir() and any(run_base.iterdir()):
            return
        candidates = _shared_dir_candidates(namespace)
        for path in sorted(candidates, key=lambda p: len(p.parts), reverse=True):
            _rmdir_if_empty(path)
