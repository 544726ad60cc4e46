"""`bulkhead node install | uninstall`: put Bulkhead onto a node through its root filesystem
(the installer DaemonSet mounts it at /host), recording every step in a ledger so uninstall
removes exactly what install added and restores what it changed."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from bulkhead import config as config_mod
from bulkhead import paths
from bulkhead.install import containerd_config as cc
from bulkhead.install import node_host
from bulkhead.install.ledger import HostRoot, InstallError, Ledger

VENV = "/opt/bulkhead/venv"
GUEST = "/usr/local/share/bulkhead/guest"
DEMO_IMAGE = "/usr/local/share/bulkhead/demo-image.tar"
BIN_LINKS = ("containerd-shim-bulkhead-v2", "bulkhead")
BIN_DIR = "/usr/local/bin"
RUNTIME_CONFIG = "/etc/bulkhead/config.toml"
TEMPLATE_UNIT = "/etc/systemd/system/bulkhead-templates.service"
TEMPLATE_WANTS = "/etc/systemd/system/multi-user.target.wants/bulkhead-templates.service"
# Host programs the runtime calls; a missing one is a warning (`bulkhead doctor` says more).
HOST_TOOLS = (("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
              ("/usr/sbin/iptables", "iptables"))

Say = Callable[[str], None]


@dataclass
class NodeOptions:
    """What the operator chose; the defaults suit the DaemonSet."""

    host_root: Path
    containerd_config: str = cc.DEFAULT_CONFIG
    containerd_version: str | None = None
    runtime_name: str = cc.RUNTIME_NAME
    restart_command: str | None = None
    restart: bool = True
    build_template: bool = True
    venv_source: Path = Path(sys.prefix)
    guest_source: Path = Path(paths.GUEST_DIR)


def install(opts: NodeOptions, say: Say = print) -> list[str]:
    """Install (idempotent); returns warnings, raises InstallError when the node cannot run it."""
    host = HostRoot(opts.host_root)
    _check_sources(opts)
    _check_python(host, opts.venv_source)
    warnings = [f"the node lacks {tool} (Debian package {pkg}): pods cannot start until it is "
                "installed" for tool, pkg in HOST_TOOLS if not host.resolve(tool).exists()]
    version = opts.containerd_version or node_host.containerd_version(host)
    ledger = Ledger.begin(host)
    _step(say, ledger.put_tree(VENV, opts.venv_source), f"runtime venv {VENV}")
    for name in BIN_LINKS:
        _step(say, ledger.put_symlink(f"{BIN_DIR}/{name}", f"{VENV}/bin/{name}"),
              f"link {BIN_DIR}/{name}")
    _step(say, ledger.put_tree(GUEST, opts.guest_source), f"guest image {GUEST}")
    demo = opts.guest_source.parent / Path(DEMO_IMAGE).name
    if demo.is_file():
        _step(say, ledger.put_file(DEMO_IMAGE, demo.read_bytes()), f"demo image {DEMO_IMAGE}")
    if not host.resolve(RUNTIME_CONFIG).exists():
        ledger.ensure_dir(str(Path(RUNTIME_CONFIG).parent))
        _step(say, ledger.put_file(RUNTIME_CONFIG, default_runtime_config().encode()),
              f"runtime config {RUNTIME_CONFIG}")
    if host.resolve("/etc/systemd/system").is_dir():
        _step(say, ledger.put_file(TEMPLATE_UNIT, TEMPLATE_UNIT_TEXT.encode()),
              f"boot-time template unit {TEMPLATE_UNIT}")
        _step(say, ledger.put_symlink(TEMPLATE_WANTS, TEMPLATE_UNIT), "enabled it")
    config_changed = _merge_containerd(ledger, opts, version, say, warnings)
    ledger.facts.update(containerd_version=version, containerd_config=opts.containerd_config)
    ledger.save()
    if opts.build_template:
        _report(say, warnings, node_host.build_template(host))
    if config_changed and opts.restart:
        _report(say, warnings, node_host.restart_containerd(host, opts.restart_command))
    elif config_changed:
        warnings.append("containerd was not restarted (--no-restart): restart it to load the "
                        f"`{opts.runtime_name}` handler")
    label = node_host.set_node_label(installed=True)
    ledger.facts["label"] = label
    ledger.save()
    say(label)
    return warnings


def uninstall(opts: NodeOptions, force: bool = False, say: Say = print) -> list[str]:
    """Undo an install; a node without one is left alone (and that is said)."""
    host = HostRoot(opts.host_root)
    ledger = Ledger.load(host)
    if ledger is None:
        say(f"nothing to uninstall: {opts.host_root} has no record of `bulkhead node install`")
        return []
    shims = node_host.live_shims()
    if shims and not force:
        raise InstallError(f"Bulkhead shims still run (pids {', '.join(map(str, shims))}): "
                           "drain the node's bulkhead pods first, or pass --force")
    config = str(ledger.facts.get("containerd_config", opts.containerd_config))
    config_touched = ledger.find(config) is not None
    say(node_host.remove_templates(host))
    say(node_host.set_node_label(installed=False))
    problems = ledger.undo()
    for problem in problems:
        say(f"not undone: {problem}")
    if not problems:
        say(f"removed everything `bulkhead node install` added under {opts.host_root}")
    if config_touched and opts.restart:
        _report(say, problems, node_host.restart_containerd(host, opts.restart_command))
    return problems


def _report(say: Say, warnings: list[str], message: str) -> None:
    if message.startswith("WARNING: "):
        warnings.append(message.removeprefix("WARNING: "))
    else:
        say(message)


def _step(say: Say, changed: bool, what: str) -> None:
    say(f"{'installed' if changed else 'unchanged'}: {what}")


def _check_sources(opts: NodeOptions) -> None:
    if not (opts.venv_source / "pyvenv.cfg").is_file():
        raise InstallError(f"{opts.venv_source} is not a venv: run the installer from the "
                           "Bulkhead venv (the installer image's /opt/bulkhead/venv)")
    if str(opts.venv_source) != VENV:
        raise InstallError(f"the venv is at {opts.venv_source}, but its scripts name {VENV}: "
                           "build the installer image with the venv at that path")
    if not (opts.guest_source / "manifest.json").is_file():
        raise InstallError(f"no guest image in {opts.guest_source} (build it first: "
                           "`make guest-image`)")


def _check_python(host: HostRoot, venv: Path) -> None:
    """The venv runs on the node's own python3.X: Debian 12's python3.11."""
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines()
               if " = " in line)
    major_minor = ".".join(cfg.get("version", "3.11").split(".")[:2])
    python = f"{cfg.get('home', '/usr/bin')}/python{major_minor}"
    if not host.resolve(python).is_file():
        raise InstallError(f"the node has no {python}: Bulkhead's runtime is a venv of Debian 12's "
                           f"python{major_minor}; install it on the node (`apt-get install "
                           f"python{major_minor}`) or use a Debian 12 node image")


def _merge_containerd(ledger: Ledger, opts: NodeOptions, version: str, say: Say,
                      warnings: list[str]) -> bool:
    path = ledger.host.resolve(opts.containerd_config)
    old = path.read_text() if path.is_file() else ""
    new = cc.merge_handler(old, version, opts.runtime_name, source=opts.containerd_config)
    changed = ledger.put_file(opts.containerd_config, new.encode())
    _step(say, changed, f"runtime `{opts.runtime_name}` in {opts.containerd_config} "
                        f"(containerd {version}, config version {cc.config_version_for(version)})")
    warnings += cc.handler_problems(new, version, opts.runtime_name,
                                    source=opts.containerd_config)
    return changed


def default_runtime_config() -> str:
    """/etc/bulkhead/config.toml for a new node: every setting, commented out at its default."""
    lines = ["# Bulkhead runtime settings (see `bulkhead doctor`); written by `bulkhead node "
             "install`.", "# Uncomment to change a default.", ""]
    for f in dataclasses.fields(config_mod.Config):
        value = getattr(config_mod.Config(), f.name)
        lines.append(f"# {f.name} = {tomlkit.item(value).as_string()}")
    return "\n".join(lines) + "\n"


TEMPLATE_UNIT_TEXT = """\
# Written by `bulkhead node install`: VM templates live on tmpfs (/run/bulkhead/templates), so
# they are rebuilt at every boot; without it the node's first Bulkhead pod builds one.
[Unit]
Description=Bulkhead VM templates
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/bulkhead template build
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""
