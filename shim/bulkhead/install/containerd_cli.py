"""`bulkhead containerd-config`: print, diff or merge the `bulkhead` runtime handler into
containerd's config.toml for the containerd version found on this host."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bulkhead.install import config_file
from bulkhead.install import containerd_config as cc


def build_parser(parser: argparse.ArgumentParser) -> None:
    """Options; without --apply or --dry-run the handler section is printed."""
    parser.add_argument("--config", type=Path, default=Path(cc.DEFAULT_CONFIG),
                        help=f"containerd's config file (default {cc.DEFAULT_CONFIG})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--containerd", default="containerd", metavar="BINARY",
                        help="containerd binary whose version decides the config format "
                             "(default: containerd on PATH)")
    source.add_argument("--containerd-version", metavar="X.Y",
                        help="the containerd version, instead of asking the binary")
    parser.add_argument("--runtime-name", default=cc.RUNTIME_NAME,
                        help="the CRI handler name (RuntimeClass handler; default bulkhead)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true",
                        help="merge into the file (atomic, with a .bak.<UTC time> backup)")
    action.add_argument("--dry-run", action="store_true",
                        help="print the unified diff --apply would make")


def run(args: argparse.Namespace) -> int:
    """Errors are one line on stderr and exit status 1."""
    try:
        version = args.containerd_version or cc.detect_containerd_version(args.containerd)
        if args.apply or args.dry_run:
            return _merge(args, version)
        print(f"# containerd {version} reads config version {cc.config_version_for(version)}; "
              f"merge this into {args.config} with `bulkhead containerd-config --apply`",
              file=sys.stderr)
        print(cc.handler_section(version, args.runtime_name), end="")
        return 0
    except cc.ContainerdConfigError as exc:
        print(f"bulkhead containerd-config: {exc}", file=sys.stderr)
        return 1


def _merge(args: argparse.Namespace, version: str) -> int:
    change = config_file.plan_merge(args.config, version, args.runtime_name)
    if args.dry_run:
        print(change.diff() or f"# {args.config}: no change", end="\n" if not change.changed
              else "")
        return 0
    backup = config_file.apply(change)
    if not change.changed:
        print(f"{args.config} already declares runtime `{args.runtime_name}` for containerd "
              f"{version}: nothing changed")
    elif backup is None:
        print(f"created {args.config} with runtime `{args.runtime_name}` (containerd {version}); "
              "restart containerd to load it")
    else:
        print(f"merged runtime `{args.runtime_name}` into {args.config} (backup: {backup}); "
              "restart containerd to load it")
    left = cc.handler_problems(change.new_text, version, args.runtime_name,
                               source=str(args.config))
    for problem in left:
        print(f"bulkhead containerd-config: still wrong: {problem}", file=sys.stderr)
    return 1 if left else 0
