"""The `bulkhead` runtime handler in containerd's config.toml: which config version a containerd
reads, what is wrong with a file, and the merge that fixes it while keeping the user's comments,
order and other settings (tomlkit round-trips them; the stdlib has no TOML writer)."""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Item, Table

DEFAULT_CONFIG = "/etc/containerd/config.toml"
RUNTIME_NAME = "bulkhead"
RUNTIME_TYPE = "io.containerd.bulkhead.v2"
RUNC_RUNTIME_TYPE = "io.containerd.runc.v2"
# Annotations CRI copies into the OCI specs of the pod and its containers (as the tests' configs).
ANNOTATION_GLOBS = ("bulkhead.dev/*",)
CAP_SYS_RESOURCE = 24
APPLY_FIX = "run `bulkhead containerd-config --apply`"
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)")


class ContainerdConfigError(RuntimeError):
    """A config file or containerd binary that cannot be used; the text names it and the fix."""


@dataclass(frozen=True)
class Layout:
    """Where a config version keeps the CRI runtime settings and the runtime handlers."""

    version: int
    cri_plugin: str  # table that holds restrict_oom_score_adj and containerd.runtimes
    disabling: tuple[str, ...]  # plugin ids that, in disabled_plugins, switch the CRI off

    def runtime_path(self, name: str) -> tuple[str, ...]:
        return ("plugins", self.cri_plugin, "containerd", "runtimes", name)

    def header(self, name: str) -> str:
        return '[plugins."' + self.cri_plugin + '".containerd.runtimes.' + name + "]"


# Plugin ids. The CRI gRPC service keeps its id in every version (in 3 it holds only the
# streaming server's keys); version 3 moves the runtime settings and the images into two more.
CRI_GRPC_PLUGIN = "io.containerd.grpc.v1.cri"
CRI_RUNTIME_PLUGIN_V3 = "io.containerd.cri.v1.runtime"
CRI_IMAGES_PLUGIN_V3 = "io.containerd.cri.v1.images"
NRI_PLUGIN = "io.containerd.nri.v1.nri"
OPT_PLUGIN = "io.containerd.internal.v1.opt"

LAYOUTS = {
    2: Layout(2, CRI_GRPC_PLUGIN, (CRI_GRPC_PLUGIN,)),
    3: Layout(3, CRI_RUNTIME_PLUGIN_V3, (CRI_RUNTIME_PLUGIN_V3, CRI_GRPC_PLUGIN)),
}


def config_version_for(containerd_version: str) -> int:
    """The config.toml version a containerd reads natively: 2 for 1.6/1.7, 3 for 2.x."""
    match = _VERSION_RE.match(containerd_version.strip())
    if match is None:
        raise ContainerdConfigError(f"cannot read containerd version {containerd_version!r}")
    major, minor = int(match[1]), int(match[2])
    if major >= 2:
        return 3
    if major == 1 and minor >= 6:
        return 2
    raise ContainerdConfigError(
        f"containerd {containerd_version} is not supported: Bulkhead needs 1.6, 1.7 or 2.x")


def detect_containerd_version(binary: str = "containerd") -> str:
    """The version token of `BINARY --version` (e.g. "1.7.24~ds1"), or an error naming BINARY."""
    try:
        res = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20,
                             check=False)
    except FileNotFoundError:
        raise ContainerdConfigError(
            f"containerd binary {binary!r} not found (give --containerd PATH or "
            "--containerd-version X.Y)") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ContainerdConfigError(f"could not run `{binary} --version`: {exc}") from None
    parts = res.stdout.split()
    if res.returncode != 0 or len(parts) < 3 or not _VERSION_RE.match(parts[2]):
        detail = (res.stderr or res.stdout).strip()[:200]
        raise ContainerdConfigError(
            f"`{binary} --version` exited {res.returncode} without a version: {detail!r}")
    return parts[2].lstrip("v")


@functools.cache
def binary_version(binary: str) -> str | None:
    """detect_containerd_version, remembered per binary; None if it cannot be read."""
    try:
        return detect_containerd_version(binary)
    except ContainerdConfigError:
        return None


def has_cap_sys_resource(status_path: str = "/proc/self/status") -> bool:
    """Whether this process may lower oom_score_adj; without it CRI must restrict that."""
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def _restrict_needed(restrict_oom_score_adj: bool | None) -> bool:
    if restrict_oom_score_adj is None:
        return not has_cap_sys_resource()
    return restrict_oom_score_adj


