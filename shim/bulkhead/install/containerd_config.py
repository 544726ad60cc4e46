"""The `bulkhead` runtime handler in containerd's config.toml: which config version a containerd
reads, what is wrong with a file, and the merge that fixes it while keeping the user's comments,
order and other settings (tomlkit round-trips them; the stdlib has no TOML writer)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container
from tomlkit.items import Item, Table

DEFAULT_CONFIG = "/etc/containerd/config.toml"
RUNTIME_NAME = "bulkhead"
RUNTIME_TYPE = "io.containerd.bulkhead.v2"
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


LAYOUTS = {
    2: Layout(2, "io.containerd.grpc.v1.cri", ("io.containerd.grpc.v1.cri",)),
    3: Layout(3, "io.containerd.cri.v1.runtime",
              ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri")),
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
