"""Which sandbox a debug command means: an id, unique across namespaces or qualified by -n."""

from __future__ import annotations

import argparse

from bulkhead.monitor import discovery
from bulkhead.monitor.discovery import SandboxDir


class TargetError(Exception):
    """No such sandbox, or an ambiguous id: the message says which and how to choose."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sandbox", help="sandbox id (as `bulkhead ps` lists it)")
    parser.add_argument("-n", "--namespace", default="",
                        help="containerd namespace, when the id exists in several")


def find(sandbox_id: str, namespace: str = "") -> SandboxDir:
    """The state directory of that sandbox, live or stale."""
    found = [d for d in discovery.discover() if d.sandbox_id == sandbox_id
             and (not namespace or d.namespace == namespace)]
    if not found:
        where = f" in namespace {namespace}" if namespace else ""
        raise TargetError(f"no sandbox {sandbox_id!r}{where} on this host (`bulkhead ps` "
                          "lists them)")
    if len(found) > 1:
        names = ", ".join(sorted(d.namespace for d in found))
        raise TargetError(f"sandbox {sandbox_id!r} exists in namespaces {names}: choose one "
                          "with -n")
    return found[0]
