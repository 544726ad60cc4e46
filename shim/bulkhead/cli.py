"""`bulkhead`: the operator's command; each sub-command lives in its component's `cli` module."""

from __future__ import annotations

import argparse
import importlib
import sys

from bulkhead import __version__

# name -> (module with build_parser(parser) and run(args) -> int, one-line help).
# Modules are imported only when their command runs, so `bulkhead ps` stays quick.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("bulkhead.demo.cli", "run the embedded demo image in a microVM"),
    "template": ("bulkhead.template.cli", "build, list or remove VM templates"),
    "monitor": ("bulkhead.monitor.cli", "serve Prometheus metrics of the live sandboxes"),
    "ps": ("bulkhead.debug.ps", "list the sandboxes on this host (VM pid, boot, memory)"),
    "containerd-config": ("bulkhead.install.containerd_cli",
                          "print, diff or merge the runtime handler into containerd's config"),
    "node": ("bulkhead.install.node_cli", "install or uninstall Bulkhead on a Kubernetes node"),
    "doctor": ("bulkhead.doctor.cli", "check this host end to end, with the fix for each problem"),
    "logs": ("bulkhead.debug.logs", "print a sandbox's shim log and guest console"),
    "shell": ("bulkhead.debug.shell", "a root shell in a sandbox's VM, outside its containers"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (for speed) one that knows only the command about to run."""
    parser = argparse.ArgumentParser(prog="bulkhead",
                                     description="Bulkhead microVM runtime for containerd")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if only in (None, name):
            importlib.import_module(module).build_parser(sub_parser)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(first if first in COMMANDS else None).parse_args(argv)
    if args.command == "version":
        print(f"bulkhead {__version__}")
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
