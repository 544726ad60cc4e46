"""Check every containerd found (discover): its version, whether its socket answers, and
whether its config declares the `bulkhead` handler correctly (the installer's own rules,
bulkhead.install.containerd_config, decide that)."""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bulkhead.doctor import discover
from bulkhead.doctor.context import Context
from bulkhead.doctor.discover import Containerd
from bulkhead.doctor.report import Finding, Status, failure, ok, warning
from bulkhead.install import containerd_config as cc

CONNECT_TIMEOUT = 2.0
SUN_PATH_MAX = 107  # bytes of a socket path, without the final NUL


def socket_answers(address: Path, timeout: float = CONNECT_TIMEOUT) -> tuple[bool, str]:
    """Whether a client can connect to the gRPC socket, with the error when it cannot. A path
    too long for sun_path (one through /proc/PID/root) is reached through its directory's fd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    dir_fd = -1
    try:
        target = str(address)
        if len(os.fsencode(target)) > SUN_PATH_MAX:
            dir_fd = os.open(address.parent, os.O_PATH | os.O_CLOEXEC)
            target = f"/proc/self/fd/{dir_fd}/{address.name}"
        sock.connect(target)
    except OSError as exc:
        return False, exc.strerror or str(exc)
    finally:
        sock.close()
        if dir_fd >= 0:
            os.close(dir_fd)
    return True, ""


def handler_state(config_text: str, version: str) -> tuple[bool, bool]:
    """(the handler is declared, the CRI plugin is enabled) in the layout this version reads;
    which of the installer's problems matter depends on these two."""
    try:
        doc: dict[str, Any] = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return False, True
    layout = cc.LAYOUTS[cc.config_version_for(version)]
    node: Any = doc
    for key in layout.runtime_path(cc.RUNTIME_NAME):
        node = node.get(key) if isinstance(node, dict) else None
    disabled = doc.get("disabled_plugins", [])
    cri_on = not (isinstance(disabled, list) and set(layout.disabling) & set(disabled))
    return isinstance(node, dict), cri_on


def apply_command(c: Containerd) -> str:
    """The installer run that fixes this containerd's config."""
    parts = ["bulkhead containerd-config"]
    if c.config != discover.SYSTEM_CONFIG:
        parts.append(f"--config {c.config}")
    if c.binary and c.binary != discover.system_binary():
        parts.append(f"--containerd {c.binary}")
    return " ".join(parts + ["--apply"]) + ("   then restart this containerd" if c.running
                                            else "")


def judge(c: Containerd, version: str, answers: str, problems: list[str], declared: bool,
          cri_on: bool) -> Finding:
    """A config problem fails a running containerd (or a file the operator named) unless its
    CRI is off (then only ctr and nerdctl use it); the idle system file only warns."""
    seen = "" if c.root == Path("/") else f" (seen through {c.root})"
    where = f"{version} ({c.binary}), {answers}; config {c.config}{seen}"
    if not problems:
        return ok(c.label, f"{where}: runtime `{cc.RUNTIME_NAME}` declared correctly")
    detail = f"{where}: {len(problems)} problem(s): {problems[0]}"
    fix = "\n".join([apply_command(c), *problems])
    if not cri_on and not declared:
        return warning(c.label, f"{where}: the CRI plugin is disabled, so Kubernetes cannot "
                                "use it (ctr and nerdctl with --runtime "
                                f"{cc.RUNTIME_TYPE} can)", fix)
    if c.running or c.explicit:
        return failure(c.label, detail, fix)
    return warning(c.label, detail + " (containerd is not running: nothing fails yet)", fix)


def check_one(c: Containerd) -> Finding:
    """Version, socket and handler of one containerd."""
    if not c.binary:
        return warning(c.label, "no containerd binary on the system PATH to read the version of",
                       "apt-get install containerd")
    try:
        version = cc.detect_containerd_version(c.executable)
        cc.config_version_for(version)
    except cc.ContainerdConfigError as exc:
        return failure(c.label, str(exc), "install containerd 1.6, 1.7 or 2.x")
    live, why = socket_answers(c.here(c.address))
    answers = (f"answering on {c.address}" if live else f"not answering on {c.address} ({why})")
    if c.running and not live:
        return failure(c.label, f"{version} ({c.binary}) runs but does not answer on "
                                f"{c.address}: {why}", f"restart containerd pid {c.pid}")
    try:
        text = c.here(c.config).read_text()
    except FileNotFoundError:
        text = ""  # containerd then runs on its defaults: CRI on, no bulkhead handler
    except OSError as exc:
        return failure(c.label, f"cannot read {c.config}: {exc.strerror}",
                       f"make {c.config} readable by root")
    restrict = None if c.pid is None else not cc.has_cap_sys_resource(f"/proc/{c.pid}/status")
    problems = cc.handler_problems(text, version, restrict_oom_score_adj=restrict,
                                   source=str(c.config))
    declared, cri_on = handler_state(text, version)
    finding = judge(c, version, answers, problems, declared, cri_on)
    if not c.running and not c.explicit and finding.status is Status.OK:
        return warning(c.label, f"{finding.detail}, but no containerd runs on it",
                       "start containerd   (e.g. `systemctl start containerd`)")
    return finding


def check_containerds(ctx: Context) -> Iterator[Finding]:
    """One finding per containerd found."""
    for c in discover.all_containerds(ctx.options.containerd_configs):
        yield check_one(c)
