"""`bulkhead`: the operator's command (demo run, VM templates, version)."""

from __future__ import annotations

import argparse
import sys

from bulkhead import __version__
from bulkhead.devenv import demo
from bulkhead.template import cli as template_cli


def build_parser() -> argparse.ArgumentParser:
    """`bulkhead demo` takes the demo module's own options, so both entry points agree."""
    parser = argparse.ArgumentParser(prog="bulkhead",
                                     description="Bulkhead microVM runtime for containerd")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.build_parser(sub.add_parser("demo", help="run the embedded demo image in a microVM"))
    template_cli.build_parser(sub.add_parser("template", help="build, list or remove VM "
                                                                "templates"))
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"bulkhead {__version__}")
        return 0
    if args.command == "template":
        return template_cli.run(args)
    return demo.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
