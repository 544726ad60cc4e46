"""Entry point of containerd-shim-bulkhead-v2: dispatches start, delete, -v and -info."""

from __future__ import annotations

import sys

from bulkhead import __version__
from bulkhead.shim.flags import UsageError, parse


def main(argv: list[str] | None = None) -> int:
    """Run one shim command; errors go to stderr (containerd shows them) with exit 1."""
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"containerd-shim-bulkhead-v2: {exc}", file=sys.stderr)
        return 2
    if args.version:
        print(f"containerd-shim-bulkhead-v2:\n  Version: {__version__}\n"
              "  Runtime: io.containerd.bulkhead.v2")
        return 0
    if args.info:
        sys.stdin.buffer.read()
        return 0  # an empty RuntimeInfo is valid
    try:
        if args.action == "start":
            from bulkhead.shim import start

            sys.stdout.write(start.run(args))
            sys.stdout.flush()
            return 0
        if args.action == "delete":
            from bulkhead.shim import delete

            sys.stdout.buffer.write(delete.run(args))
            sys.stdout.flush()
            return 0
    except Exception as exc:  # containerd reports the combined output as the error
        print(f"containerd-shim-bulkhead-v2 {args.action}: {exc}", file=sys.stderr)
        return 1
    print(f"containerd-shim-bulkhead-v2: unknown action {args.action!r} "
          "(expected start or delete)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
