"""`bulkhead node install | uninstall --host-root /host`: the Kubernetes node installer's
entry point (packaging/kubernetes/node-installer.yaml runs it in a privileged pod)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bulkhead.install import containerd_config as cc
from bulkhead.install.ledger import MANIFEST, InstallError
from bulkhead.install.node import NodeOptions, install, uninstall


def build_parser(parser: argparse.ArgumentParser) -> None:
    """The two sub-commands share the node options."""
    sub = parser.add_subparsers(dest="node_command", required=True)
    inst = sub.add_parser("install", help="install the runtime, guest image and containerd "
                                          "handler onto the node under --host-root")
    uninst = sub.add_parser("uninstall", help=f"undo what install recorded in {MANIFEST}")
    for p in (inst, uninst):
        p.add_argument("--host-root", type=Path, required=True,
                       help="the node's / as mounted here (the DaemonSet's /host)")
        p.add_argument("--restart-command", metavar="CMD",
                       help="how to restart containerd (default: systemctl through PID 1's "
                            "namespaces when PID 1 is systemd on this root)")
        p.add_argument("--no-restart", dest="restart", action="store_false",
                       help="leave containerd running as it is")
        p.add_argument("--containerd-config", default=cc.DEFAULT_CONFIG, metavar="NODE_PATH",
                       help=f"containerd's config on the node (default {cc.DEFAULT_CONFIG})")
    inst.add_argument("--containerd-version", metavar="X.Y",
                      help="the node's containerd version (default: ask its binary)")
    inst.add_argument("--runtime-name", default=cc.RUNTIME_NAME,
                      help="CRI handler name (the RuntimeClass handler; default bulkhead)")
    inst.add_argument("--no-template-build", dest="build_template", action="store_false",
                      help="do not build the VM template now (the first pod or boot does)")
    uninst.add_argument("--force", action="store_true",
                        help="uninstall even while Bulkhead shims run")


def run(args: argparse.Namespace) -> int:
    """Errors are one line on stderr and exit status 1; warnings do not fail an install."""
    opts = NodeOptions(host_root=args.host_root, containerd_config=args.containerd_config,
                       restart_command=args.restart_command, restart=args.restart)
    try:
        if args.node_command == "install":
            opts.containerd_version = args.containerd_version
            opts.runtime_name = args.runtime_name
            opts.build_template = args.build_template
            for warning in install(opts, say=_say):
                print(f"bulkhead node install: warning: {warning}", file=sys.stderr)
            return 0
        problems = uninstall(opts, force=args.force, say=_say)
        return 1 if problems else 0
    except (InstallError, cc.ContainerdConfigError, OSError) as exc:
        print(f"bulkhead node {args.node_command}: {exc}", file=sys.stderr)
        return 1


def _say(message: str) -> None:
    print(message, flush=True)
