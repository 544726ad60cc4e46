"""`bulkhead logs SANDBOX`: the shim's own log and the guest console, from the state directory
(both are rings of two capped files, so this never reads more than a few MiB)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bulkhead.debug import target
from bulkhead.sandbox.state import SHIM_LOG
from bulkhead.vmm.base import CONSOLE_LOG
from bulkhead.vmm.console import read_ring, ring_files
from bulkhead.vmm.process import text_tail


def build_parser(parser: argparse.ArgumentParser) -> None:
    target.add_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--shim", action="store_true", help="only the shim's log")
    which.add_argument("--console", action="store_true", help="only the guest console")
    parser.add_argument("--tail", type=int, default=0, metavar="N",
                        help="only the last N lines of each")


def run(args: argparse.Namespace) -> int:
    try:
        found = target.find(args.sandbox, args.namespace)
    except target.TargetError as exc:
        print(f"bulkhead logs: {exc}", file=sys.stderr)
        return 1
    state_dir = Path(found.path)
    parts = []
    if not args.console:
        parts.append(("shim log", state_dir / SHIM_LOG))
    if not args.shim:
        parts.append(("guest console", state_dir / CONSOLE_LOG))
    for title, path in parts:
        files = ", ".join(str(f) for f in ring_files(path)) or "none yet"
        print(f"==> {title} of sandbox {found.namespace}/{found.sandbox_id} ({files}) <==")
        raw = read_ring(path)
        if args.tail > 0:
            print(text_tail(raw, args.tail))
        else:
            sys.stdout.flush()
            os.write(sys.stdout.fileno(), raw)
    return 0