def handler_settings() -> dict[str, Any]:
    """The keys of the runtime table; the first two are required, the annotations defaults."""
    return {
        "runtime_type": RUNTIME_TYPE,
        # A privileged pod is privileged inside its VM: never copy the host's devices into it.
        "privileged_without_host_devices": True,
        "pod_annotations": list(ANNOTATION_GLOBS),
        "container_annotations": list(ANNOTATION_GLOBS),
    }


REQUIRED_KEYS = ("runtime_type", "privileged_without_host_devices")


def runc_handler_settings() -> dict[str, Any]:
    """The runc handler a private config declares next to ours (same annotation globs)."""
    return {
        "runtime_type": RUNC_RUNTIME_TYPE,
        "pod_annotations": list(ANNOTATION_GLOBS),
        "container_annotations": list(ANNOTATION_GLOBS),
    }


def _default_runtimes() -> dict[str, dict[str, Any]]:
    return {"runc": runc_handler_settings(), RUNTIME_NAME: handler_settings()}


# --- reading a file --------------------------------------------------------------------------


def parse(config_text: str, source: str = "config.toml") -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(config_text)
    except tomlkit.exceptions.ParseError as exc:
        raise ContainerdConfigError(f"{source} is not valid TOML: {exc}") from None


def is_blank(doc: Container) -> bool:
    """A file with nothing but comments and whitespace: we may write it from scratch."""
    return len(doc) == 0


