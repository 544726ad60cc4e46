"""The OCI hooks that belong to the runtime's side: run on the host, like runc does, with the
container state on stdin and the VM's pid as the container's pid.

That is how nerdctl networks a container: its createRuntime hook runs CNI in
/proc/<pid>/ns/net, the VM's own namespace, which the shim joins to the VM's NIC at Start.
createContainer and startContainer run inside the container's namespaces, which are in the
guest: those are not run, and the log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HOST_KINDS = ("prestart", "createRuntime", "poststart", "poststop")
GUEST_KINDS = ("createContainer", "startContainer")
DEFAULT_TIMEOUT = 60.0  # seconds, for a hook without its own timeout
OUTPUT_LIMIT = 2000


class HookError(Exception):
    """A hook is malformed, could not start, failed or timed out; the message names it."""


@dataclass
class Hook:
    """One entry of the spec's hooks."""

    kind: str
    path: str
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT

    def name(self) -> str:
        return f"{self.kind} hook {self.path}"


def hooks_of(spec: dict[str, Any], kind: str) -> list[Hook]:
    """The spec's hooks of one kind; HookError for an entry runc would refuse too."""
    entries = (spec.get("hooks") or {}).get(kind) or []
    if not isinstance(entries, list):
        raise HookError(f"hooks.{kind} is not a list")
    return [_hook(kind, i, entry) for i, entry in enumerate(entries)]


def _hook(kind: str, index: int, entry: object) -> Hook:
    where = f"hooks.{kind}[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise HookError(f"{where}: no path")
    path, args, env = entry["path"], entry.get("args") or [], entry.get("env") or []
    if not os.path.isabs(path):
        raise HookError(f"{where}: path {path!r} is not absolute")
    if not all(isinstance(a, str) for a in args) or not all(isinstance(e, str) for e in env):
        raise HookError(f"{where}: args and env must be lists of strings")
    timeout = entry.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise HookError(f"{where}: timeout must be a positive number of seconds")
    return Hook(kind, path, list(args), list(env), float(timeout or DEFAULT_TIMEOUT))


def guest_side_hooks(spec: dict[str, Any]) -> list[str]:
    """Kinds of hooks present that would have to run in the guest (not supported)."""
    hooks = spec.get("hooks") or {}
    return [kind for kind in GUEST_KINDS if hooks.get(kind)]


def state(container_id: str, status: str, pid: int, bundle: str,
          spec: dict[str, Any]) -> bytes:
    """The OCI state a hook reads on stdin."""
    annotations = spec.get("annotations") or {}
    return json.dumps({"ociVersion": spec.get("ociVersion", "1.0.2"), "id": container_id,
                       "status": status, "pid": pid, "bundle": bundle,
                       "annotations": annotations}).encode()


async def run(hooks: list[Hook], state_json: bytes, cwd: str) -> None:
    """Run hooks one after another, stopping at the first failure (HookError)."""
    for hook in hooks:
        await _run_one(hook, state_json, cwd)


async def run_logged(hooks: list[Hook], state_json: bytes, cwd: str) -> None:
    """Poststart and poststop: a failure is logged, never an error (as in runc)."""
    for hook in hooks:
        try:
            await _run_one(hook, state_json, cwd)
        except HookError as exc:
            log.warning("%s", exc)


async def _run_one(hook: Hook, state_json: bytes, cwd: str) -> None:
    argv = hook.args or [hook.path]
    try:
        proc = await asyncio.create_subprocess_exec(
            argv[0], *argv[1:], executable=hook.path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=dict(e.split("=", 1) for e in hook.env if "=" in e), cwd=cwd)
    except OSError as exc:
        raise HookError(f"{hook.name()}: cannot start: {exc.strerror}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(state_json), hook.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise HookError(f"{hook.name()}: timed out after {hook.timeout:g} s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()[-OUTPUT_LIMIT:]
        raise HookError(f"{hook.name()}: exited with status {proc.returncode}"
                        + (f": {text}" if text else ""))


@dataclass
class ContainerHooks:
    """A container's host-side hooks and what their state needs, parsed once at Create."""

    container_id: str
    bundle: str
    spec: dict[str, Any]  # only ociVersion and annotations are read again
    hooks: dict[str, list[Hook]]

    @classmethod
    def from_spec(cls, container_id: str, bundle: str, spec: dict[str, Any]) -> ContainerHooks:
        """HookError for a malformed entry: refused at Create, before anything runs."""
        if spec.get("hooks") is not None and not isinstance(spec.get("hooks"), dict):
            raise HookError("hooks is not an object")
        skipped = guest_side_hooks(spec)
        if skipped:
            log.warning("container %s: %s hooks run in the container's namespaces, which are "
                        "in the VM: not run", container_id, " and ".join(skipped))
        meta = {"ociVersion": spec.get("ociVersion"), "annotations": spec.get("annotations")}
        return cls(container_id, bundle, meta, {k: hooks_of(spec, k) for k in HOST_KINDS})

    async def created(self, pid: int) -> None:
        """prestart, then createRuntime: the container exists, its process has not started."""
        hooks = self.hooks["prestart"] + self.hooks["createRuntime"]
        if hooks:
            await run(hooks, state(self.container_id, "creating", pid, self.bundle, self.spec),
                      self.bundle)

    async def started(self, pid: int) -> None:
        if self.hooks["poststart"]:
            await run_logged(self.hooks["poststart"],
                             state(self.container_id, "running", pid, self.bundle, self.spec),
                             self.bundle)

    async def stopped(self) -> None:
        if self.hooks["poststop"]:
            await run_logged(self.hooks["poststop"],
                             state(self.container_id, "stopped", 0, self.bundle, self.spec),
                             self.bundle)
