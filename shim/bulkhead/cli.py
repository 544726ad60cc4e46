"""`bulkhead`: the operator's command (demo run and version for now)."""

from __future__ import annotations

import argparse
import sys

from bulkhead import __version__
from bulkhead.devenv import demo


def build_parser() -> argparse.ArgumentParser:
    """`bulkhead demo` takes the demo module's own options, so both entry points agree."""
    parser = argparse.ArgumentParser(prog="bulkhead",
                                     description="Bulkhead microVM runtime for containerd")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.build_parser(sub.add_parser("demo", help="run the embedded demo image in a microVM"))
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"bulkhead {__version__}")
        return 0
    return demo.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