def file_version(doc: Container) -> int:
    """The file's `version`; a file without one is read as version 1 by every containerd."""
    value = doc.get("version", 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContainerdConfigError(f"config `version` must be an integer, not {value!r}")
    return int(value)


def version_problem(doc: Container, containerd_version: str, source: str) -> str | None:
    """Why a non-blank file's version does not suit this containerd, with the fix."""
    if is_blank(doc):
        return None
    have, want = file_version(doc), config_version_for(containerd_version)
    if have == want:
        return None
    if have == 1:
        return (f"{source} has no `version = {want}` line, so containerd reads it as config "
                f"version 1, whose plugin names differ: move its plugin tables to the version "
                f"{want} names (see `containerd config default`), add `version = {want}`, then "
                f"{APPLY_FIX}")
    if want == 3:
        return (f"{source} is config version {have} but containerd {containerd_version} needs "
                f"version 3: `containerd --config {source} config migrate > {source}.v3` "
                f"(it drops comments; review it), move that into place, then {APPLY_FIX}")
    return (f"{source} is config version {have} but containerd {containerd_version} reads "
            f"version {want}: restore a version {want} file (e.g. the backup "
            f"{source}.bak.*), then {APPLY_FIX}")


def _lookup(doc: Container, path: Iterable[str]) -> Any:
    node: Any = doc
    for key in path:
        if not hasattr(node, "get"):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


# --- problems --------------------------------------------------------------------------------


def handler_problems(config_text: str, containerd_version: str, runtime_name: str = RUNTIME_NAME,
                     restrict_oom_score_adj: bool | None = None,
                     source: str = DEFAULT_CONFIG) -> list[str]:
    """Each thing that keeps containerd from running pods with this handler, with its fix."""
    try:
        doc = parse(config_text, source)
        wrong_version = version_problem(doc, containerd_version, source)
    except ContainerdConfigError as exc:
        return [f"{exc}: fix the file, then {APPLY_FIX}"]
    if wrong_version:
        return [wrong_version]
    layout = LAYOUTS[config_version_for(containerd_version)]
    problems = _disabled_problems(doc, layout, source)
    runtime = _lookup(doc, layout.runtime_path(runtime_name))
    if not isinstance(runtime, dict):
        problems.append(f"{source} declares no runtime `{runtime_name}` "
                        f"({layout.header(runtime_name)}): {APPLY_FIX}")
    else:
        problems += [
            f"{layout.header(runtime_name)} in {source} has {key} = {runtime.get(key)!r}, "
            f"not {want!r}: {APPLY_FIX}"
            for key, want in handler_settings().items()
            if key in REQUIRED_KEYS and runtime.get(key) != want
        ]
    if _restrict_needed(restrict_oom_score_adj):
        value = _lookup(doc, ("plugins", layout.cri_plugin, "restrict_oom_score_adj"))
        if value is not True:
            problems.append(
                f'[plugins."{layout.cri_plugin}"] in {source} lacks restrict_oom_score_adj = '
                f"true, which containerd needs where root lacks CAP_SYS_RESOURCE (here): "
                f"{APPLY_FIX}")
    return problems


def _disabled_problems(doc: Container, layout: Layout, source: str) -> list[str]:
    disabled = doc.get("disabled_plugins", [])
    off = [p for p in layout.disabling if isinstance(disabled, list) and p in disabled]
    return [f"{source} disables the CRI plugin (disabled_plugins has {p!r}), so Kubernetes "
            f"cannot use containerd: remove {p!r} from disabled_plugins" for p in off]


# --- merging ---------------------------------------------------------------------------------


def merge_handler(config_text: str, containerd_version: str, runtime_name: str = RUNTIME_NAME,
                  restrict_oom_score_adj: bool | None = None,
                  source: str = DEFAULT_CONFIG) -> str:
    """The file with our handler (and restrict_oom_score_adj where needed) merged in: required
    keys are set, optional ones only added if absent, nothing else touched; idempotent."""
    doc = parse(config_text, source)
    wrong_version = version_problem(doc, containerd_version, source)
    if wrong_version:
        raise ContainerdConfigError(wrong_version)
    layout = LAYOUTS[config_version_for(containerd_version)]
    if is_blank(doc):
        doc.add("version", layout.version)
    cri = _table_at(doc, ("plugins", layout.cri_plugin))
    if _restrict_needed(restrict_oom_score_adj) and cri.get("restrict_oom_score_adj") is not True:
        _set_key(cri, "restrict_oom_score_adj", True)
    runtimes = _table_at(doc, layout.runtime_path(runtime_name)[:-1])
    runtime = runtimes.get(runtime_name)
    if runtime is None:
        new = tomlkit.table()
        new.update(handler_settings())
        new.add(tomlkit.nl())
        runtimes[runtime_name] = new
        runtime = runtimes[runtime_name]
        siblings = [t for k, t in runtimes.items() if k != runtime_name and isinstance(t, Table)]
        if siblings:  # header indented like the other runtimes' headers
            runtime.trivia.indent = siblings[0].trivia.indent
        for key in handler_settings():
            runtime.value.item(key).indent(len(runtime.trivia.indent) + 2)
    elif not isinstance(runtime, Table):
        raise ContainerdConfigError(f"{source}: {'.'.join(layout.runtime_path(runtime_name))} "
                                    "is not a table; fix the file by hand")
    for key, value in handler_settings().items():
        if key not in runtime or (key in REQUIRED_KEYS and runtime.get(key) != value):
            _set_key(runtime, key, value)
    return tomlkit.dumps(doc)


def _set_key(table: Any, key: str, value: object) -> None:
    """Set a key; a new one is indented like the table's other keys (or its header + 2)."""
    new = key not in table
    table[key] = value  # tomlkit puts a new key after the table's last key, before blank lines
    if not new or not isinstance(table, Table):  # (a table split over the file: as is)
        return
    siblings = [item for k, item in table.value.body if k is not None and k.key != key
                and not isinstance(item, Table)]
    indent = (len(siblings[0].trivia.indent) if siblings
              else len(table.trivia.indent) + 2 if not table.is_super_table() else 0)
    item = table.value.item(key)
    if isinstance(item, Item):
        item.indent(indent)


def _table_at(doc: Container, path: tuple[str, ...]) -> Any:
    """The table at path, creating missing ones as super tables (no header of their own)."""
    node: Any = doc
    for depth, key in enumerate(path):
        child = node.get(key)
        if child is None:
            child = tomlkit.table(is_super_table=True)
            node[key] = child
            child = node[key]
        elif not isinstance(child, dict | Table):
            where = ".".join(path[: depth + 1])
            raise ContainerdConfigError(f"`{where}` is a {type(child).__name__}, not a table")
        node = child
    return node


def handler_section(containerd_version: str, runtime_name: str = RUNTIME_NAME,
                    restrict_oom_score_adj: bool | None = None) -> str:
    """What a config needs for this containerd: the merge into an empty file."""
    return merge_handler("", containerd_version, runtime_name, restrict_oom_score_adj)


# --- a whole private config ------------------------------------------------------------------


@dataclass
class PrivateConfig:
    """A complete config.toml for a containerd of our own (the demo's, the tests'): its own root,
    state and sockets, in the version that containerd reads natively; CRI is off unless enabled,
    and then declares runc and our handler (`handler_settings`)."""

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
    runtimes: dict[str, dict[str, Any]] = field(default_factory=_default_runtimes)
    sandbox_image: str = ""  # CRI's pause image ("" leaves containerd's default)
    cni_bin_dir: Path = Path("/usr/lib/cni")  # containernetworking-plugins on Debian
    cni_conf_dir: Path | None = None  # default: <root>/cni/net.d
    # Exec/Attach/PortForward URLs: loopback only, a port the kernel picks at each start.
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = "0"

    @property
    def schema(self) -> int:
        """The config.toml version this containerd reads natively (2.x migrates 2 with warnings)."""
        return config_version_for(self.containerd_version)

    def as_dict(self) -> dict[str, object]:
        """The configuration as nested tables, in the order they are written."""
        plugins: dict[str, object] = {OPT_PLUGIN: {"path": str(self.root / "opt")}}
        doc: dict[str, object] = {
            "version": self.schema,
            "root": str(self.root),
            "state": str(self.state),
            "disabled_plugins": [] if self.enable_cri else [CRI_GRPC_PLUGIN],
            "grpc": {"address": str(self.grpc_address)},
            "ttrpc": {"address": str(self.ttrpc_address)},
            "debug": {"level": self.log_level},
            "plugins": plugins,
        }
        if self.schema == 3:
            # 2.x enables NRI, whose socket (/var/run/nri/nri.sock) would be shared by instances.
            plugins[NRI_PLUGIN] = {"disable": True}
        if self.enable_cri and self.schema == 3:
            plugins.update(self._cri_tables_v3())
        elif self.enable_cri:
            plugins[CRI_GRPC_PLUGIN] = self._cri_table_v2()
        return doc

    def _runtimes_table(self) -> dict[str, object]:
        runtimes = {name: dict(settings) for name, settings in self.runtimes.items()}
        return {"default_runtime_name": self.default_runtime, "runtimes": runtimes}

    @property
    def _cni_conf_dir(self) -> str:
        return str(self.cni_conf_dir or self.root / "cni" / "net.d")

    def _sandbox_image(self) -> dict[str, object]:
        return {"sandbox_image": self.sandbox_image} if self.sandbox_image else {}

    def _cri_table_v2(self) -> dict[str, object]:
        """1.x keeps all CRI settings in the one io.containerd.grpc.v1.cri table."""
        return {
            **self._sandbox_image(),
            "restrict_oom_score_adj": self.restrict_oom_score_adj,
            **self._stream_server(),
            # Pod network namespaces under our state dir, not the host-wide /var/run/netns.
            "netns_mounts_under_state_dir": True,
            "containerd": {"snapshotter": self.snapshotter, **self._runtimes_table()},
            "cni": {"bin_dir": str(self.cni_bin_dir), "conf_dir": self._cni_conf_dir},
        }

    def _cri_tables_v3(self) -> dict[str, object]:
        """2.x splits CRI into an images and a runtime plugin; cni.bin_dir is deprecated in 2.1."""
        images: dict[str, object] = {"snapshotter": self.snapshotter}
        if self.sandbox_image:
            images["pinned_images"] = {"sandbox": self.sandbox_image}
        runtime = {
            "restrict_oom_score_adj": self.restrict_oom_score_adj,
            # Pod network namespaces under our state dir, not the host-wide /var/run/netns.
            "netns_mounts_under_state_dir": True,
            "containerd": self._runtimes_table(),
            "cni": {"bin_dirs": [str(self.cni_bin_dir)], "conf_dir": self._cni_conf_dir},
        }
        return {
            CRI_IMAGES_PLUGIN_V3: images,
            CRI_RUNTIME_PLUGIN_V3: runtime,
            CRI_GRPC_PLUGIN: self._stream_server(),  # the gRPC/streaming plugin keeps these keys
        }

    def _stream_server(self) -> dict[str, object]:
        return {
            "stream_server_address": self.stream_server_address,
            "stream_server_port": self.stream_server_port,
        }

    def render(self) -> str:
        return tomlkit.dumps(self.as_dict())


def render_private_config(root: Path, state: Path, grpc_address: Path, ttrpc_address: Path,
                          containerd_version: str, **settings: Any) -> str:
    """The whole config.toml of a private containerd of this version (see PrivateConfig)."""
    return PrivateConfig(root, state, grpc_address, ttrpc_address, containerd_version,
                         **settings).render()
