"""`bulkhead`: the operator's command (demo run and version for now)."""

from __future__ import annotations

import argparse
import sys

from bulkhead import __version__


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(prog="bulkhead",
                                     description="Bulkhead microVM runtime for containerd")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded demo image in a microVM")
    demo.add_argument("--system-containerd", action="store_true",
                      help="use the system containerd instead of a private instance")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"bulkhead {__version__}")
        return 0
    from bulkhead.devenv.demo import run_demo

    return run_demo(use_system_containerd=args.system_containerd)


if __name__ == "__main__":
    sys.exit(main())
